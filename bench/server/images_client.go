// images_client drives containerd's Images gRPC API with a fixed workload and
// prints the timings as JSON. server_bench.py runs the very same binary
// against a private real containerd and against `boltimages serve`, so the
// client side costs the same on both. It is built at run time in GOPATH mode
// against Debian's containerd API packages; never committed as a binary.
//
// Usage: images_client -socket PATH [-images 10000] [-concurrency 16] [-ops 2000] [-server-pid PID]
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	versionapi "github.com/containerd/containerd/api/services/version/v1"
	"github.com/containerd/containerd/api/types"
	ptypes "github.com/gogo/protobuf/types"
	digest "github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/metadata"
)

const namespace = "bench"

type step struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	Ops     int     `json:"ops"`
	Clients int     `json:"clients"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	Check   string  `json:"check"`
	// user + system CPU seconds the server process used during the step
	// (all threads), when -server-pid names it: steadier than wall time on
	// a shared machine
	ServerCPU float64 `json:"server_cpu_seconds"`
}

// serverPid is the server process whose CPU time each step reads (0: none).
var serverPid int

// serverCPU returns the server's utime + stime in seconds (0 without -server-pid).
func serverCPU() float64 {
	if serverPid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", serverPid))
	if err != nil {
		fail("reading the server's CPU time: %v", err)
	}
	// the command name may hold spaces: fields start after its closing ')'
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "images_client: "+format+"\n", args...)
	os.Exit(1)
}

func dial(socket string) (*grpc.ClientConn, imagesapi.ImagesClient) {
	conn := dialConn(socket)
	return conn, imagesapi.NewImagesClient(conn)
}

func dialConn(socket string) *grpc.ClientConn {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, "passthrough:///bench",
		grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		fail("cannot connect to %s: %v", socket, err)
	}
	return conn
}

// rawCodec passes messages through as bytes: the list-floor step records a
// server's List answer and serves it again without decoding it.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string   { return "proto" }
func (rawCodec) String() string { return "proto" }

const listMethod = "/containerd.services.images.v1.Images/List"

// serveRecorded answers every Images/List on a new unix socket with the
// same recorded bytes: a server that does no work, so a List from it costs
// only the transfer and the client's own decoding. It answers Images/Create
// with an empty response, so that a connection to it can carry the calls
// the measured server's connection carried before its List.
func serveRecorded(recorded []byte) (string, func()) {
	dir, err := ioutil.TempDir("", "list-floor-")
	if err != nil {
		fail("list floor: %v", err)
	}
	socket := filepath.Join(dir, "floor.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		fail("list floor: %v", err)
	}
	srv := grpc.NewServer(grpc.CustomCodec(rawCodec{}), grpc.MaxSendMsgSize(64<<20))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "containerd.services.images.v1.Images",
		HandlerType: (*interface{})(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Create",
			Handler: func(_ interface{}, _ context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				var req []byte
				if err := dec(&req); err != nil {
					return nil, err
				}
				none := []byte{}
				return &none, nil
			}}, {MethodName: "List",
			Handler: func(_ interface{}, _ context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				var req []byte
				if err := dec(&req); err != nil {
					return nil, err
				}
				return &recorded, nil
			}}},
	}, struct{}{})
	go func() { _ = srv.Serve(lis) }()
	return socket, func() { srv.Stop(); os.RemoveAll(dir) }
}

func nsContext() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "containerd-namespace", namespace)
}

func imageName(i int) string {
	return fmt.Sprintf("registry.example.com/bench/app-%06d:v1", i)
}

func newImage(i int) imagesapi.Image {
	sum := sha256.Sum256([]byte(imageName(i)))
	return imagesapi.Image{
		Name: imageName(i),
		Labels: map[string]string{
			"bench.group":               fmt.Sprintf("%d", i%10),
			"org.opencontainers.source": fmt.Sprintf("https://example.com/src/app-%d", i),
		},
		Target: types.Descriptor{
			MediaType: "application/vnd.oci.image.manifest.v1+json",
			Digest:    digest.Digest(fmt.Sprintf("sha256:%x", sum)),
			Size_:     int64(1000 + i%5000),
		},
	}
}

func percentile(lat []time.Duration, p float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	idx := int(p * float64(len(lat)-1))
	return float64(lat[idx]) / 1e6
}

// run calls op(i) for i in [first, first+n) split over `clients` goroutines,
// each with its own connection, and records every call's latency.
func run(name string, conns []imagesapi.ImagesClient, clients, first, n int, op func(c imagesapi.ImagesClient, i int) error) step {
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	cpu0 := serverCPU()
	start := time.Now()
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := conns[w%len(conns)]
			for i := w; i < n; i += clients {
				t := time.Now()
				if err := op(c, first+i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("%s #%d: %v", name, first+i, err)
					}
					mu.Unlock()
					return
				}
				lat[i] = time.Since(t)
			}
		}(w)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	cpu := serverCPU() - cpu0
	if firstErr != nil {
		fail("%v", firstErr)
	}
	return step{Name: name, Seconds: secs, Ops: n, Clients: clients,
		P50Ms: percentile(lat, 0.5), P99Ms: percentile(lat, 0.99), ServerCPU: cpu}
}

func main() {
	socket := flag.String("socket", "", "unix socket of the Images service")
	nImages := flag.Int("images", 10000, "images present during List/Get/Update")
	concurrency := flag.Int("concurrency", 16, "clients for the concurrent Create")
	nOps := flag.Int("ops", 2000, "calls for Get, Update, single-client Create and Delete")
	listReps := flag.Int("list-reps", 10, "List calls per List step")
	flag.IntVar(&serverPid, "server-pid", 0, "server process to read CPU time from (per step)")
	only := flag.String("only", "", "run only this step: rss-probe (Get + filtered List on an existing set), "+
		"create-concurrent (the concurrent Create on an empty server, for profiling), "+
		"update (Update on images an earlier create-concurrent made), "+
		"list-after-write (Update then List, on images an earlier create-concurrent made), "+
		"reads (List, Get, Get from all clients: the read steps, on images an earlier create-concurrent made), "+
		"list-floor (List from the server, then the same answer replayed by a server that does no work), "+
		"gets (Get, Get from all clients, with no List first)")
	flag.Parse()
	if *socket == "" {
		fail("-socket is required")
	}
	conns := make([]imagesapi.ImagesClient, *concurrency)
	for i := range conns {
		conn, c := dial(*socket)
		defer conn.Close()
		conns[i] = c
	}
	ctx := nsContext()
	one := conns[:1]
	var steps []step

	list := func(name string, filters []string, want int) step {
		var got int
		s := run(name, one, 1, 0, *listReps, func(c imagesapi.ImagesClient, _ int) error {
			resp, err := c.List(ctx, &imagesapi.ListImagesRequest{Filters: filters})
			if err == nil {
				got = len(resp.Images)
			}
			return err
		})
		if want >= 0 && got != want {
			fail("%s returned %d images, want %d", name, got, want)
		}
		s.Check = fmt.Sprintf("images=%d", got)
		return s
	}

	// Replaces one label on an existing image per call (the images from Create).
	update := func() step {
		return run("update", one, 1, 0, *nOps, func(c imagesapi.ImagesClient, i int) error {
			im := newImage((i * 7919) % *nImages)
			im.Labels["bench.updated"] = fmt.Sprintf("%d", i)
			_, err := c.Update(ctx, &imagesapi.UpdateImageRequest{Image: im,
				UpdateMask: &ptypes.FieldMask{Paths: []string{"labels"}}})
			return err
		})
	}

	// A List right after a write, as a client that lists after each pull or
	// tag does: one Update (not timed) before each timed List, so each List
	// must include the write just made.
	listAfterWrite := func() step {
		var got int
		lat := make([]time.Duration, *listReps)
		var total time.Duration
		cpu0 := serverCPU() // includes the untimed Updates
		for r := 0; r < *listReps; r++ {
			im := newImage((r * 4801) % *nImages)
			im.Labels["bench.listed"] = fmt.Sprintf("%d", r)
			if _, err := one[0].Update(ctx, &imagesapi.UpdateImageRequest{Image: im,
				UpdateMask: &ptypes.FieldMask{Paths: []string{"labels"}}}); err != nil {
				fail("list_after_write: Update: %v", err)
			}
			t := time.Now()
			resp, err := one[0].List(ctx, &imagesapi.ListImagesRequest{})
			lat[r] = time.Since(t)
			if err != nil {
				fail("list_after_write: List: %v", err)
			}
			total += lat[r]
			got = len(resp.Images)
		}
		if got != *nImages {
			fail("list_after_write returned %d images, want %d", got, *nImages)
		}
		return step{Name: "list_after_write", Seconds: total.Seconds(), Ops: *listReps, Clients: 1,
			P50Ms: percentile(lat, 0.5), P99Ms: percentile(lat, 0.99), Check: fmt.Sprintf("images=%d", got),
			ServerCPU: serverCPU() - cpu0}
	}

	// Gets by name spread over the images, each answer checked.
	get := func(name string, clients []imagesapi.ImagesClient, n, calls int) step {
		return run(name, clients, n, 0, calls, func(c imagesapi.ImagesClient, i int) error {
			want := imageName((i * 7919) % *nImages)
			resp, err := c.Get(ctx, &imagesapi.GetImageRequest{Name: want})
			if err == nil && resp.Image.Name != want {
				return fmt.Errorf("Get returned %q", resp.Image.Name)
			}
			return err
		})
	}

	// The same Gets on a server that has not listed the images since the
	// last write, as after a pull: each Get reads the file.
	if *only == "gets" {
		steps = append(steps, get("get", one, 1, *nOps))
		steps = append(steps, get("get_concurrent", conns, *concurrency, *nImages))
		_ = json.NewEncoder(os.Stdout).Encode(steps)
		return
	}

	if *only == "reads" {
		// in the full run's order: the Gets come after a List
		steps = append(steps, list("list_all", nil, *nImages))
		steps = append(steps, get("get", one, 1, *nOps))
		steps = append(steps, get("get_concurrent", conns, *concurrency, *nImages))
		_ = json.NewEncoder(os.Stdout).Encode(steps)
		return
	}

	// The floor under a List: the server's answer, recorded and replayed by a
	// Go server that does no work, timed through the same client, on a new
	// connection that first carries `creates` Creates (as the List step's
	// connection carried its share of the concurrent Creates: grpc-go's
	// receive window then grows more slowly during the first List, 13 to 27
	// ms against 10 to 12 on a new connection, from any server).
	// replayer records the server's List answer and serves it again; the
	// client is on a new connection to it, and done closes both.
	replayer := func(name string) (recorded []byte, floor imagesapi.ImagesClient, done func()) {
		empty := []byte{}
		rec := dialConn(*socket)
		err := rec.Invoke(ctx, listMethod, &empty, &recorded, grpc.ForceCodec(rawCodec{}))
		rec.Close()
		if err != nil {
			fail("%s: recording the List: %v", name, err)
		}
		floorSocket, stop := serveRecorded(recorded)
		floorConn, floor := dial(floorSocket)
		return recorded, floor, func() { floorConn.Close(); stop() }
	}
	replayed := func(name string, creates int) step {
		recorded, floor, done := replayer(name)
		defer done()
		for i := 0; i < creates; i++ {
			if _, err := floor.Create(ctx, &imagesapi.CreateImageRequest{Image: newImage(i)}); err != nil {
				fail("%s: Create on the replaying server: %v", name, err)
			}
		}
		s := run(name, []imagesapi.ImagesClient{floor}, 1, 0, *listReps, func(c imagesapi.ImagesClient, _ int) error {
			resp, err := c.List(ctx, &imagesapi.ListImagesRequest{})
			if err == nil && len(resp.Images) != *nImages {
				return fmt.Errorf("replayed List has %d images, want %d", len(resp.Images), *nImages)
			}
			return err
		})
		s.Check = fmt.Sprintf("bytes=%d", len(recorded))
		return s
	}

	if *only == "list-floor" {
		// The server's List and the replayed answer in turn, each on a new
		// connection: every List leaves the client warmer (its heap grown for
		// the decoding), and ten of one then ten of the other favoured
		// whichever came second by 2 to 3 ms.
		recorded, floor, done := replayer("list_floor")
		defer done()
		lat := map[string][]time.Duration{}
		secs := map[string]float64{}
		cpu := 0.0
		for r := 0; r < *listReps; r++ {
			for _, side := range []string{"list_all", "list_floor"} {
				c, cpu0 := floor, 0.0
				if side == "list_all" {
					c, cpu0 = one[0], serverCPU()
				}
				t := time.Now()
				resp, err := c.List(ctx, &imagesapi.ListImagesRequest{})
				took := time.Since(t)
				if err == nil && len(resp.Images) != *nImages {
					err = fmt.Errorf("%d images, want %d", len(resp.Images), *nImages)
				}
				if err != nil {
					fail("list floor: %s: %v", side, err)
				}
				if side == "list_all" {
					cpu += serverCPU() - cpu0
				}
				lat[side] = append(lat[side], took)
				secs[side] += took.Seconds()
			}
		}
		for _, side := range []string{"list_all", "list_floor"} {
			st := step{Name: side, Seconds: secs[side], Ops: *listReps, Clients: 1,
				P50Ms: percentile(lat[side], 0.5), P99Ms: percentile(lat[side], 0.99),
				Check: fmt.Sprintf("images=%d bytes=%d", *nImages, len(recorded))}
			if side == "list_all" {
				st.ServerCPU = cpu
			}
			steps = append(steps, st)
		}
		// and under that: the client's own decoding of those bytes, with the
		// codec its calls use, and no transfer at all
		codec := encoding.GetCodec("proto")
		d := run("list_decode", []imagesapi.ImagesClient{nil}, 1, 0, *listReps, func(_ imagesapi.ImagesClient, _ int) error {
			var resp imagesapi.ListImagesResponse
			if err := codec.Unmarshal(recorded, &resp); err != nil {
				return err
			}
			if len(resp.Images) != *nImages {
				return fmt.Errorf("decoded List has %d images, want %d", len(resp.Images), *nImages)
			}
			return nil
		})
		d.Check = fmt.Sprintf("bytes=%d", len(recorded))
		steps = append(steps, d)
		_ = json.NewEncoder(os.Stdout).Encode(steps)
		return
	}

	if *only == "rss-probe" {
		steps = append(steps, list("list_filter", []string{`labels."bench.group"==3`}, -1))
		steps = append(steps, run("get", one, 1, 0, *nOps, func(c imagesapi.ImagesClient, i int) error {
			_, err := c.Get(ctx, &imagesapi.GetImageRequest{Name: imageName((i * 7919) % *nImages)})
			return err
		}))
		_ = json.NewEncoder(os.Stdout).Encode(steps)
		return
	}

	if *only == "list-after-write" {
		steps = append(steps, listAfterWrite())
		_ = json.NewEncoder(os.Stdout).Encode(steps)
		return
	}

	if *only == "update" {
		steps = append(steps, update())
		_ = json.NewEncoder(os.Stdout).Encode(steps)
		return
	}

	if *only == "create-concurrent" {
		steps = append(steps, run("create_concurrent", conns, *concurrency, 0, *nImages, func(c imagesapi.ImagesClient, i int) error {
			_, err := c.Create(ctx, &imagesapi.CreateImageRequest{Image: newImage(i)})
			return err
		}))
		_ = json.NewEncoder(os.Stdout).Encode(steps)
		return
	}

	// Existing images from an earlier run would change every count below.
	if resp, err := one[0].List(ctx, &imagesapi.ListImagesRequest{}); err != nil {
		fail("initial List: %v", err)
	} else if len(resp.Images) != 0 {
		fail("namespace %q already holds %d images; start from an empty server", namespace, len(resp.Images))
	}

	// An empty call: the floor that the gRPC stack alone puts under every request.
	vconn := dialConn(*socket)
	defer vconn.Close()
	vc := versionapi.NewVersionClient(vconn)
	steps = append(steps, run("version", one, 1, 0, *nOps, func(_ imagesapi.ImagesClient, _ int) error {
		_, err := vc.Version(ctx, &ptypes.Empty{})
		return err
	}))
	steps = append(steps, run("create_concurrent", conns, *concurrency, 0, *nImages, func(c imagesapi.ImagesClient, i int) error {
		_, err := c.Create(ctx, &imagesapi.CreateImageRequest{Image: newImage(i)})
		return err
	}))
	steps = append(steps, list("list_all", nil, *nImages))
	// the same List from a server that does no work, at this point of the
	// workload (the client's own heap, and so its decoding, is as it was)
	steps = append(steps, replayed("list_all_replayed", *nImages / *concurrency))
	inGroup3 := 0
	for i := 0; i < *nImages; i++ {
		if i%10 == 3 {
			inGroup3++
		}
	}
	steps = append(steps, list("list_filter", []string{`labels."bench.group"==3`}, inGroup3))
	steps = append(steps, get("get", one, 1, *nOps))
	steps = append(steps, get("get_concurrent", conns, *concurrency, *nImages))
	steps = append(steps, update())
	steps = append(steps, listAfterWrite())
	steps = append(steps, run("create_single", one, 1, *nImages, *nOps, func(c imagesapi.ImagesClient, i int) error {
		_, err := c.Create(ctx, &imagesapi.CreateImageRequest{Image: newImage(i)})
		return err
	}))
	steps = append(steps, run("delete", one, 1, *nImages, *nOps, func(c imagesapi.ImagesClient, i int) error {
		_, err := c.Delete(ctx, &imagesapi.DeleteImageRequest{Name: imageName(i)})
		return err
	}))
	final := list("list_all_after", nil, *nImages)
	steps = append(steps, final)
	_ = json.NewEncoder(os.Stdout).Encode(steps)
}
