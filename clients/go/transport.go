package themis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/themisdb/go-client/internal/wire"
)

// vecOp is a vector operation of the writer.
type vecOp uint8

const (
	opAdd vecOp = iota + 1
	opUpdate
	opRemove
)

// transport is one door of the facade; both doors give the same answers.
type transport interface {
	putPoint(ctx context.Context, p DataPoint) (int, error)
	putPoints(ctx context.Context, ps []DataPoint) (int, error)
	putDurable(ctx context.Context, p DataPoint) error
	query(ctx context.Context, q Query) (*QueryResult, error)
	tsStats(ctx context.Context) ([]byte, error)
	tsFlush(ctx context.Context) ([]byte, error)
	vectorWrite(ctx context.Context, op vecOp, vs []Vector) (int, error)
	vectorRemove(ctx context.Context, pk string) (int, error)
	vectorAddDurable(ctx context.Context, v Vector) error
	vectorStats(ctx context.Context) ([]byte, error)
	vectorFlush(ctx context.Context) ([]byte, error)
	search(ctx context.Context, r SearchRequest) (*SearchResult, error)
	replicationStats(ctx context.Context) ([]byte, error)
	replicationConfig(ctx context.Context, c CompressionConfig) ([]byte, error)
	addReplica(ctx context.Context, id, endpoint string) ([]byte, error)
	removeReplica(ctx context.Context, id string) ([]byte, error)
	close() error
}

func newTransport(c Config) (transport, error) {
	switch c.Schema {
	case "http", "https":
		return newHTTPTransport(c, c.Addr)
	default:
		return newBinaryTransport(c)
	}
}

// tlsConfig builds the client TLS settings of tls_ca, tls_cert, tls_key, tls_verify.
func tlsConfig(c Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: !c.TLSVerify} //nolint:gosec // tls_verify=off is documented as tests only
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, &ConfigurationError{Key: "tls_ca", Message: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &ConfigurationError{Key: "tls_ca", Message: "no PEM certificate in " + c.TLSCA}
		}
		tc.RootCAs = pool
	}
	if c.TLSCert != "" || c.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, &ConfigurationError{Key: "tls_cert", Message: err.Error()}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

var fieldPattern = regexp.MustCompile(`field '([^']+)'|'([a-z_]+)'`)

func fieldOf(msg string) string {
	m := fieldPattern.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	if m[1] != "" {
		return m[1]
	}
	return m[2]
}

// errorOfCode maps a binary ERROR frame to the error tree.
func errorOfCode(e wire.ErrorReply) error {
	ra := time.Duration(e.RetryAfterMs) * time.Millisecond
	switch e.Code {
	case wire.CodeAuthenticationFailed, wire.CodeNotAuthenticated:
		return &AuthenticationError{Message: e.Message}
	case wire.CodePermissionDenied:
		return &PermissionDeniedError{Message: e.Message}
	case wire.CodeInvalidRequest, wire.CodeFrameTooLarge:
		return &ValidationError{Field: fieldOf(e.Message), Message: e.Message}
	case wire.CodeNotFound:
		return &NotFoundError{Message: e.Message}
	case wire.CodeRateLimited:
		return &RateLimitedError{RetryAfter: ra, Message: e.Message}
	case wire.CodeBufferFull:
		return &BufferOverflowError{Server: true, RetryAfter: ra, Limit: "server"}
	case wire.CodeUnavailable, wire.CodeTimeout, wire.CodeShuttingDown, wire.CodeInternal, wire.CodeTooManyInFlight:
		return &ServerUnavailableError{RetryAfter: ra, Message: e.Message}
	case wire.CodeWALGap:
		msg := strings.TrimSpace(e.Message)
		if i := strings.LastIndexAny(msg, " :="); i >= 0 {
			msg = msg[i+1:]
		}
		lsn, err := strconv.ParseUint(strings.TrimRight(msg, ".)"), 16, 64)
		if err == nil {
			return &WALGapError{ExpectedLSN: lsn, Message: e.Message}
		}
	}
	return &ProtocolError{Code: e.Code, retriable: e.Retriable, RetryAfter: ra, Message: e.Message}
}

// withTimeout bounds one request by request_timeout_ms within ctx.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
