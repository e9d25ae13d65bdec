// Command gen writes golden Prometheus XOR chunks for the Python Gorilla codec tests.
//
// Usage (from this directory): go run . ../
//
// It writes <outdir>/xor_chunks.json. Every case stores its samples (timestamps
// as int64 milliseconds, values as the hex of their IEEE-754 bits so NaN payloads
// survive) and the exact bytes of chunk.Bytes(). The 65535-point case is too big
// to store, so it records a generator that the Python tests replay plus the
// SHA-256 and length of the chunk.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

const startMs = int64(1_700_000_000_000)

type sample struct {
	t int64
	v uint64 // IEEE-754 bits
}

type goldenCase struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Timestamps  []int64    `json:"timestamps,omitempty"`
	ValueBits   []string   `json:"value_bits,omitempty"`
	ChunkHex    string     `json:"chunk_hex,omitempty"`
	Generator   *generator `json:"generator,omitempty"`
	ChunkSHA256 string     `json:"chunk_sha256"`
	ChunkLen    int        `json:"chunk_len"`
}

// generator describes lcgDevops so Python can replay it exactly.
type generator struct {
	Kind    string `json:"kind"`
	Seed    uint64 `json:"seed"`
	Count   int    `json:"count"`
	StartMs int64  `json:"start_ms"`
}

type goldenFile struct {
	Comment    string       `json:"comment"`
	Prometheus string       `json:"prometheus"`
	Cases      []goldenCase `json:"cases"`
}

// lcg is Knuth's MMIX generator; it is trivially reproducible in Python.
type lcg struct{ x uint64 }

func (l *lcg) next() uint64 {
	l.x = l.x*6364136223846793005 + 1442695040888963407
	return l.x
}

func f(v float64) uint64 { return math.Float64bits(v) }

func regular(n int, step int64, value func(i int) float64) []sample {
	out := make([]sample, n)
	for i := range out {
		out[i] = sample{startMs + int64(i)*step, f(value(i))}
	}
	return out
}

// lcgDevops: 10 s grid with +-200 ms jitter; values k/100 that repeat 1 time in 4.
// Python replays it in tests/unit/test_gorilla.py (kind "lcg_devops_v1").
func lcgDevops(seed uint64, n int, start int64) []sample {
	g := lcg{seed}
	out := make([]sample, n)
	prev := 0.0
	for i := range out {
		r := g.next() >> 33
		jitter := int64(r%401) - 200
		if i == 0 || (r>>10)%4 != 0 {
			prev = float64((r>>12)%100000) / 100
		}
		out[i] = sample{start + int64(i)*10_000 + jitter, f(prev)}
	}
	return out
}

func fromDeltas(t0 int64, deltas []int64, value func(i int) float64) []sample {
	out := []sample{{t0, f(value(0))}}
	t := t0
	for i, d := range deltas {
		t += d
		out = append(out, sample{t, f(value(i + 1))})
	}
	return out
}

// dodBoundaries builds timestamps whose delta-of-delta hits both edges of every bucket.
func dodBoundaries() []sample {
	dods := []int64{
		0, 1, -1, 8192, 8193, -8191, -8192, 65536, 65537, -65535, -65536,
		524288, 524289, -524287, -524288, 1 << 40, -(1 << 40), 0, 0, 17,
	}
	deltas := []int64{10_000}
	d := int64(10_000)
	for _, dod := range dods {
		d += dod
		deltas = append(deltas, d)
	}
	return fromDeltas(startMs, deltas, func(i int) float64 { return float64(i) })
}

func encode(samples []sample) []byte {
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		panic(err)
	}
	for _, s := range samples {
		app.Append(0, s.t, math.Float64frombits(s.v))
	}
	// Read the chunk back with Prometheus' own iterator as a sanity check.
	it := c.Iterator(nil)
	for i := 0; it.Next() != chunkenc.ValNone; i++ {
		t, v := it.At()
		if t != samples[i].t || math.Float64bits(v) != samples[i].v {
			panic(fmt.Sprintf("sample %d does not round-trip", i))
		}
	}
	if it.Err() != nil {
		panic(it.Err())
	}
	return c.Bytes()
}

func stored(name, description string, samples []sample) goldenCase {
	chunk := encode(samples)
	sum := sha256.Sum256(chunk)
	gc := goldenCase{
		Name: name, Description: description,
		ChunkHex: hex.EncodeToString(chunk), ChunkSHA256: hex.EncodeToString(sum[:]), ChunkLen: len(chunk),
	}
	for _, s := range samples {
		gc.Timestamps = append(gc.Timestamps, s.t)
		gc.ValueBits = append(gc.ValueBits, fmt.Sprintf("%016x", s.v))
	}
	return gc
}

func generated(name, description string, gen generator) goldenCase {
	chunk := encode(lcgDevops(gen.Seed, gen.Count, gen.StartMs))
	sum := sha256.Sum256(chunk)
	return goldenCase{
		Name: name, Description: description, Generator: &gen,
		ChunkSHA256: hex.EncodeToString(sum[:]), ChunkLen: len(chunk),
	}
}

func prometheusVersion() string {
	info, ok := debug.ReadBuildInfo()
	if ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/prometheus/prometheus" {
				return dep.Path + " " + dep.Version
			}
		}
	}
	return "unknown"
}

func cases() []goldenCase {
	rnd := lcg{7}
	randomFloat := func(int) float64 { return float64(rnd.next()>>11) / (1 << 53) * 1000 }
	rawBits := lcg{11}
	counter := 0.0
	jitter := lcg{3}

	special := []uint64{
		f(1.5), 0x7ff8000000000abc, 0x7ff8000000000abc, 0x7ff0000000000001, // quiet NaN with payload, signalling NaN
		0x7ff0000000000002, f(math.Inf(1)), f(math.Inf(-1)), f(0), f(math.Copysign(0, -1)), // stale NaN, +-inf, +-0
		0x0000000000000001, 0x000fffffffffffff, 0x8000000000000001, // subnormals
		f(math.MaxFloat64), f(math.SmallestNonzeroFloat64), 0x0010000000000000, f(-1.5), 0xfff8000000000000,
		f(1.5), 0x8000000000000001, f(0), 0xffffffffffffffff, // sigbits == 64 windows
	}
	specialSamples := make([]sample, len(special))
	for i, bits := range special {
		specialSamples[i] = sample{startMs + int64(i)*15_000, bits}
	}

	// Values whose XOR first needs a wide window, then fits it, then needs leading zeros >= 32.
	windows := []uint64{
		0, 0x00000000000000ff, 0x00000000000000f0, 0x0000000100000000, 0x0000000000000001,
		0x8000000000000000, 0x8000000000000001, 0x0000000000000001, 0x00000000ffff0000,
		0x00000000ff000000, 0x3ff0000000000000, 0x3ff0000000000001, 0x3ff0000000000003,
	}
	windowSamples := make([]sample, len(windows))
	for i, bits := range windows {
		windowSamples[i] = sample{startMs + int64(i)*1_000, bits}
	}

	extreme := []sample{
		{math.MinInt64, f(1)}, {math.MaxInt64, f(2)}, {0, f(3)}, {-1, f(4)},
		{math.MaxInt64, f(5)}, {math.MinInt64, f(6)}, {math.MinInt64 + 1, f(7)}, {1, f(8)},
	}

	return []goldenCase{
		stored("regular_10s", "120 points every 10 s, slowly rising gauge",
			regular(120, 10_000, func(i int) float64 { return 0.5 + float64(i)*0.25 })),
		stored("prometheus_120_constant", "120 points every 15 s with one constant value",
			regular(120, 15_000, func(int) float64 { return 42 })),
		stored("jittered_10s", "10 s grid with +-200 ms jitter and 2-decimal gauge values",
			lcgDevops(3, 240, startMs)),
		stored("jittered_small", "10 s grid with +-2 % jitter, values changing every sample",
			fromDeltas(startMs, func() []int64 {
				d := make([]int64, 99)
				for i := range d {
					d[i] = 10_000 + int64(jitter.next()>>33%401) - 200
				}
				return d
			}(), func(i int) float64 { return float64(i%7) * 1.25 })),
		stored("counter", "monotonic integer counter with irregular increments",
			regular(200, 10_000, func(i int) float64 { counter += float64(i * i % 17); return counter })),
		stored("random_floats", "uniform random floats in [0, 1000)", regular(150, 10_000, randomFloat)),
		stored("random_bits", "values with uniformly random IEEE-754 bits (NaNs included)",
			func() []sample {
				out := make([]sample, 150)
				for i := range out {
					out[i] = sample{startMs + int64(i)*10_000, rawBits.next()}
				}
				return out
			}()),
		stored("special_floats", "NaN payloads, signalling and stale NaN, +-inf, +-0, subnormals, extremes",
			specialSamples),
		stored("xor_windows", "XOR deltas that widen, reuse and clamp the leading/trailing window", windowSamples),
		stored("negative_timestamps", "timestamps before the epoch crossing zero",
			fromDeltas(-1_000_000, []int64{250_000, 250_000, 250_000, 250_001, 249_999, 250_000, 250_000},
				func(i int) float64 { return float64(-i) })),
		stored("large_jumps", "gaps whose delta-of-delta needs more than 20 bits, then back",
			fromDeltas(startMs, []int64{10_000, 10_000, 86_400_000, 10_000, 10_000, 5_000_000, 2_000_000, 10_000},
				func(i int) float64 { return float64(i) * 0.1 })),
		stored("negative_dod", "shrinking intervals and timestamps that go backwards",
			fromDeltas(startMs, []int64{10_000, 9_000, 5_000, 1, 0, -1, -10_000, 10_000, 0, 0},
				func(i int) float64 { return 3 })),
		stored("dod_boundaries", "delta-of-delta at both edges of every bucket", dodBoundaries()),
		stored("extreme_timestamps", "int64 extremes: deltas and delta-of-deltas wrap around", extreme),
		stored("one_point", "a single sample", []sample{{startMs, f(36.6)}}),
		stored("two_points", "two samples", []sample{{startMs, f(1)}, {startMs + 10_000, f(2)}}),
		stored("two_points_backwards", "second timestamp before the first", []sample{{startMs, f(1)}, {startMs - 10_000, f(1)}}),
		stored("two_points_same_value", "second value repeats the first", []sample{{0, f(7)}, {1, f(7)}}),
		generated("max_points_65535", "65535 points (the uint16 limit) from the lcg_devops_v1 generator",
			generator{Kind: "lcg_devops_v1", Seed: 42, Count: math.MaxUint16, StartMs: startMs}),
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run . OUTDIR")
		os.Exit(2)
	}
	out := goldenFile{
		Comment:    "Generated by tests/golden/gen (go run . ../); do not edit by hand.",
		Prometheus: prometheusVersion(),
		Cases:      cases(),
	}
	data, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		panic(err)
	}
	path := filepath.Join(os.Args[1], "xor_chunks.json")
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		panic(err)
	}
	fmt.Printf("wrote %d cases to %s (%s)\n", len(out.Cases), path, out.Prometheus)
}
