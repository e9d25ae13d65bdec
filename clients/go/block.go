package themis

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"github.com/themisdb/go-client/internal/gorilla"
	"github.com/themisdb/go-client/internal/wire"
)

// SeriesKey is the canonical key of a series: [metric, entity, {tags sorted by
// name}] as compact JSON (pipeline/ts/point.py series_key).
func SeriesKey(metric, entity string, tags map[string]string) string {
	b := append([]byte{'['}, wireJSONString(metric)...)
	b = append(b, ',')
	b = append(b, wireJSONString(entity)...)
	b = append(b, ',')
	names := make([]string, 0, len(tags))
	for k := range tags {
		names = append(names, k)
	}
	slices.Sort(names)
	ordered := make([]wire.Tag, 0, len(names))
	for _, k := range names {
		ordered = append(ordered, wire.Tag{Name: k, Value: tags[k]})
	}
	b = wire.AppendTagsJSON(b, ordered)
	return string(append(b, ']'))
}

func wireJSONString(s string) []byte { return wire.AppendJSONString(nil, s) }

// EncodeTSBlock builds a TGBK Gorilla block (docs/formats.md) of one series'
// samples: sorted by timestamp, the last of equal timestamps kept, at most
// 65,535 points, the values in a Prometheus XOR chunk. It is the payload of a
// WALEntryTSBlock entry.
func EncodeTSBlock(metric, entity string, tags map[string]string, samples []Sample) ([]byte, error) {
	if len(samples) == 0 {
		return nil, &ValidationError{Field: "samples", Message: "a block needs at least one sample"}
	}
	sorted := slices.Clone(samples)
	slices.SortStableFunc(sorted, func(a, b Sample) int {
		switch {
		case a.TimestampMs < b.TimestampMs:
			return -1
		case a.TimestampMs > b.TimestampMs:
			return 1
		}
		return 0
	})
	kept := sorted[:0]
	for _, s := range sorted {
		if len(kept) > 0 && kept[len(kept)-1].TimestampMs == s.TimestampMs {
			kept[len(kept)-1] = s // the last write wins
			continue
		}
		kept = append(kept, s)
	}
	if len(kept) > math.MaxUint16 {
		return nil, &ValidationError{Field: "samples", Message: fmt.Sprintf("%d points over 65535 in one block: split them", len(kept))}
	}
	key := SeriesKey(metric, entity, tags)
	if len(key) > math.MaxUint16 {
		return nil, &ValidationError{Field: "series", Message: "series key over 65535 bytes"}
	}
	ch := gorilla.NewChunk()
	for _, s := range kept {
		ch.Append(s.TimestampMs, float64(s.Value))
	}
	chunk := ch.Bytes()
	le := binary.LittleEndian
	b := append([]byte("TGBK"), 1)
	b = le.AppendUint16(b, uint16(len(key)))
	b = append(b, key...)
	b = le.AppendUint32(b, uint32(len(kept)))
	b = le.AppendUint64(b, uint64(kept[0].TimestampMs))
	b = le.AppendUint64(b, uint64(kept[len(kept)-1].TimestampMs))
	b = le.AppendUint32(b, uint32(len(chunk)))
	b = append(b, chunk...)
	return le.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}
