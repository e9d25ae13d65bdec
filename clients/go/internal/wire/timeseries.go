package wire

import (
	"encoding/binary"
	"errors"
	"math"
)

// Time-series payloads: points, batches and their acknowledgement.

// Tag is one tag in wire order.
type Tag struct{ Name, Value string }

// Point is one time-series point as the codec sees it; Tags keep their order.
type Point struct {
	Metric      string
	Entity      string
	TimestampMs int64
	Value       float64
	Tags        []Tag
}

// AppendTagsJSON writes tags as a compact JSON object in their order
// (the encoding of pipeline/binary/strings.py: no ASCII escaping).
func AppendTagsJSON(b []byte, tags []Tag) []byte {
	b = append(b, '{')
	for i, t := range tags {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, t.Name)
		b = append(b, ':')
		b = AppendJSONString(b, t.Value)
	}
	return append(b, '}')
}

// AppendJSONString writes s as a JSON string the way Python's json.dumps with
// ensure_ascii=False does.
func AppendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			b = append(b, '\\', '"')
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// AppendTSPoint encodes a TsPoint payload.
func AppendTSPoint(b []byte, p Point) []byte {
	b = appendStr16(b, p.Metric)
	b = appendStr16(b, p.Entity)
	b = appendU64(b, uint64(p.TimestampMs))
	b = appendU64(b, math.Float64bits(p.Value))
	if len(p.Tags) == 0 {
		return appendU16(b, 0)
	}
	at := len(b)
	b = appendU16(b, 0)
	b = AppendTagsJSON(b, p.Tags)
	binary.LittleEndian.PutUint16(b[at:], uint16(len(b)-at-2))
	return b
}

// DecodeTSPoint decodes a TsPoint payload; tags keep the JSON order.
func DecodeTSPoint(p []byte) (Point, error) {
	r := &reader{b: p}
	pt := Point{Metric: r.str16(), Entity: r.str16(), TimestampMs: int64(r.u64()), Value: math.Float64frombits(r.u64())}
	n := int(r.u16())
	raw := r.take(n)
	if err := r.done(); err != nil {
		return pt, err
	}
	if n > 0 {
		tags, err := parseStringObject(raw)
		if err != nil {
			return pt, err
		}
		pt.Tags = tags
	}
	return pt, nil
}

// BatchEncoder builds TsBatch payloads with a string table, reusing its memory.
type BatchEncoder struct {
	index   map[string]uint32
	strings []string
	body    []byte
	count   uint32
	recent  [8]recentString
}

func (e *BatchEncoder) intern(s string) uint32 {
	// Consecutive points mostly repeat the strings of the one before.
	h := len(s) & 7
	if c := &e.recent[h]; c.ok && c.s == s {
		return c.i
	}
	i, ok := e.index[s]
	if !ok {
		i = uint32(len(e.strings))
		e.index[s] = i
		e.strings = append(e.strings, s)
	}
	e.recent[h] = recentString{s, i, true}
	return i
}

type recentString struct {
	s  string
	i  uint32
	ok bool
}

// AppendTSBatch encodes points as a TsBatch payload appended to b.
func (e *BatchEncoder) AppendTSBatch(b []byte, points []Point) []byte {
	if e.index == nil {
		e.index = make(map[string]uint32)
	}
	clear(e.index)
	e.recent = [8]recentString{}
	e.strings = e.strings[:0]
	body := appendU32(e.body[:0], uint32(len(points)))
	for i := range points {
		p := &points[i]
		body = appendU32(body, e.intern(p.Metric))
		body = appendU32(body, e.intern(p.Entity))
		body = appendU64(body, uint64(p.TimestampMs))
		body = appendU64(body, math.Float64bits(p.Value))
		body = appendU16(body, uint16(len(p.Tags)))
		for _, t := range p.Tags {
			body = appendU32(body, e.intern(t.Name))
			body = appendU32(body, e.intern(t.Value))
		}
	}
	e.body = body
	b = appendU32(b, uint32(len(e.strings)))
	for _, s := range e.strings {
		b = appendStr16(b, s)
	}
	return append(b, body...)
}

// AppendTSBatch encodes points as a TsBatch payload (see BatchEncoder).
func AppendTSBatch(b []byte, points []Point) []byte {
	var e BatchEncoder
	return e.AppendTSBatch(b, points)
}

// DecodeTSBatch decodes a TsBatch payload.
func DecodeTSBatch(p []byte) ([]Point, error) {
	r := &reader{b: p}
	ns := r.u32()
	if r.err == nil && int(ns) > len(p)/2 {
		return nil, malformed("string_count %d exceeds the payload", ns)
	}
	table := make([]string, 0, ns)
	for i := uint32(0); i < ns && r.err == nil; i++ {
		table = append(table, r.str16())
	}
	str := func(i uint32) string {
		if r.err != nil {
			return ""
		}
		if int(i) >= len(table) {
			r.err = malformed("string index %d out of range", i)
			return ""
		}
		return table[i]
	}
	np := r.u32()
	if r.err == nil && int(np) > (len(p)-r.off)/26 {
		return nil, malformed("point_count %d exceeds the payload", np)
	}
	points := make([]Point, 0, np)
	for i := uint32(0); i < np && r.err == nil; i++ {
		pt := Point{Metric: str(r.u32()), Entity: str(r.u32()), TimestampMs: int64(r.u64()), Value: math.Float64frombits(r.u64())}
		nt := r.u16()
		for j := uint16(0); j < nt && r.err == nil; j++ {
			pt.Tags = append(pt.Tags, Tag{str(r.u32()), str(r.u32())})
		}
		points = append(points, pt)
	}
	return points, r.done()
}

// WriteAck is the reply of every write.
type WriteAck struct{ Accepted, BufferSize uint32 }

// AppendWriteAck encodes a.
func AppendWriteAck(b []byte, a WriteAck) []byte {
	return appendU32(appendU32(b, a.Accepted), a.BufferSize)
}

// DecodeWriteAck decodes a WriteAck.
func DecodeWriteAck(p []byte) (WriteAck, error) {
	r := &reader{b: p}
	a := WriteAck{r.u32(), r.u32()}
	return a, r.done()
}

// ErrNotObject is returned for tags that are not a JSON object of strings.
var ErrNotObject = errors.New("tags are not a JSON object of strings")

// Reset starts a new batch in the encoder (the streaming form of AppendTSBatch:
// Reset, then Add and AddTag per point, then Finish).
func (e *BatchEncoder) Reset() {
	if e.index == nil {
		e.index = make(map[string]uint32)
	}
	clear(e.index)
	e.recent = [8]recentString{}
	e.strings = e.strings[:0]
	e.body = appendU32(e.body[:0], 0)
	e.count = 0
}

// Add appends a point with ntags tags, which must follow as AddTag calls.
func (e *BatchEncoder) Add(metric, entity string, timestampMs int64, value float64, ntags int) {
	b := e.body
	b = appendU32(b, e.intern(metric))
	b = appendU32(b, e.intern(entity))
	b = appendU64(b, uint64(timestampMs))
	b = appendU64(b, math.Float64bits(value))
	e.body = appendU16(b, uint16(ntags))
	e.count++
}

// AddTag appends one tag of the last point.
func (e *BatchEncoder) AddTag(name, value string) {
	e.body = appendU32(appendU32(e.body, e.intern(name)), e.intern(value))
}

// Finish appends the TsBatch payload of the points added since Reset to b.
func (e *BatchEncoder) Finish(b []byte) []byte {
	binary.LittleEndian.PutUint32(e.body, e.count)
	b = appendU32(b, uint32(len(e.strings)))
	for _, s := range e.strings {
		b = appendStr16(b, s)
	}
	return append(b, e.body...)
}
