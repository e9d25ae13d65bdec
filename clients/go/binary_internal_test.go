package themis

import (
	"bufio"
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/themisdb/go-client/internal/wire"
)

// fakeDoor is a binary door that answers HELLO and AUTH, sends GOAWAY instead of
// answering the first batch of its first connection, and acknowledges the rest.
func fakeDoor(t *testing.T) (string, *atomic.Int32, *atomic.Int32) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var conns, points atomic.Int32
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			n := conns.Add(1)
			go func() {
				defer nc.Close()
				br := bufio.NewReader(nc)
				for {
					op, payload, id, err := readFrame(br)
					if err != nil {
						return
					}
					var reply []byte
					switch op {
					case wire.OpHello:
						reply = wire.Frame(op, wire.FlagReply, id, wire.AppendHelloOk(nil, wire.HelloOk{Version: 1, MaxFrameBytes: 1 << 20, MaxInFlight: 8, AuthMethods: []string{"api_key"}}))
					case wire.OpAuth:
						reply = wire.Frame(op, wire.FlagReply, id, append([]byte{6}, "writer"...))
					case wire.OpTSPutBufferedBatch:
						if n == 1 {
							_, _ = nc.Write(wire.Frame(wire.OpGoAway, wire.FlagReply, 0, wire.AppendGoAway(nil, wire.GoAway{LastRequestID: id - 1, Code: wire.CodeShuttingDown, Message: "draining"})))
							return
						}
						pts, _ := wire.DecodeTSBatch(payload)
						points.Add(int32(len(pts)))
						reply = wire.Frame(op, wire.FlagReply, id, wire.AppendWriteAck(nil, wire.WriteAck{Accepted: uint32(len(pts))}))
					}
					if _, err := nc.Write(reply); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String(), &conns, &points
}

func TestGoAwayMakesTheWriterResendOnANewConnection(t *testing.T) {
	addr, conns, points := fakeDoor(t)
	c, err := New("themis::addr=" + addr + ";api_key=k;auto_flush=off;retry_initial_backoff_ms=1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 10; i++ {
		_ = c.TimeSeries.PutBuffered(ctx, DataPoint{Metric: "m", Entity: "e", TimestampMs: int64(i + 1), Value: 1, Tags: map[string]string{"b": "2", "a": "1"}})
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if conns.Load() != 2 || points.Load() != 10 {
		t.Fatalf("%d connections, %d points", conns.Load(), points.Load())
	}
	if st := c.TimeSeries.WriterStats(); st.Retried != 1 || st.Sent != 10 {
		t.Fatalf("%+v", st)
	}
}
