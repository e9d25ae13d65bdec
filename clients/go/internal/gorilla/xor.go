// Package gorilla writes Prometheus XOR chunks (tsdb/chunkenc/xor.go bit layout,
// big-endian sample count): the chunk inside a TGBK Gorilla block.
package gorilla

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// bstream is an append-only bit stream; count is the bits still free in the last byte.
type bstream struct {
	stream []byte
	count  uint8
}

func (b *bstream) writeBit(bit bool) {
	if b.count == 0 {
		b.stream = append(b.stream, 0)
		b.count = 8
	}
	if bit {
		b.stream[len(b.stream)-1] |= 1 << (b.count - 1)
	}
	b.count--
}

func (b *bstream) writeByte(byt byte) {
	if b.count == 0 {
		b.stream = append(b.stream, 0)
		b.count = 8
	}
	b.stream[len(b.stream)-1] |= byt >> (8 - b.count)
	if b.count == 8 { // the byte filled the last one exactly
		b.count = 0
		return
	}
	b.stream = append(b.stream, byt<<b.count)
}

func (b *bstream) writeBits(u uint64, nbits int) {
	u <<= 64 - uint(nbits)
	for nbits >= 8 {
		b.writeByte(byte(u >> 56))
		u <<= 8
		nbits -= 8
	}
	for nbits > 0 {
		b.writeBit(u>>63 == 1)
		u <<= 1
		nbits--
	}
}

// Chunk is an XOR chunk being written; at most 65,535 samples.
type Chunk struct {
	b        bstream
	t        int64
	v        float64
	tDelta   uint64
	leading  uint8
	trailing uint8
}

// NewChunk returns an empty chunk.
func NewChunk() *Chunk {
	return &Chunk{b: bstream{stream: make([]byte, 2, 128)}, leading: 0xff}
}

// NumSamples is the samples appended so far.
func (c *Chunk) NumSamples() int { return int(binary.BigEndian.Uint16(c.b.stream)) }

// Bytes is the chunk as Prometheus writes it.
func (c *Chunk) Bytes() []byte { return c.b.stream }

func bitRange(x int64, nbits uint8) bool {
	return -((1<<(nbits-1))-1) <= x && x <= 1<<(nbits-1)
}

// Append adds a sample; timestamps must increase.
func (c *Chunk) Append(t int64, v float64) {
	var tDelta uint64
	num := binary.BigEndian.Uint16(c.b.stream)
	switch num {
	case 0:
		var buf [binary.MaxVarintLen64]byte
		for _, x := range buf[:binary.PutVarint(buf[:], t)] {
			c.b.writeByte(x)
		}
		c.b.writeBits(math.Float64bits(v), 64)
	case 1:
		tDelta = uint64(t - c.t)
		var buf [binary.MaxVarintLen64]byte
		for _, x := range buf[:binary.PutUvarint(buf[:], tDelta)] {
			c.b.writeByte(x)
		}
		c.writeVDelta(v)
	default:
		tDelta = uint64(t - c.t)
		dod := int64(tDelta - c.tDelta)
		switch {
		case dod == 0:
			c.b.writeBit(false)
		case bitRange(dod, 14):
			c.b.writeByte(0b10<<6 | (uint8(dod>>8) & (1<<6 - 1)))
			c.b.writeByte(uint8(dod))
		case bitRange(dod, 17):
			c.b.writeBits(0b110, 3)
			c.b.writeBits(uint64(dod), 17)
		case bitRange(dod, 20):
			c.b.writeBits(0b1110, 4)
			c.b.writeBits(uint64(dod), 20)
		default:
			c.b.writeBits(0b1111, 4)
			c.b.writeBits(uint64(dod), 64)
		}
		c.writeVDelta(v)
	}
	c.t, c.v, c.tDelta = t, v, tDelta
	binary.BigEndian.PutUint16(c.b.stream, num+1)
}

func (c *Chunk) writeVDelta(v float64) {
	delta := math.Float64bits(v) ^ math.Float64bits(c.v)
	if delta == 0 {
		c.b.writeBit(false)
		return
	}
	c.b.writeBit(true)
	newLeading := uint8(bits.LeadingZeros64(delta))
	newTrailing := uint8(bits.TrailingZeros64(delta))
	if newLeading >= 32 {
		newLeading = 31
	}
	if c.leading != 0xff && newLeading >= c.leading && newTrailing >= c.trailing {
		c.b.writeBit(false)
		c.b.writeBits(delta>>c.trailing, 64-int(c.leading)-int(c.trailing))
		return
	}
	c.leading, c.trailing = newLeading, newTrailing
	c.b.writeBit(true)
	c.b.writeBits(uint64(newLeading), 5)
	sigbits := 64 - newLeading - newTrailing
	c.b.writeBits(uint64(sigbits), 6)
	c.b.writeBits(delta>>newTrailing, int(sigbits))
}
