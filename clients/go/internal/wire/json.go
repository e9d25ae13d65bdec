package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// parseStringObject reads a JSON object of strings keeping the member order.
func parseStringObject(raw []byte) ([]Tag, error) {
	if hasLoneSurrogate(raw) {
		return nil, malformed("tags: a lone surrogate escape has no UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, malformed("tags: %v", ErrNotObject)
	}
	var tags []Tag
	seen := map[string]bool{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, malformed("tags: %v", err)
		}
		v, err := dec.Token()
		ks, ok1 := k.(string)
		vs, ok2 := v.(string)
		if err != nil || !ok1 {
			return nil, malformed("tags: %v", ErrNotObject)
		}
		if !ok2 {
			return nil, &CodecError{CodeInvalidRequest, fmt.Sprintf("tag %q: value is not a string", ks)}
		}
		if seen[ks] {
			return nil, malformed("tags: repeated name %q", ks)
		}
		seen[ks] = true
		tags = append(tags, Tag{ks, vs})
	}
	if _, err := dec.Token(); err != nil {
		return nil, malformed("tags: %v", err)
	}
	if dec.More() {
		return nil, malformed("tags: trailing data")
	}
	return tags, nil
}

// hasLoneSurrogate finds a \uD800-\uDFFF escape that is not a valid pair.
func hasLoneSurrogate(raw []byte) bool {
	esc := func(i int) (uint64, bool) {
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
		return v, err == nil
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		if i+1 < len(raw) && raw[i+1] != 'u' {
			i++ // skip the escaped character
			continue
		}
		v, ok := esc(i)
		if !ok {
			continue
		}
		switch {
		case v >= 0xD800 && v < 0xDC00:
			w, ok := esc(i + 6)
			if !ok || w < 0xDC00 || w > 0xDFFF {
				return true
			}
			i += 11
		case v >= 0xDC00 && v <= 0xDFFF:
			return true
		default:
			i += 5
		}
	}
	return false
}
