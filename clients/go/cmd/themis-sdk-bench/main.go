// Command themis-sdk-bench prints one JSON object with the Go SDK's write
// throughput over both doors and the raw binary protocol's, measured in the
// same run against a live stack:
//
//	go run ./cmd/themis-sdk-bench --stack /tmp/themis-stack/stack.json --size quick
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/themisdb/go-client/internal/benchsdk"
)

func main() {
	path := flag.String("stack", os.Getenv("THEMIS_STACK"), "path of stack.json (default $THEMIS_STACK)")
	size := flag.String("size", "quick", "smoke, quick or full")
	batch := flag.Int("batch", 5000, "points per batch (auto_flush_rows)")
	inFlight := flag.Int("in-flight", 8, "batches in flight, for the SDK and the raw run alike")
	rounds := flag.Int("rounds", 0, "interleaved rounds, best kept (default: 2 for smoke, 3 otherwise)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run here")
	memprofile := flag.String("memprofile", "", "write an allocation profile after the run here")
	flag.Parse()
	if *memprofile != "" {
		runtime.MemProfileRate = 4096
		defer func() {
			if f, err := os.Create(*memprofile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if *path == "" {
		fmt.Fprintln(os.Stderr, "themis-sdk-bench: --stack or THEMIS_STACK is required")
		os.Exit(2)
	}
	s, err := benchsdk.ReadStack(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "themis-sdk-bench:", err)
		os.Exit(1)
	}
	if *rounds == 0 {
		*rounds = 3
		if *size == "smoke" {
			*rounds = 2
		}
	}
	r, err := benchsdk.Run(s, *size, *batch, *inFlight, *rounds)
	if err != nil {
		fmt.Fprintln(os.Stderr, "themis-sdk-bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}
