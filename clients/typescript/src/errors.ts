/**
 * One error tree for every SDK (docs/clients/CONFIGURATION.md, "Errors").
 *
 * ```
 * ThemisError
 * ├── BufferOverflowError      (bufferSize)   client queue: not retriable; server: retriable
 * ├── RateLimitedError         (retryAfterMs) retriable
 * ├── AuthenticationError                     not retriable
 * ├── PermissionDeniedError                   not retriable
 * ├── ValidationError          (field)        not retriable
 * ├── NotFoundError                           not retriable
 * ├── ServerUnavailableError   (retryAfterMs) retriable
 * ├── WriteError               (failed, cause)
 * └── ConfigurationError       (key)          not retriable
 * ```
 *
 * Retry logic reads `retriable`, never the message.
 */

export interface ThemisErrorOptions {
  retriable?: boolean;
  cause?: unknown;
  /** Server advice on when to retry, in milliseconds (0: none). */
  retryAfterMs?: number;
}

/** The base of every error this package throws or rejects with. */
export class ThemisError extends Error {
  /** Whether sending the same request again may succeed. */
  readonly retriable: boolean;
  /** Server advice on when to retry, in milliseconds (0: none). */
  readonly retryAfterMs: number;

  constructor(message: string, options: ThemisErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.retriable = options.retriable ?? false;
    this.retryAfterMs = options.retryAfterMs ?? 0;
  }
}

/** A queue is full: the client's own (`retriable` false) or the server's (`retriable` true). */
export class BufferOverflowError extends ThemisError {
  /** The limit that was hit (client: the `max_buffer_rows`/`max_buffer_bytes` value; server: its `buffer_size`). */
  readonly bufferSize: number;
  constructor(message: string, bufferSize: number, options: ThemisErrorOptions = {}) {
    super(message, options);
    this.bufferSize = bufferSize;
  }
}

/** HTTP 429 / RATE_LIMITED: the key's quota is used up. Always retriable. */
export class RateLimitedError extends ThemisError {
  constructor(message: string, retryAfterMs: number, options: ThemisErrorOptions = {}) {
    super(message, { ...options, retriable: true, retryAfterMs });
  }
}

/** HTTP 401 / AUTHENTICATION_FAILED, NOT_AUTHENTICATED: check `api_key`. */
export class AuthenticationError extends ThemisError {}

/** HTTP 403 / PERMISSION_DENIED: the key's role does not allow the call (flushes need `admin`). */
export class PermissionDeniedError extends ThemisError {}

/** HTTP 400, 413 / INVALID_REQUEST, FRAME_TOO_LARGE, or a value refused before sending. */
export class ValidationError extends ThemisError {
  /** The field that was wrong, when known (`timestamp_ms`, `vector`, ...). */
  readonly field: string | undefined;
  constructor(message: string, field?: string, options: ThemisErrorOptions = {}) {
    super(message, options);
    this.field = field;
  }
}

/** HTTP 404 / NOT_FOUND: the pk or replica does not exist. */
export class NotFoundError extends ThemisError {}

/** 5xx, connection refused or reset, timeouts, SHUTTING_DOWN. Always retriable. */
export class ServerUnavailableError extends ThemisError {
  constructor(message: string, options: ThemisErrorOptions = {}) {
    super(message, { ...options, retriable: true });
  }
}

/** `flush()` / `close()`: the items that were finally not written, and the last error. */
export class WriteError<T = unknown> extends ThemisError {
  readonly failed: readonly T[];
  constructor(message: string, failed: readonly T[], cause: unknown) {
    super(message, { cause, retriable: false });
    this.failed = failed;
  }
}

/** A bad connection string or option; `key` names it. */
export class ConfigurationError extends ThemisError {
  readonly key: string;
  constructor(message: string, key: string) {
    super(message);
    this.key = key;
  }
}
