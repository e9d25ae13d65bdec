package themis

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/themisdb/go-client/internal/wire"
)

// httpTransport is the REST door (docs/api/AUTO_BUFFER_REST_API.md).
type httpTransport struct {
	cfg    Config
	base   string
	client *http.Client
}

func newHTTPTransport(c Config, addr string) (*httpTransport, error) {
	scheme := "http"
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: c.RequestTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     5 * time.Second, // below the facade's header_timeout_s
	}
	if c.Schema == "https" {
		scheme = "https"
		tc, err := tlsConfig(c)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = tc
	}
	return &httpTransport{cfg: c, base: scheme + "://" + addr, client: &http.Client{Transport: tr}}, nil
}

type errorBody struct {
	Error        string          `json:"error"`
	BufferSize   *int            `json:"buffer_size"`
	ExpectedLSN  string          `json:"expected_lsn"`
	RetryAfterMs *int64          `json:"retry_after_ms"`
	NeedDict     json.RawMessage `json:"need_dictionary"`
}

// do sends one request and returns the body of a 2xx answer, or a typed error.
func (h *httpTransport) do(ctx context.Context, method, path string, body []byte, hdr map[string]string) ([]byte, error) {
	ctx, cancel := withTimeout(ctx, h.cfg.RequestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return nil, &ConfigurationError{Key: "addr", Message: err.Error()}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if h.cfg.APIKey != "" {
		req.Header.Set("X-API-Key", h.cfg.APIKey)
	}
	if h.cfg.AckQueued {
		req.Header.Set("X-Themis-Response-Mode", "queued")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, &ServerUnavailableError{Message: err.Error(), Cause: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &ServerUnavailableError{Status: resp.StatusCode, Message: "reading the answer: " + err.Error(), Cause: err}
	}
	if resp.StatusCode/100 == 2 {
		return data, nil
	}
	return nil, httpError(resp, data)
}

func httpError(resp *http.Response, data []byte) error {
	var eb errorBody
	_ = json.Unmarshal(data, &eb)
	msg := eb.Error
	if msg == "" {
		msg = fmt.Sprintf("%.200s", data)
	}
	var ra time.Duration
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.ParseFloat(s, 64); err == nil {
			ra = time.Duration(n * float64(time.Second))
		}
	}
	if eb.RetryAfterMs != nil && time.Duration(*eb.RetryAfterMs)*time.Millisecond > ra {
		ra = time.Duration(*eb.RetryAfterMs) * time.Millisecond
	}
	st := resp.StatusCode
	switch {
	case st == 400 || st == 413 || st == 415 || st == 431:
		if len(eb.NeedDict) > 0 {
			return &ProtocolError{Status: st, Code: 22, retriable: true, Message: msg}
		}
		return &ValidationError{Field: fieldOf(msg), Message: msg}
	case st == 401:
		return &AuthenticationError{Message: msg}
	case st == 403:
		return &PermissionDeniedError{Message: msg}
	case st == 404:
		return &NotFoundError{Message: msg}
	case st == 409 && eb.ExpectedLSN != "":
		lsn, err := strconv.ParseUint(eb.ExpectedLSN, 16, 64)
		if err == nil {
			return &WALGapError{ExpectedLSN: lsn, Message: msg}
		}
	case st == 429:
		if eb.BufferSize != nil {
			return &BufferOverflowError{BufferSize: *eb.BufferSize, Server: true, RetryAfter: ra, Limit: "server"}
		}
		return &RateLimitedError{RetryAfter: ra, Message: msg}
	case st == 408 || st >= 500:
		return &ServerUnavailableError{Status: st, RetryAfter: ra, Message: msg}
	}
	return &ProtocolError{Status: st, Message: msg}
}

type bufferedAnswer struct {
	BufferSize int `json:"buffer_size"`
	Points     int `json:"points"`
}

func (h *httpTransport) postJSON(ctx context.Context, path string, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, &ValidationError{Message: err.Error()}
	}
	return h.do(ctx, http.MethodPost, path, body, nil)
}

func (h *httpTransport) buffered(data []byte, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	var a bufferedAnswer
	_ = json.Unmarshal(data, &a)
	return a.BufferSize, nil
}

func (h *httpTransport) putPoint(ctx context.Context, p DataPoint) (int, error) {
	return h.buffered(h.postJSON(ctx, "/ts/put/buffered", p))
}

// appendPointJSON writes p as the facade's JSON point, without reflection.
func appendPointJSON(b []byte, p *DataPoint) ([]byte, error) {
	if math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
		return b, &ValidationError{Field: "value", Message: "field 'value': JSON has no NaN or infinity; use the binary transport"}
	}
	b = append(b, `{"metric":`...)
	b = wire.AppendJSONString(b, p.Metric)
	b = append(b, `,"entity":`...)
	b = wire.AppendJSONString(b, p.Entity)
	b = append(b, `,"timestamp_ms":`...)
	b = strconv.AppendInt(b, p.TimestampMs, 10)
	b = append(b, `,"value":`...)
	b = strconv.AppendFloat(b, p.Value, 'g', -1, 64)
	if len(p.Tags) > 0 {
		b = append(b, `,"tags":{`...)
		first := true
		for k, v := range p.Tags {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = wire.AppendJSONString(b, k)
			b = append(b, ':')
			b = wire.AppendJSONString(b, v)
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

func (h *httpTransport) putPoints(ctx context.Context, ps []DataPoint) (int, error) {
	// A fresh buffer per batch: the HTTP transport may still read a body after Do
	// returned (an early answer), so it is never reused.
	b := append(make([]byte, 0, len(ps)*96+2), '[')
	var err error
	for i := range ps {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendPointJSON(b, &ps[i]); err != nil {
			return 0, &ValidationError{Field: "value", Message: fmt.Sprintf("point %d: %s", i, err.(*ValidationError).Message)}
		}
	}
	b = append(b, ']')
	return h.buffered(h.do(ctx, http.MethodPost, "/ts/put/buffered/batch", b, nil))
}

func (h *httpTransport) putDurable(ctx context.Context, p DataPoint) error {
	_, err := h.postJSON(ctx, "/ts/put", p)
	return err
}

func (h *httpTransport) query(ctx context.Context, q Query) (*QueryResult, error) {
	body := map[string]any{"metric": q.Metric, "entity": q.Entity}
	if len(q.Tags) > 0 {
		body["tags"] = q.Tags
	}
	if q.Start != nil {
		body["start"] = *q.Start
	}
	if q.End != nil {
		body["end"] = *q.End
	}
	data, err := h.postJSON(ctx, "/ts/query", body)
	if err != nil {
		return nil, err
	}
	var r QueryResult
	if _, err := decodeDoc(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (h *httpTransport) tsStats(ctx context.Context) ([]byte, error) {
	return h.do(ctx, http.MethodGet, "/ts/buffer/stats", nil, nil)
}

func (h *httpTransport) tsFlush(ctx context.Context) ([]byte, error) {
	return h.do(ctx, http.MethodPost, "/ts/buffer/flush", nil, nil)
}

func (h *httpTransport) vectorWrite(ctx context.Context, op vecOp, vs []Vector) (int, error) {
	path := "/vectors/add/buffered"
	if op == opUpdate {
		path = "/vectors/update/buffered"
	}
	size := 0
	// REST has no vector batch route: one request per vector, in order.
	for _, v := range vs {
		n, err := h.buffered(h.postJSON(ctx, path, v))
		if err != nil {
			return size, err
		}
		size = n
	}
	return size, nil
}

func (h *httpTransport) vectorRemove(ctx context.Context, pk string) (int, error) {
	body, _ := json.Marshal(map[string]string{"pk": pk})
	return h.buffered(h.do(ctx, http.MethodDelete, "/vectors/remove/buffered", body, nil))
}

func (h *httpTransport) vectorAddDurable(ctx context.Context, v Vector) error {
	_, err := h.postJSON(ctx, "/vectors/add", v)
	return err
}

func (h *httpTransport) vectorStats(ctx context.Context) ([]byte, error) {
	return h.do(ctx, http.MethodGet, "/vectors/buffer/stats", nil, nil)
}

func (h *httpTransport) vectorFlush(ctx context.Context) ([]byte, error) {
	return h.do(ctx, http.MethodPost, "/vectors/buffer/flush", nil, nil)
}

func (h *httpTransport) search(ctx context.Context, r SearchRequest) (*SearchResult, error) {
	data, err := h.postJSON(ctx, "/vectors/search", r)
	if err != nil {
		return nil, err
	}
	var out SearchResult
	if _, err := decodeDoc(data, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (h *httpTransport) replicationStats(ctx context.Context) ([]byte, error) {
	return h.do(ctx, http.MethodGet, "/api/v1/replication/stats", nil, nil)
}

func (h *httpTransport) replicationConfig(ctx context.Context, c CompressionConfig) ([]byte, error) {
	return h.postJSON(ctx, "/api/v1/replication/config", c)
}

func (h *httpTransport) addReplica(ctx context.Context, id, endpoint string) ([]byte, error) {
	return h.postJSON(ctx, "/api/v1/replication/replicas", map[string]string{"replica_id": id, "endpoint": endpoint})
}

func (h *httpTransport) removeReplica(ctx context.Context, id string) ([]byte, error) {
	body, _ := json.Marshal(map[string]string{"replica_id": id})
	return h.do(ctx, http.MethodDelete, "/api/v1/replication/replicas", body, nil)
}

func (h *httpTransport) close() error {
	h.client.CloseIdleConnections()
	return nil
}
