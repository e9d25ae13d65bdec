package themis

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// WALEntryType is what a WAL entry's payload holds (docs/formats.md, TWE1).
type WALEntryType uint8

// WAL entry types.
const (
	WALEntryTSBlock     WALEntryType = 1 // a Gorilla block (TGBK)
	WALEntryVectorBatch WALEntryType = 2 // a vector op frame (VOF1)
)

// WALEntry is one entry of the primary's WAL: its LSN (offset + 1 on the WAL
// topic), type, the time it was applied (ms since the epoch) and payload.
type WALEntry struct {
	LSN         uint64
	Type        WALEntryType
	TimestampMs int64
	Payload     []byte
}

// WALCodec is a TWB1 batch's body codec.
type WALCodec uint8

// WAL batch codecs.
const (
	WALCodecNone WALCodec = 0
	WALCodecZstd WALCodec = 1
)

// CompressedWALBatch is one TWB1 batch (pipeline/wal/batch.py), ready to apply:
// Data is the whole batch as POST /api/v1/wal/apply and WAL_APPLY_COMPRESSED take it.
type CompressedWALBatch struct {
	PrimaryID         string
	FirstLSN          uint64
	LastLSN           uint64
	EntryCount        int
	UncompressedBytes int
	Data              []byte
}

// CompressionRatio is the uncompressed body over the batch's bytes on the wire.
func (b CompressedWALBatch) CompressionRatio() float64 {
	if len(b.Data) == 0 {
		return 0
	}
	return float64(b.UncompressedBytes) / float64(len(b.Data))
}

// VectorOpKind is the op of a VOF1 operation.
type VectorOpKind uint8

// Vector operation kinds of a VOF1 frame.
const (
	VectorOpAdd    VectorOpKind = 1
	VectorOpUpdate VectorOpKind = 2
	VectorOpRemove VectorOpKind = 3
)

// VectorOp is one operation of a VOF1 frame; Vector is ignored for removes.
type VectorOp struct {
	Op       VectorOpKind
	PK       string
	Vector   []float32
	Metadata map[string]any
}

// EncodeVectorOpFrame builds a VOF1 frame (docs/formats.md) of ops, every vector of
// dimension dim: the payload of a WALEntryVectorBatch entry.
func EncodeVectorOpFrame(dim int, ops []VectorOp) ([]byte, error) {
	if dim < 1 || dim > 0xFFFF {
		return nil, &ValidationError{Field: "dimension", Message: fmt.Sprintf("dimension %d outside 1..65535", dim)}
	}
	b := append([]byte("VOF1"), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(ops)))
	b = binary.LittleEndian.AppendUint16(b, uint16(dim))
	for i, op := range ops {
		if op.PK == "" || len(op.PK) > 0xFFFF {
			return nil, &ValidationError{Field: "pk", Message: fmt.Sprintf("op %d: field 'pk' must be 1..65535 bytes", i)}
		}
		b = append(b, byte(op.Op))
		b = binary.LittleEndian.AppendUint16(b, uint16(len(op.PK)))
		b = append(b, op.PK...)
		md, err := metadataJSON(op.Metadata)
		if err != nil {
			return nil, err
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(md)))
		b = append(b, md...)
		if op.Op == VectorOpRemove {
			continue
		}
		if len(op.Vector) != dim {
			return nil, &ValidationError{Field: "vector", Message: fmt.Sprintf("op %d: field 'vector' has %d components, want %d", i, len(op.Vector), dim)}
		}
		for _, x := range op.Vector {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
	}
	return b, nil
}

const twb1HeaderSize = 54

var (
	encodersMu sync.Mutex
	encoders   = map[int]*zstd.Encoder{}
)

func zstdEncoder(level int) (*zstd.Encoder, error) {
	encodersMu.Lock()
	defer encodersMu.Unlock()
	if e, ok := encoders[level]; ok {
		return e, nil
	}
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	encoders[level] = e
	return e, nil
}

// BuildWALBatch serializes entries (increasing LSNs) into a TWB1 batch covering
// entries[0].LSN..entries[len-1].LSN, compressed with codec at the zstd level
// (1-22, ignored for none). No dictionary is used.
func BuildWALBatch(primaryID string, entries []WALEntry, codec WALCodec, level int) (CompressedWALBatch, error) {
	if len(entries) == 0 {
		return CompressedWALBatch{}, &ValidationError{Field: "entries", Message: "a WAL batch needs at least one entry"}
	}
	if primaryID == "" || len(primaryID) > 0xFFFF {
		return CompressedWALBatch{}, &ValidationError{Field: "primary_id", Message: "primary id must be 1..65535 bytes"}
	}
	first, last := entries[0].LSN, entries[len(entries)-1].LSN
	if first < 1 || last-first > math.MaxUint32 {
		return CompressedWALBatch{}, &ValidationError{Field: "lsn", Message: fmt.Sprintf("LSN range %d..%d", first, last)}
	}
	var body []byte
	prev := first - 1
	for _, e := range entries {
		if e.LSN <= prev || e.LSN > last {
			return CompressedWALBatch{}, &ValidationError{Field: "lsn", Message: fmt.Sprintf("entry LSN %d out of order", e.LSN)}
		}
		prev = e.LSN
		body = binary.LittleEndian.AppendUint32(body, uint32(e.LSN-first))
		body = append(body, byte(e.Type))
		body = binary.LittleEndian.AppendUint64(body, uint64(e.TimestampMs))
		body = binary.LittleEndian.AppendUint32(body, uint32(len(e.Payload)))
		body = append(body, e.Payload...)
	}
	compressed := body
	if codec == WALCodecZstd {
		if level < 1 || level > 22 {
			return CompressedWALBatch{}, &ConfigurationError{Key: "compression_level", Message: fmt.Sprintf("zstd level %d outside 1..22", level)}
		}
		enc, err := zstdEncoder(level)
		if err != nil {
			return CompressedWALBatch{}, err
		}
		compressed = enc.EncodeAll(body, make([]byte, 0, len(body)/2+64))
	}
	out := make([]byte, twb1HeaderSize, twb1HeaderSize+len(primaryID)+len(compressed))
	copy(out, "TWB1")
	out[4], out[5], out[6], out[7] = 1, byte(codec), 0, 0
	le := binary.LittleEndian
	le.PutUint32(out[8:], 0)
	le.PutUint64(out[12:], first)
	le.PutUint64(out[20:], last)
	le.PutUint32(out[28:], uint32(len(entries)))
	le.PutUint64(out[32:], uint64(len(body)))
	le.PutUint32(out[40:], uint32(len(compressed)))
	le.PutUint16(out[44:], uint16(len(primaryID)))
	le.PutUint32(out[46:], 0)
	out = append(out, primaryID...)
	out = append(out, compressed...)
	crc := crc32.NewIEEE()
	crc.Write(out[:50])
	crc.Write(out[54:])
	le.PutUint32(out[50:], crc.Sum32())
	return CompressedWALBatch{PrimaryID: primaryID, FirstLSN: first, LastLSN: last, EntryCount: len(entries),
		UncompressedBytes: len(body), Data: out}, nil
}

// WALShipperClient applies WAL batches to one replica, over HTTPS with a client
// certificate (https:: connection string: POST /api/v1/wal/apply) or over the
// binary protocol (themis+tls:: / themis::: WAL_APPLY_COMPRESSED). It is safe for
// concurrent use, but a replica applies in LSN order, so ship from one goroutine.
type WALShipperClient struct {
	cfg       Config
	primaryID string
	codec     WALCodec
	level     int
	maxBatch  int
	http      *httpTransport   // https/http target, or the status door of a binary one
	bin       *binaryTransport // themis/themis+tls target

	shipped, batches, bytesShipped, bytesRaw, failed atomic.Int64
}

// WALOption configures a WALShipperClient.
type WALOption func(*WALShipperClient)

// WithPrimaryID sets the primary id the batches carry (X-Primary-ID); a replica
// follows the first primary it hears from. Default "themisdb-go".
func WithPrimaryID(id string) WALOption { return func(w *WALShipperClient) { w.primaryID = id } }

// WithWALCompression sets the codec and zstd level (default zstd, 3).
func WithWALCompression(codec WALCodec, level int) WALOption {
	return func(w *WALShipperClient) { w.codec, w.level = codec, level }
}

// WithMaxBatchEntries bounds the entries Ship puts in one batch (default 1000).
func WithMaxBatchEntries(n int) WALOption { return func(w *WALShipperClient) { w.maxBatch = n } }

// WithStatusAddr gives a binary shipper the replica's HTTPS door (host:port) for
// GetReplicationStats (the binary door serves only WAL_APPLY_COMPRESSED).
func WithStatusAddr(addr string) Option { return func(c *Config) { c.HTTPAddr = addr } }

// NewWALShipperClient builds a shipper to the replica named by conn, e.g.
// "https::addr=replica:8443;tls_ca=ca.pem;tls_cert=client.pem;tls_key=client.key"
// or "themis+tls::addr=replica:9443;tls_ca=...;tls_cert=...;tls_key=...". An
// api_key, if given, is sent as the replicator key (X-API-Key / AUTH).
func NewWALShipperClient(conn string, opts []Option, wopts ...WALOption) (*WALShipperClient, error) {
	cfg, err := resolveConfig(conn, opts)
	if err != nil {
		return nil, err
	}
	w := &WALShipperClient{cfg: cfg, primaryID: "themisdb-go", codec: WALCodecZstd, level: 3, maxBatch: 1000}
	for _, o := range wopts {
		o(w)
	}
	switch cfg.Schema {
	case "http", "https":
		w.http, err = newHTTPTransport(cfg, cfg.Addr)
	default:
		w.bin, err = newBinaryTransport(cfg)
		if err == nil && w.bin.http != nil {
			w.http, w.bin.http = w.bin.http, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return w, nil
}

// BuildBatch builds a batch of entries with the shipper's primary id and compression.
func (w *WALShipperClient) BuildBatch(entries []WALEntry) (CompressedWALBatch, error) {
	return BuildWALBatch(w.primaryID, entries, w.codec, w.level)
}

// ApplyWALBatch applies one batch. A replica that needs earlier entries answers
// *WALGapError with ExpectedLSN; Ship handles that by itself.
func (w *WALShipperClient) ApplyWALBatch(ctx context.Context, batch CompressedWALBatch) error {
	_, err := w.ApplyWALBatchResult(ctx, batch)
	return err
}

// ApplyWALBatchResult is ApplyWALBatch returning the replica's answer.
func (w *WALShipperClient) ApplyWALBatchResult(ctx context.Context, batch CompressedWALBatch) (*ApplyResult, error) {
	var doc []byte
	var err error
	if w.bin != nil {
		doc, err = w.bin.walApply(ctx, batch.PrimaryID, batch.Data)
	} else {
		hdr := map[string]string{"X-Primary-ID": batch.PrimaryID, "Content-Type": "application/octet-stream"}
		if batch.Data[5] == byte(WALCodecZstd) {
			hdr["Content-Encoding"] = "zstd"
		}
		doc, err = w.http.do(ctx, http.MethodPost, "/api/v1/wal/apply", batch.Data, hdr)
	}
	if err != nil {
		w.failed.Add(1)
		return nil, err
	}
	var r ApplyResult
	if _, err := decodeDoc(doc, &r); err != nil {
		return nil, err
	}
	w.shipped.Add(int64(r.EntriesApplied))
	w.batches.Add(1)
	w.bytesShipped.Add(int64(len(batch.Data)))
	w.bytesRaw.Add(int64(batch.UncompressedBytes))
	return &r, nil
}

// ShipResult sums what Ship applied.
type ShipResult struct {
	Batches        int
	EntriesApplied int
	Rewinds        int    // gap answers that moved the start
	NextLSN        uint64 // the LSN after the last one applied
}

// Ship applies entries (increasing LSNs) in batches of at most
// WithMaxBatchEntries, starting at from (0: the first entry). On a gap answer it
// resends from the replica's expected LSN when entries hold it; a replica that
// is already past the last entry ends the shipment without error.
func (w *WALShipperClient) Ship(ctx context.Context, entries []WALEntry, from uint64) (*ShipResult, error) {
	res := &ShipResult{}
	if len(entries) == 0 {
		return res, nil
	}
	if from == 0 {
		from = entries[0].LSN
	}
	last := entries[len(entries)-1].LSN
	for from <= last {
		i := 0
		for i < len(entries) && entries[i].LSN < from {
			i++
		}
		j := i + w.maxBatch
		if j > len(entries) {
			j = len(entries)
		}
		batch, err := w.BuildBatch(entries[i:j])
		if err != nil {
			return res, err
		}
		ar, err := w.ApplyWALBatchResult(ctx, batch)
		var gap *WALGapError
		if asError(err, &gap) {
			res.Rewinds++
			if res.Rewinds > 16 {
				return res, err
			}
			switch {
			case gap.ExpectedLSN > last:
				res.NextLSN = gap.ExpectedLSN
				return res, nil
			case gap.ExpectedLSN < entries[0].LSN:
				return res, err // the replica needs entries we do not hold
			}
			from = gap.ExpectedLSN
			continue
		}
		if err != nil {
			return res, err
		}
		res.Batches++
		res.EntriesApplied += ar.EntriesApplied
		from = batch.LastLSN + 1
		res.NextLSN = from
	}
	return res, nil
}

// ReplicaStatus reads the replica's GET /api/v1/replica/status.
func (w *WALShipperClient) ReplicaStatus(ctx context.Context) (*ReplicaStatus, error) {
	if w.http == nil {
		return nil, &ConfigurationError{Key: "http_addr", Message: "a binary shipper needs WithStatusAddr for the replica's status"}
	}
	doc, err := w.http.do(ctx, http.MethodGet, "/api/v1/replica/status", nil, nil)
	if err != nil {
		return nil, err
	}
	var s ReplicaStatus
	raw, err := decodeDoc(doc, &s)
	if err != nil {
		return nil, err
	}
	s.Raw = raw
	s.LastAppliedLSN = parseLSN(raw["last_applied_lsn"])
	s.ExpectedLSN = parseLSN(raw["expected_lsn"])
	return &s, nil
}

func parseLSN(v any) uint64 {
	s, _ := v.(string)
	var n uint64
	_, _ = fmt.Sscanf(s, "%x", &n)
	return n
}

// GetReplicationStats returns this shipper's totals (the facade's stats names:
// total_entries_shipped, total_bytes_shipped, total_bytes_uncompressed,
// avg_compression_ratio, total_batches, failed_ships) and the replica's status
// as the one element of Replicas (when its HTTPS door is known).
func (w *WALShipperClient) GetReplicationStats(ctx context.Context) (*ReplicationStats, error) {
	shipped, raw := w.bytesShipped.Load(), w.bytesRaw.Load()
	ratio := 0.0
	if shipped > 0 {
		ratio = float64(raw) / float64(shipped)
	}
	s := &ReplicationStats{Stats: map[string]any{
		"total_entries_shipped": w.shipped.Load(), "total_bytes_shipped": shipped,
		"total_bytes_uncompressed": raw, "avg_compression_ratio": ratio,
		"total_batches": w.batches.Load(), "failed_ships": w.failed.Load(),
	}}
	if w.http != nil {
		st, err := w.ReplicaStatus(ctx)
		if err != nil {
			return s, err
		}
		s.Replicas = []map[string]any{st.Raw}
	}
	return s, nil
}

// Close closes the connections.
func (w *WALShipperClient) Close() error {
	if w.bin != nil {
		_ = w.bin.close()
	}
	if w.http != nil {
		_ = w.http.close()
	}
	return nil
}

func asError[T error](err error, target *T) bool {
	if err == nil {
		return false
	}
	return errorsAs(err, target)
}
