// Package wire is the codec of the Themis binary protocol, version 1
// (docs/api/BINARY_PROTOCOL_EXTENSIONS.md): the 10-byte frame header and every
// payload layout, little-endian throughout. It knows nothing of sockets.
package wire

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Opcodes.
const (
	OpHello                     byte = 0x01
	OpAuth                      byte = 0x02
	OpPing                      byte = 0x03
	OpGoAway                    byte = 0x04
	OpError                     byte = 0x0F
	OpTSPutBuffered             byte = 0x70
	OpTSBufferStats             byte = 0x71
	OpTSBufferFlush             byte = 0x72
	OpTSPutBufferedBatch        byte = 0x73
	OpVectorAddBuffered         byte = 0x80
	OpVectorUpdateBuffered      byte = 0x81
	OpVectorRemoveBuffered      byte = 0x82
	OpVectorBufferStats         byte = 0x83
	OpVectorBufferFlush         byte = 0x84
	OpVectorAddBufferedBatch    byte = 0x85
	OpVectorUpdateBufferedBatch byte = 0x86
	OpWALApplyCompressed        byte = 0x90
	OpReplicationStats          byte = 0x91
	OpReplicationConfig         byte = 0x92
)

// OpcodeNames maps the specification's opcode names to their numbers.
var OpcodeNames = map[string]byte{
	"HELLO": OpHello, "AUTH": OpAuth, "PING": OpPing, "GOAWAY": OpGoAway, "ERROR": OpError,
	"TS_PUT_BUFFERED": OpTSPutBuffered, "TS_BUFFER_STATS": OpTSBufferStats,
	"TS_BUFFER_FLUSH": OpTSBufferFlush, "TS_PUT_BUFFERED_BATCH": OpTSPutBufferedBatch,
	"VECTOR_ADD_BUFFERED": OpVectorAddBuffered, "VECTOR_UPDATE_BUFFERED": OpVectorUpdateBuffered,
	"VECTOR_REMOVE_BUFFERED": OpVectorRemoveBuffered, "VECTOR_BUFFER_STATS": OpVectorBufferStats,
	"VECTOR_BUFFER_FLUSH": OpVectorBufferFlush, "VECTOR_ADD_BUFFERED_BATCH": OpVectorAddBufferedBatch,
	"VECTOR_UPDATE_BUFFERED_BATCH": OpVectorUpdateBufferedBatch,
	"WAL_APPLY_COMPRESSED":         OpWALApplyCompressed, "REPLICATION_STATS": OpReplicationStats,
	"REPLICATION_CONFIG": OpReplicationConfig,
}

// Flags.
const (
	FlagAckQueued  byte = 0x01
	FlagCompressed byte = 0x02
	FlagChecksum   byte = 0x04
	FlagReply      byte = 0x80
	flagsReserved  byte = 0x78
)

// Error codes.
const (
	CodeMalformedFrame       uint16 = 1
	CodeUnknownOpcode        uint16 = 2
	CodeUnsupportedFlags     uint16 = 3
	CodeFrameTooLarge        uint16 = 4
	CodeUnsupportedVersion   uint16 = 5
	CodeNotAuthenticated     uint16 = 6
	CodeAuthenticationFailed uint16 = 7
	CodePermissionDenied     uint16 = 8
	CodeInvalidRequest       uint16 = 9
	CodeNotFound             uint16 = 10
	CodeConflict             uint16 = 11
	CodeTooManyInFlight      uint16 = 12
	CodeRateLimited          uint16 = 13
	CodeBufferFull           uint16 = 14
	CodeUnavailable          uint16 = 15
	CodeTimeout              uint16 = 16
	CodeCorruptBatch         uint16 = 17
	CodeWALGap               uint16 = 18
	CodeForeignPrimary       uint16 = 19
	CodeShuttingDown         uint16 = 20
	CodeInternal             uint16 = 21
	CodeNeedDictionary       uint16 = 22
)

// CodeNames maps the specification's error code names to their numbers.
var CodeNames = map[string]uint16{
	"MALFORMED_FRAME": 1, "UNKNOWN_OPCODE": 2, "UNSUPPORTED_FLAGS": 3, "FRAME_TOO_LARGE": 4,
	"UNSUPPORTED_VERSION": 5, "NOT_AUTHENTICATED": 6, "AUTHENTICATION_FAILED": 7,
	"PERMISSION_DENIED": 8, "INVALID_REQUEST": 9, "NOT_FOUND": 10, "CONFLICT": 11,
	"TOO_MANY_IN_FLIGHT": 12, "RATE_LIMITED": 13, "BUFFER_FULL": 14, "UNAVAILABLE": 15,
	"TIMEOUT": 16, "CORRUPT_BATCH": 17, "WAL_GAP": 18, "FOREIGN_PRIMARY": 19,
	"SHUTTING_DOWN": 20, "INTERNAL": 21, "NEED_DICTIONARY": 22,
}

// HeaderSize is the size of every frame header in bytes.
const HeaderSize = 10

// Protocol bounds.
const (
	MaxFrameBytes   = 4 << 20
	MaxWALBodyBytes = 128 << 20
	MaxMessageBytes = 4096
	MaxPingBytes    = 64
	MaxVectorDim    = 65536
	MaxIDBytes      = 256
	ProtocolVersion = 1
	helloMagic      = "THMB"
)

// CodecError is a refusal of the decoder, with the protocol's error code.
type CodecError struct {
	Code    uint16
	Message string
}

// Error describes the failure and what to do.
func (e *CodecError) Error() string {
	return fmt.Sprintf("binary protocol error %d: %s", e.Code, e.Message)
}

func malformed(format string, a ...any) error {
	return &CodecError{Code: CodeMalformedFrame, Message: fmt.Sprintf(format, a...)}
}

// Header is the 10-byte frame header.
type Header struct {
	Opcode    byte
	Flags     byte
	Length    uint32
	RequestID uint32
}

// PutHeader writes h into b[:10].
func PutHeader(b []byte, h Header) {
	b[0] = h.Opcode
	b[1] = h.Flags
	binary.LittleEndian.PutUint32(b[2:], h.Length)
	binary.LittleEndian.PutUint32(b[6:], h.RequestID)
}

// ParseHeader reads a header from b (at least 10 bytes).
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, malformed("header is %d bytes, needs 10", len(b))
	}
	return Header{b[0], b[1], binary.LittleEndian.Uint32(b[2:]), binary.LittleEndian.Uint32(b[6:])}, nil
}

var known = func() map[byte]bool {
	m := map[byte]bool{}
	for _, v := range OpcodeNames {
		m[v] = true
	}
	return m
}()

// CheckHeader judges a header as the server does: length, opcode, flags.
func CheckHeader(h Header, maxFrame uint32) error {
	limit := maxFrame
	if h.Opcode == OpWALApplyCompressed {
		limit = MaxWALBodyBytes
	}
	if h.Length > limit {
		return &CodecError{CodeFrameTooLarge, fmt.Sprintf("payload of %d bytes over %d", h.Length, limit)}
	}
	if !known[h.Opcode] {
		return &CodecError{CodeUnknownOpcode, fmt.Sprintf("opcode 0x%02x", h.Opcode)}
	}
	if h.Flags&(flagsReserved|FlagCompressed|FlagChecksum) != 0 {
		return &CodecError{CodeUnsupportedFlags, fmt.Sprintf("flags 0x%02x", h.Flags)}
	}
	return nil
}

// Frame builds a whole frame: header plus payload.
func Frame(op, flags byte, requestID uint32, payload []byte) []byte {
	b := make([]byte, HeaderSize+len(payload))
	PutHeader(b, Header{op, flags, uint32(len(payload)), requestID})
	copy(b[HeaderSize:], payload)
	return b
}

// --- primitive writers and reader ---

func appendU16(b []byte, v uint16) []byte { return binary.LittleEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }
func appendU64(b []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(b, v) }

func appendStr16(b []byte, s string) []byte {
	b = appendU16(b, uint16(len(s)))
	return append(b, s...)
}

func appendStr8(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = malformed("payload ends at byte %d, needs %d more", len(r.b), n-(len(r.b)-r.off))
		return nil
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s
}

func (r *reader) u8() byte {
	s := r.take(1)
	if s == nil {
		return 0
	}
	return s[0]
}
func (r *reader) u16() uint16 {
	s := r.take(2)
	if s == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(s)
}
func (r *reader) u32() uint32 {
	s := r.take(4)
	if s == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(s)
}
func (r *reader) u64() uint64 {
	s := r.take(8)
	if s == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(s)
}
func (r *reader) str(n int) string {
	s := r.take(n)
	if r.err == nil && !utf8.Valid(s) {
		r.err = malformed("string is not UTF-8")
	}
	return string(s)
}
func (r *reader) str16() string { return r.str(int(r.u16())) }
func (r *reader) str8() string  { return r.str(int(r.u8())) }
func (r *reader) done() error {
	if r.err == nil && r.off != len(r.b) {
		r.err = malformed("%d trailing bytes", len(r.b)-r.off)
	}
	return r.err
}

// --- session payloads ---

// HelloRequest is the HELLO payload.
type HelloRequest struct {
	MinVersion, MaxVersion uint16
	ClientID               string
}

// AppendHello encodes h.
func AppendHello(b []byte, h HelloRequest) []byte {
	b = append(b, helloMagic...)
	b = appendU16(b, h.MinVersion)
	b = appendU16(b, h.MaxVersion)
	return appendStr16(b, h.ClientID)
}

// DecodeHello decodes a HELLO payload.
func DecodeHello(p []byte) (HelloRequest, error) {
	r := &reader{b: p}
	if string(r.take(4)) != helloMagic && r.err == nil {
		return HelloRequest{}, malformed("bad magic")
	}
	h := HelloRequest{MinVersion: r.u16(), MaxVersion: r.u16(), ClientID: r.str16()}
	return h, r.done()
}

// HelloOk is the HELLO reply.
type HelloOk struct {
	Version       uint16
	MaxFrameBytes uint32
	MaxInFlight   uint16
	AuthMethods   []string
}

// AppendHelloOk encodes h.
func AppendHelloOk(b []byte, h HelloOk) []byte {
	b = appendU16(b, h.Version)
	b = appendU32(b, h.MaxFrameBytes)
	b = appendU16(b, h.MaxInFlight)
	b = append(b, byte(len(h.AuthMethods)))
	for _, m := range h.AuthMethods {
		b = appendStr8(b, m)
	}
	return b
}

// DecodeHelloOk decodes a HELLO reply.
func DecodeHelloOk(p []byte) (HelloOk, error) {
	r := &reader{b: p}
	h := HelloOk{Version: r.u16(), MaxFrameBytes: r.u32(), MaxInFlight: r.u16()}
	n := int(r.u8())
	for i := 0; i < n && r.err == nil; i++ {
		h.AuthMethods = append(h.AuthMethods, r.str8())
	}
	return h, r.done()
}

// AppendAuth encodes an AuthRequest.
func AppendAuth(b []byte, method string, credential []byte) []byte {
	b = appendStr8(b, method)
	b = appendU16(b, uint16(len(credential)))
	return append(b, credential...)
}

// DecodeAuth decodes an AuthRequest.
func DecodeAuth(p []byte) (method string, credential []byte, err error) {
	r := &reader{b: p}
	method = r.str8()
	credential = append([]byte(nil), r.take(int(r.u16()))...)
	return method, credential, r.done()
}

// DecodeAuthOk decodes an AuthOk and returns the role.
func DecodeAuthOk(p []byte) (string, error) {
	r := &reader{b: p}
	role := r.str8()
	return role, r.done()
}

// GoAway is the server's GOAWAY payload.
type GoAway struct {
	LastRequestID uint32
	Code          uint16
	Message       string
}

// AppendGoAway encodes g.
func AppendGoAway(b []byte, g GoAway) []byte {
	b = appendU32(b, g.LastRequestID)
	b = appendU16(b, g.Code)
	return appendStr16(b, g.Message)
}

// DecodeGoAway decodes a GOAWAY payload.
func DecodeGoAway(p []byte) (GoAway, error) {
	r := &reader{b: p}
	g := GoAway{LastRequestID: r.u32(), Code: r.u16(), Message: r.str16()}
	return g, r.done()
}

// ErrorReply is the ERROR payload.
type ErrorReply struct {
	Code          uint16
	Retriable     bool
	RetryAfterMs  uint32
	ItemsAccepted uint32
	Message       string
}

// AppendError encodes e.
func AppendError(b []byte, e ErrorReply) []byte {
	b = appendU16(b, e.Code)
	var f byte
	if e.Retriable {
		f = 1
	}
	b = append(b, f)
	b = appendU32(b, e.RetryAfterMs)
	b = appendU32(b, e.ItemsAccepted)
	return appendStr16(b, e.Message)
}

// DecodeError decodes an ERROR payload.
func DecodeError(p []byte) (ErrorReply, error) {
	r := &reader{b: p}
	e := ErrorReply{Code: r.u16()}
	f := r.u8()
	if f&^1 != 0 && r.err == nil {
		return e, malformed("error_flags 0x%02x", f)
	}
	e.Retriable = f&1 == 1
	e.RetryAfterMs = r.u32()
	e.ItemsAccepted = r.u32()
	e.Message = r.str16()
	return e, r.done()
}
