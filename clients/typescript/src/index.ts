/**
 * `@themisdb/client`: typed clients for the Themis pipeline.
 *
 * - {@link ThemisTimeSeriesClient}: `putBuffered`, `getBufferStats`, `flushBuffer`, `put`, `query`, ...
 * - {@link ThemisVectorClient}: `addBuffered`, `updateBuffered`, `removeBuffered`, `search`, ...
 * - {@link ThemisReplicationClient}: `addReplica`, `getReplicationStats`, `configureCompression`.
 *
 * Settings: docs/clients/CONFIGURATION.md (connection string or `THEMIS_CLIENT_CONF`).
 */
export { ThemisReplicationClient, ThemisTimeSeriesClient, ThemisVectorClient } from "./clients.js";
export type { WriterClientOptions } from "./clients.js";
export { parseConnectionString, resolveConfig } from "./config.js";
export type { ClientOptions, ResolvedConfig, Schema } from "./config.js";
export {
  AuthenticationError, BufferOverflowError, ConfigurationError, NotFoundError, PermissionDeniedError,
  RateLimitedError, ServerUnavailableError, ThemisError, ValidationError, WriteError,
} from "./errors.js";
export type { ThemisErrorOptions } from "./errors.js";
export type {
  BufferStats, CompressionConfig, DataPoint, ErrorListener, FlushResult, QueryPoint, QueryRequest,
  QueryResult, ReplicaInfo, ReplicationStats, SearchHit, SearchRequest, SearchResult, VectorBufferStats,
  VectorEntity, VectorOperation, WriteResult, WriterCounters,
} from "./types.js";
