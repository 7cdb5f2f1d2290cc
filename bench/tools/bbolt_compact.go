// bbolt_compact: the reference for tools_bench.py's compact row. It runs
// go.etcd.io/bbolt's own Compact (what `bbolt compact` does) from SRC into
// a fresh DST with default options (fsync on every commit) and prints one
// JSON line: seconds spent in Compact plus the two file sizes.
//
// Usage: bbolt_compact SRC DST [TX_MAX_BYTES]
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "bbolt_compact: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 3 || len(os.Args) > 4 {
		fail("usage: bbolt_compact SRC DST [TX_MAX_BYTES]")
	}
	srcPath, dstPath := os.Args[1], os.Args[2]
	// 65536 is the default of the bbolt command's -tx-max-size flag.
	txMax := int64(65536)
	if len(os.Args) == 4 {
		n, err := strconv.ParseInt(os.Args[3], 10, 64)
		if err != nil || n < 0 {
			fail("bad TX_MAX_BYTES %q", os.Args[3])
		}
		txMax = n
	}
	if _, err := os.Stat(dstPath); err == nil {
		fail("%s exists; refusing to write into it", dstPath)
	}

	start := time.Now()
	src, err := bolt.Open(srcPath, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		fail("open %s: %v", srcPath, err)
	}
	dst, err := bolt.Open(dstPath, 0o600, nil)
	if err != nil {
		fail("open %s: %v", dstPath, err)
	}
	if err := bolt.Compact(dst, src, txMax); err != nil {
		fail("compact: %v", err)
	}
	if err := dst.Close(); err != nil {
		fail("close %s: %v", dstPath, err)
	}
	if err := src.Close(); err != nil {
		fail("close %s: %v", srcPath, err)
	}
	elapsed := time.Since(start).Seconds()

	srcInfo, err := os.Stat(srcPath)
	if err != nil {
		fail("stat %s: %v", srcPath, err)
	}
	dstInfo, err := os.Stat(dstPath)
	if err != nil {
		fail("stat %s: %v", dstPath, err)
	}
	out, _ := json.Marshal(map[string]interface{}{
		"seconds": elapsed, "src_bytes": srcInfo.Size(), "dst_bytes": dstInfo.Size(), "tx_max_bytes": txMax,
	})
	fmt.Println(string(out))
}
