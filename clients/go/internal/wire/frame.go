package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// Limits of the codec (pipeline/limits.py).
const (
	MaxMetricBytes = 4096
	MaxEntityBytes = 4096
	MaxFramePoints = 100_000
)

// Empty is the payload of stats and flush requests.
type Empty struct{}

// JSONBody is a payload that is one JSON object (stats, flush, replication).
type JSONBody struct{ Document json.RawMessage }

// Ping is a PING payload (request or PONG).
type Ping struct{ Data []byte }

// AuthRequest is an AUTH payload.
type AuthRequest struct {
	Method     string
	Credential []byte
}

// AuthOk is the AUTH reply.
type AuthOk struct{ Role string }

// VectorRemove is a VECTOR_REMOVE_BUFFERED payload.
type VectorRemove struct{ PK string }

// VectorBatch is a VECTOR_*_BUFFERED_BATCH payload.
type VectorBatch struct{ Vectors []VectorWrite }

// TSBatch is a TS_PUT_BUFFERED_BATCH payload.
type TSBatch struct{ Points []Point }

// WALApply is a WAL_APPLY_COMPRESSED payload.
type WALApply struct {
	PrimaryID string
	Batch     []byte
}

// DecodeFrame judges and decodes one whole frame (header and payload), as a
// server or client reads it: header checks first, then the payload layout of the
// opcode in the frame's direction.
func DecodeFrame(frame []byte) (Header, any, error) {
	h, err := ParseHeader(frame)
	if err != nil {
		return h, nil, err
	}
	if err := CheckHeader(h, MaxFrameBytes); err != nil {
		return h, nil, err
	}
	reply := h.Flags&FlagReply != 0
	if !reply && (h.Opcode == OpGoAway || h.Opcode == OpError) {
		return h, nil, &CodecError{CodeUnknownOpcode, fmt.Sprintf("opcode 0x%02x is not sent by clients", h.Opcode)}
	}
	if uint32(len(frame)-HeaderSize) != h.Length {
		return h, nil, malformed("header declares %d payload bytes, %d follow", h.Length, len(frame)-HeaderSize)
	}
	body, err := DecodePayload(h.Opcode, reply, frame[HeaderSize:])
	return h, body, err
}

// DecodePayload decodes the payload of opcode op (reply: the server's answer).
func DecodePayload(op byte, reply bool, p []byte) (any, error) {
	if reply {
		switch op {
		case OpHello:
			return DecodeHelloOk(p)
		case OpAuth:
			role, err := DecodeAuthOk(p)
			return AuthOk{role}, err
		case OpPing:
			return decodePing(p)
		case OpGoAway:
			return DecodeGoAway(p)
		case OpError:
			return DecodeError(p)
		case OpTSPutBuffered, OpTSPutBufferedBatch, OpVectorAddBuffered, OpVectorUpdateBuffered,
			OpVectorRemoveBuffered, OpVectorAddBufferedBatch, OpVectorUpdateBufferedBatch:
			return DecodeWriteAck(p)
		default:
			return decodeJSONBody(p)
		}
	}
	switch op {
	case OpHello:
		h, err := DecodeHello(p)
		if err == nil && (h.MinVersion < 1 || h.MinVersion > h.MaxVersion) {
			err = malformed("version range %d..%d", h.MinVersion, h.MaxVersion)
		}
		return h, err
	case OpAuth:
		m, c, err := DecodeAuth(p)
		return AuthRequest{m, c}, err
	case OpPing:
		return decodePing(p)
	case OpTSPutBuffered:
		pt, err := DecodeTSPoint(p)
		if err == nil {
			err = checkPoint(pt)
		}
		return pt, err
	case OpTSPutBufferedBatch:
		pts, err := DecodeTSBatch(p)
		if err == nil && len(pts) > MaxFramePoints {
			err = &CodecError{CodeInvalidRequest, fmt.Sprintf("%d points over MAX_FRAME_POINTS", len(pts))}
		}
		for i := 0; err == nil && i < len(pts); i++ {
			err = checkPoint(pts[i])
		}
		return TSBatch{pts}, err
	case OpVectorAddBuffered, OpVectorUpdateBuffered:
		v, err := DecodeVectorWrite(p)
		if err == nil {
			err = checkMetadata(v.Metadata)
		}
		return v, err
	case OpVectorRemoveBuffered:
		pk, err := DecodeVectorRemove(p)
		return VectorRemove{pk}, err
	case OpVectorAddBufferedBatch, OpVectorUpdateBufferedBatch:
		vs, err := DecodeVectorBatch(p)
		for i := 0; err == nil && i < len(vs); i++ {
			err = checkMetadata(vs[i].Metadata)
		}
		return VectorBatch{vs}, err
	case OpWALApplyCompressed:
		id, b, err := DecodeWALApply(p)
		return WALApply{id, b}, err
	case OpReplicationConfig:
		return decodeJSONBody(p)
	default: // stats and flush requests
		if len(p) != 0 {
			return nil, malformed("%d bytes in an empty request", len(p))
		}
		return Empty{}, nil
	}
}

func decodePing(p []byte) (Ping, error) {
	if len(p) > MaxPingBytes {
		return Ping{}, malformed("ping of %d bytes over %d", len(p), MaxPingBytes)
	}
	return Ping{append([]byte{}, p...)}, nil
}

func checkPoint(p Point) error {
	if len(p.Metric) > MaxMetricBytes {
		return &CodecError{CodeInvalidRequest, fmt.Sprintf("metric of %d bytes over MAX_METRIC_BYTES", len(p.Metric))}
	}
	if len(p.Entity) > MaxEntityBytes {
		return &CodecError{CodeInvalidRequest, fmt.Sprintf("entity of %d bytes over MAX_ENTITY_BYTES", len(p.Entity))}
	}
	return nil
}

func checkMetadata(m []byte) error {
	if len(m) == 0 {
		return nil
	}
	return checkJSONObject(m)
}

// checkJSONObject accepts one JSON object with finite numbers and no repeated key.
func checkJSONObject(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return malformed("JSON: %v", err)
	}
	if dec.More() {
		return malformed("JSON: trailing data")
	}
	if _, ok := v.(map[string]any); !ok {
		return malformed("JSON: not an object")
	}
	return checkFinite(v)
}

func checkFinite(v any) error {
	switch t := v.(type) {
	case json.Number:
		f, err := t.Float64()
		if err != nil || math.IsInf(f, 0) {
			return malformed("JSON: number %s is not a finite float64", t)
		}
	case map[string]any:
		for _, x := range t {
			if err := checkFinite(x); err != nil {
				return err
			}
		}
	case []any:
		for _, x := range t {
			if err := checkFinite(x); err != nil {
				return err
			}
		}
	}
	return nil
}

func decodeJSONBody(p []byte) (JSONBody, error) {
	if err := checkJSONObject(p); err != nil {
		return JSONBody{}, err
	}
	return JSONBody{append(json.RawMessage{}, p...)}, nil
}
