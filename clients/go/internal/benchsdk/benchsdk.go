// Package benchsdk measures the SDK's write throughput against a live stack, side
// by side with the raw binary protocol (the same points pre-encoded as
// TS_PUT_BUFFERED_BATCH frames, pipelined over one TCP connection).
package benchsdk

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"time"

	themis "github.com/themisdb/go-client"
	"github.com/themisdb/go-client/internal/wire"
)

// Stack is the part of stack.json the benchmark reads.
type Stack struct {
	HTTPAddr   string            `json:"http_addr"`
	BinaryAddr string            `json:"binary_addr"`
	Keys       map[string]string `json:"keys"`
}

// ReadStack reads stack.json.
func ReadStack(path string) (*Stack, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Stack
	return &s, json.Unmarshal(raw, &s)
}

// Sizes maps a size name to its point count.
var Sizes = map[string]int{"smoke": 50_000, "quick": 500_000, "full": 2_000_000}

// Result is the one JSON object the benchmark prints.
type Result struct {
	Benchmark          string                    `json:"benchmark"`
	Lang               string                    `json:"lang"`
	Size               string                    `json:"size"`
	Points             int                       `json:"points"`
	BatchSize          int                       `json:"batch_size"`
	InFlight           int                       `json:"in_flight"`
	Rounds             int                       `json:"rounds"`
	PointsPerSecBinary float64                   `json:"points_per_s_binary"`
	PointsPerSecHTTP   float64                   `json:"points_per_s_http"`
	RawProtocolPerSec  float64                   `json:"raw_protocol_points_per_s"`
	AllocsPerPoint     float64                   `json:"allocs_per_point"`
	BytesAllocPerPoint float64                   `json:"bytes_alloc_per_point"`
	BinaryVsRaw        float64                   `json:"binary_vs_raw"`
	Definitions        map[string]string         `json:"definitions"`
	Goals              map[string]map[string]any `json:"goals"`
}

var definitions = map[string]string{
	"points_per_s_binary":       "points per second through TimeSeriesClient.PutBuffered on a themis:: client, from the first Write to Flush returning (every batch acknowledged)",
	"points_per_s_http":         "the same through an http:: client",
	"raw_protocol_points_per_s": "the same points pre-encoded as TS_PUT_BUFFERED_BATCH frames of batch_size points, pipelined over one TCP connection with in_flight unanswered, until every WriteAck arrived",
	"binary_vs_raw":             "points_per_s_binary / raw_protocol_points_per_s",
	"allocs_per_point":          "heap allocations per point in the binary run (runtime.MemStats.Mallocs)",
	"bytes_alloc_per_point":     "heap bytes allocated per point in the binary run",
}

// Gen makes point i of a run: 100 series of a metric unique to the run.
type Gen struct {
	N        int
	metric   string
	base     int64
	entities []string
	tags     map[string]string
}

// NewGen returns the generator of a run of n points.
func NewGen(n int) *Gen {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	g := &Gen{N: n, metric: "go_bench_" + hex.EncodeToString(b), base: time.Now().UnixMilli() - int64(n), tags: map[string]string{"dc": "eu"}}
	for i := 0; i < 100; i++ {
		g.entities = append(g.entities, fmt.Sprintf("host%03d", i))
	}
	return g
}

// Point is point i.
func (g *Gen) Point(i int) themis.DataPoint {
	return themis.DataPoint{Metric: g.metric, Entity: g.entities[i%100], TimestampMs: g.base + int64(i/100), Value: float64(i) * 0.5, Tags: g.tags}
}

// SDK writes points with the buffered writer through conn and returns points/s
// and the allocations per point during the run.
func SDK(conn string, g *Gen, batch, inFlight int) (float64, float64, float64, error) {
	c, err := themis.New(conn, themis.WithAutoFlush(true, batch, 8<<20, 0), themis.WithMaxBatchBytes(4<<20),
		themis.WithMaxBuffer(g.N+1, 1<<30), themis.WithMaxInFlightBatches(inFlight))
	if err != nil {
		return 0, 0, 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// Open the connection before timing (HELLO/AUTH or the TCP handshake).
	if _, err := c.TimeSeries.GetBufferStats(ctx); err != nil {
		return 0, 0, 0, err
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	start := time.Now()
	for i := 0; i < g.N; i++ {
		if err := c.TimeSeries.PutBuffered(ctx, g.Point(i)); err != nil {
			return 0, 0, 0, err
		}
	}
	if err := c.TimeSeries.Flush(ctx); err != nil {
		return 0, 0, 0, err
	}
	el := time.Since(start)
	runtime.ReadMemStats(&m1)
	if err := c.Close(ctx); err != nil {
		return 0, 0, 0, err
	}
	n := float64(g.N)
	return n / el.Seconds(), float64(m1.Mallocs-m0.Mallocs) / n, float64(m1.TotalAlloc-m0.TotalAlloc) / n, nil
}

// Raw sends the same points pre-encoded as TS_PUT_BUFFERED_BATCH frames of batch
// points, pipelined over one TCP connection with at most inFlight unanswered,
// and returns points/s once every WriteAck arrived.
func Raw(addr, key string, g *Gen, batch, inFlight int) (float64, error) {
	var frames [][]byte
	var enc wire.BatchEncoder
	for i := 0; i < g.N; i += batch {
		j := min(i+batch, g.N)
		enc.Reset()
		for k := i; k < j; k++ {
			p := g.Point(k)
			enc.Add(p.Metric, p.Entity, p.TimestampMs, p.Value, len(p.Tags))
			for k, v := range p.Tags {
				enc.AddTag(k, v)
			}
		}
		payload := enc.Finish(nil)
		frames = append(frames, wire.Frame(wire.OpTSPutBufferedBatch, 0, uint32(len(frames)+3), payload))
	}
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	br := bufio.NewReaderSize(nc, 64<<10)
	read := func() (byte, []byte, error) {
		var h [wire.HeaderSize]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return 0, nil, err
		}
		hd, _ := wire.ParseHeader(h[:])
		p := make([]byte, hd.Length)
		_, err := io.ReadFull(br, p)
		return hd.Opcode, p, err
	}
	if _, err := nc.Write(wire.Frame(wire.OpHello, 0, 1, wire.AppendHello(nil, wire.HelloRequest{MinVersion: 1, MaxVersion: 1, ClientID: "raw-bench"}))); err != nil {
		return 0, err
	}
	if op, p, err := read(); err != nil || op == wire.OpError {
		return 0, fmt.Errorf("HELLO: %v %x", err, p)
	}
	if _, err := nc.Write(wire.Frame(wire.OpAuth, 0, 2, wire.AppendAuth(nil, "api_key", []byte(key)))); err != nil {
		return 0, err
	}
	if op, p, err := read(); err != nil || op == wire.OpError {
		return 0, fmt.Errorf("AUTH: %v %x", err, p)
	}
	window := make(chan struct{}, inFlight)
	errc := make(chan error, 1)
	start := time.Now()
	go func() {
		for range frames {
			op, p, err := read()
			if err == nil && op == wire.OpError {
				e, _ := wire.DecodeError(p)
				err = fmt.Errorf("ERROR %d: %s", e.Code, e.Message)
			}
			if err != nil {
				errc <- err
				return
			}
			<-window
		}
		errc <- nil
	}()
	bw := bufio.NewWriterSize(nc, 256<<10)
	for _, f := range frames {
		window <- struct{}{}
		if _, err := bw.Write(f); err != nil {
			return 0, err
		}
		if len(window) == cap(window) || bw.Buffered() > 128<<10 {
			if err := bw.Flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	if err := <-errc; err != nil {
		return 0, err
	}
	return float64(g.N) / time.Since(start).Seconds(), nil
}

// Run measures all three, interleaved (binary, raw, HTTP) for rounds rounds on
// fresh points each time, and keeps each one's best round.
func Run(s *Stack, size string, batch, inFlight, rounds int) (*Result, error) {
	n, ok := Sizes[size]
	if !ok {
		return nil, fmt.Errorf("size %q: smoke, quick or full", size)
	}
	r := &Result{Benchmark: "sdk", Lang: "go", Size: size, Points: n, BatchSize: batch, InFlight: inFlight, Rounds: rounds, Definitions: definitions}
	for i := 0; i < max(rounds, 1); i++ {
		bin, allocs, bytes, err := SDK("themis::addr="+s.BinaryAddr+";api_key="+s.Keys["writer"], NewGen(n), batch, inFlight)
		if err != nil {
			return nil, fmt.Errorf("binary: %w", err)
		}
		raw, err := Raw(s.BinaryAddr, s.Keys["writer"], NewGen(n), batch, inFlight)
		if err != nil {
			return nil, fmt.Errorf("raw: %w", err)
		}
		web, _, _, err := SDK("http::addr="+s.HTTPAddr+";api_key="+s.Keys["writer"], NewGen(n), batch, inFlight)
		if err != nil {
			return nil, fmt.Errorf("http: %w", err)
		}
		if bin > r.PointsPerSecBinary {
			r.PointsPerSecBinary, r.AllocsPerPoint, r.BytesAllocPerPoint = bin, allocs, bytes
		}
		r.RawProtocolPerSec = max(r.RawProtocolPerSec, raw)
		r.PointsPerSecHTTP = max(r.PointsPerSecHTTP, web)
	}
	if r.RawProtocolPerSec > 0 {
		r.BinaryVsRaw = r.PointsPerSecBinary / r.RawProtocolPerSec
	}
	r.Goals = map[string]map[string]any{"binary_vs_raw": {"at_least": 0.8, "value": r.BinaryVsRaw, "met": r.BinaryVsRaw >= 0.8}}
	return r, nil
}
