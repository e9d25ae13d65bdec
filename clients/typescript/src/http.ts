/** The REST transport (docs/api/AUTO_BUFFER_REST_API.md) over `fetch`: Node 20+ and browsers. */
import {
  AuthenticationError, BufferOverflowError, NotFoundError, PermissionDeniedError, RateLimitedError,
  ServerUnavailableError, ThemisError, ValidationError,
} from "./errors.js";
import type { ResolvedConfig } from "./config.js";
import type { Transport } from "./transport.js";
import type {
  CompressionConfig, FlushResult, QueryRequest, QueryResult, ReplicationStats, SearchRequest,
  SearchResult, VectorEntity, WriteResult,
} from "./types.js";
import { safeInteger, type WirePoint } from "./validate.js";

/** The field a server message names (`field 'vector' ...`), if any. */
export function fieldOf(message: string): string | undefined {
  const named = /field '([^']+)'/.exec(message)?.[1];
  if (named !== undefined) return named;
  // Messages that start with the field ("vector has 3 dimensions; ...").
  return /^(?:(?:point|vector) \d+: )?(metric|entity|timestamp_ms|value|tags|pk|vector|metadata|k|filter)\b/.exec(message)?.[1];
}

function retryAfterMs(res: Response, body: Record<string, unknown>): number {
  const ms = body["retry_after_ms"];
  if (typeof ms === "number" && ms > 0) return ms;
  const h = res.headers.get("retry-after");
  if (h === null) return 0;
  const s = Number(h);
  if (Number.isFinite(s)) return Math.max(0, s * 1000);
  const at = Date.parse(h);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : 0;
}

/** The typed error of a non-2xx answer. */
export function errorFromResponse(res: Response, body: Record<string, unknown>, what: string): ThemisError {
  const server = typeof body["error"] === "string" ? body["error"] : res.statusText;
  const msg = `${what}: HTTP ${res.status}: ${server}`;
  const after = retryAfterMs(res, body);
  switch (res.status) {
    case 400: case 413: case 415: case 431: return new ValidationError(msg, fieldOf(server));
    case 401: return new AuthenticationError(`${msg} (check api_key)`);
    case 403: return new PermissionDeniedError(`${msg} (the key's role is too weak; flushes need admin)`);
    case 404: return new NotFoundError(msg);
    case 429:
      if (typeof body["buffer_size"] === "number") {
        return new BufferOverflowError(msg, body["buffer_size"], { retriable: true, retryAfterMs: after });
      }
      return new RateLimitedError(msg, after);
    case 408: return new ServerUnavailableError(msg, { retryAfterMs: after });
    default:
      if (res.status >= 500) return new ServerUnavailableError(msg, { retryAfterMs: after });
      return new ThemisError(msg);
  }
}

function numberOf(v: unknown): number {
  if (typeof v === "number") return v;
  if (v === "NaN") return NaN;
  if (v === "inf") return Infinity;
  if (v === "-inf") return -Infinity;
  return Number(v);
}

/** JSON of a point (`timestamp_ms` a safe integer; NaN/inf are not JSON and are refused). */
function pointJson(p: WirePoint): string {
  if (!Number.isFinite(p.value)) {
    throw new ValidationError(`field 'value' is ${p.value}: the HTTP transport cannot send NaN or infinities (the binary transport can)`, "value");
  }
  return JSON.stringify({ metric: p.metric, entity: p.entity, timestamp_ms: p.timestamp_ms, value: p.value, ...(p.tags ? { tags: p.tags } : {}) });
}

function vectorJson(e: VectorEntity): string {
  const vector = e.vector instanceof Float32Array ? Array.from(e.vector) : e.vector;
  return JSON.stringify({ pk: e.pk, vector, ...(e.metadata !== undefined ? { metadata: e.metadata } : {}) });
}

export class HttpTransport implements Transport {
  private readonly base: string;
  private readonly headers: Record<string, string>;

  constructor(private readonly config: ResolvedConfig) {
    const tls = config.schema === "https" || config.schema === "themis+tls";
    this.base = `${tls ? "https" : "http"}://${config.httpAddr}`;
    this.headers = { "content-type": "application/json" };
    if (config.apiKey) this.headers["x-api-key"] = config.apiKey;
  }

  /** One request; the JSON answer or the typed error. */
  async request<T>(method: string, path: string, body?: string): Promise<T> {
    const what = `${method} ${path.split("?")[0]}`;
    let res: Response;
    try {
      res = await fetch(this.base + path, {
        method,
        headers: this.headers,
        ...(body !== undefined ? { body } : {}),
        signal: AbortSignal.timeout(this.config.requestTimeoutMs),
      });
    } catch (e) {
      const timeout = e instanceof Error && (e.name === "TimeoutError" || e.name === "AbortError");
      const detail = e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e);
      throw new ServerUnavailableError(`${what}: ${timeout ? `no answer within request_timeout_ms=${this.config.requestTimeoutMs}` : detail} (${this.base})`, { cause: e });
    }
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      throw new ServerUnavailableError(`${what}: the answer was cut off`, { cause: e });
    }
    let doc: Record<string, unknown> = {};
    if (text) {
      try { doc = JSON.parse(text) as Record<string, unknown>; } catch { doc = { error: text.slice(0, 200) }; }
    }
    if (!res.ok) throw errorFromResponse(res, doc, what);
    return doc as T;
  }

  async tsPutBatch(points: readonly WirePoint[]): Promise<WriteResult> {
    if (points.length === 0) return { accepted: 0, buffer_size: 0 };
    const body = "[" + points.map(pointJson).join(",") + "]";
    const r = await this.request<{ points?: number; buffer_size?: number }>("POST", "/ts/put/buffered/batch", body);
    return { accepted: r.points ?? points.length, buffer_size: r.buffer_size ?? 0 };
  }

  async tsPut(point: WirePoint): Promise<void> {
    await this.request("POST", "/ts/put", pointJson(point));
  }

  tsStats(): Promise<Record<string, unknown>> { return this.request("GET", "/ts/buffer/stats"); }
  tsFlush(): Promise<FlushResult> { return this.request("POST", "/ts/buffer/flush"); }

  async tsQuery(q: QueryRequest): Promise<QueryResult> {
    const body: Record<string, unknown> = { metric: q.metric, entity: q.entity };
    if (q.tags) body["tags"] = q.tags;
    if (q.start !== undefined) body["start"] = safeInteger(q.start, "start");
    if (q.end !== undefined) body["end"] = safeInteger(q.end, "end");
    const r = await this.request<{ series: string; count: number; points: Array<{ timestamp_ms: number; value: unknown }> }>(
      "POST", "/ts/query", JSON.stringify(body));
    return { series: r.series, count: r.count, points: r.points.map((p) => ({ timestamp_ms: p.timestamp_ms, value: numberOf(p.value) })) };
  }

  async vectorWrite(op: "add" | "update", items: readonly VectorEntity[]): Promise<WriteResult> {
    const path = op === "add" ? "/vectors/add/buffered" : "/vectors/update/buffered";
    let bufferSize = 0;
    // No batch route: send the items concurrently (their pks are distinct, see the writer).
    const answers = await Promise.all(items.map((e) => this.request<{ buffer_size?: number }>("POST", path, vectorJson(e))));
    for (const a of answers) bufferSize = Math.max(bufferSize, a.buffer_size ?? 0);
    return { accepted: items.length, buffer_size: bufferSize };
  }

  async vectorRemove(pk: string): Promise<WriteResult> {
    const r = await this.request<{ buffer_size?: number }>("DELETE", "/vectors/remove/buffered", JSON.stringify({ pk }));
    return { accepted: 1, buffer_size: r.buffer_size ?? 0 };
  }

  async vectorAdd(entity: VectorEntity): Promise<void> {
    await this.request("POST", "/vectors/add", vectorJson(entity));
  }

  vectorStats(): Promise<Record<string, unknown>> { return this.request("GET", "/vectors/buffer/stats"); }
  vectorFlush(): Promise<FlushResult> { return this.request("POST", "/vectors/buffer/flush"); }

  search(req: SearchRequest): Promise<SearchResult> {
    const vector = req.vector instanceof Float32Array ? Array.from(req.vector) : req.vector;
    return this.request("POST", "/vectors/search", JSON.stringify({ vector, k: req.k ?? 10, ...(req.filter ? { filter: req.filter } : {}) }));
  }

  replicationStats(): Promise<ReplicationStats> { return this.request("GET", "/api/v1/replication/stats"); }
  replicationConfig(c: CompressionConfig): Promise<Record<string, unknown>> {
    return this.request("POST", "/api/v1/replication/config", JSON.stringify(c));
  }
  addReplica(replicaId: string, endpoint: string): Promise<Record<string, unknown>> {
    return this.request("POST", "/api/v1/replication/replicas", JSON.stringify({ replica_id: replicaId, endpoint }));
  }
  removeReplica(replicaId: string): Promise<Record<string, unknown>> {
    return this.request("DELETE", "/api/v1/replication/replicas", JSON.stringify({ replica_id: replicaId }));
  }

  maxBatchBytes(): number { return this.config.maxBatchBytes; }
  async close(): Promise<void> { /* fetch keeps no state of ours */ }
}
