/** The three clients of the roadmap: time series, vectors, replication. */
import { BinaryTransport } from "./binary.js";
import { resolveConfig, type ClientOptions, type ResolvedConfig } from "./config.js";
import { ThemisError } from "./errors.js";
import { HttpTransport } from "./http.js";
import type { Transport } from "./transport.js";
import type {
  BufferStats, CompressionConfig, DataPoint, ErrorListener, FlushResult, QueryRequest, QueryResult,
  ReplicationStats, SearchRequest, SearchResult, VectorBufferStats, VectorEntity, VectorOperation,
  WriteResult, WriterCounters,
} from "./types.js";
import { checkEntity, checkPk, checkVector, pointBytes, toWirePoint, vectorOpBytes, type WirePoint } from "./validate.js";
import { BatchWriter, settingsOf, splitByRowsAndBytes } from "./writer.js";

/** Options of the writing clients: the shared keys plus the error listener. */
export interface WriterClientOptions<T> extends ClientOptions {
  /** Receives the items finally not written (never awaited; its exceptions are ignored). */
  onError?: ErrorListener<T>;
  /** Batches in flight at once (time series: 4; vectors: always 1, to keep the order of writes). */
  concurrency?: number;
}

function transportFor(config: ResolvedConfig): Transport {
  return config.schema === "themis" || config.schema === "themis+tls" ? new BinaryTransport(config) : new HttpTransport(config);
}

abstract class BaseClient {
  readonly config: ResolvedConfig;
  protected readonly transport: Transport;
  protected closed = false;

  constructor(options: ClientOptions) {
    this.config = resolveConfig(options);
    this.transport = transportFor(this.config);
  }

  /** `"http"` or `"binary"`. */
  get transportKind(): "http" | "binary" {
    return this.transport instanceof BinaryTransport ? "binary" : "http";
  }
}

/**
 * Time series: buffered writes through the batching writer, direct durable writes,
 * the server's buffer stats and flush, and queries.
 *
 * ```ts
 * const ts = new ThemisTimeSeriesClient({ conf: "http::addr=localhost:8080;api_key=w" });
 * ts.putBuffered({ metric: "cpu", entity: "s1", value: 0.5 });
 * await ts.close();
 * ```
 */
export class ThemisTimeSeriesClient extends BaseClient {
  private readonly writer: BatchWriter<WirePoint>;

  constructor(options: WriterClientOptions<DataPoint> = {}) {
    super(options);
    this.writer = new BatchWriter<WirePoint>(settingsOf(this.config), {
      send: async (points) => { await this.transport.tsPutBatch(points); },
      maxBatchBytes: () => this.transport.maxBatchBytes() - 1024,
      concurrency: options.concurrency ?? 16,
    });
    if (options.onError) this.onError(options.onError);
  }

  /** Queue one point (`timestamp_ms` defaults to now). Throws at once on a full queue or a bad point. */
  putBuffered(point: DataPoint): void {
    const p = toWirePoint(point);
    this.writer.add(p, pointBytes(p));
  }

  /** Queue all points or none. */
  putBufferedBatch(points: readonly DataPoint[]): void {
    const wire = points.map((p) => toWirePoint(p));
    this.writer.addMany(wire, wire.map(pointBytes));
  }

  /** Send points now as buffered batches (no queue, no retries); resolves when acknowledged. */
  async putBatch(points: readonly DataPoint[]): Promise<WriteResult> {
    const wire = points.map((p) => toWirePoint(p));
    let accepted = 0;
    let bufferSize = 0;
    for (const batch of splitByRowsAndBytes(wire, wire.map(pointBytes), this.config.autoFlushRows, this.transport.maxBatchBytes() - 1024)) {
      const r = await this.transport.tsPutBatch(batch);
      accepted += r.accepted;
      bufferSize = r.buffer_size;
    }
    return { accepted, buffer_size: bufferSize };
  }

  /** One point, durable (queryable at once) when it resolves. */
  async put(point: DataPoint): Promise<void> {
    await this.transport.tsPut(toWirePoint(point));
  }

  /** The workers' buffer statistics (`GET /ts/buffer/stats`). */
  async getBufferStats(): Promise<BufferStats> {
    return (await this.transport.tsStats()) as BufferStats;
  }

  /** Send the client's queue, then make the workers flush their buffers (needs an admin key). */
  async flushBuffer(): Promise<FlushResult> {
    await this.flush();
    return this.transport.tsFlush();
  }

  /** One series' points, `start`..`end` inclusive (ms); buffered points included. */
  query(q: QueryRequest): Promise<QueryResult> {
    return this.transport.tsQuery(q);
  }

  /** Resolves when everything queued so far is acknowledged; else rejects with a WriteError. */
  flush(): Promise<void> { return this.writer.flush(); }

  /** Add an error listener; returns its remover. */
  onError(listener: ErrorListener<DataPoint>): () => void {
    return this.writer.onError(listener as ErrorListener<WirePoint>);
  }

  get counters(): Readonly<WriterCounters> { return { ...this.writer.counters }; }

  /** Flush, then close the connection; closing twice is harmless. */
  async close(): Promise<void> {
    try {
      await this.writer.close();
    } finally {
      if (!this.closed) { this.closed = true; await this.transport.close(); }
    }
  }
}

/** Consecutive adds (or updates) with distinct pks go together; removes go one by one. */
function splitVectorOps(ops: VectorOperation[], sizes: number[], maxRows: number, maxBytes: number): VectorOperation[][] {
  const out: VectorOperation[][] = [];
  let cur: VectorOperation[] = [];
  let pks = new Set<string>();
  let bytes = 0;
  let dim = -1;
  const cut = (): void => { if (cur.length) out.push(cur); cur = []; pks = new Set(); bytes = 0; dim = -1; };
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    if (op.op === "remove") { cut(); out.push([op]); continue; }
    const d = op.entity.vector.length;
    if (cur.length && (cur[0]!.op !== op.op || pks.has(op.entity.pk) || cur.length >= maxRows || bytes + sizes[i]! > maxBytes || d !== dim)) cut();
    cur.push(op);
    pks.add(op.entity.pk);
    bytes += sizes[i]!;
    dim = d;
  }
  cut();
  return out;
}

/**
 * Vectors: buffered add/update/remove through the batching writer (in order), direct
 * durable adds, the server's buffer stats and flush, and search.
 */
export class ThemisVectorClient extends BaseClient {
  private readonly writer: BatchWriter<VectorOperation>;

  constructor(options: WriterClientOptions<VectorOperation> = {}) {
    super(options);
    this.writer = new BatchWriter<VectorOperation>(settingsOf(this.config), {
      send: async (ops) => {
        const first = ops[0]!;
        if (first.op === "remove") await this.transport.vectorRemove(first.pk);
        else await this.transport.vectorWrite(first.op, ops.map((o) => (o as { entity: VectorEntity }).entity));
      },
      maxBatchBytes: () => this.transport.maxBatchBytes() - 1024,
      split: splitVectorOps,
      concurrency: 1,
    });
    if (options.onError) this.onError(options.onError);
  }

  private queue(op: VectorOperation): void {
    this.writer.add(op, op.op === "remove" ? vectorOpBytes(op.pk) : vectorOpBytes(op.entity.pk, op.entity));
  }

  /** Queue an add (an upsert per pk). */
  addBuffered(entity: VectorEntity): void { this.queue({ op: "add", entity: checkEntity(entity) }); }
  /** Queue an update. */
  updateBuffered(entity: VectorEntity): void { this.queue({ op: "update", entity: checkEntity(entity) }); }
  /** Queue a remove; a pk the server does not know is a NotFoundError (to the error listener). */
  removeBuffered(pk: string): void { this.queue({ op: "remove", pk: checkPk(pk) }); }

  /** Queue many adds, all or none. */
  addBufferedBatch(entities: readonly VectorEntity[]): void {
    const ops = entities.map((e): VectorOperation => ({ op: "add", entity: checkEntity(e) }));
    this.writer.addMany(ops, entities.map((e) => vectorOpBytes(e.pk, e)));
  }

  /** Send adds now (one batch request on binary); resolves when acknowledged. */
  addBatch(entities: readonly VectorEntity[]): Promise<WriteResult> {
    return this.transport.vectorWrite("add", entities.map(checkEntity));
  }

  /** Send updates now. */
  updateBatch(entities: readonly VectorEntity[]): Promise<WriteResult> {
    return this.transport.vectorWrite("update", entities.map(checkEntity));
  }

  /** One vector, durable when it resolves. */
  async add(entity: VectorEntity): Promise<void> { await this.transport.vectorAdd(checkEntity(entity)); }

  async getBufferStats(): Promise<VectorBufferStats> { return (await this.transport.vectorStats()) as VectorBufferStats; }

  /** Send the client's queue, then make the workers flush (needs an admin key). */
  async flushBuffer(): Promise<FlushResult> {
    await this.flush();
    return this.transport.vectorFlush();
  }

  /** The `k` nearest vectors (default 10), optionally filtered by metadata. */
  search(req: SearchRequest): Promise<SearchResult> {
    checkVector(req.vector);
    return this.transport.search(req);
  }

  flush(): Promise<void> { return this.writer.flush(); }
  onError(listener: ErrorListener<VectorOperation>): () => void { return this.writer.onError(listener); }
  get counters(): Readonly<WriterCounters> { return { ...this.writer.counters }; }

  async close(): Promise<void> {
    try {
      await this.writer.close();
    } finally {
      if (!this.closed) { this.closed = true; await this.transport.close(); }
    }
  }
}

/** Replication control of a facade: replicas, their stats, WAL compression (admin key). */
export class ThemisReplicationClient extends BaseClient {
  constructor(options: ClientOptions = {}) { super(options); }

  /** Ship the WAL to `endpoint` (`https://`, `kafka://`, `themis://`, `themis+tls://`). */
  async addReplica(replicaId: string, endpoint: string): Promise<void> {
    await this.transport.addReplica(replicaId, endpoint);
  }

  async removeReplica(replicaId: string): Promise<void> {
    await this.transport.removeReplica(replicaId);
  }

  getReplicationStats(): Promise<ReplicationStats> { return this.transport.replicationStats(); }

  /** `compression_type` `zstd` or `none`, `compression_level` 1..22, applied at once. */
  async configureCompression(config: CompressionConfig): Promise<CompressionConfig> {
    const r = await this.transport.replicationConfig(config);
    if (r["success"] !== true) throw new ThemisError(`replication config not applied: ${JSON.stringify(r)}`);
    return { compression_type: r["compression_type"] as CompressionConfig["compression_type"], compression_level: r["compression_level"] as number };
  }

  async close(): Promise<void> {
    if (!this.closed) { this.closed = true; await this.transport.close(); }
  }
}
