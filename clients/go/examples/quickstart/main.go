// Command quickstart writes a few points and vectors through the buffered
// writers, flushes, and reads them back. It takes its connection from
// THEMIS_CLIENT_CONF (docs/clients/CONFIGURATION.md), for example
//
//	THEMIS_CLIENT_CONF='themis::addr=localhost:9090;api_key=w-secret' \
//	THEMIS_HTTP_ADDR=localhost:8080 go run ./examples/quickstart
//
// THEMIS_HTTP_ADDR gives a binary client the HTTP door for Query and Search.
// THEMIS_VECTOR_DIMENSION is the server's vector dimension (default 16).
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"time"

	themis "github.com/themisdb/go-client"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var opts []themis.Option
	if addr := os.Getenv("THEMIS_HTTP_ADDR"); addr != "" {
		opts = append(opts, themis.WithHTTPAddr(addr))
	}
	// Errors of batches finally not written arrive here; Write never waits for it.
	opts = append(opts, themis.WithErrorHandler(func(err error) { log.Printf("not written: %v", err) }))
	c, err := themis.New("", opts...) // "" reads THEMIS_CLIENT_CONF
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)

	metric := fmt.Sprintf("quickstart_%d", time.Now().UnixNano())
	now := time.Now().UnixMilli()
	for i := 0; i < 100; i++ {
		p := themis.DataPoint{Metric: metric, Entity: "server01", TimestampMs: now - int64(100-i), Value: float64(i), Tags: map[string]string{"dc": "eu-west-1"}}
		if err := c.TimeSeries.PutBuffered(ctx, p); err != nil {
			var full *themis.BufferOverflowError
			if errors.As(err, &full) {
				log.Fatalf("queue full at %d items: flush more often", full.BufferSize)
			}
			log.Fatal(err)
		}
	}
	// Flush returns once every point queued above is acknowledged (retries included).
	if err := c.TimeSeries.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	// Acknowledged points become queryable shortly after: poll with a deadline.
	for {
		r, err := c.TimeSeries.Query(ctx, themis.Query{Metric: metric, Entity: "server01", Tags: map[string]string{"dc": "eu-west-1"}})
		if err != nil {
			log.Fatal(err)
		}
		if r.Count == 100 {
			fmt.Printf("stored %d points of %s, last value %v\n", r.Count, metric, r.Points[r.Count-1].Value)
			break
		}
		if ctx.Err() != nil {
			log.Fatalf("only %d of 100 points queryable", r.Count)
		}
		time.Sleep(100 * time.Millisecond)
	}

	dim := 16
	if d, err := strconv.Atoi(os.Getenv("THEMIS_VECTOR_DIMENSION")); err == nil {
		dim = d
	}
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(i + 1)
	}
	pk := metric + "_doc"
	if err := c.Vectors.AddBuffered(ctx, themis.Vector{PK: pk, Vector: v, Metadata: map[string]any{"source": metric}}); err != nil {
		log.Fatal(err)
	}
	if err := c.Vectors.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	for {
		r, err := c.Vectors.Search(ctx, themis.SearchRequest{Vector: v, K: 1, Filter: map[string]any{"source": metric}})
		if err != nil {
			log.Fatal(err)
		}
		if len(r.Results) == 1 && r.Results[0].PK == pk {
			fmt.Printf("found vector %s at distance %.3f\n", pk, r.Results[0].Distance)
			break
		}
		if ctx.Err() != nil {
			log.Fatal("vector not searchable in time")
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := c.TimeSeries.WriterStats()
	fmt.Printf("writer: queued %d, sent %d, retried %d, failed %d\n", st.Queued, st.Sent, st.Retried, st.Failed)
}
