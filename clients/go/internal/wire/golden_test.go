package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

type goldenFile struct {
	ProtocolVersion int `json:"protocol_version"`
	Frames          []struct {
		Name  string `json:"name"`
		Hex   string `json:"hex"`
		Frame struct {
			Opcode    string                     `json:"opcode"`
			Flags     []string                   `json:"flags"`
			RequestID uint32                     `json:"request_id"`
			Body      map[string]json.RawMessage `json:"body"`
		} `json:"frame"`
	} `json:"frames"`
	Invalid []struct {
		Name  string `json:"name"`
		Hex   string `json:"hex"`
		Error string `json:"error"`
	} `json:"invalid"`
}

func loadGolden(t *testing.T) map[string]goldenFile {
	t.Helper()
	paths, err := filepath.Glob("../../../../spec/binary/*.json")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden files under spec/binary: %v", err)
	}
	out := map[string]goldenFile{}
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var g goldenFile
		if err := json.Unmarshal(raw, &g); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[filepath.Base(p)] = g
	}
	return out
}

func str(t *testing.T, raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("not a string: %s", raw)
	}
	return s
}

func num[T int64 | uint64 | uint32 | uint16](t *testing.T, raw json.RawMessage) T {
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		t.Fatalf("not a number: %s", raw)
	}
	var zero T
	switch any(zero).(type) {
	case int64:
		v, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return T(v)
	default:
		v, err := strconv.ParseUint(n.String(), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return T(v)
	}
}

func specFloat(t *testing.T, raw json.RawMessage) float64 {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch {
		case s == "NaN":
			return math.Float64frombits(0x7ff8000000000000)
		case s == "inf":
			return math.Inf(1)
		case s == "-inf":
			return math.Inf(-1)
		case strings.HasPrefix(s, "NaN:"):
			bits, err := strconv.ParseUint(s[4:], 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return math.Float64frombits(bits)
		}
		t.Fatalf("bad float %q", s)
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// orderedTags reads a JSON object of strings in wire order.
func orderedTags(t *testing.T, raw json.RawMessage) []Tag {
	tags, err := parseStringObject(raw)
	if err != nil {
		t.Fatalf("tags %s: %v", raw, err)
	}
	return tags
}

func specPoint(t *testing.T, m map[string]json.RawMessage) Point {
	return Point{Metric: str(t, m["metric"]), Entity: str(t, m["entity"]),
		TimestampMs: num[int64](t, m["timestamp_ms"]), Value: specFloat(t, m["value"]),
		Tags: orderedTags(t, m["tags"])}
}

func compactJSON(t *testing.T, raw json.RawMessage) []byte {
	if string(raw) == "null" {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func hexBytes(t *testing.T, raw json.RawMessage) []byte {
	b, err := hex.DecodeString(str(t, raw))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func vectorOf(t *testing.T, raw json.RawMessage) []float32 {
	var fs []float64
	if err := json.Unmarshal(raw, &fs); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(fs))
	for i, f := range fs {
		out[i] = float32(f)
	}
	return out
}

// encodeSpecBody builds the payload the spec's body describes.
func encodeSpecBody(t *testing.T, body map[string]json.RawMessage) (any, []byte) {
	typ := str(t, body["type"])
	switch typ {
	case "HelloRequest":
		h := HelloRequest{num[uint16](t, body["min_version"]), num[uint16](t, body["max_version"]), str(t, body["client_id"])}
		return h, AppendHello(nil, h)
	case "HelloOk":
		var methods []string
		_ = json.Unmarshal(body["auth_methods"], &methods)
		h := HelloOk{num[uint16](t, body["version"]), num[uint32](t, body["max_frame_bytes"]), num[uint16](t, body["max_in_flight"]), methods}
		return h, AppendHelloOk(nil, h)
	case "AuthRequest":
		a := AuthRequest{str(t, body["method"]), hexBytes(t, body["credential"])}
		return a, AppendAuth(nil, a.Method, a.Credential)
	case "AuthOk":
		a := AuthOk{str(t, body["role"])}
		return a, appendStr8(nil, a.Role)
	case "Ping":
		p := Ping{hexBytes(t, body["data"])}
		return p, append([]byte{}, p.Data...)
	case "GoAway":
		g := GoAway{num[uint32](t, body["last_request_id"]), num[uint16](t, body["code"]), str(t, body["message"])}
		return g, AppendGoAway(nil, g)
	case "ErrorReply":
		var retriable bool
		_ = json.Unmarshal(body["retriable"], &retriable)
		e := ErrorReply{num[uint16](t, body["code"]), retriable, num[uint32](t, body["retry_after_ms"]), num[uint32](t, body["items_accepted"]), str(t, body["message"])}
		return e, AppendError(nil, e)
	case "TsPoint":
		p := specPoint(t, body)
		return p, AppendTSPoint(nil, p)
	case "TsBatch":
		var raws []map[string]json.RawMessage
		_ = json.Unmarshal(body["points"], &raws)
		pts := make([]Point, 0, len(raws))
		for _, r := range raws {
			pts = append(pts, specPoint(t, r))
		}
		return TSBatch{pts}, AppendTSBatch(nil, pts)
	case "WriteAck":
		a := WriteAck{num[uint32](t, body["accepted"]), num[uint32](t, body["buffer_size"])}
		return a, AppendWriteAck(nil, a)
	case "VectorWrite":
		v := VectorWrite{str(t, body["pk"]), vectorOf(t, body["vector"]), compactJSON(t, body["metadata"])}
		return v, AppendVectorWrite(nil, v)
	case "VectorRemove":
		pk := str(t, body["pk"])
		return VectorRemove{pk}, AppendVectorRemove(nil, pk)
	case "VectorBatch":
		var pks []string
		var vecs, metas []json.RawMessage
		_ = json.Unmarshal(body["pks"], &pks)
		_ = json.Unmarshal(body["vectors"], &vecs)
		_ = json.Unmarshal(body["metadata"], &metas)
		vs := make([]VectorWrite, len(pks))
		for i := range pks {
			vs[i] = VectorWrite{pks[i], vectorOf(t, vecs[i]), compactJSON(t, metas[i])}
		}
		return VectorBatch{vs}, AppendVectorBatch(nil, vs)
	case "WalApply":
		w := WALApply{str(t, body["primary_id"]), hexBytes(t, body["batch"])}
		return w, AppendWALApply(nil, w.PrimaryID, w.Batch)
	case "JsonBody":
		doc := compactJSON(t, body["document"])
		return JSONBody{doc}, doc
	case "Empty":
		return Empty{}, nil
	}
	t.Fatalf("unknown body type %s", typ)
	return nil, nil
}

// canon prints a decoded value with float bits spelled out, for comparison.
func canon(v any) string {
	s := fmt.Sprintf("%#v", v)
	return s
}

func TestGoldenFramesEncodeAndDecodeByteForByte(t *testing.T) {
	files := loadGolden(t)
	count := 0
	for name, g := range files {
		for _, f := range g.Frames {
			t.Run(name+"/"+f.Name, func(t *testing.T) {
				want, err := hex.DecodeString(f.Hex)
				if err != nil {
					t.Fatal(err)
				}
				var flags byte
				for _, fl := range f.Frame.Flags {
					flags |= map[string]byte{"ACK_QUEUED": FlagAckQueued, "REPLY": FlagReply, "COMPRESSED": FlagCompressed, "CHECKSUM": FlagChecksum}[fl]
				}
				op, ok := OpcodeNames[f.Frame.Opcode]
				if !ok {
					t.Fatalf("unknown opcode %s", f.Frame.Opcode)
				}
				value, payload := encodeSpecBody(t, f.Frame.Body)
				got := Frame(op, flags, f.Frame.RequestID, payload)
				if !bytes.Equal(got, want) {
					t.Fatalf("encoded\n %x\nwant\n %x", got, want)
				}
				h, decoded, err := DecodeFrame(want)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if h.Opcode != op || h.Flags != flags || h.RequestID != f.Frame.RequestID {
					t.Fatalf("header %+v", h)
				}
				if _, isEmpty := value.(Empty); isEmpty {
					if _, ok := decoded.(Empty); !ok {
						t.Fatalf("decoded %T, want Empty", decoded)
					}
					return
				}
				if p, ok := value.(Ping); ok && len(p.Data) == 0 {
					value = Ping{Data: []byte{}}
				}
				if canon(decoded) != canon(value) {
					t.Fatalf("decoded\n %s\nwant\n %s", canon(decoded), canon(value))
				}
			})
			count++
		}
	}
	if count < 50 {
		t.Fatalf("only %d golden frames read", count)
	}
}

func TestGoldenInvalidFramesAreRefusedWithTheirCode(t *testing.T) {
	for name, g := range loadGolden(t) {
		for _, iv := range g.Invalid {
			t.Run(name+"/"+iv.Name, func(t *testing.T) {
				frame, err := hex.DecodeString(iv.Hex)
				if err != nil {
					t.Fatal(err)
				}
				_, _, err = DecodeFrame(frame)
				var ce *CodecError
				if !errors.As(err, &ce) {
					t.Fatalf("decoded without error (%v), want %s", err, iv.Error)
				}
				if ce.Code != CodeNames[iv.Error] {
					t.Fatalf("code %d (%s), want %s", ce.Code, ce.Message, iv.Error)
				}
			})
		}
	}
}
