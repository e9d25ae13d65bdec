package themis

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// DataPoint is one time-series point, the roadmap's shape. TimestampMs 0 means now.
type DataPoint struct {
	Metric      string            `json:"metric"`
	Entity      string            `json:"entity"`
	TimestampMs int64             `json:"timestamp_ms"`
	Value       float64           `json:"value"`
	Tags        map[string]string `json:"tags,omitempty"`
}

// Vector is one vector write; Metadata is optional.
type Vector struct {
	PK       string         `json:"pk"`
	Vector   []float32      `json:"vector"`
	Metadata map[string]any `json:"metadata,omitempty"`
}

// BufferStats is the answer of GET /ts/buffer/stats (TS_BUFFER_STATS). Raw holds
// the whole document, fields this struct does not name included.
type BufferStats struct {
	PointsBuffered      int64          `json:"points_buffered"`
	PointsFlushed       int64          `json:"points_flushed"`
	FlushCount          int64          `json:"flush_count"`
	AutoFlushCount      int64          `json:"auto_flush_count"`
	ManualFlushCount    int64          `json:"manual_flush_count"`
	CurrentBufferSize   int64          `json:"current_buffer_size"`
	CurrentBufferMemory int64          `json:"current_buffer_memory"`
	AvgCompressionRatio float64        `json:"avg_compression_ratio"`
	LastFlushTime       *string        `json:"last_flush_time"`
	Workers             int            `json:"workers"`
	WorkersUnreachable  []string       `json:"workers_unreachable"`
	Raw                 map[string]any `json:"-"`
}

// VectorBufferStats is the answer of GET /vectors/buffer/stats (VECTOR_BUFFER_STATS).
type VectorBufferStats struct {
	VectorsBuffered     int64          `json:"vectors_buffered"`
	VectorsFlushed      int64          `json:"vectors_flushed"`
	FlushCount          int64          `json:"flush_count"`
	CurrentBufferSize   int64          `json:"current_buffer_size"`
	CurrentBufferMemory int64          `json:"current_buffer_memory"`
	CompressionType     string         `json:"compression_type"`
	LastFlushTime       *string        `json:"last_flush_time"`
	LiveVectors         int64          `json:"live_vectors"`
	Workers             int            `json:"workers"`
	WorkersUnreachable  []string       `json:"workers_unreachable"`
	Raw                 map[string]any `json:"-"`
}

// FlushResult is the answer of a server flush (points_flushed or vectors_flushed
// in Flushed).
type FlushResult struct {
	Success            bool           `json:"success"`
	Flushed            int64          `json:"-"`
	Workers            int            `json:"workers"`
	WorkersUnreachable []string       `json:"workers_unreachable"`
	Raw                map[string]any `json:"-"`
}

// Query selects points of one series: Start and End in milliseconds, inclusive
// (nil: unbounded).
type Query struct {
	Metric string
	Entity string
	Tags   map[string]string
	Start  *int64
	End    *int64
}

// Float is a float64 that reads the facade's "NaN", "inf", "-inf" strings.
type Float float64

// UnmarshalJSON reads a number or one of "NaN", "inf", "-inf".
func (f *Float) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		s, err := strconv.Unquote(string(b))
		if err != nil {
			return err
		}
		switch s {
		case "NaN":
			*f = Float(math.NaN())
		case "inf", "Infinity":
			*f = Float(math.Inf(1))
		case "-inf", "-Infinity":
			*f = Float(math.Inf(-1))
		default:
			return fmt.Errorf("not a float: %q", s)
		}
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = Float(v)
	return nil
}

// Sample is one stored point of a QueryResult.
type Sample struct {
	TimestampMs int64 `json:"timestamp_ms"`
	Value       Float `json:"value"`
}

// QueryResult is the answer of GET /ts/query.
type QueryResult struct {
	Series string   `json:"series"`
	Count  int      `json:"count"`
	Points []Sample `json:"points"`
}

// SearchRequest is a k-nearest-neighbour search; Filter matches metadata.
type SearchRequest struct {
	Vector []float32      `json:"vector"`
	K      int            `json:"k"`
	Filter map[string]any `json:"filter,omitempty"`
}

// SearchHit is one result of a search, closest first.
type SearchHit struct {
	PK       string         `json:"pk"`
	Distance float64        `json:"distance"`
	Metadata map[string]any `json:"metadata"`
}

// SearchResult is the answer of POST /vectors/search.
type SearchResult struct {
	Results            []SearchHit `json:"results"`
	WorkersUnreachable []string    `json:"workers_unreachable"`
}

// ReplicationStats is the answer of GET /api/v1/replication/stats.
type ReplicationStats struct {
	Replicas []map[string]any `json:"replicas"`
	Stats    map[string]any   `json:"stats"`
}

// ReplicaStatus is a replica's GET /api/v1/replica/status (LSNs as numbers).
type ReplicaStatus struct {
	LastAppliedLSN      uint64         `json:"-"`
	ExpectedLSN         uint64         `json:"-"`
	EntriesAppliedTotal int64          `json:"entries_applied_total"`
	BatchesApplied      int64          `json:"batches_applied"`
	Raw                 map[string]any `json:"-"`
}

// ApplyResult is a replica's answer to one applied WAL batch.
type ApplyResult struct {
	Success             bool    `json:"success"`
	EntriesApplied      int     `json:"entries_applied"`
	CompressionRatio    float64 `json:"compression_ratio"`
	DecompressionTimeMs float64 `json:"decompression_time_ms"`
}

// CompressionConfig is POST /api/v1/replication/config's body.
type CompressionConfig struct {
	CompressionType  string `json:"compression_type"`
	CompressionLevel int    `json:"compression_level,omitempty"`
}

// decodeDoc fills dst from a JSON document and returns the document as a map.
func decodeDoc(doc []byte, dst any) (map[string]any, error) {
	if err := json.Unmarshal(doc, dst); err != nil {
		return nil, fmt.Errorf("themis: bad answer %.200q: %w", doc, err)
	}
	var raw map[string]any
	_ = json.Unmarshal(doc, &raw)
	return raw, nil
}

func asInt64(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}
