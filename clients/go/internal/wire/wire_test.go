package wire

import (
	"bytes"
	"math"
	"testing"
)

func TestStreamingBatchEncoderMatchesAppendTSBatch(t *testing.T) {
	pts := []Point{
		{"cpu", "s1", 1, 1.5, []Tag{{"dc", "eu"}}},
		{"cpu", "s2", 2, math.Inf(-1), nil},
		{"mem", "s1", 3, 2, []Tag{{"dc", "eu"}, {"env", "prod"}}},
	}
	var e BatchEncoder
	for round := 0; round < 2; round++ { // the second round reuses the encoder
		e.Reset()
		for _, p := range pts {
			e.Add(p.Metric, p.Entity, p.TimestampMs, p.Value, len(p.Tags))
			for _, tg := range p.Tags {
				e.AddTag(tg.Name, tg.Value)
			}
		}
		got := e.Finish(nil)
		if want := AppendTSBatch(nil, pts); !bytes.Equal(got, want) {
			t.Fatalf("round %d: streaming %x, want %x", round, got, want)
		}
		back, err := DecodeTSBatch(got)
		if err != nil || len(back) != 3 || back[2].Tags[1].Value != "prod" || !math.IsInf(back[1].Value, -1) {
			t.Fatalf("%v %+v", err, back)
		}
	}
}

func FuzzDecodeFrameNeverPanics(f *testing.F) {
	f.Add([]byte{0x70, 0, 4, 0, 0, 0, 1, 0, 0, 0, 1, 0, 'a', 0})
	f.Add(Frame(OpTSPutBufferedBatch, 0, 1, AppendTSBatch(nil, []Point{{"m", "e", 1, 1, nil}})))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = DecodeFrame(b)
	})
}
