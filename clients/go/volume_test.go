package themis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	themis "github.com/themisdb/go-client"
)

// TestHundredThousandPointsThenCloseAreAllQueryable: 100,000 buffered points,
// Close, and exactly 100,000 are stored (10 series of 10,000).
func TestHundredThousandPointsThenCloseAreAllQueryable(t *testing.T) {
	for _, d := range doors {
		t.Run(d.name, func(t *testing.T) {
			s := needStack(t)
			c, err := themis.New(d.conn(s, s.Keys["writer"]), d.extra(s)...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			metric := "go_100k_" + d.name + "_" + suffix()
			const series, perSeries = 10, 10_000
			base := time.Now().UnixMilli() - 3_600_000
			start := time.Now()
			for i := 0; i < perSeries; i++ {
				for e := 0; e < series; e++ {
					p := themis.DataPoint{Metric: metric, Entity: fmt.Sprintf("e%d", e), TimestampMs: base + int64(i), Value: float64(i*series + e), Tags: map[string]string{"run": "100k"}}
					if err := c.TimeSeries.PutBuffered(ctx, p); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := c.Close(ctx); err != nil {
				t.Fatalf("close: %v", err)
			}
			st := c.TimeSeries.WriterStats()
			if st.Sent != series*perSeries || st.Failed != 0 {
				t.Fatalf("writer stats %+v", st)
			}
			t.Logf("%s: 100,000 points acknowledged in %v", d.name, time.Since(start))
			q := newClient(t, doors[0], "writer")
			eventually(t, 60*time.Second, func() error {
				total := 0
				for e := 0; e < series; e++ {
					r, err := q.TimeSeries.Query(ctx, themis.Query{Metric: metric, Entity: fmt.Sprintf("e%d", e), Tags: map[string]string{"run": "100k"}})
					if err != nil {
						return err
					}
					for j, p := range r.Points {
						if p.TimestampMs != base+int64(j) || float64(p.Value) != float64(j*series+e) {
							return fmt.Errorf("series e%d point %d is %+v", e, j, p)
						}
					}
					total += r.Count
				}
				if total != series*perSeries {
					return fmt.Errorf("%d points queryable, want 100000", total)
				}
				return nil
			})
		})
	}
}
