package themis

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/themisdb/go-client/internal/wire"
)

// binaryTransport is the binary door (docs/api/BINARY_PROTOCOL_EXTENSIONS.md):
// one long-lived connection with pipelined requests, redialled after a failure
// or a GOAWAY.
type binaryTransport struct {
	cfg  Config
	http *httpTransport // for the calls without an opcode; nil if no HTTPAddr
	tls  *tls.Config

	mu     sync.Mutex
	conn   *binConn
	closed bool
	pool   sync.Pool // *encodeBuf
}

type encodeBuf struct {
	b    []byte
	enc  wire.BatchEncoder
	keys []string
}

type binReply struct {
	op      byte
	payload []byte
	err     error
}

type binConn struct {
	nc       net.Conn
	wmu      sync.Mutex
	bw       *bufio.Writer
	sem      chan struct{}
	maxFrame uint32

	mu       sync.Mutex
	pending  map[uint32]chan binReply
	nextID   uint32
	dead     error
	draining bool
}

func newBinaryTransport(c Config) (*binaryTransport, error) {
	t := &binaryTransport{cfg: c}
	t.pool.New = func() any { return &encodeBuf{} }
	if c.Schema == "themis+tls" {
		tc, err := tlsConfig(c)
		if err != nil {
			return nil, err
		}
		t.tls = tc
	}
	if c.HTTPAddr != "" {
		hc := c
		hc.Schema = "http"
		if c.Schema == "themis+tls" {
			hc.Schema = "https"
		}
		h, err := newHTTPTransport(hc, c.HTTPAddr)
		if err != nil {
			return nil, err
		}
		t.http = h
	}
	return t, nil
}

// connection returns a live connection, dialling one (HELLO, AUTH) if needed.
func (t *binaryTransport) connection(ctx context.Context) (*binConn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if c := t.conn; c != nil {
		c.mu.Lock()
		ok := c.dead == nil && !c.draining
		c.mu.Unlock()
		if ok {
			return c, nil
		}
	}
	c, err := t.dial(ctx)
	if err != nil {
		return nil, err
	}
	t.conn = c
	return c, nil
}

func (t *binaryTransport) dial(ctx context.Context) (*binConn, error) {
	ctx, cancel := withTimeout(ctx, t.cfg.RequestTimeout)
	defer cancel()
	d := &net.Dialer{KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", t.cfg.Addr)
	if err != nil {
		return nil, &ServerUnavailableError{Message: err.Error(), Cause: err}
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if t.tls != nil {
		cfg := t.tls.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(t.cfg.Addr)
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, &ServerUnavailableError{Message: "TLS: " + err.Error(), Cause: err}
		}
		nc = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	c := &binConn{nc: nc, bw: bufio.NewWriterSize(nc, 64<<10), pending: map[uint32]chan binReply{}, nextID: 2}
	fail := func(err error) (*binConn, error) {
		nc.Close()
		return nil, err
	}
	hello := wire.Frame(wire.OpHello, 0, 1, wire.AppendHello(nil, wire.HelloRequest{MinVersion: 1, MaxVersion: 1, ClientID: t.cfg.ClientID}))
	if _, err := nc.Write(hello); err != nil {
		return fail(&ServerUnavailableError{Message: err.Error(), Cause: err})
	}
	op, payload, _, err := readFrame(br)
	if err != nil {
		return fail(&ServerUnavailableError{Message: "HELLO: " + err.Error(), Cause: err})
	}
	if op == wire.OpError {
		e, _ := wire.DecodeError(payload)
		return fail(errorOfCode(e))
	}
	ok, err := wire.DecodeHelloOk(payload)
	if err != nil {
		return fail(&ServerUnavailableError{Message: "HELLO reply: " + err.Error(), Cause: err})
	}
	c.maxFrame = ok.MaxFrameBytes
	n := int(ok.MaxInFlight)
	if n < 1 {
		n = 1
	}
	c.sem = make(chan struct{}, n)
	if t.cfg.APIKey != "" {
		auth := wire.Frame(wire.OpAuth, 0, 2, wire.AppendAuth(nil, "api_key", []byte(t.cfg.APIKey)))
		if _, err := nc.Write(auth); err != nil {
			return fail(&ServerUnavailableError{Message: err.Error(), Cause: err})
		}
		op, payload, _, err = readFrame(br)
		if err != nil {
			return fail(&ServerUnavailableError{Message: "AUTH: " + err.Error(), Cause: err})
		}
		if op == wire.OpError {
			e, _ := wire.DecodeError(payload)
			return fail(errorOfCode(e))
		}
	}
	_ = nc.SetDeadline(time.Time{})
	c.nextID = 3
	go c.readLoop(br)
	return c, nil
}

func readFrame(r io.Reader) (op byte, payload []byte, id uint32, err error) {
	var hb [wire.HeaderSize]byte
	if _, err = io.ReadFull(r, hb[:]); err != nil {
		return 0, nil, 0, err
	}
	h, _ := wire.ParseHeader(hb[:])
	if h.Length > wire.MaxWALBodyBytes {
		return 0, nil, 0, fmt.Errorf("reply of %d bytes", h.Length)
	}
	payload = make([]byte, h.Length)
	if _, err = io.ReadFull(r, payload); err != nil {
		return 0, nil, 0, err
	}
	return h.Opcode, payload, h.RequestID, nil
}

func (c *binConn) readLoop(br *bufio.Reader) {
	for {
		op, payload, id, err := readFrame(br)
		if err != nil {
			c.fail(&ServerUnavailableError{Message: "connection lost: " + err.Error(), Cause: err})
			return
		}
		if id == 0 && op == wire.OpGoAway {
			g, _ := wire.DecodeGoAway(payload)
			c.mu.Lock()
			c.draining = true
			for rid, ch := range c.pending {
				if rid > g.LastRequestID {
					ch <- binReply{err: &ServerUnavailableError{Message: "GOAWAY: " + g.Message}}
					delete(c.pending, rid)
				}
			}
			c.mu.Unlock()
			continue
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch == nil {
			continue // its caller gave up
		}
		if op == wire.OpError {
			e, derr := wire.DecodeError(payload)
			if derr != nil {
				ch <- binReply{err: &ServerUnavailableError{Message: "bad ERROR frame: " + derr.Error()}}
				continue
			}
			ch <- binReply{err: errorOfCode(e)}
			continue
		}
		ch <- binReply{op: op, payload: payload}
	}
}

func (c *binConn) fail(err error) {
	c.mu.Lock()
	if c.dead == nil {
		c.dead = err
	}
	for id, ch := range c.pending {
		ch <- binReply{err: err}
		delete(c.pending, id)
	}
	c.mu.Unlock()
	c.nc.Close()
}

var replyPool = sync.Pool{New: func() any { return make(chan binReply, 1) }}

// request sends one frame and waits for its reply.
func (t *binaryTransport) request(ctx context.Context, op, flags byte, payload []byte) ([]byte, error) {
	ctx, cancel := withTimeout(ctx, t.cfg.RequestTimeout)
	defer cancel()
	c, err := t.connection(ctx)
	if err != nil {
		return nil, err
	}
	if op != wire.OpWALApplyCompressed && c.maxFrame > 0 && uint32(len(payload)) > c.maxFrame {
		return nil, &ValidationError{Field: "max_batch_bytes", Message: fmt.Sprintf("frame of %d bytes over the server's max_frame_bytes %d", len(payload), c.maxFrame)}
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, &ServerUnavailableError{Message: "waiting for an in-flight slot: " + ctx.Err().Error(), Cause: ctx.Err()}
	}
	defer func() { <-c.sem }()
	ch := replyPool.Get().(chan binReply)
	c.mu.Lock()
	if c.dead != nil {
		c.mu.Unlock()
		replyPool.Put(ch)
		return nil, c.dead
	}
	id := c.nextID
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	c.pending[id] = ch
	c.mu.Unlock()

	var hb [wire.HeaderSize]byte
	wire.PutHeader(hb[:], wire.Header{Opcode: op, Flags: flags, Length: uint32(len(payload)), RequestID: id})
	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetWriteDeadline(dl) // a peer that stops reading cannot hold us past it
	}
	_, err = c.bw.Write(hb[:])
	if err == nil {
		_, err = c.bw.Write(payload)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.fail(&ServerUnavailableError{Message: "send: " + err.Error(), Cause: err})
	}
	select {
	case r := <-ch:
		replyPool.Put(ch)
		return r.payload, r.err
	case <-ctx.Done():
		c.mu.Lock()
		_, still := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if !still {
			<-ch // the reader delivered meanwhile
		}
		replyPool.Put(ch)
		return nil, &ServerUnavailableError{Message: "no reply: " + ctx.Err().Error(), Cause: ctx.Err()}
	}
}

func (t *binaryTransport) close() error {
	t.mu.Lock()
	c := t.conn
	t.conn = nil
	t.closed = true
	t.mu.Unlock()
	if c != nil {
		c.fail(ErrClosed)
	}
	if t.http != nil {
		_ = t.http.close()
	}
	return nil
}
