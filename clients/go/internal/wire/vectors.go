package wire

import (
	"fmt"
	"math"
)

// Vector payloads: writes, batches, removes, and the WAL apply frame.

// VectorWrite is one vector write; Metadata is raw JSON (nil: none).
type VectorWrite struct {
	PK       string
	Vector   []float32
	Metadata []byte
}

// AppendVectorWrite encodes a VectorWrite payload.
func AppendVectorWrite(b []byte, v VectorWrite) []byte {
	b = appendU32(b, uint32(len(v.Vector)))
	for _, x := range v.Vector {
		b = appendU32(b, math.Float32bits(x))
	}
	b = appendStr16(b, v.PK)
	b = appendU32(b, uint32(len(v.Metadata)))
	return append(b, v.Metadata...)
}

// DecodeVectorWrite decodes a VectorWrite payload.
func DecodeVectorWrite(p []byte) (VectorWrite, error) {
	r := &reader{b: p}
	d := r.u32()
	if r.err == nil && (d < 1 || d > MaxVectorDim) {
		return VectorWrite{}, &CodecError{CodeInvalidRequest, fmt.Sprintf("dimension %d outside 1..65536", d)}
	}
	if r.err == nil && int(d)*4 > len(p)-r.off {
		return VectorWrite{}, malformed("dimension %d exceeds the payload", d)
	}
	v := VectorWrite{Vector: make([]float32, d)}
	for i := range v.Vector {
		v.Vector[i] = math.Float32frombits(r.u32())
	}
	v.PK = r.str16()
	if n := int(r.u32()); n > 0 || r.err != nil {
		v.Metadata = append([]byte(nil), r.take(n)...)
	}
	return v, r.done()
}

// AppendVectorBatch encodes a VectorBatch payload; every vector has the same dimension.
func AppendVectorBatch(b []byte, vs []VectorWrite) []byte {
	b = appendU32(b, uint32(len(vs)))
	d := 0
	if len(vs) > 0 {
		d = len(vs[0].Vector)
	}
	b = appendU32(b, uint32(d))
	for _, v := range vs {
		for _, x := range v.Vector {
			b = appendU32(b, math.Float32bits(x))
		}
	}
	for _, v := range vs {
		b = appendStr16(b, v.PK)
		b = appendU32(b, uint32(len(v.Metadata)))
		b = append(b, v.Metadata...)
	}
	return b
}

// DecodeVectorBatch decodes a VectorBatch payload.
func DecodeVectorBatch(p []byte) ([]VectorWrite, error) {
	r := &reader{b: p}
	n, d := r.u32(), r.u32()
	if r.err == nil && uint64(n)*uint64(d)*4 > uint64(len(p)) {
		return nil, malformed("%d x %d vectors exceed the payload", n, d)
	}
	vs := make([]VectorWrite, n)
	for i := range vs {
		vs[i].Vector = make([]float32, d)
		for j := range vs[i].Vector {
			vs[i].Vector[j] = math.Float32frombits(r.u32())
		}
	}
	for i := range vs {
		vs[i].PK = r.str16()
		if m := int(r.u32()); m > 0 {
			vs[i].Metadata = append([]byte(nil), r.take(m)...)
		}
	}
	return vs, r.done()
}

// AppendVectorRemove encodes a VectorRemove payload.
func AppendVectorRemove(b []byte, pk string) []byte { return appendStr16(b, pk) }

// DecodeVectorRemove decodes a VectorRemove payload.
func DecodeVectorRemove(p []byte) (string, error) {
	r := &reader{b: p}
	pk := r.str16()
	return pk, r.done()
}

// AppendWALApply encodes a WalApply payload.
func AppendWALApply(b []byte, primaryID string, batch []byte) []byte {
	return append(appendStr16(b, primaryID), batch...)
}

// DecodeWALApply decodes a WalApply payload.
func DecodeWALApply(p []byte) (string, []byte, error) {
	r := &reader{b: p}
	id := r.str16()
	if r.err != nil {
		return "", nil, r.err
	}
	return id, p[r.off:], nil
}
