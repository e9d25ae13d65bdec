/**
 * The binary transport (docs/api/BINARY_PROTOCOL_EXTENSIONS.md) over `node:net` / `node:tls`:
 * one long-lived, pipelined connection (HELLO, AUTH, then requests matched by id). Calls
 * version 1 has no opcode for (query, search, direct writes, replicas) go to `http_addr`.
 */
// Node's modules are loaded when a binary connection opens, so that bundles for browsers
// (HTTP only) can include this module without them.
import type * as net from "node:net";
import {
  AuthenticationError, BufferOverflowError, NotFoundError, PermissionDeniedError, RateLimitedError,
  ServerUnavailableError, ThemisError, ValidationError,
} from "./errors.js";
import {
  ErrorCode, Flag, HEADER_BYTES, Opcode, ProtocolError, decodeBody, decodeHeader, encodeAuth, encodeEmpty,
  encodeHello, encodeJson, encodeTsBatch, encodeVectorBatch, encodeVectorRemove, encodeVectorWrite,
  type Body, type Chunks, type ErrorReply, type HelloOk,
} from "./codec.js";
import type { ResolvedConfig } from "./config.js";
import { HttpTransport, fieldOf } from "./http.js";
import type { Transport } from "./transport.js";
import type {
  CompressionConfig, FlushResult, QueryRequest, QueryResult, ReplicationStats, SearchRequest,
  SearchResult, VectorEntity, WriteResult,
} from "./types.js";
import type { WirePoint } from "./validate.js";

/** The typed error of an ERROR frame; unknown codes go by their `retriable` bit. */
export function errorFromReply(e: ErrorReply, what: string): ThemisError {
  const msg = `${what}: ${e.message}`;
  const opts = { retryAfterMs: e.retryAfterMs };
  switch (e.code) {
    case ErrorCode.INVALID_REQUEST: case ErrorCode.FRAME_TOO_LARGE: case ErrorCode.MALFORMED_FRAME:
      return new ValidationError(msg, fieldOf(e.message));
    case ErrorCode.AUTHENTICATION_FAILED: case ErrorCode.NOT_AUTHENTICATED:
      return new AuthenticationError(`${msg} (check api_key)`);
    case ErrorCode.PERMISSION_DENIED: return new PermissionDeniedError(`${msg} (the key's role is too weak; flushes need admin)`);
    case ErrorCode.NOT_FOUND: return new NotFoundError(msg);
    case ErrorCode.RATE_LIMITED: return new RateLimitedError(msg, e.retryAfterMs);
    case ErrorCode.BUFFER_FULL: return new BufferOverflowError(msg, 0, { ...opts, retriable: true });
    case ErrorCode.UNAVAILABLE: case ErrorCode.TIMEOUT: case ErrorCode.SHUTTING_DOWN:
    case ErrorCode.INTERNAL: case ErrorCode.TOO_MANY_IN_FLIGHT:
      return new ServerUnavailableError(msg, opts);
    default: return new ThemisError(msg, { ...opts, retriable: e.retriable });
  }
}

interface Pending {
  resolve: (body: Body) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  what: string;
}

/** One connection: the session, then pipelined requests. */
class Connection {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private acc: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  hello: HelloOk | undefined;
  /** After GOAWAY or an error: takes no new requests. */
  closed = false;

  private constructor(private readonly socket: net.Socket, private readonly timeoutMs: number) {
    socket.setNoDelay(true);
    socket.on("data", (d: Buffer) => this.onData(d));
    socket.on("error", (e) => this.fail(new ServerUnavailableError(`binary connection: ${e.message}`, { cause: e })));
    socket.on("close", () => this.fail(new ServerUnavailableError("binary connection closed by the server")));
  }

  static async open(config: ResolvedConfig): Promise<Connection> {
    const [host, port] = splitAddr(config.addr);
    const net = await import("node:net");
    const tls = await import("node:tls");
    const { readFileSync } = await import("node:fs");
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const onError = (e: Error): void => reject(new ServerUnavailableError(`binary connect to ${config.addr}: ${e.message}`, { cause: e }));
      let s: net.Socket;
      if (config.schema === "themis+tls") {
        s = tls.connect({
          host, port, servername: net.isIP(host) ? undefined : host,
          ...(config.tlsCa ? { ca: readFileSync(config.tlsCa) } : {}),
          ...(config.tlsCert ? { cert: readFileSync(config.tlsCert) } : {}),
          ...(config.tlsKey ? { key: readFileSync(config.tlsKey) } : {}),
          rejectUnauthorized: config.tlsVerify,
        }, () => { s.off("error", onError); resolve(s); });
      } else {
        s = net.connect({ host, port }, () => { s.off("error", onError); resolve(s); });
      }
      s.once("error", onError);
      s.setTimeout(config.requestTimeoutMs, () => s.destroy(new Error(`no connection within request_timeout_ms=${config.requestTimeoutMs}`)));
    });
    socket.setTimeout(0);
    const conn = new Connection(socket, config.requestTimeoutMs);
    try {
      const hello = await conn.call("HELLO", (id) => encodeHello(id, config.clientId));
      if (hello.type !== "HelloOk") throw new ThemisError("HELLO: unexpected reply");
      conn.hello = hello;
      if (config.apiKey) await conn.call("AUTH", (id) => encodeAuth(id, config.apiKey!));
    } catch (e) {
      conn.shutdown();
      throw e;
    }
    return conn;
  }

  get inFlight(): number { return this.pending.size; }

  /** Send one request (chunks built with its id) and await its reply body. */
  async call(what: string, build: (requestId: number) => Chunks): Promise<Body> {
    const limit = this.hello?.maxInFlight ?? 1;
    while (this.pending.size >= limit && !this.closed) await new Promise<void>((r) => this.waiters.push(r));
    if (this.closed) throw new ServerUnavailableError(`${what}: the binary connection is closed (retry)`);
    const id = this.nextId;
    this.nextId = this.nextId >= 0xfffffffe ? 1 : this.nextId + 1;
    const chunks = build(id);
    return new Promise<Body>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) {
          reject(new ServerUnavailableError(`${what}: no answer within request_timeout_ms=${this.timeoutMs}`));
          this.wake();
        }
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer, what });
      this.socket.cork();
      for (const c of chunks) this.socket.write(c);
      this.socket.uncork();
    });
  }

  private wake(): void {
    const w = this.waiters.shift();
    if (w) w();
  }

  private onData(d: Buffer): void {
    this.acc = this.acc.length === 0 ? d : Buffer.concat([this.acc, d]);
    while (this.acc.length >= HEADER_BYTES) {
      const h = decodeHeader(this.acc);
      if (this.acc.length < HEADER_BYTES + h.length) break;
      const payload = this.acc.subarray(HEADER_BYTES, HEADER_BYTES + h.length);
      this.acc = this.acc.subarray(HEADER_BYTES + h.length);
      if (h.opcode === Opcode.GOAWAY && h.requestId === 0) {
        let last = 0;
        try { const g = decodeBody(h, payload); if (g.type === "GoAway") last = g.lastRequestId; } catch { /* treat as 0 */ }
        this.goaway(last);
        continue;
      }
      const p = this.pending.get(h.requestId);
      if (!p) continue; // timed out earlier
      this.pending.delete(h.requestId);
      clearTimeout(p.timer);
      this.wake();
      try {
        const body = decodeBody(h, payload);
        if (body.type === "ErrorReply") p.reject(errorFromReply(body, p.what));
        else if ((h.flags & Flag.REPLY) === 0) p.reject(new ThemisError(`${p.what}: a reply without the REPLY flag`));
        else p.resolve(body);
      } catch (e) {
        p.reject(e instanceof ProtocolError ? new ThemisError(`${p.what}: bad reply: ${e.message}`, { cause: e }) : (e as Error));
      }
    }
  }

  /** GOAWAY: requests after `last` were not applied and fail retriable; the rest are answered. */
  private goaway(last: number): void {
    this.closed = true;
    for (const [id, p] of this.pending) {
      if (id > last) {
        this.pending.delete(id);
        clearTimeout(p.timer);
        p.reject(new ServerUnavailableError(`${p.what}: the server is going away; not applied (retry)`));
      }
    }
    for (const w of this.waiters.splice(0)) w();
    if (this.pending.size === 0) this.socket.end();
  }

  private fail(e: Error): void {
    this.closed = true;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(e);
    }
    for (const w of this.waiters.splice(0)) w();
  }

  shutdown(): void {
    this.closed = true;
    this.socket.end();
    this.socket.destroySoon?.();
  }
}

function splitAddr(addr: string): [string, number] {
  const c = addr.lastIndexOf(":");
  return [addr.slice(0, c).replace(/^\[|\]$/g, ""), Number(addr.slice(c + 1))];
}

function writeAck(b: Body): WriteResult {
  if (b.type !== "WriteAck") throw new ThemisError(`expected a WriteAck, got ${b.type}`);
  return { accepted: b.accepted, buffer_size: b.bufferSize };
}

function json<T>(b: Body): T {
  if (b.type !== "JsonBody") throw new ThemisError(`expected a JSON reply, got ${b.type}`);
  return b.document as T;
}

export class BinaryTransport implements Transport {
  private conn: Connection | undefined;
  private connecting: Promise<Connection> | undefined;
  private readonly http: HttpTransport;
  private closed = false;

  constructor(private readonly config: ResolvedConfig) {
    this.http = new HttpTransport(config);
  }

  /** The live connection, opened (again) when there is none. */
  private async connection(): Promise<Connection> {
    if (this.closed) throw new ThemisError("the client is closed");
    if (this.conn && !this.conn.closed) return this.conn;
    this.connecting ??= Connection.open(this.config).then(
      (c) => { this.conn = c; this.connecting = undefined; return c; },
      (e: unknown) => { this.connecting = undefined; throw e; },
    );
    return this.connecting;
  }

  private call(what: string, build: (id: number) => Chunks): Promise<Body> {
    // On a live connection the frame is encoded and written synchronously.
    const c = this.conn;
    if (c && !c.closed && !this.closed) return c.call(what, build);
    return this.connection().then((live) => live.call(what, build));
  }

  /** Connect now (HELLO, AUTH) instead of on the first call. */
  async connect(): Promise<HelloOk> {
    return (await this.connection()).hello!;
  }

  async tsPutBatch(points: readonly WirePoint[]): Promise<WriteResult> {
    if (points.length === 0) return { accepted: 0, buffer_size: 0 };
    return writeAck(await this.call("TS_PUT_BUFFERED_BATCH", (id) => encodeTsBatch(id, points)));
  }

  tsPut(point: WirePoint): Promise<void> { return this.http.tsPut(point); }
  async tsStats(): Promise<Record<string, unknown>> { return json(await this.call("TS_BUFFER_STATS", (id) => encodeEmpty(Opcode.TS_BUFFER_STATS, id))); }
  async tsFlush(): Promise<FlushResult> { return json(await this.call("TS_BUFFER_FLUSH", (id) => encodeEmpty(Opcode.TS_BUFFER_FLUSH, id))); }
  tsQuery(q: QueryRequest): Promise<QueryResult> { return this.http.tsQuery(q); }

  async vectorWrite(op: "add" | "update", items: readonly VectorEntity[]): Promise<WriteResult> {
    if (items.length === 0) return { accepted: 0, buffer_size: 0 };
    if (items.length === 1) {
      const opcode = op === "add" ? Opcode.VECTOR_ADD_BUFFERED : Opcode.VECTOR_UPDATE_BUFFERED;
      return writeAck(await this.call(op === "add" ? "VECTOR_ADD_BUFFERED" : "VECTOR_UPDATE_BUFFERED", (id) => encodeVectorWrite(opcode, id, items[0]!)));
    }
    const opcode = op === "add" ? Opcode.VECTOR_ADD_BUFFERED_BATCH : Opcode.VECTOR_UPDATE_BUFFERED_BATCH;
    return writeAck(await this.call(op === "add" ? "VECTOR_ADD_BUFFERED_BATCH" : "VECTOR_UPDATE_BUFFERED_BATCH", (id) => encodeVectorBatch(opcode, id, items)));
  }

  async vectorRemove(pk: string): Promise<WriteResult> {
    return writeAck(await this.call("VECTOR_REMOVE_BUFFERED", (id) => encodeVectorRemove(id, pk)));
  }

  vectorAdd(entity: VectorEntity): Promise<void> { return this.http.vectorAdd(entity); }
  async vectorStats(): Promise<Record<string, unknown>> { return json(await this.call("VECTOR_BUFFER_STATS", (id) => encodeEmpty(Opcode.VECTOR_BUFFER_STATS, id))); }
  async vectorFlush(): Promise<FlushResult> { return json(await this.call("VECTOR_BUFFER_FLUSH", (id) => encodeEmpty(Opcode.VECTOR_BUFFER_FLUSH, id))); }
  search(req: SearchRequest): Promise<SearchResult> { return this.http.search(req); }
  async replicationStats(): Promise<ReplicationStats> { return json(await this.call("REPLICATION_STATS", (id) => encodeEmpty(Opcode.REPLICATION_STATS, id))); }
  async replicationConfig(c: CompressionConfig): Promise<Record<string, unknown>> {
    return json(await this.call("REPLICATION_CONFIG", (id) => encodeJson(Opcode.REPLICATION_CONFIG, id, { ...c })));
  }
  addReplica(replicaId: string, endpoint: string): Promise<Record<string, unknown>> { return this.http.addReplica(replicaId, endpoint); }
  removeReplica(replicaId: string): Promise<Record<string, unknown>> { return this.http.removeReplica(replicaId); }

  maxBatchBytes(): number {
    const server = this.conn?.hello?.maxFrameBytes ?? 4 * 1024 * 1024;
    return Math.min(this.config.maxBatchBytes, server);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.conn?.shutdown();
    this.conn = undefined;
  }
}
