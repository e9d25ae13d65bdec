package gorilla

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"strconv"
	"testing"
)

// TestChunksEqualPrometheusGoldenChunks checks every case of
// tests/golden/xor_chunks.json (written by Prometheus' own encoder) byte for byte.
func TestChunksEqualPrometheusGoldenChunks(t *testing.T) {
	raw, err := os.ReadFile("../../../../tests/golden/xor_chunks.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Cases []struct {
			Name       string   `json:"name"`
			Timestamps []int64  `json:"timestamps"`
			ValueBits  []string `json:"value_bits"`
			ChunkHex   string   `json:"chunk_hex"`
			ChunkSHA   string   `json:"chunk_sha256"`
			ChunkLen   int      `json:"chunk_len"`
			Generator  *struct {
				Kind    string `json:"kind"`
				Seed    uint64 `json:"seed"`
				Count   int    `json:"count"`
				StartMs int64  `json:"start_ms"`
			} `json:"generator"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) == 0 {
		t.Fatal("no golden chunks")
	}
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			ch := NewChunk()
			if gen := c.Generator; gen != nil {
				if gen.Kind != "lcg_devops_v1" {
					t.Fatalf("generator %s", gen.Kind)
				}
				// tests/golden/gen/main.go lcgDevops, replayed.
				x, prev := gen.Seed, 0.0
				for i := 0; i < gen.Count; i++ {
					x = x*6364136223846793005 + 1442695040888963407
					r := x >> 33
					jitter := int64(r%401) - 200
					if i == 0 || (r>>10)%4 != 0 {
						prev = float64((r>>12)%100000) / 100
					}
					ch.Append(gen.StartMs+int64(i)*10_000+jitter, prev)
				}
			}
			for i, ts := range c.Timestamps {
				b, err := strconv.ParseUint(c.ValueBits[i], 16, 64)
				if err != nil {
					t.Fatal(err)
				}
				ch.Append(ts, math.Float64frombits(b))
			}
			sum := sha256.Sum256(ch.Bytes())
			if got := hex.EncodeToString(sum[:]); got != c.ChunkSHA || len(ch.Bytes()) != c.ChunkLen {
				t.Fatalf("chunk of %d bytes, sha256 %s; want %d bytes, %s", len(ch.Bytes()), got, c.ChunkLen, c.ChunkSHA)
			}
			if got := hex.EncodeToString(ch.Bytes()); c.ChunkHex != "" && got != c.ChunkHex {
				t.Fatalf("chunk\n %s\nwant\n %s", got, c.ChunkHex)
			}
			if c.Generator == nil && ch.NumSamples() != len(c.Timestamps) {
				t.Fatalf("%d samples", ch.NumSamples())
			}
		})
	}
}
