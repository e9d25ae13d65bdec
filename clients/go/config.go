package themis

import (
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config holds every setting of docs/clients/CONFIGURATION.md. Build it with
// ParseConfig (a connection string) and Options; zero values are not defaults,
// use DefaultConfig.
type Config struct {
	Schema              string // http, https, themis, themis+tls
	Addr                string // host:port
	APIKey              string
	ClientID            string
	RequestTimeout      time.Duration
	AutoFlush           bool
	AutoFlushRows       int
	AutoFlushBytes      int
	AutoFlushInterval   time.Duration
	MaxBatchBytes       int
	MaxBufferRows       int
	MaxBufferBytes      int
	MaxRetries          int
	RetryTimeout        time.Duration
	RetryInitialBackoff time.Duration
	RetryMaxBackoff     time.Duration
	TLSCA               string
	TLSCert             string
	TLSKey              string
	TLSVerify           bool

	// Not connection-string keys (Go options only):

	// HTTPAddr is the facade's HTTP door used by a binary client for the calls the
	// binary protocol has no opcode for (Query, Search, direct Put/Add,
	// AddReplica). Empty: those calls fail with a ConfigurationError.
	HTTPAddr string
	// MaxInFlightBatches bounds the batches a writer sends concurrently (default 4).
	MaxInFlightBatches int
	// ErrorHandler, if set, receives every WriteError of the writers, in its own
	// goroutine (it may block without stopping the writer).
	ErrorHandler func(error)
	// ErrorChannelSize is the capacity of Errors(); errors that find it full are
	// dropped and counted (default 64).
	ErrorChannelSize int
	// AckQueued asks for REST's "queued" response mode on writes.
	AckQueued bool
}

// DefaultConfig returns the documented defaults (addr empty).
func DefaultConfig() Config {
	return Config{
		Schema: "http", ClientID: "themisdb-go", RequestTimeout: 10 * time.Second,
		AutoFlush: true, AutoFlushRows: 5000, AutoFlushBytes: 1 << 20,
		AutoFlushInterval: time.Second, MaxBatchBytes: 1 << 20, MaxBufferRows: 100000,
		MaxBufferBytes: 64 << 20, MaxRetries: 5, RetryTimeout: 10 * time.Second,
		RetryInitialBackoff: 100 * time.Millisecond, RetryMaxBackoff: 5 * time.Second,
		TLSVerify: true, MaxInFlightBatches: 4, ErrorChannelSize: 64,
	}
}

var defaultPorts = map[string]string{"http": "8080", "https": "8443", "themis": "9090", "themis+tls": "9443"}

// splitPairs splits "k=v;k=v" where ";;" stands for a literal ";".
func splitPairs(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ';' {
			if i+1 < len(s) && s[i+1] == ';' {
				cur.WriteByte(';')
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// ParseConfig reads a connection string "SCHEMA::key=value;..." over the defaults.
func ParseConfig(conn string) (Config, error) {
	c := DefaultConfig()
	return c, c.apply(conn)
}

func (c *Config) apply(conn string) error {
	schema, rest, ok := strings.Cut(conn, "::")
	if !ok {
		return &ConfigurationError{Key: "schema", Message: "a connection string starts with http::, https::, themis:: or themis+tls::"}
	}
	if _, ok := defaultPorts[schema]; !ok {
		return &ConfigurationError{Key: "schema", Message: "unknown schema " + strconv.Quote(schema) + " (http, https, themis, themis+tls)"}
	}
	c.Schema = schema
	for _, pair := range splitPairs(rest) {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return &ConfigurationError{Key: k, Message: "expected key=value"}
		}
		if err := c.set(k, v); err != nil {
			return err
		}
	}
	if c.Addr == "" {
		return &ConfigurationError{Key: "addr", Message: "addr (host:port) is required"}
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		c.Addr = net.JoinHostPort(c.Addr, defaultPorts[c.Schema])
	}
	return nil
}

func (c *Config) set(k, v string) error {
	intv := func(dst *int) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return &ConfigurationError{Key: k, Message: "expected a non-negative integer, got " + strconv.Quote(v)}
		}
		*dst = n
		return nil
	}
	ms := func(dst *time.Duration) error {
		var n int
		if err := intv(&n); err != nil {
			return err
		}
		*dst = time.Duration(n) * time.Millisecond
		return nil
	}
	boolv := func(dst *bool) error {
		switch v {
		case "on", "true":
			*dst = true
		case "off", "false":
			*dst = false
		default:
			return &ConfigurationError{Key: k, Message: "expected on/off (true/false), got " + strconv.Quote(v)}
		}
		return nil
	}
	switch k {
	case "addr":
		c.Addr = v
	case "http_addr":
		c.HTTPAddr = v
	case "api_key":
		c.APIKey = v
	case "client_id":
		c.ClientID = v
	case "request_timeout_ms":
		return ms(&c.RequestTimeout)
	case "auto_flush":
		return boolv(&c.AutoFlush)
	case "auto_flush_rows":
		return intv(&c.AutoFlushRows)
	case "auto_flush_bytes":
		return intv(&c.AutoFlushBytes)
	case "auto_flush_interval_ms":
		return ms(&c.AutoFlushInterval)
	case "max_batch_bytes":
		return intv(&c.MaxBatchBytes)
	case "max_buffer_rows":
		return intv(&c.MaxBufferRows)
	case "max_buffer_bytes":
		return intv(&c.MaxBufferBytes)
	case "max_retries":
		return intv(&c.MaxRetries)
	case "retry_timeout_ms":
		return ms(&c.RetryTimeout)
	case "retry_initial_backoff_ms":
		return ms(&c.RetryInitialBackoff)
	case "retry_max_backoff_ms":
		return ms(&c.RetryMaxBackoff)
	case "tls_ca":
		c.TLSCA = v
	case "tls_cert":
		c.TLSCert = v
	case "tls_key":
		c.TLSKey = v
	case "tls_verify":
		return boolv(&c.TLSVerify)
	default:
		return &ConfigurationError{Key: k, Message: "unknown key"}
	}
	return nil
}

// Option changes a Config; options win over the connection string.
type Option func(*Config)

// WithAPIKey sets api_key.
func WithAPIKey(key string) Option { return func(c *Config) { c.APIKey = key } }

// WithClientID sets client_id.
func WithClientID(id string) Option { return func(c *Config) { c.ClientID = id } }

// WithRequestTimeout sets request_timeout_ms.
func WithRequestTimeout(d time.Duration) Option { return func(c *Config) { c.RequestTimeout = d } }

// WithAutoFlush sets auto_flush, auto_flush_rows, auto_flush_bytes and
// auto_flush_interval_ms at once (0 keeps a value).
func WithAutoFlush(on bool, rows, bytes int, interval time.Duration) Option {
	return func(c *Config) {
		c.AutoFlush = on
		if rows > 0 {
			c.AutoFlushRows = rows
		}
		if bytes > 0 {
			c.AutoFlushBytes = bytes
		}
		if interval > 0 {
			c.AutoFlushInterval = interval
		}
	}
}

// WithMaxBuffer sets max_buffer_rows and max_buffer_bytes (0 keeps a value).
func WithMaxBuffer(rows, bytes int) Option {
	return func(c *Config) {
		if rows > 0 {
			c.MaxBufferRows = rows
		}
		if bytes > 0 {
			c.MaxBufferBytes = bytes
		}
	}
}

// WithMaxBatchBytes sets max_batch_bytes.
func WithMaxBatchBytes(n int) Option { return func(c *Config) { c.MaxBatchBytes = n } }

// WithRetry sets max_retries, retry_timeout_ms, retry_initial_backoff_ms and
// retry_max_backoff_ms.
func WithRetry(maxRetries int, timeout, initial, maxBackoff time.Duration) Option {
	return func(c *Config) {
		c.MaxRetries, c.RetryTimeout, c.RetryInitialBackoff, c.RetryMaxBackoff = maxRetries, timeout, initial, maxBackoff
	}
}

// WithTLS sets tls_ca, tls_cert and tls_key (mTLS when cert and key are given).
func WithTLS(ca, cert, key string) Option {
	return func(c *Config) { c.TLSCA, c.TLSCert, c.TLSKey = ca, cert, key }
}

// WithHTTPAddr gives a binary client the facade's HTTP door for Query, Search,
// direct Put/Add and AddReplica, which have no binary opcode.
func WithHTTPAddr(addr string) Option { return func(c *Config) { c.HTTPAddr = addr } }

// WithErrorHandler sets a callback for every WriteError of the writers. It runs
// in its own goroutine, so it may block without stopping the writer.
func WithErrorHandler(h func(error)) Option { return func(c *Config) { c.ErrorHandler = h } }

// WithErrorChannelSize sets the capacity of a writer's Errors() channel.
func WithErrorChannelSize(n int) Option { return func(c *Config) { c.ErrorChannelSize = n } }

// WithMaxInFlightBatches bounds the batches a writer sends concurrently.
func WithMaxInFlightBatches(n int) Option { return func(c *Config) { c.MaxInFlightBatches = n } }

// WithAckQueued asks for the "queued" response mode (lower latency, a crash of
// the facade may lose acknowledged points).
func WithAckQueued() Option { return func(c *Config) { c.AckQueued = true } }

// resolveConfig: defaults, then conn (or THEMIS_CLIENT_CONF when conn is ""), then opts.
func resolveConfig(conn string, opts []Option) (Config, error) {
	if conn == "" {
		conn = os.Getenv("THEMIS_CLIENT_CONF")
	}
	if conn == "" {
		return Config{}, &ConfigurationError{Key: "addr", Message: "no connection string given and THEMIS_CLIENT_CONF is empty"}
	}
	c, err := ParseConfig(conn)
	if err != nil {
		return c, err
	}
	for _, o := range opts {
		o(&c)
	}
	if c.MaxInFlightBatches < 1 {
		c.MaxInFlightBatches = 1
	}
	if c.ErrorChannelSize < 0 {
		c.ErrorChannelSize = 0
	}
	return c, nil
}
