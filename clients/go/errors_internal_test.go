package themis

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/themisdb/go-client/internal/wire"
)

// TestEveryGoldenErrorFrameMapsToItsKindWithTheFramesRetriableBit reads the
// ERROR frames of spec/binary/errors.json.
func TestEveryGoldenErrorFrameMapsToItsKindWithTheFramesRetriableBit(t *testing.T) {
	raw, err := os.ReadFile("../../spec/binary/errors.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Frames []struct {
			Name string `json:"name"`
			Hex  string `json:"hex"`
		} `json:"frames"`
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	kinds := map[uint16]func(error) bool{
		wire.CodeAuthenticationFailed: func(e error) bool { var x *AuthenticationError; return errors.As(e, &x) },
		wire.CodeNotAuthenticated:     func(e error) bool { var x *AuthenticationError; return errors.As(e, &x) },
		wire.CodePermissionDenied:     func(e error) bool { var x *PermissionDeniedError; return errors.As(e, &x) },
		wire.CodeInvalidRequest:       func(e error) bool { var x *ValidationError; return errors.As(e, &x) },
		wire.CodeFrameTooLarge:        func(e error) bool { var x *ValidationError; return errors.As(e, &x) },
		wire.CodeNotFound:             func(e error) bool { var x *NotFoundError; return errors.As(e, &x) },
		wire.CodeRateLimited:          func(e error) bool { var x *RateLimitedError; return errors.As(e, &x) && x.RetryAfter == time.Second },
		wire.CodeBufferFull:           func(e error) bool { var x *BufferOverflowError; return errors.As(e, &x) && x.Server },
		wire.CodeUnavailable:          func(e error) bool { var x *ServerUnavailableError; return errors.As(e, &x) },
		wire.CodeShuttingDown:         func(e error) bool { var x *ServerUnavailableError; return errors.As(e, &x) },
	}
	seen := 0
	for _, f := range g.Frames {
		b, _ := hex.DecodeString(f.Hex)
		_, body, err := wire.DecodeFrame(b)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		reply := body.(wire.ErrorReply)
		mapped := errorOfCode(reply)
		if IsRetriable(mapped) != reply.Retriable {
			t.Errorf("%s: Retriable() %v, frame bit %v", f.Name, IsRetriable(mapped), reply.Retriable)
		}
		if check, ok := kinds[reply.Code]; ok && !check(mapped) {
			t.Errorf("%s: mapped to %T", f.Name, mapped)
		}
		seen++
	}
	if seen < 22 {
		t.Fatalf("only %d error frames", seen)
	}
	gap := errorOfCode(wire.ErrorReply{Code: wire.CodeWALGap, Retriable: true, Message: "batch starts at 0000000000000009, expected 0000000000000043"})
	var ge *WALGapError
	if !errors.As(gap, &ge) || ge.ExpectedLSN != 0x43 {
		t.Fatalf("WAL_GAP: %v", gap)
	}
}
