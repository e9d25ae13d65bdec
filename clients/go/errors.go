package themis

import (
	"errors"
	"fmt"
	"time"
)

// The error tree of docs/clients/CONFIGURATION.md. Every error value implements
// ThemisError; test for a kind with errors.As:
//
//	ThemisError
//	├── *BufferOverflowError     (BufferSize)   client queue: not retriable; server: retriable
//	├── *RateLimitedError        (RetryAfter)   retriable
//	├── *AuthenticationError                     not retriable
//	├── *PermissionDeniedError                   not retriable
//	├── *ValidationError         (Field)        not retriable
//	├── *NotFoundError                           not retriable
//	├── *ServerUnavailableError  (RetryAfter)   retriable
//	├── *WALGapError             (ExpectedLSN)  retriable: resend from ExpectedLSN
//	├── *ProtocolError           (Code)         the ERROR frame's retriable bit
//	├── *WriteError              (Failed, Cause) items finally not written
//	└── *ConfigurationError      (Key)          not retriable

// ThemisError is implemented by every error this package returns.
type ThemisError interface {
	error
	// Retriable reports whether sending the same request again may succeed.
	Retriable() bool
}

// BufferOverflowError: the client's queue is full (the item was not queued,
// Server false) or the server's buffer is full (HTTP 429 with buffer_size,
// binary BUFFER_FULL; Server true, retriable).
type BufferOverflowError struct {
	BufferSize int           // the limit that was hit (client) or the server's buffer_size
	Limit      string        // the setting to raise, e.g. "max_buffer_rows"
	Server     bool          // the server's buffer, not the client's queue
	RetryAfter time.Duration // the server's advice, 0 for none
}

// Error describes the failure and what to do.
func (e *BufferOverflowError) Error() string {
	if e.Server {
		return fmt.Sprintf("themis: server buffer overflow (buffer_size %d); retry later", e.BufferSize)
	}
	return fmt.Sprintf("themis: client buffer full at %s=%d; flush more often or raise %s", e.Limit, e.BufferSize, e.Limit)
}

// Retriable is true for the server's overflow only.
func (e *BufferOverflowError) Retriable() bool { return e.Server }

// RateLimitedError: HTTP 429 or RATE_LIMITED; RetryAfter is the server's advice.
type RateLimitedError struct {
	RetryAfter time.Duration
	Message    string
}

// Error describes the failure and what to do.
func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("themis: rate limited (retry after %v): %s", e.RetryAfter, e.Message)
}

// Retriable is always true.
func (e *RateLimitedError) Retriable() bool { return true }

// AuthenticationError: 401, AUTHENTICATION_FAILED or NOT_AUTHENTICATED; check api_key.
type AuthenticationError struct{ Message string }

// Error describes the failure and what to do.
func (e *AuthenticationError) Error() string {
	return "themis: authentication failed (check api_key): " + e.Message
}

// Retriable is always false.
func (e *AuthenticationError) Retriable() bool { return false }

// PermissionDeniedError: 403 or PERMISSION_DENIED; the key's role is too weak.
type PermissionDeniedError struct{ Message string }

// Error describes the failure and what to do.
func (e *PermissionDeniedError) Error() string {
	return "themis: permission denied (flushes need an admin key): " + e.Message
}

// Retriable is always false.
func (e *PermissionDeniedError) Retriable() bool { return false }

// ValidationError: 400, 413, INVALID_REQUEST, FRAME_TOO_LARGE; Field names what was wrong.
type ValidationError struct {
	Field   string
	Message string
}

// Error describes the failure and what to do.
func (e *ValidationError) Error() string { return "themis: invalid request: " + e.Message }

// Retriable is always false.
func (e *ValidationError) Retriable() bool { return false }

// NotFoundError: 404 or NOT_FOUND (an unknown pk or replica).
type NotFoundError struct{ Message string }

// Error describes the failure and what to do.
func (e *NotFoundError) Error() string { return "themis: not found: " + e.Message }

// Retriable is always false.
func (e *NotFoundError) Retriable() bool { return false }

// ServerUnavailableError: 5xx, connection refused or reset, timeouts, SHUTTING_DOWN.
type ServerUnavailableError struct {
	Status     int           // HTTP status, 0 for a connection failure or a binary error
	RetryAfter time.Duration // the server's advice, 0 for none
	Message    string
	Cause      error
}

// Error describes the failure and what to do.
func (e *ServerUnavailableError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("themis: server unavailable (%d): %s", e.Status, e.Message)
	}
	return "themis: server unavailable: " + e.Message
}

// Unwrap returns the transport error, if any.
func (e *ServerUnavailableError) Unwrap() error { return e.Cause }

// Retriable is always true.
func (e *ServerUnavailableError) Retriable() bool { return true }

// WALGapError: the replica needs entries from ExpectedLSN first (HTTP 409, WAL_GAP).
type WALGapError struct {
	ExpectedLSN uint64
	Message     string
}

// Error describes the failure and what to do.
func (e *WALGapError) Error() string {
	return fmt.Sprintf("themis: WAL gap, the replica expects LSN %016X: %s", e.ExpectedLSN, e.Message)
}

// Retriable is always true: resend from ExpectedLSN.
func (e *WALGapError) Retriable() bool { return true }

// ProtocolError is a binary ERROR frame that maps to no other kind (CONFLICT,
// CORRUPT_BATCH, FOREIGN_PRIMARY, NEED_DICTIONARY, codes added later, ...), or an
// HTTP status outside the table (409).
type ProtocolError struct {
	Code       uint16 // the binary error code; 0 for HTTP
	Status     int    // the HTTP status; 0 for binary
	retriable  bool
	RetryAfter time.Duration
	Message    string
}

// Error describes the failure and what to do.
func (e *ProtocolError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("themis: HTTP %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("themis: error code %d: %s", e.Code, e.Message)
}

// Retriable is the ERROR frame's retriable bit.
func (e *ProtocolError) Retriable() bool { return e.retriable }

// WriteError: items a Flush or Close could not write, after retries. Cause is the
// last error of the last failed batch.
type WriteError struct {
	Failed int
	Cause  error
}

// Error describes the failure and what to do.
func (e *WriteError) Error() string {
	return fmt.Sprintf("themis: %d items were not written: %v", e.Failed, e.Cause)
}

// Unwrap returns Cause.
func (e *WriteError) Unwrap() error { return e.Cause }

// Retriable is false: the writer already retried.
func (e *WriteError) Retriable() bool { return false }

// ConfigurationError: a bad connection string or option; Key names it.
type ConfigurationError struct {
	Key     string
	Message string
}

// Error describes the failure and what to do.
func (e *ConfigurationError) Error() string {
	return fmt.Sprintf("themis: configuration key %q: %s", e.Key, e.Message)
}

// Retriable is always false.
func (e *ConfigurationError) Retriable() bool { return false }

// ErrClosed is returned by calls on a closed client or writer.
var ErrClosed = &ConfigurationError{Key: "", Message: "the client is closed"}

// IsRetriable reports whether err (or an error it wraps) is a retriable ThemisError.
func IsRetriable(err error) bool {
	var te ThemisError
	return errors.As(err, &te) && te.Retriable()
}

// retryAfter is the server's advice carried by err, 0 for none.
func retryAfter(err error) time.Duration {
	var bo *BufferOverflowError
	if errors.As(err, &bo) {
		return bo.RetryAfter
	}
	var rl *RateLimitedError
	if errors.As(err, &rl) {
		return rl.RetryAfter
	}
	var su *ServerUnavailableError
	if errors.As(err, &su) {
		return su.RetryAfter
	}
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return pe.RetryAfter
	}
	return 0
}
