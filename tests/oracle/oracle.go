// Command oracle drives the real go.etcd.io/bbolt so the test suite can
// compare the boltimages engine against it. It is built at test time by
// tests/oracle/__init__.py and never committed as a binary.
//
// Subcommands (all print to stdout; exit status 0 means success):
//
//	check FILE              run tx.Check in a read-only tx, one problem a line; exit 1 if any
//	dump FILE               canonical logical dump (format below)
//	apply FILE [flags]      apply a JSON-lines op stream from stdin, one JSON result line per op
//	gen FILE --seed S [...] write a randomized database
//	info FILE               page size, txid, freelist mode as JSON
//
// Dump format, one record a line, depth first in key order:
//
//	B <path> <sequence>
//	K <path> <key hex> <value>
//
// where <path> is the bucket's name path, each name in hex, joined by "/",
// and <value> is the value in hex when it is at most 64 bytes long, else
// "#<length>:<sha256 hex>" so multi-megabyte values stay cheap to compare.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "oracle: "+format+"\n", args...)
	os.Exit(2)
}

func openDB(path string, readOnly bool, pageSize int, noFreelistSync bool) *bolt.DB {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        5 * time.Second,
		ReadOnly:       readOnly,
		PageSize:       pageSize,
		NoFreelistSync: noFreelistSync,
	})
	if err != nil {
		die("open %s: %v", path, err)
	}
	return db
}

// valueRepr is the dump/result representation of a value.
func valueRepr(v []byte) string {
	if len(v) <= 64 {
		return hex.EncodeToString(v)
	}
	sum := sha256.Sum256(v)
	return fmt.Sprintf("#%d:%s", len(v), hex.EncodeToString(sum[:]))
}

func joinPath(path []string) string { return strings.Join(path, "/") }

func dumpBucket(w *bufio.Writer, b *bolt.Bucket, path []string) {
	fmt.Fprintf(w, "B %s %d\n", joinPath(path), b.Sequence())
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			if child := b.Bucket(k); child != nil {
				dumpBucket(w, child, append(append([]string{}, path...), hex.EncodeToString(k)))
				continue
			}
		}
		fmt.Fprintf(w, "K %s %s %s\n", joinPath(path), hex.EncodeToString(k), valueRepr(v))
	}
}

func dumpTx(w *bufio.Writer, tx *bolt.Tx) {
	_ = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		dumpBucket(w, b, []string{hex.EncodeToString(name)})
		return nil
	})
}

func cmdDump(args []string) {
	if len(args) != 1 {
		die("usage: dump FILE")
	}
	db := openDB(args[0], true, 0, false)
	defer db.Close()
	w := bufio.NewWriter(os.Stdout)
	if err := db.View(func(tx *bolt.Tx) error { dumpTx(w, tx); return nil }); err != nil {
		die("view: %v", err)
	}
	w.Flush()
}

func checkDB(db *bolt.DB) []string {
	var problems []string
	err := db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			problems = append(problems, e.Error())
		}
		return nil
	})
	if err != nil {
		problems = append(problems, "view: "+err.Error())
	}
	return problems
}

func cmdCheck(args []string) {
	if len(args) != 1 {
		die("usage: check FILE")
	}
	db := openDB(args[0], true, 0, false)
	problems := checkDB(db)
	db.Close()
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
}

func cmdInfo(args []string) {
	if len(args) != 1 {
		die("usage: info FILE")
	}
	db := openDB(args[0], true, 0, false)
	defer db.Close()
	out := map[string]interface{}{}
	_ = db.View(func(tx *bolt.Tx) error {
		out["txid"] = tx.ID()
		out["size"] = tx.Size()
		out["page_size"] = db.Info().PageSize
		return nil
	})
	enc, _ := json.Marshal(out)
	fmt.Println(string(enc))
}

// fileThenFlags parses "FILE [flags]" (Go's flag package stops at the first
// positional argument, so the file comes first and is split off by hand).
func fileThenFlags(fs *flag.FlagSet, args []string, usage string) string {
	if len(args) < 1 || strings.HasPrefix(args[0], "-") {
		die("usage: %s", usage)
	}
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 0 {
		die("usage: %s", usage)
	}
	return args[0]
}

// ---- apply ----

// op is one line of the operation stream. Paths and keys are hex. A value is
// given either literally (Value) or as a generated pattern of VLen bytes from
// VSeed, so multi-megabyte values do not bloat the stream.
type op struct {
	Op    string     `json:"op"`
	Path  []string   `json:"path"`
	Key   string     `json:"key"`
	Value *string    `json:"value"`
	VLen  int        `json:"vlen"`
	VSeed int64      `json:"vseed"`
	N     uint64     `json:"n"`
	Moves [][]string `json:"moves"`
}

// patternValue must match tests/oracle/__init__.py pattern_value: the
// sha256 of the decimal seed, repeated and cut to n bytes.
func patternValue(seed int64, n int) []byte {
	block := sha256.Sum256([]byte(strconv.FormatInt(seed, 10)))
	out := make([]byte, n)
	for i := 0; i < n; i += len(block) {
		copy(out[i:], block[:])
	}
	return out
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		die("bad hex %q", s)
	}
	return b
}

func (o *op) value() []byte {
	if o.Value != nil {
		return mustHex(*o.Value)
	}
	return patternValue(o.VSeed, o.VLen)
}

var errNames = map[error]string{
	bolt.ErrBucketNotFound:     "BucketNotFound",
	bolt.ErrBucketExists:       "BucketExists",
	bolt.ErrBucketNameRequired: "BucketNameRequired",
	bolt.ErrKeyRequired:        "KeyRequired",
	bolt.ErrKeyTooLarge:        "KeyTooLarge",
	bolt.ErrValueTooLarge:      "ValueTooLarge",
	bolt.ErrIncompatibleValue:  "IncompatibleValue",
	bolt.ErrTxClosed:           "TxClosed",
	bolt.ErrTxNotWritable:      "TxNotWritable",
}

type result map[string]interface{}

func errResult(err error) result {
	if name, ok := errNames[err]; ok {
		return result{"e": name}
	}
	die("unexpected bbolt error: %v", err)
	return nil
}

var errNoBucket = errors.New("no bucket")

// resolve walks a bucket path; an empty path is not a bucket (top level
// operations go through the tx).
func resolve(tx *bolt.Tx, path []string) (*bolt.Bucket, error) {
	if len(path) == 0 {
		return nil, errNoBucket
	}
	b := tx.Bucket(mustHex(path[0]))
	for _, name := range path[1:] {
		if b == nil {
			break
		}
		b = b.Bucket(mustHex(name))
	}
	if b == nil {
		return nil, bolt.ErrBucketNotFound
	}
	return b, nil
}

func kvResult(k, v []byte, isBucket bool) interface{} {
	if k == nil {
		return nil
	}
	if isBucket {
		return []interface{}{hex.EncodeToString(k), nil}
	}
	return []interface{}{hex.EncodeToString(k), valueRepr(v)}
}

func cursorOps(b *bolt.Bucket, moves [][]string) result {
	c := b.Cursor()
	var out []interface{}
	var k, v []byte
	for _, m := range moves {
		switch m[0] {
		case "first":
			k, v = c.First()
		case "last":
			k, v = c.Last()
		case "next":
			k, v = c.Next()
		case "prev":
			k, v = c.Prev()
		case "seek":
			k, v = c.Seek(mustHex(m[1]))
		case "delete":
			if err := c.Delete(); err != nil {
				out = append(out, errResult(err)["e"])
			} else {
				out = append(out, "deleted")
			}
			continue
		default:
			die("unknown cursor move %q", m[0])
		}
		isBucket := k != nil && v == nil && b.Bucket(k) != nil
		out = append(out, kvResult(k, v, isBucket))
	}
	return result{"r": out}
}

// applyOne runs one data operation in the write tx.
func applyOne(tx *bolt.Tx, o *op) result {
	switch o.Op {
	case "create_bucket", "create_bucket_if_not_exists", "delete_bucket":
		name := mustHex(o.Path[len(o.Path)-1])
		parent := o.Path[:len(o.Path)-1]
		var err error
		if len(parent) == 0 {
			switch o.Op {
			case "create_bucket":
				_, err = tx.CreateBucket(name)
			case "create_bucket_if_not_exists":
				_, err = tx.CreateBucketIfNotExists(name)
			default:
				err = tx.DeleteBucket(name)
			}
		} else {
			b, rerr := resolve(tx, parent)
			if rerr != nil {
				return errResult(rerr)
			}
			switch o.Op {
			case "create_bucket":
				_, err = b.CreateBucket(name)
			case "create_bucket_if_not_exists":
				_, err = b.CreateBucketIfNotExists(name)
			default:
				err = b.DeleteBucket(name)
			}
		}
		if err != nil {
			return errResult(err)
		}
		return result{"r": nil}
	}
	b, err := resolve(tx, o.Path)
	if err != nil {
		return errResult(err)
	}
	switch o.Op {
	case "put":
		if err := b.Put(mustHex(o.Key), o.value()); err != nil {
			return errResult(err)
		}
		return result{"r": nil}
	case "delete":
		if err := b.Delete(mustHex(o.Key)); err != nil {
			return errResult(err)
		}
		return result{"r": nil}
	case "get":
		v := b.Get(mustHex(o.Key))
		if v == nil {
			return result{"r": nil}
		}
		return result{"r": valueRepr(v)}
	case "sequence":
		return result{"r": b.Sequence()}
	case "set_sequence":
		if err := b.SetSequence(o.N); err != nil {
			return errResult(err)
		}
		return result{"r": nil}
	case "next_sequence":
		n, err := b.NextSequence()
		if err != nil {
			return errResult(err)
		}
		return result{"r": n}
	case "cursor":
		return cursorOps(b, o.Moves)
	}
	die("unknown op %q", o.Op)
	return nil
}

func cmdApply(args []string) {
	fs := flag.NewFlagSet("apply", flag.ExitOnError)
	pageSize := fs.Int("page-size", 0, "page size for a new file")
	noSync := fs.Bool("no-freelist-sync", false, "NoFreelistSync")
	path := fileThenFlags(fs, args, "apply FILE [--page-size N] [--no-freelist-sync] < ops")
	db := openDB(path, false, *pageSize, *noSync)
	defer db.Close()
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	var tx *bolt.Tx
	emit := func(r result) {
		enc, _ := json.Marshal(r)
		w.Write(enc)
		w.WriteByte('\n')
	}
	for {
		line, err := in.ReadBytes('\n')
		if len(strings.TrimSpace(string(line))) == 0 {
			if err == io.EOF {
				break
			}
			if err != nil {
				die("read: %v", err)
			}
			continue
		}
		var o op
		if jerr := json.Unmarshal(line, &o); jerr != nil {
			die("bad op line %q: %v", line, jerr)
		}
		switch o.Op {
		case "commit", "rollback":
			if tx == nil {
				emit(result{"r": nil})
				continue
			}
			var cerr error
			if o.Op == "commit" {
				cerr = tx.Commit()
			} else {
				cerr = tx.Rollback()
			}
			tx = nil
			if cerr != nil {
				die("%s: %v", o.Op, cerr)
			}
			emit(result{"r": nil})
		case "check":
			if tx != nil {
				die("check inside a write tx")
			}
			problems := checkDB(db)
			if problems == nil {
				problems = []string{}
			}
			emit(result{"r": problems})
		default:
			if tx == nil {
				tx, err = db.Begin(true)
				if err != nil {
					die("begin: %v", err)
				}
			}
			emit(applyOne(tx, &o))
		}
		if err == io.EOF {
			break
		}
	}
	if tx != nil {
		if err := tx.Commit(); err != nil {
			die("final commit: %v", err)
		}
	}
}

// ---- gen ----

// genState tracks existing bucket paths so the generator can aim its
// operations at real buckets.
type genState struct {
	r       *rand.Rand
	buckets [][]byte // encoded paths: names joined with 0x00 length prefixes
}

func randKey(r *rand.Rand) []byte {
	n := 1 + r.Intn(24)
	if r.Intn(50) == 0 {
		n = 100 + r.Intn(3000) // long keys make branch pages overflow
	}
	k := make([]byte, n)
	r.Read(k)
	return k
}

func randValue(r *rand.Rand, big bool) []byte {
	var n int
	switch x := r.Intn(100); {
	case x < 5:
		n = 0
	case x < 80:
		n = r.Intn(200)
	case x < 97:
		n = 200 + r.Intn(6000)
	default:
		n = 10000 + r.Intn(60000)
		if big {
			n = 1<<20 + r.Intn(3<<20)
		}
	}
	v := make([]byte, n)
	r.Read(v)
	return v
}

// pickBucket returns a random existing bucket (possibly nested).
func pickBucket(tx *bolt.Tx, r *rand.Rand) *bolt.Bucket {
	var names [][]byte
	_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		names = append(names, append([]byte{}, name...))
		return nil
	})
	if len(names) == 0 {
		return nil
	}
	b := tx.Bucket(names[r.Intn(len(names))])
	for depth := 0; depth < 6 && r.Intn(3) != 0; depth++ {
		var subs [][]byte
		_ = b.ForEach(func(k, v []byte) error {
			if v == nil {
				subs = append(subs, append([]byte{}, k...))
			}
			return nil
		})
		if len(subs) == 0 {
			break
		}
		b = b.Bucket(subs[r.Intn(len(subs))])
	}
	return b
}

func randomKeyIn(b *bolt.Bucket, r *rand.Rand) []byte {
	c := b.Cursor()
	k, _ := c.Seek(randKey(r))
	if k == nil {
		k, _ = c.First()
	}
	if k == nil {
		return nil
	}
	return append([]byte{}, k...)
}

func cmdGen(args []string) {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	seed := fs.Int64("seed", 1, "random seed")
	pageSize := fs.Int("page-size", 0, "page size")
	noSync := fs.Bool("no-freelist-sync", false, "NoFreelistSync")
	big := fs.Bool("big-values", false, "include multi-megabyte values")
	largeFreelist := fs.Bool("large-freelist", false, "leave more than 0xFFFF free pages")
	txs := fs.Int("txs", 30, "transactions")
	opsPerTx := fs.Int("ops", 200, "operations per transaction")
	path := fileThenFlags(fs, args, "gen FILE --seed S [...]")
	r := rand.New(rand.NewSource(*seed))
	db := openDB(path, false, *pageSize, *noSync)
	defer db.Close()
	for t := 0; t < *txs; t++ {
		err := db.Update(func(tx *bolt.Tx) error {
			// Deletions happen first and only on buckets untouched so far in
			// this tx: bbolt 1.3.6 leaks pages when deleting a bucket whose
			// node was written earlier in the same tx.
			if t > 2 && r.Intn(4) == 0 {
				if b := pickBucket(tx, r); b != nil {
					// Delete a sub-bucket of b if it has one, else a top-level bucket.
					var sub []byte
					_ = b.ForEach(func(k, v []byte) error {
						if v == nil && sub == nil && r.Intn(2) == 0 {
							sub = append([]byte{}, k...)
						}
						return nil
					})
					if sub != nil {
						if err := b.DeleteBucket(sub); err != nil {
							return err
						}
					}
				}
			}
			for i := 0; i < *opsPerTx; i++ {
				x := r.Intn(100)
				switch {
				case x < 6:
					name := make([]byte, 1+r.Intn(8))
					r.Read(name)
					if b := pickBucket(tx, r); b != nil && r.Intn(3) != 0 {
						if _, err := b.CreateBucketIfNotExists(name); err != nil && err != bolt.ErrIncompatibleValue {
							return err
						}
					} else if _, err := tx.CreateBucketIfNotExists(name); err != nil {
						return err
					}
				case x < 75:
					b := pickBucket(tx, r)
					if b == nil {
						continue
					}
					if err := b.Put(randKey(r), randValue(r, *big)); err != nil && err != bolt.ErrIncompatibleValue {
						return err
					}
				case x < 95:
					b := pickBucket(tx, r)
					if b == nil {
						continue
					}
					if k := randomKeyIn(b, r); k != nil {
						if err := b.Delete(k); err != nil && err != bolt.ErrIncompatibleValue {
							return err
						}
					}
				default:
					if b := pickBucket(tx, r); b != nil {
						if r.Intn(2) == 0 {
							if _, err := b.NextSequence(); err != nil {
								return err
							}
						} else if err := b.SetSequence(r.Uint64() >> uint(r.Intn(64))); err != nil {
							return err
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			die("gen tx %d: %v", t, err)
		}
	}
	if *largeFreelist {
		// One value spanning more than 0xFFFF pages, deleted in the next
		// tx, leaves that many ids on the freelist.
		ps := db.Info().PageSize
		n := (0x10000 + 64) * ps
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("large-freelist"))
			if err != nil {
				return err
			}
			v := make([]byte, n)
			binary.LittleEndian.PutUint64(v, uint64(*seed))
			return b.Put([]byte("huge"), v)
		})
		if err == nil {
			err = db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("large-freelist")).Delete([]byte("huge"))
			})
		}
		if err == nil {
			// A small commit afterwards so the freed ids are in the list written.
			err = db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("large-freelist")).Put([]byte("after"), []byte("x"))
			})
		}
		if err != nil {
			die("large freelist: %v", err)
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		die("usage: oracle check|dump|apply|gen|info ...")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "check":
		cmdCheck(args)
	case "dump":
		cmdDump(args)
	case "apply":
		cmdApply(args)
	case "gen":
		cmdGen(args)
	case "info":
		cmdInfo(args)
	default:
		die("unknown subcommand %q", os.Args[1])
	}
}
