package themis

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"github.com/themisdb/go-client/internal/wire"
)

// The binary door's operations: each encodes its payload, sends one request and
// decodes the reply; the connection handling is in binary.go.

func (t *binaryTransport) writeFlags() byte {
	if t.cfg.AckQueued {
		return wire.FlagAckQueued
	}
	return 0
}

func (t *binaryTransport) ack(p []byte, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	a, err := wire.DecodeWriteAck(p)
	if err != nil {
		return 0, &ServerUnavailableError{Message: "bad WriteAck: " + err.Error()}
	}
	return int(a.BufferSize), nil
}

func (e *encodeBuf) sortedTags(tags map[string]string) []string {
	e.keys = e.keys[:0]
	for k := range tags {
		e.keys = append(e.keys, k)
	}
	slices.Sort(e.keys)
	return e.keys
}

func checkPoint(p *DataPoint) error {
	if p.Metric == "" {
		return &ValidationError{Field: "metric", Message: "field 'metric' is empty"}
	}
	if p.Entity == "" {
		return &ValidationError{Field: "entity", Message: "field 'entity' is empty"}
	}
	return nil
}

func (t *binaryTransport) putPoint(ctx context.Context, p DataPoint) (int, error) {
	if err := checkPoint(&p); err != nil {
		return 0, err
	}
	eb := t.pool.Get().(*encodeBuf)
	defer t.pool.Put(eb)
	b := eb.b[:0]
	b = binary.LittleEndian.AppendUint16(b, uint16(len(p.Metric)))
	b = append(b, p.Metric...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(p.Entity)))
	b = append(b, p.Entity...)
	b = binary.LittleEndian.AppendUint64(b, uint64(p.TimestampMs))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(p.Value))
	if len(p.Tags) == 0 {
		b = binary.LittleEndian.AppendUint16(b, 0)
	} else {
		tags := make([]wire.Tag, 0, len(p.Tags))
		for _, k := range eb.sortedTags(p.Tags) {
			tags = append(tags, wire.Tag{Name: k, Value: p.Tags[k]})
		}
		at := len(b)
		b = wire.AppendTagsJSON(binary.LittleEndian.AppendUint16(b, 0), tags)
		binary.LittleEndian.PutUint16(b[at:], uint16(len(b)-at-2))
	}
	eb.b = b
	return t.ack(t.request(ctx, wire.OpTSPutBuffered, t.writeFlags(), b))
}

// encodePoints encodes ps as a TsBatch payload into eb.b.
func (eb *encodeBuf) encodePoints(ps []DataPoint) []byte {
	eb.enc.Reset()
	for i := range ps {
		p := &ps[i]
		eb.enc.Add(p.Metric, p.Entity, p.TimestampMs, p.Value, len(p.Tags))
		switch len(p.Tags) {
		case 0:
		case 1:
			for k, v := range p.Tags {
				eb.enc.AddTag(k, v)
			}
		default:
			for _, k := range eb.sortedTags(p.Tags) {
				eb.enc.AddTag(k, p.Tags[k])
			}
		}
	}
	eb.b = eb.enc.Finish(eb.b[:0])
	return eb.b
}

func (t *binaryTransport) putPoints(ctx context.Context, ps []DataPoint) (int, error) {
	for i := range ps {
		if err := checkPoint(&ps[i]); err != nil {
			return 0, err
		}
	}
	eb := t.pool.Get().(*encodeBuf)
	defer t.pool.Put(eb)
	return t.ack(t.request(ctx, wire.OpTSPutBufferedBatch, t.writeFlags(), eb.encodePoints(ps)))
}

func (t *binaryTransport) viaHTTP() (*httpTransport, error) {
	if t.http == nil {
		return nil, &ConfigurationError{Key: "http_addr", Message: "this call has no binary opcode: give the binary client the facade's HTTP door with WithHTTPAddr"}
	}
	return t.http, nil
}

func (t *binaryTransport) putDurable(ctx context.Context, p DataPoint) error {
	h, err := t.viaHTTP()
	if err != nil {
		return err
	}
	return h.putDurable(ctx, p)
}

func (t *binaryTransport) query(ctx context.Context, q Query) (*QueryResult, error) {
	h, err := t.viaHTTP()
	if err != nil {
		return nil, err
	}
	return h.query(ctx, q)
}

func (t *binaryTransport) jsonRequest(ctx context.Context, op byte, body []byte) ([]byte, error) {
	return t.request(ctx, op, 0, body)
}

func (t *binaryTransport) tsStats(ctx context.Context) ([]byte, error) {
	return t.jsonRequest(ctx, wire.OpTSBufferStats, nil)
}

func (t *binaryTransport) tsFlush(ctx context.Context) ([]byte, error) {
	return t.jsonRequest(ctx, wire.OpTSBufferFlush, nil)
}

func metadataJSON(m map[string]any) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, &ValidationError{Field: "metadata", Message: "field 'metadata': " + err.Error()}
	}
	return b, nil
}

func (t *binaryTransport) vectorWrite(ctx context.Context, op vecOp, vs []Vector) (int, error) {
	ws := make([]wire.VectorWrite, len(vs))
	for i, v := range vs {
		md, err := metadataJSON(v.Metadata)
		if err != nil {
			return 0, err
		}
		ws[i] = wire.VectorWrite{PK: v.PK, Vector: v.Vector, Metadata: md}
		if len(v.Vector) != len(vs[0].Vector) {
			return 0, &ValidationError{Field: "vector", Message: fmt.Sprintf("vector %d: field 'vector' has %d components, the batch %d", i, len(v.Vector), len(vs[0].Vector))}
		}
	}
	if len(ws) == 1 {
		code := wire.OpVectorAddBuffered
		if op == opUpdate {
			code = wire.OpVectorUpdateBuffered
		}
		return t.ack(t.request(ctx, code, t.writeFlags(), wire.AppendVectorWrite(nil, ws[0])))
	}
	code := wire.OpVectorAddBufferedBatch
	if op == opUpdate {
		code = wire.OpVectorUpdateBufferedBatch
	}
	return t.ack(t.request(ctx, code, t.writeFlags(), wire.AppendVectorBatch(nil, ws)))
}

func (t *binaryTransport) vectorRemove(ctx context.Context, pk string) (int, error) {
	return t.ack(t.request(ctx, wire.OpVectorRemoveBuffered, t.writeFlags(), wire.AppendVectorRemove(nil, pk)))
}

func (t *binaryTransport) vectorAddDurable(ctx context.Context, v Vector) error {
	h, err := t.viaHTTP()
	if err != nil {
		return err
	}
	return h.vectorAddDurable(ctx, v)
}

func (t *binaryTransport) vectorStats(ctx context.Context) ([]byte, error) {
	return t.jsonRequest(ctx, wire.OpVectorBufferStats, nil)
}

func (t *binaryTransport) vectorFlush(ctx context.Context) ([]byte, error) {
	return t.jsonRequest(ctx, wire.OpVectorBufferFlush, nil)
}

func (t *binaryTransport) search(ctx context.Context, r SearchRequest) (*SearchResult, error) {
	h, err := t.viaHTTP()
	if err != nil {
		return nil, err
	}
	return h.search(ctx, r)
}

func (t *binaryTransport) replicationStats(ctx context.Context) ([]byte, error) {
	return t.jsonRequest(ctx, wire.OpReplicationStats, nil)
}

func (t *binaryTransport) replicationConfig(ctx context.Context, c CompressionConfig) ([]byte, error) {
	body, _ := json.Marshal(c)
	return t.jsonRequest(ctx, wire.OpReplicationConfig, body)
}

func (t *binaryTransport) addReplica(ctx context.Context, id, endpoint string) ([]byte, error) {
	h, err := t.viaHTTP()
	if err != nil {
		return nil, err
	}
	return h.addReplica(ctx, id, endpoint)
}

func (t *binaryTransport) removeReplica(ctx context.Context, id string) ([]byte, error) {
	h, err := t.viaHTTP()
	if err != nil {
		return nil, err
	}
	return h.removeReplica(ctx, id)
}

func (t *binaryTransport) walApply(ctx context.Context, primaryID string, batch []byte) ([]byte, error) {
	return t.request(ctx, wire.OpWALApplyCompressed, 0, wire.AppendWALApply(nil, primaryID, batch))
}
