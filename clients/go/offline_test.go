package themis_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	themis "github.com/themisdb/go-client"
)

func TestConnectionStringUsesTheSharedKeys(t *testing.T) {
	c, err := themis.ParseConfig("themis::addr=db.example;api_key=a;;b;auto_flush=off;auto_flush_rows=7;auto_flush_bytes=9;auto_flush_interval_ms=250;max_batch_bytes=11;max_buffer_rows=12;max_buffer_bytes=13;max_retries=2;retry_timeout_ms=300;retry_initial_backoff_ms=5;retry_max_backoff_ms=50;request_timeout_ms=1500;client_id=x;tls_verify=false;http_addr=db.example:8081")
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "db.example:9090" || c.APIKey != "a;b" || c.AutoFlush || c.AutoFlushRows != 7 || c.AutoFlushBytes != 9 ||
		c.AutoFlushInterval != 250*time.Millisecond || c.MaxBatchBytes != 11 || c.MaxBufferRows != 12 || c.MaxBufferBytes != 13 ||
		c.MaxRetries != 2 || c.RetryTimeout != 300*time.Millisecond || c.RetryInitialBackoff != 5*time.Millisecond ||
		c.RetryMaxBackoff != 50*time.Millisecond || c.RequestTimeout != 1500*time.Millisecond || c.ClientID != "x" || c.TLSVerify ||
		c.HTTPAddr != "db.example:8081" {
		t.Fatalf("%+v", c)
	}
	d, _ := themis.ParseConfig("http::addr=h")
	if d.Addr != "h:8080" || d.AutoFlushRows != 5000 || d.MaxBufferRows != 100000 || d.MaxBufferBytes != 67108864 || d.ClientID != "themisdb-go" {
		t.Fatalf("defaults %+v", d)
	}
}

func TestBadConnectionStringsNameTheKey(t *testing.T) {
	for conn, key := range map[string]string{
		"http::api_key=x":                  "addr",
		"http::addr=h;colour=red":          "colour",
		"http::addr=h;auto_flush_rows=ten": "auto_flush_rows",
		"http::addr=h;auto_flush=maybe":    "auto_flush",
		"ftp::addr=h":                      "schema",
	} {
		_, err := themis.ParseConfig(conn)
		var ce *themis.ConfigurationError
		if !errors.As(err, &ce) || ce.Key != key || ce.Retriable() {
			t.Errorf("%s: %v, want a ConfigurationError for %s", conn, err, key)
		}
	}
}

func TestClientReadsThemisClientConfWhenGivenNoString(t *testing.T) {
	t.Setenv("THEMIS_CLIENT_CONF", "http::addr=127.0.0.1:9;auto_flush_rows=3")
	c, err := themis.New("", themis.WithAPIKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if c.Config().AutoFlushRows != 3 || c.Config().APIKey != "k" {
		t.Fatalf("%+v", c.Config())
	}
}

// fakeFacade answers batches with a scripted status sequence and records points.
type fakeFacade struct {
	mu       sync.Mutex
	statuses []int
	header   map[string]string
	body     string
	points   int
	calls    []time.Time
}

func (f *fakeFacade) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, time.Now())
	if len(f.statuses) > 0 {
		st := f.statuses[0]
		f.statuses = f.statuses[1:]
		if st != 200 {
			for k, v := range f.header {
				w.Header().Set(k, v)
			}
			w.WriteHeader(st)
			_, _ = io.WriteString(w, f.body)
			return
		}
	}
	var pts []map[string]any
	_ = json.Unmarshal(raw, &pts)
	f.points += len(pts)
	_, _ = io.WriteString(w, `{"success":true,"buffered":true,"points":1,"buffer_size":1}`)
}

func TestFlushWaitsForRetriesAndHonoursRetryAfter(t *testing.T) {
	f := &fakeFacade{statuses: []int{429, 503}, header: map[string]string{"Retry-After": "1"}, body: `{"success":false,"error":"slow down"}`}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c, err := themis.New("http::addr=" + strings.TrimPrefix(srv.URL, "http://") + ";auto_flush=off;retry_initial_backoff_ms=1;retry_max_backoff_ms=2")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		_ = c.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "m", Entity: "e", TimestampMs: int64(i + 1), Value: 1})
	}
	start := time.Now()
	if err := c.TimeSeries.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Fatalf("flush returned after %v: Retry-After 1 s twice was not honoured", el)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.points != 10 || len(f.calls) != 3 {
		t.Fatalf("%d points in %d calls", f.points, len(f.calls))
	}
	if st := c.TimeSeries.WriterStats(); st.Retried != 2 || st.Sent != 10 {
		t.Fatalf("%+v", st)
	}
	_ = c.Close(ctx)
}

func TestNonRetriableBatchFailsAtOnceWithTypedCause(t *testing.T) {
	f := &fakeFacade{statuses: []int{400}, body: `{"success":false,"error":"point 0: field 'value' must be a number"}`}
	srv := httptest.NewServer(f)
	defer srv.Close()
	var handled atomic.Int32
	c, _ := themis.New("http::addr="+strings.TrimPrefix(srv.URL, "http://")+";auto_flush=off", themis.WithErrorHandler(func(error) { handled.Add(1) }))
	ctx := context.Background()
	_ = c.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "m", Entity: "e", Value: 1})
	err := c.TimeSeries.Flush(ctx)
	var we *themis.WriteError
	var ve *themis.ValidationError
	if !errors.As(err, &we) || we.Failed != 1 || !errors.As(err, &ve) || ve.Field != "value" {
		t.Fatalf("%v", err)
	}
	eventually(t, 5*time.Second, func() error {
		if handled.Load() != 1 {
			return errors.New("error handler not called")
		}
		return nil
	})
	if err := c.Close(ctx); err != nil {
		t.Fatalf("second report of the same failure: %v", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatalf("closing twice: %v", err)
	}
}

func TestFullQueueFailsFastWithBufferOverflowError(t *testing.T) {
	c, _ := themis.New("http::addr=127.0.0.1:9;auto_flush=off;max_buffer_rows=3")
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := c.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "m", Entity: "e", Value: 1}); err != nil {
			t.Fatal(err)
		}
	}
	err := c.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "m", Entity: "e", Value: 1})
	var bo *themis.BufferOverflowError
	if !errors.As(err, &bo) || bo.BufferSize != 3 || bo.Retriable() {
		t.Fatalf("%v", err)
	}
	if st := c.TimeSeries.WriterStats(); st.Queued != 3 || st.Pending != 3 {
		t.Fatalf("%+v", st)
	}
	c2, _ := themis.New("http::addr=127.0.0.1:9;auto_flush=off;max_buffer_bytes=150")
	_ = c2.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "m", Entity: "e", Value: 1})
	err = c2.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "m", Entity: "e", Value: 1})
	if !errors.As(err, &bo) || bo.BufferSize != 150 || bo.Limit != "max_buffer_bytes" {
		t.Fatalf("%v", err)
	}
}

func TestAutoFlushSendsOnRowsAndOnInterval(t *testing.T) {
	f := &fakeFacade{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	c, _ := themis.New("http::addr=" + addr + ";auto_flush_rows=5;auto_flush_interval_ms=60000")
	for i := 0; i < 10; i++ {
		_ = c.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "m", Entity: "e", TimestampMs: int64(i + 1), Value: 1})
	}
	eventually(t, 5*time.Second, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.points != 10 || len(f.calls) != 2 {
			return errors.New("rows did not trigger two batches of 5")
		}
		return nil
	})
	c2, _ := themis.New("http::addr=" + addr + ";auto_flush_rows=1000;auto_flush_interval_ms=100")
	_ = c2.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "m", Entity: "e", Value: 1})
	eventually(t, 5*time.Second, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.points != 11 {
			return errors.New("the interval did not send the point")
		}
		return nil
	})
	_ = c.Close(ctx)
	_ = c2.Close(ctx)
}

func TestContextDeadlineBoundsARequest(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Second)
	}))
	defer srv.Close()
	c, _ := themis.New("http::addr=" + strings.TrimPrefix(srv.URL, "http://"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.TimeSeries.GetBufferStats(ctx)
	var su *themis.ServerUnavailableError
	if !errors.As(err, &su) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
	}
}

func TestAutoFlushSendsOnBytes(t *testing.T) {
	f := &fakeFacade{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	// Each point is estimated at 82 bytes: 400 bytes make a batch of 5.
	c, _ := themis.New("http::addr=" + strings.TrimPrefix(srv.URL, "http://") + ";auto_flush_rows=1000;auto_flush_bytes=400;auto_flush_interval_ms=60000")
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		_ = c.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "m", Entity: "e", TimestampMs: int64(i + 1), Value: 1})
	}
	eventually(t, 5*time.Second, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.points != 5 || len(f.calls) != 1 {
			return errors.New("auto_flush_bytes did not send the batch")
		}
		return nil
	})
	_ = c.Close(ctx)
}

func TestConcurrentWritersLoseNothing(t *testing.T) {
	f := &fakeFacade{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c, _ := themis.New("http::addr=" + strings.TrimPrefix(srv.URL, "http://") + ";auto_flush_rows=300;auto_flush_interval_ms=10")
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				if err := c.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "m", Entity: "e", TimestampMs: int64(g*10000 + i + 1), Value: 1}); err != nil {
					t.Error(err)
					return
				}
				if i%500 == 0 {
					_ = c.TimeSeries.Flush(ctx) // flushes interleaved with writes
				}
			}
		}()
	}
	wg.Wait()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.points != 16000 {
		t.Fatalf("%d of 16000 points sent", f.points)
	}
	if st := c.TimeSeries.WriterStats(); st.Sent != 16000 || st.Queued != 16000 || st.Pending != 0 {
		t.Fatalf("%+v", st)
	}
}
