// bbolt_bench runs the engine workloads of bench/engine_bench.py against the
// real go.etcd.io/bbolt, so both sides see the same keys, values and
// transaction shapes. engine_bench.py builds it at run time in GOPATH mode
// against Debian's bbolt 1.3.6; it is never committed as a binary.
//
// Usage: bbolt_bench -data DIR -dir DIR -only a,b,c
// Prints one JSON object {workload: {"seconds": s, "ops": n, "check": "..."}}.
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

const (
	keyLen   = 16
	valueLen = 100
)

type result struct {
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
	Ops        int     `json:"ops"`
	Check      string  `json:"check"`
}

// timer measures wall time and the process's CPU time (user+system, all
// threads, so the garbage collector's work counts too). On a shared machine
// CPU time is the steadier measure of CPU-bound work.
type timer struct {
	wall time.Time
	cpu  float64
}

func cpuNow() float64 {
	var ru syscall.Rusage
	must(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func startTimer() timer { return timer{time.Now(), cpuNow()} }

func (t timer) stop(ops int, check string) result {
	return result{Seconds: time.Since(t.wall).Seconds(), CPUSeconds: cpuNow() - t.cpu, Ops: ops, Check: check}
}

type image struct {
	name, createdat, updatedat, digest, mediatype, size []byte
	labels                                              [][2][]byte
}

var benchBucket = []byte("bench")

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bbolt_bench:", err)
	os.Exit(1)
}

func must(err error) {
	if err != nil {
		fail(err)
	}
}

func readFixed(path string, size int) [][]byte {
	raw, err := os.ReadFile(path)
	must(err)
	if len(raw)%size != 0 {
		fail(fmt.Errorf("%s: length %d is not a multiple of %d", path, len(raw), size))
	}
	out := make([][]byte, len(raw)/size)
	for i := range out {
		out[i] = raw[i*size : (i+1)*size]
	}
	return out
}

// readImages parses the record file written by engine_bench.py: each record is
// a u32 field count followed by that many (u32 length, bytes) fields, in the
// order name, createdat, updatedat, digest, mediatype, size, then label pairs.
func readImages(path string) []image {
	raw, err := os.ReadFile(path)
	must(err)
	var out []image
	off := 0
	next := func() []byte {
		if off+4 > len(raw) {
			fail(fmt.Errorf("%s: truncated at %d", path, off))
		}
		n := int(binary.LittleEndian.Uint32(raw[off:]))
		off += 4
		if off+n > len(raw) {
			fail(fmt.Errorf("%s: field overruns file at %d", path, off))
		}
		b := raw[off : off+n]
		off += n
		return b
	}
	for off < len(raw) {
		if off+4 > len(raw) {
			fail(fmt.Errorf("%s: truncated record header", path))
		}
		fields := int(binary.LittleEndian.Uint32(raw[off:]))
		off += 4
		if fields < 6 || (fields-6)%2 != 0 {
			fail(fmt.Errorf("%s: bad field count %d", path, fields))
		}
		im := image{name: next(), createdat: next(), updatedat: next(), digest: next(), mediatype: next(), size: next()}
		for i := 0; i < (fields-6)/2; i++ {
			im.labels = append(im.labels, [2][]byte{next(), next()})
		}
		out = append(out, im)
	}
	return out
}

func openFresh(path string) *bolt.DB {
	_ = os.Remove(path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	must(err)
	return db
}

func countBench(db *bolt.DB) (n int, total int) {
	must(db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(benchBucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			n++
			total += len(v)
		}
		return nil
	}))
	return
}

// load puts every key with its value in a single write transaction.
func load(path string, keys, values [][]byte) result {
	db := openFresh(path)
	defer db.Close()
	t := startTimer()
	must(db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(benchBucket)
		if err != nil {
			return err
		}
		for i, k := range keys {
			if err := b.Put(k, values[i]); err != nil {
				return err
			}
		}
		return nil
	}))
	r := t.stop(0, "")
	n, total := countBench(db)
	return result{r.Seconds, r.CPUSeconds, len(keys), fmt.Sprintf("keys=%d bytes=%d", n, total)}
}

func pointGets(path string, keys [][]byte) result {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	must(err)
	defer db.Close()
	found, sum := 0, 0
	t := startTimer()
	must(db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(benchBucket)
		for _, k := range keys {
			if v := b.Get(k); v != nil {
				found++
				sum += int(v[0])
			}
		}
		return nil
	}))
	r := t.stop(0, "")
	return result{r.Seconds, r.CPUSeconds, len(keys), fmt.Sprintf("found=%d sum=%d", found, sum)}
}

func scan(path string) result {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	must(err)
	defer db.Close()
	n, sum := 0, 0
	t := startTimer()
	must(db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(benchBucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			n++
			sum += int(k[0]) + int(v[0])
		}
		return nil
	}))
	r := t.stop(0, "")
	return result{r.Seconds, r.CPUSeconds, n, fmt.Sprintf("keys=%d sum=%d", n, sum)}
}

// singleTx commits one durable (fsynced) transaction per key.
func singleTx(path string, keys, values [][]byte) result {
	db := openFresh(path)
	defer db.Close()
	must(db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(benchBucket)
		return err
	}))
	t := startTimer()
	for i, k := range keys {
		v := values[i]
		must(db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(benchBucket).Put(k, v)
		}))
	}
	r := t.stop(0, "")
	n, total := countBench(db)
	return result{r.Seconds, r.CPUSeconds, len(keys), fmt.Sprintf("keys=%d bytes=%d", n, total)}
}

var (
	bV1      = []byte("v1")
	bDefault = []byte("default")
	bImages  = []byte("images")
	bLabels  = []byte("labels")
	bTarget  = []byte("target")
	kCreated = []byte("createdat")
	kUpdated = []byte("updatedat")
	kDigest  = []byte("digest")
	kMedia   = []byte("mediatype")
	kSize    = []byte("size")
)

// createImages writes each image record in its own transaction, with the
// bucket layout containerd 1.6 uses: v1/<ns>/images/<name>/{createdat,
// updatedat, labels/, target/{digest,mediatype,size}}.
func createImages(path string, images []image) (*bolt.DB, result) {
	db := openFresh(path)
	t := startTimer()
	for i := range images {
		im := &images[i]
		must(db.Update(func(tx *bolt.Tx) error {
			v1, err := tx.CreateBucketIfNotExists(bV1)
			if err != nil {
				return err
			}
			ns, err := v1.CreateBucketIfNotExists(bDefault)
			if err != nil {
				return err
			}
			all, err := ns.CreateBucketIfNotExists(bImages)
			if err != nil {
				return err
			}
			ib, err := all.CreateBucket(im.name)
			if err != nil {
				return err
			}
			if err := ib.Put(kCreated, im.createdat); err != nil {
				return err
			}
			if err := ib.Put(kUpdated, im.updatedat); err != nil {
				return err
			}
			if len(im.labels) > 0 {
				lb, err := ib.CreateBucket(bLabels)
				if err != nil {
					return err
				}
				for _, kv := range im.labels {
					if err := lb.Put(kv[0], kv[1]); err != nil {
						return err
					}
				}
			}
			tb, err := ib.CreateBucket(bTarget)
			if err != nil {
				return err
			}
			if err := tb.Put(kDigest, im.digest); err != nil {
				return err
			}
			if err := tb.Put(kMedia, im.mediatype); err != nil {
				return err
			}
			return tb.Put(kSize, im.size)
		}))
	}
	r := t.stop(0, "")
	n := 0
	must(db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bV1).Bucket(bDefault).Bucket(bImages).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			n++
		}
		return nil
	}))
	return db, result{r.Seconds, r.CPUSeconds, len(images), fmt.Sprintf("images=%d", n)}
}

// readImagesBack reads every field of every image in one read transaction,
// as a List of all images does.
func readImagesBack(db *bolt.DB) result {
	images, labels, total := 0, 0, 0
	t := startTimer()
	must(db.View(func(tx *bolt.Tx) error {
		all := tx.Bucket(bV1).Bucket(bDefault).Bucket(bImages)
		c := all.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v != nil {
				continue
			}
			ib := all.Bucket(k)
			images++
			total += len(k) + len(ib.Get(kCreated)) + len(ib.Get(kUpdated))
			if lb := ib.Bucket(bLabels); lb != nil {
				lc := lb.Cursor()
				for lk, lv := lc.First(); lk != nil; lk, lv = lc.Next() {
					labels++
					total += len(lk) + len(lv)
				}
			}
			tb := ib.Bucket(bTarget)
			total += len(tb.Get(kDigest)) + len(tb.Get(kMedia)) + len(tb.Get(kSize))
		}
		return nil
	}))
	r := t.stop(0, "")
	return result{r.Seconds, r.CPUSeconds, images, fmt.Sprintf("images=%d labels=%d bytes=%d", images, labels, total)}
}

func main() {
	dataDir := flag.String("data", "", "directory with the key/value files from engine_bench.py")
	dbDir := flag.String("dir", "", "directory for the database files")
	only := flag.String("only", "a,b,c,d,e,f", "comma-separated workloads")
	flag.Parse()
	if *dataDir == "" || *dbDir == "" {
		fail(fmt.Errorf("-data and -dir are required"))
	}
	want := map[string]bool{}
	for _, w := range strings.Split(*only, ",") {
		want[strings.TrimSpace(w)] = true
	}
	data := func(name string) string { return filepath.Join(*dataDir, name) }
	dbPath := func(name string) string { return filepath.Join(*dbDir, "bbolt-"+name+".db") }
	out := map[string]result{}

	if want["a"] {
		out["a"] = load(dbPath("a"), readFixed(data("a.keys"), keyLen), readFixed(data("a.values"), valueLen))
		os.Remove(dbPath("a"))
	}
	if want["b"] || want["c"] || want["d"] {
		keys := readFixed(data("b.keys"), keyLen)
		if !sortedKeys(keys) {
			fail(fmt.Errorf("b.keys is not sorted"))
		}
		out["b"] = load(dbPath("b"), keys, readFixed(data("b.values"), valueLen))
		if want["c"] {
			out["c"] = pointGets(dbPath("b"), readFixed(data("c.keys"), keyLen))
		}
		if want["d"] {
			out["d"] = scan(dbPath("b"))
		}
		os.Remove(dbPath("b"))
	}
	if want["e"] {
		out["e"] = singleTx(dbPath("e"), readFixed(data("e.keys"), keyLen), readFixed(data("e.values"), valueLen))
		os.Remove(dbPath("e"))
	}
	if want["f"] {
		db, r := createImages(dbPath("f"), readImages(data("f.images")))
		out["f_create"] = r
		out["f_read"] = readImagesBack(db)
		must(db.Close())
		os.Remove(dbPath("f"))
	}
	enc := json.NewEncoder(os.Stdout)
	must(enc.Encode(out))
}

func sortedKeys(keys [][]byte) bool {
	for i := 1; i < len(keys); i++ {
		if bytes.Compare(keys[i-1], keys[i]) >= 0 {
			return false
		}
	}
	return true
}
