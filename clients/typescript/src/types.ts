/** The public data shapes (the roadmap's names; JSON field names as the REST API has them). */

/** One time-series point. `timestamp_ms` defaults to now; a `bigint` or `number` within the safe integer range. */
export interface DataPoint {
  metric: string;
  entity: string;
  /** Milliseconds since the epoch. */
  timestamp_ms?: number | bigint;
  value: number;
  tags?: Record<string, string>;
}

/** `GET /ts/buffer/stats`, summed over the workers (more fields may come; they are kept). */
export interface BufferStats {
  points_buffered: number;
  points_flushed: number;
  current_buffer_size: number;
  avg_compression_ratio: number;
  flush_count?: number;
  current_buffer_memory?: number;
  last_flush_time?: string | null;
  [field: string]: unknown;
}

/** One vector; `Float32Array` vectors go to the binary transport without a copy. */
export interface VectorEntity {
  pk: string;
  vector: number[] | Float32Array;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  metadata?: Record<string, any>;
}

/** `GET /vectors/buffer/stats`. */
export interface VectorBufferStats {
  vectors_buffered: number;
  vectors_flushed: number;
  current_buffer_size: number;
  flush_count?: number;
  current_buffer_memory?: number;
  [field: string]: unknown;
}

/** The server's answer to a write: items accepted, and its `buffer_size` as last reported. */
export interface WriteResult {
  accepted: number;
  buffer_size: number;
}

/** `POST /ts/buffer/flush` / `POST /vectors/buffer/flush`. */
export interface FlushResult {
  success: boolean;
  points_flushed?: number;
  vectors_flushed?: number;
  workers?: number;
  workers_unreachable?: string[];
  [field: string]: unknown;
}

/** `GET|POST /ts/query`: `start`/`end` inclusive, milliseconds. */
export interface QueryRequest {
  metric: string;
  entity: string;
  tags?: Record<string, string>;
  start?: number | bigint;
  end?: number | bigint;
}

export interface QueryPoint {
  timestamp_ms: number;
  /** NaN and infinities come back as numbers too. */
  value: number;
}

export interface QueryResult {
  series: string;
  count: number;
  points: QueryPoint[];
}

/** `POST /vectors/search`: the `k` nearest by distance (smaller is closer). */
export interface SearchRequest {
  vector: number[] | Float32Array;
  k?: number;
  filter?: Record<string, unknown>;
}

export interface SearchHit {
  pk: string;
  distance: number;
  metadata?: Record<string, unknown>;
}

export interface SearchResult {
  success: boolean;
  results: SearchHit[];
  workers_unreachable?: string[];
}

export interface ReplicaInfo {
  replica_id: string;
  endpoint: string;
  last_confirmed_lsn?: string;
  lag_bytes?: number;
  lag_ms?: number;
  is_healthy?: boolean;
  [field: string]: unknown;
}

/** `GET /api/v1/replication/stats`. */
export interface ReplicationStats {
  replicas: ReplicaInfo[];
  stats: {
    total_entries_shipped: number;
    total_bytes_shipped: number;
    total_bytes_uncompressed?: number;
    avg_compression_ratio: number;
    total_batches?: number;
    failed_ships?: number;
    [field: string]: unknown;
  };
}

/** `POST /api/v1/replication/config`. */
export interface CompressionConfig {
  compression_type: "zstd" | "none";
  /** 1..22 */
  compression_level: number;
}

/** Counters of a client's writer (items, not requests). */
export interface WriterCounters {
  /** Items accepted into the queue. */
  queued: number;
  /** Items acknowledged by the server. */
  sent: number;
  /** Item sends repeated after a retriable error. */
  retried: number;
  /** Items finally not written (given to the error listener). */
  failed: number;
}

/** A vector operation as the writer queues it. */
export type VectorOperation =
  | { op: "add"; entity: VectorEntity }
  | { op: "update"; entity: VectorEntity }
  | { op: "remove"; pk: string };

/**
 * Called with the items that were finally not written and the error; never awaited, and
 * an exception it throws is swallowed, so it can never stop the writer.
 */
export type ErrorListener<T> = (error: Error, items: readonly T[]) => void;
