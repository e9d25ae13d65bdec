// Package themis is the Go client of the Themis pipeline (module
// github.com/themisdb/go-client): time series and vectors through the facade's
// HTTP or binary door, a non-blocking batching writer for the buffered calls,
// replication control, and a WAL shipper for replicas.
//
// Every call takes a context.Context and honours its deadline; a request is also
// bounded by request_timeout_ms. Settings follow docs/clients/CONFIGURATION.md:
//
//	c, err := themis.New("http::addr=localhost:8080;api_key=w-secret")
//	defer c.Close(ctx)
//	err = c.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: "cpu", Entity: "s1", Value: 1})
//	err = c.TimeSeries.Flush(ctx) // everything queued so far is acknowledged
package themis

import (
	"context"
	"encoding/json"
	"sync"
	"time"
	"unsafe"
)

// Client is one connection configuration with its three clients. It is safe for
// concurrent use.
type Client struct {
	// TimeSeries writes and reads points.
	TimeSeries *TimeSeriesClient
	// Vectors writes and searches vectors.
	Vectors *VectorClient
	// Replication controls the facade's WAL shipper.
	Replication *ReplicationClient

	cfg       Config
	tr        transport
	closeOnce sync.Once
	closeErr  error
}

// New builds a client from a connection string (empty: THEMIS_CLIENT_CONF) and
// options; options win over the string. It does not connect until the first call.
func New(conn string, opts ...Option) (*Client, error) {
	cfg, err := resolveConfig(conn, opts)
	if err != nil {
		return nil, err
	}
	tr, err := newTransport(cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, tr: tr}
	c.TimeSeries = &TimeSeriesClient{tr: tr, cfg: cfg}
	c.TimeSeries.w = newWriter(cfg, func(ctx context.Context, ps []DataPoint) error {
		_, err := tr.putPoints(ctx, ps)
		return err
	}, pointSizer())
	c.Vectors = &VectorClient{tr: tr}
	c.Vectors.w = newWriter(cfg, c.Vectors.sendOps, vecItemSize)
	c.Replication = &ReplicationClient{tr: tr}
	return c, nil
}

// Config returns the resolved settings.
func (c *Client) Config() Config { return c.cfg }

// Close flushes both writers, then closes the connections. Closing twice is
// harmless. It returns a *WriteError if items were finally not written.
func (c *Client) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		e1 := c.TimeSeries.w.Close(ctx)
		e2 := c.Vectors.w.Close(ctx)
		_ = c.tr.close()
		if e1 != nil {
			c.closeErr = e1
		} else {
			c.closeErr = e2
		}
	})
	return c.closeErr
}

// pointSizer estimates a point's encoded size (the JSON form, the larger one),
// remembering the size of the last tags map it measured: callers usually pass
// the same map again. Called under the writer's lock.
func pointSizer() func(DataPoint) int {
	var lastTags unsafe.Pointer
	var lastLen, lastSize int
	return func(p DataPoint) int {
		n := 80 + len(p.Metric) + len(p.Entity)
		if len(p.Tags) == 0 {
			return n
		}
		ptr := *(*unsafe.Pointer)(unsafe.Pointer(&p.Tags))
		if ptr != lastTags || len(p.Tags) != lastLen {
			lastSize = 0
			for k, v := range p.Tags {
				lastSize += len(k) + len(v) + 8
			}
			lastTags, lastLen = ptr, len(p.Tags)
		}
		return n + lastSize
	}
}

// TimeSeriesClient writes and reads time-series points.
type TimeSeriesClient struct {
	tr  transport
	cfg Config
	w   *writer[DataPoint]
}

func nowIfZero(p *DataPoint) {
	if p.TimestampMs == 0 {
		p.TimestampMs = time.Now().UnixMilli()
	}
}

// PutBuffered queues point in the client (never blocking); it is written when its
// batch is acknowledged. A full queue fails at once with *BufferOverflowError.
// TimestampMs 0 is replaced by now.
func (t *TimeSeriesClient) PutBuffered(ctx context.Context, point DataPoint) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	nowIfZero(&point)
	return t.w.Write(point)
}

// PutBufferedBatch queues points; it stops at the first point that does not fit
// and returns its error (the points before it are queued).
func (t *TimeSeriesClient) PutBufferedBatch(ctx context.Context, points []DataPoint) error {
	for _, p := range points {
		if err := t.PutBuffered(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// PutBufferedNow sends one point in its own request (POST /ts/put/buffered or
// TS_PUT_BUFFERED), bypassing the client's queue; it returns the server's
// buffer_size once acknowledged.
func (t *TimeSeriesClient) PutBufferedNow(ctx context.Context, point DataPoint) (int, error) {
	nowIfZero(&point)
	return t.tr.putPoint(ctx, point)
}

// PutBatchNow sends points as one batch request, bypassing the client's queue.
func (t *TimeSeriesClient) PutBatchNow(ctx context.Context, points []DataPoint) (int, error) {
	ps := make([]DataPoint, len(points))
	copy(ps, points)
	for i := range ps {
		nowIfZero(&ps[i])
	}
	return t.tr.putPoints(ctx, ps)
}

// Put writes one point durably (POST /ts/put): queryable when it returns.
func (t *TimeSeriesClient) Put(ctx context.Context, point DataPoint) error {
	nowIfZero(&point)
	return t.tr.putDurable(ctx, point)
}

// PutBatch writes points durably, one by one, in order.
func (t *TimeSeriesClient) PutBatch(ctx context.Context, points []DataPoint) error {
	for _, p := range points {
		if err := t.Put(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// Query reads one series (durable blocks plus the workers' buffered points).
func (t *TimeSeriesClient) Query(ctx context.Context, q Query) (*QueryResult, error) {
	return t.tr.query(ctx, q)
}

// GetBufferStats returns the server's TS buffer statistics.
func (t *TimeSeriesClient) GetBufferStats(ctx context.Context) (*BufferStats, error) {
	doc, err := t.tr.tsStats(ctx)
	if err != nil {
		return nil, err
	}
	var s BufferStats
	raw, err := decodeDoc(doc, &s)
	s.Raw = raw
	return &s, err
}

// Flush waits until every point queued before it is acknowledged (retries
// included); a *WriteError names the points finally not written.
func (t *TimeSeriesClient) Flush(ctx context.Context) error { return t.w.Flush(ctx) }

// FlushBuffer flushes the client's queue (as Flush), then asks the server to
// flush its buffers to durable blocks (admin key).
func (t *TimeSeriesClient) FlushBuffer(ctx context.Context) error {
	_, err := t.FlushServer(ctx)
	return err
}

// FlushServer is FlushBuffer returning the server's answer.
func (t *TimeSeriesClient) FlushServer(ctx context.Context) (*FlushResult, error) {
	if err := t.w.Flush(ctx); err != nil {
		return nil, err
	}
	doc, err := t.tr.tsFlush(ctx)
	if err != nil {
		return nil, err
	}
	var r FlushResult
	raw, err := decodeDoc(doc, &r)
	r.Raw = raw
	r.Flushed = asInt64(raw["points_flushed"])
	return &r, err
}

// Errors returns the writer's error channel: every *WriteError of a batch finally
// not written. Reading it is optional: errors that find it full are dropped and
// counted (WriterStats.DroppedErrors); Write never blocks on it.
func (t *TimeSeriesClient) Errors() <-chan error { return t.w.Errors() }

// WriterStats returns the writer's counters.
func (t *TimeSeriesClient) WriterStats() WriterStats { return t.w.Stats() }

type vecItem struct {
	op    vecOp
	v     Vector
	mdLen int // the metadata's JSON bytes, measured before the writer's lock
}

func vecItemSize(it vecItem) int {
	return 64 + len(it.v.PK) + 12*len(it.v.Vector) + it.mdLen
}

// VectorClient writes and searches vectors.
type VectorClient struct {
	tr transport
	w  *writer[vecItem]
}

// sendOps sends a batch in order: runs of adds or updates as batches, removes one by one.
func (v *VectorClient) sendOps(ctx context.Context, items []vecItem) error {
	for i := 0; i < len(items); {
		j := i + 1
		if items[i].op != opRemove {
			for j < len(items) && items[j].op == items[i].op && len(items[j].v.Vector) == len(items[i].v.Vector) {
				j++
			}
			vs := make([]Vector, 0, j-i)
			for _, it := range items[i:j] {
				vs = append(vs, it.v)
			}
			if _, err := v.tr.vectorWrite(ctx, items[i].op, vs); err != nil {
				return err
			}
		} else if _, err := v.tr.vectorRemove(ctx, items[i].v.PK); err != nil {
			return err
		}
		i = j
	}
	return nil
}

func (v *VectorClient) queue(ctx context.Context, op vecOp, vec Vector) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	it := vecItem{op: op, v: vec}
	if len(vec.Metadata) > 0 {
		md, err := json.Marshal(vec.Metadata)
		if err != nil {
			return &ValidationError{Field: "metadata", Message: "field 'metadata': " + err.Error()}
		}
		it.mdLen = len(md)
	}
	return v.w.Write(it)
}

// AddBuffered queues an add (an upsert by pk); see TimeSeriesClient.PutBuffered.
func (v *VectorClient) AddBuffered(ctx context.Context, vec Vector) error {
	return v.queue(ctx, opAdd, vec)
}

// UpdateBuffered queues an update.
func (v *VectorClient) UpdateBuffered(ctx context.Context, vec Vector) error {
	return v.queue(ctx, opUpdate, vec)
}

// RemoveBuffered queues a remove of pk.
func (v *VectorClient) RemoveBuffered(ctx context.Context, pk string) error {
	return v.queue(ctx, opRemove, Vector{PK: pk})
}

// AddBufferedBatch queues adds; it stops at the first that does not fit.
func (v *VectorClient) AddBufferedBatch(ctx context.Context, vecs []Vector) error {
	for _, x := range vecs {
		if err := v.AddBuffered(ctx, x); err != nil {
			return err
		}
	}
	return nil
}

// UpdateBufferedBatch queues updates; it stops at the first that does not fit.
func (v *VectorClient) UpdateBufferedBatch(ctx context.Context, vecs []Vector) error {
	for _, x := range vecs {
		if err := v.UpdateBuffered(ctx, x); err != nil {
			return err
		}
	}
	return nil
}

// Add writes one vector durably (POST /vectors/add).
func (v *VectorClient) Add(ctx context.Context, vec Vector) error {
	return v.tr.vectorAddDurable(ctx, vec)
}

// AddBatch writes vectors durably, one by one.
func (v *VectorClient) AddBatch(ctx context.Context, vecs []Vector) error {
	for _, x := range vecs {
		if err := v.Add(ctx, x); err != nil {
			return err
		}
	}
	return nil
}

// Search returns the k nearest vectors, closest first.
func (v *VectorClient) Search(ctx context.Context, req SearchRequest) (*SearchResult, error) {
	return v.tr.search(ctx, req)
}

// GetBufferStats returns the server's vector buffer statistics.
func (v *VectorClient) GetBufferStats(ctx context.Context) (*VectorBufferStats, error) {
	doc, err := v.tr.vectorStats(ctx)
	if err != nil {
		return nil, err
	}
	var s VectorBufferStats
	raw, err := decodeDoc(doc, &s)
	s.Raw = raw
	return &s, err
}

// Flush waits until every operation queued before it is acknowledged.
func (v *VectorClient) Flush(ctx context.Context) error { return v.w.Flush(ctx) }

// FlushBuffer flushes the client's queue, then the server's vector buffers (admin key).
func (v *VectorClient) FlushBuffer(ctx context.Context) error {
	_, err := v.FlushServer(ctx)
	return err
}

// FlushServer is FlushBuffer returning the server's answer.
func (v *VectorClient) FlushServer(ctx context.Context) (*FlushResult, error) {
	if err := v.w.Flush(ctx); err != nil {
		return nil, err
	}
	doc, err := v.tr.vectorFlush(ctx)
	if err != nil {
		return nil, err
	}
	var r FlushResult
	raw, err := decodeDoc(doc, &r)
	r.Raw = raw
	r.Flushed = asInt64(raw["vectors_flushed"])
	return &r, err
}

// Errors returns the vector writer's error channel (see TimeSeriesClient.Errors).
func (v *VectorClient) Errors() <-chan error { return v.w.Errors() }

// WriterStats returns the vector writer's counters.
func (v *VectorClient) WriterStats() WriterStats { return v.w.Stats() }

// ReplicationClient controls the facade's WAL shipper.
type ReplicationClient struct{ tr transport }

// GetReplicationStats returns the shipper's replicas and totals.
func (r *ReplicationClient) GetReplicationStats(ctx context.Context) (*ReplicationStats, error) {
	doc, err := r.tr.replicationStats(ctx)
	if err != nil {
		return nil, err
	}
	var s ReplicationStats
	_, err = decodeDoc(doc, &s)
	return &s, err
}

// ConfigureCompression sets the shipper's compression ("zstd" or "none", level
// 1-22) at once (admin key).
func (r *ReplicationClient) ConfigureCompression(ctx context.Context, c CompressionConfig) error {
	_, err := r.tr.replicationConfig(ctx, c)
	return err
}

// AddReplica adds a replica to the shipper (admin key); endpoint is
// kafka://host:port or https://....
func (r *ReplicationClient) AddReplica(ctx context.Context, replicaID, endpoint string) error {
	_, err := r.tr.addReplica(ctx, replicaID, endpoint)
	return err
}

// RemoveReplica removes a replica from the shipper (admin key); an unknown id is
// a *NotFoundError.
func (r *ReplicationClient) RemoveReplica(ctx context.Context, replicaID string) error {
	_, err := r.tr.removeReplica(ctx, replicaID)
	return err
}
