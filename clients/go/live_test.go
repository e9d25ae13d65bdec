package themis_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	themis "github.com/themisdb/go-client"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func queryCount(ctx context.Context, c *themis.Client, metric, entity string, tags map[string]string) (*themis.QueryResult, error) {
	return c.TimeSeries.Query(ctx, themis.Query{Metric: metric, Entity: entity, Tags: tags})
}

func wantPoints(t *testing.T, c *themis.Client, metric, entity string, tags map[string]string, want map[int64]float64) {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	eventually(t, 30*time.Second, func() error {
		r, err := queryCount(ctx, c, metric, entity, tags)
		if err != nil {
			return err
		}
		if r.Count != len(want) || len(r.Points) != len(want) {
			return fmt.Errorf("%d points stored, want %d", r.Count, len(want))
		}
		for _, p := range r.Points {
			v, ok := want[p.TimestampMs]
			if !ok || (float64(p.Value) != v && !(math.IsNaN(v) && math.IsNaN(float64(p.Value)))) {
				return fmt.Errorf("point %d=%v not written", p.TimestampMs, p.Value)
			}
		}
		return nil
	})
}

func TestTimeSeriesMethodsStoreTheSamePointsOnBothDoors(t *testing.T) {
	for _, d := range doors {
		t.Run(d.name, func(t *testing.T) {
			c := newClient(t, d, "admin")
			ctx := ctxT(t, 60*time.Second)
			metric := "go_ts_" + d.name + "_" + suffix()
			tags := map[string]string{"dc": "eu", "env": "test"}
			base := time.Now().UnixMilli() - 10_000
			want := map[int64]float64{}
			// PutBuffered through the writer, then Flush.
			for i := 0; i < 10; i++ {
				if err := c.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: metric, Entity: "e1", TimestampMs: base + int64(i), Value: float64(i) + 0.5, Tags: tags}); err != nil {
					t.Fatal(err)
				}
				want[base+int64(i)] = float64(i) + 0.5
			}
			if err := c.TimeSeries.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			// PutBufferedBatch queued, single and batch requests, durable Put and PutBatch.
			batch := []themis.DataPoint{}
			for i := 10; i < 15; i++ {
				batch = append(batch, themis.DataPoint{Metric: metric, Entity: "e1", TimestampMs: base + int64(i), Value: float64(i), Tags: tags})
				want[base+int64(i)] = float64(i)
			}
			if err := c.TimeSeries.PutBufferedBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			if _, err := c.TimeSeries.PutBufferedNow(ctx, themis.DataPoint{Metric: metric, Entity: "e1", TimestampMs: base + 20, Value: 20, Tags: tags}); err != nil {
				t.Fatal(err)
			}
			want[base+20] = 20
			if _, err := c.TimeSeries.PutBatchNow(ctx, []themis.DataPoint{{Metric: metric, Entity: "e1", TimestampMs: base + 21, Value: 21, Tags: tags}}); err != nil {
				t.Fatal(err)
			}
			want[base+21] = 21
			if err := c.TimeSeries.Put(ctx, themis.DataPoint{Metric: metric, Entity: "e1", TimestampMs: base + 30, Value: -1.25, Tags: tags}); err != nil {
				t.Fatal(err)
			}
			want[base+30] = -1.25
			if err := c.TimeSeries.PutBatch(ctx, []themis.DataPoint{{Metric: metric, Entity: "e1", TimestampMs: base + 31, Value: 31, Tags: tags}}); err != nil {
				t.Fatal(err)
			}
			want[base+31] = 31
			if err := c.TimeSeries.FlushBuffer(ctx); err != nil {
				t.Fatal(err)
			}
			wantPoints(t, c, metric, "e1", tags, want)

			st, err := c.TimeSeries.GetBufferStats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Workers < 1 || st.PointsFlushed < 1 || st.Raw["points_flushed"] == nil {
				t.Fatalf("stats %+v", st)
			}
			ws := c.TimeSeries.WriterStats()
			if ws.Queued != 15 || ws.Sent != 15 || ws.Failed != 0 || ws.Pending != 0 {
				t.Fatalf("writer stats %+v", ws)
			}
		})
	}
}

func vec(dim int, seed float32) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = seed + float32(i)*0.01
	}
	return v
}

func TestVectorMethodsStoreTheSameVectorsOnBothDoors(t *testing.T) {
	for _, d := range doors {
		t.Run(d.name, func(t *testing.T) {
			s := needStack(t)
			c := newClient(t, d, "admin")
			ctx := ctxT(t, 90*time.Second)
			tag := "go_vec_" + d.name + "_" + suffix()
			md := map[string]any{"run": tag}
			pk := func(i int) string { return fmt.Sprintf("%s_%d", tag, i) }
			for i := 0; i < 4; i++ {
				if err := c.Vectors.AddBuffered(ctx, themis.Vector{PK: pk(i), Vector: vec(s.Dimension, float32(i+1)), Metadata: md}); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Vectors.AddBufferedBatch(ctx, []themis.Vector{{PK: pk(4), Vector: vec(s.Dimension, 5), Metadata: md}}); err != nil {
				t.Fatal(err)
			}
			if err := c.Vectors.FlushBuffer(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.Vectors.UpdateBuffered(ctx, themis.Vector{PK: pk(0), Vector: vec(s.Dimension, -3), Metadata: map[string]any{"run": tag, "updated": "yes"}}); err != nil {
				t.Fatal(err)
			}
			if err := c.Vectors.UpdateBufferedBatch(ctx, []themis.Vector{{PK: pk(1), Vector: vec(s.Dimension, 2), Metadata: map[string]any{"run": tag, "updated": "yes"}}}); err != nil {
				t.Fatal(err)
			}
			if err := c.Vectors.Add(ctx, themis.Vector{PK: pk(5), Vector: vec(s.Dimension, 6), Metadata: md}); err != nil {
				t.Fatal(err)
			}
			if err := c.Vectors.AddBatch(ctx, []themis.Vector{{PK: pk(6), Vector: vec(s.Dimension, 7), Metadata: md}}); err != nil {
				t.Fatal(err)
			}
			if err := c.Vectors.FlushBuffer(ctx); err != nil {
				t.Fatal(err)
			}
			// The remove needs the pk known to a worker: poll until it is.
			eventually(t, 30*time.Second, func() error {
				if err := c.Vectors.RemoveBuffered(ctx, pk(4)); err != nil {
					return err
				}
				return c.Vectors.FlushBuffer(ctx)
			})
			eventually(t, 30*time.Second, func() error {
				r, err := c.Vectors.Search(ctx, themis.SearchRequest{Vector: vec(s.Dimension, 2), K: 20, Filter: map[string]any{"run": tag}})
				if err != nil {
					return err
				}
				got := map[string]map[string]any{}
				for _, h := range r.Results {
					got[h.PK] = h.Metadata
				}
				for _, i := range []int{0, 1, 2, 3, 5, 6} {
					if got[pk(i)] == nil {
						return fmt.Errorf("pk %s not found in %v", pk(i), got)
					}
				}
				if _, ok := got[pk(4)]; ok {
					return fmt.Errorf("removed pk %s still found", pk(4))
				}
				if got[pk(0)]["updated"] != "yes" || got[pk(1)]["updated"] != "yes" {
					return fmt.Errorf("updates not applied: %v", got)
				}
				if r.Results[0].PK != pk(1) {
					return fmt.Errorf("closest is %s, want %s", r.Results[0].PK, pk(1))
				}
				return nil
			})
			st, err := c.Vectors.GetBufferStats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Workers < 1 || st.VectorsFlushed < 1 {
				t.Fatalf("vector stats %+v", st)
			}
		})
	}
}

func TestTypedErrorsAreTheSameOnBothDoors(t *testing.T) {
	for _, d := range doors {
		t.Run(d.name, func(t *testing.T) {
			s := needStack(t)
			ctx := ctxT(t, 30*time.Second)
			bad, err := themis.New(d.conn(s, "wrong-key-"+suffix()), d.extra(s)...)
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close(ctx)
			_, err = bad.TimeSeries.GetBufferStats(ctx)
			var ae *themis.AuthenticationError
			if !errors.As(err, &ae) || ae.Retriable() {
				t.Fatalf("wrong key: %v (%T)", err, err)
			}
			w := newClient(t, d, "writer")
			err = w.TimeSeries.FlushBuffer(ctx)
			var pe *themis.PermissionDeniedError
			if !errors.As(err, &pe) || pe.Retriable() {
				t.Fatalf("flush with a writer key: %v (%T)", err, err)
			}
			_, err = w.TimeSeries.PutBufferedNow(ctx, themis.DataPoint{Metric: "", Entity: "e", Value: 1})
			var ve *themis.ValidationError
			if !errors.As(err, &ve) || ve.Retriable() {
				t.Fatalf("empty metric: %v (%T)", err, err)
			}
			err = w.Vectors.Add(ctx, themis.Vector{PK: "p" + suffix(), Vector: []float32{1, 2}})
			if !errors.As(err, &ve) {
				t.Fatalf("wrong dimension: %v (%T)", err, err)
			}
		})
	}
}

func TestUnreadErrorChannelNeverBlocksWrite(t *testing.T) {
	// A server that refuses everything: port 1 on localhost answers nothing.
	c, err := themis.New("http::addr=127.0.0.1:1;api_key=x;auto_flush_rows=1;max_retries=0;request_timeout_ms=200",
		themis.WithErrorChannelSize(2), themis.WithMaxInFlightBatches(8))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 2000; i++ {
		err := c.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "m", Entity: "e", TimestampMs: int64(i + 1), Value: 1})
		var bo *themis.BufferOverflowError
		if err != nil && !errors.As(err, &bo) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Write blocked: %d writes took over 5 s", i)
		}
	}
	var werr *themis.WriteError
	if err := c.TimeSeries.Flush(ctx); !errors.As(err, &werr) || werr.Failed == 0 {
		t.Fatalf("flush: %v", err)
	}
	st := c.TimeSeries.WriterStats()
	if st.DroppedErrors == 0 || st.Failed == 0 || st.Failed+st.Sent != st.Queued {
		t.Fatalf("stats %+v", st)
	}
	if len(c.TimeSeries.Errors()) != 2 {
		t.Fatalf("error channel holds %d", len(c.TimeSeries.Errors()))
	}
	_ = c.Close(ctx)
}
