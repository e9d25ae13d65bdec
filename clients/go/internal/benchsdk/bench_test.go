package benchsdk

import (
	"os"
	"testing"
)

func liveStack(b *testing.B) *Stack {
	path := os.Getenv("THEMIS_STACK")
	if path == "" {
		b.Skip("THEMIS_STACK is not set")
	}
	s, err := ReadStack(path)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func report(b *testing.B, perSec float64) {
	b.ReportMetric(perSec, "points/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPutBufferedBinary: b.N points through the binary door's writer.
func BenchmarkPutBufferedBinary(b *testing.B) {
	s := liveStack(b)
	g := NewGen(max(b.N, 5000))
	b.ResetTimer()
	perSec, allocs, _, err := SDK("themis::addr="+s.BinaryAddr+";api_key="+s.Keys["writer"], g, 5000, 8)
	if err != nil {
		b.Fatal(err)
	}
	report(b, perSec)
	b.ReportMetric(allocs, "allocs/point")
}

// BenchmarkPutBufferedHTTP: b.N points through the HTTP door's writer.
func BenchmarkPutBufferedHTTP(b *testing.B) {
	s := liveStack(b)
	g := NewGen(max(b.N, 5000))
	b.ResetTimer()
	perSec, allocs, _, err := SDK("http::addr="+s.HTTPAddr+";api_key="+s.Keys["writer"], g, 5000, 8)
	if err != nil {
		b.Fatal(err)
	}
	report(b, perSec)
	b.ReportMetric(allocs, "allocs/point")
}

// BenchmarkRawProtocol: the same points pre-encoded, pipelined on one connection.
func BenchmarkRawProtocol(b *testing.B) {
	s := liveStack(b)
	g := NewGen(max(b.N, 5000))
	b.ResetTimer()
	perSec, err := Raw(s.BinaryAddr, s.Keys["writer"], g, 5000, 8)
	if err != nil {
		b.Fatal(err)
	}
	report(b, perSec)
}
