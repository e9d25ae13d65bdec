/**
 * The binary protocol's codec (docs/api/BINARY_PROTOCOL_EXTENSIONS.md, version 1).
 *
 * Every frame: a 10-byte little-endian header, then `length` payload bytes.
 *
 * | offset | size | field |
 * | --- | --- | --- |
 * | 0 | 1 | opcode u8 |
 * | 1 | 1 | flags u8 |
 * | 2 | 4 | length u32 (payload bytes) |
 * | 6 | 4 | request_id u32 |
 *
 * Encoders return a list of chunks so that a `Float32Array` vector goes to the socket as a
 * view of its own memory (no copy); `concatChunks` joins them when one buffer is wanted.
 */

export const HEADER_BYTES = 10;
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
export const MAX_FRAME_POINTS = 100_000;
export const MAX_METRIC_BYTES = 4096;
export const MAX_ENTITY_BYTES = 4096;
export const MAX_BINARY_MESSAGE_BYTES = 4096;
export const MAX_BINARY_PING_BYTES = 64;
export const MAX_VECTOR_DIMENSION = 65_536;
export const MAX_BINARY_ID_BYTES = 256;

export const Opcode = {
  HELLO: 0x01,
  AUTH: 0x02,
  PING: 0x03,
  GOAWAY: 0x04,
  ERROR: 0x0f,
  TS_PUT_BUFFERED: 0x70,
  TS_BUFFER_STATS: 0x71,
  TS_BUFFER_FLUSH: 0x72,
  TS_PUT_BUFFERED_BATCH: 0x73,
  VECTOR_ADD_BUFFERED: 0x80,
  VECTOR_UPDATE_BUFFERED: 0x81,
  VECTOR_REMOVE_BUFFERED: 0x82,
  VECTOR_BUFFER_STATS: 0x83,
  VECTOR_BUFFER_FLUSH: 0x84,
  VECTOR_ADD_BUFFERED_BATCH: 0x85,
  VECTOR_UPDATE_BUFFERED_BATCH: 0x86,
  WAL_APPLY_COMPRESSED: 0x90,
  REPLICATION_STATS: 0x91,
  REPLICATION_CONFIG: 0x92,
} as const;
export type OpcodeName = keyof typeof Opcode;
export const OPCODE_NAMES: ReadonlyMap<number, OpcodeName> = new Map(
  Object.entries(Opcode).map(([k, v]) => [v, k as OpcodeName]),
);

export const Flag = { ACK_QUEUED: 0x01, COMPRESSED: 0x02, CHECKSUM: 0x04, REPLY: 0x80 } as const;
export type FlagName = keyof typeof Flag;

export const ErrorCode = {
  MALFORMED_FRAME: 1,
  UNKNOWN_OPCODE: 2,
  UNSUPPORTED_FLAGS: 3,
  FRAME_TOO_LARGE: 4,
  UNSUPPORTED_VERSION: 5,
  NOT_AUTHENTICATED: 6,
  AUTHENTICATION_FAILED: 7,
  PERMISSION_DENIED: 8,
  INVALID_REQUEST: 9,
  NOT_FOUND: 10,
  CONFLICT: 11,
  TOO_MANY_IN_FLIGHT: 12,
  RATE_LIMITED: 13,
  BUFFER_FULL: 14,
  UNAVAILABLE: 15,
  TIMEOUT: 16,
  CORRUPT_BATCH: 17,
  WAL_GAP: 18,
  FOREIGN_PRIMARY: 19,
  SHUTTING_DOWN: 20,
  INTERNAL: 21,
  NEED_DICTIONARY: 22,
} as const;
export type ErrorCodeName = keyof typeof ErrorCode;
export const ERROR_CODE_NAMES: ReadonlyMap<number, ErrorCodeName> = new Map(
  Object.entries(ErrorCode).map(([k, v]) => [v, k as ErrorCodeName]),
);

/** A payload the codec refuses; `code` is the protocol's error code name. */
export class ProtocolError extends Error {
  readonly code: ErrorCodeName;
  constructor(code: ErrorCodeName, message: string) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/** Opcodes a client sends (requests) and those a server sends (with REPLY). */
const CLIENT_OPCODES = new Set<number>(
  Object.values(Opcode).filter((o) => o !== Opcode.GOAWAY && o !== Opcode.ERROR),
);
const EMPTY_REQUESTS = new Set<number>([
  Opcode.TS_BUFFER_STATS, Opcode.TS_BUFFER_FLUSH, Opcode.VECTOR_BUFFER_STATS,
  Opcode.VECTOR_BUFFER_FLUSH, Opcode.REPLICATION_STATS,
]);

export interface FrameHeader {
  opcode: number;
  flags: number;
  length: number;
  requestId: number;
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

export function encodeHeader(opcode: number, flags: number, length: number, requestId: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES);
  h[0] = opcode;
  h[1] = flags;
  h.writeUInt32LE(length, 2);
  h.writeUInt32LE(requestId >>> 0, 6);
  return h;
}

export function decodeHeader(buf: Uint8Array, offset = 0): FrameHeader {
  if (buf.length - offset < HEADER_BYTES) throw new ProtocolError("MALFORMED_FRAME", `header needs ${HEADER_BYTES} bytes, ${buf.length - offset} given`);
  const dv = new DataView(buf.buffer, buf.byteOffset + offset, HEADER_BYTES);
  return { opcode: dv.getUint8(0), flags: dv.getUint8(1), length: dv.getUint32(2, true), requestId: dv.getUint32(6, true) };
}

/** The server's header checks, in its order: length, opcode (per direction), flags. */
export function checkHeader(h: FrameHeader, maxFrameBytes = MAX_FRAME_BYTES): void {
  const reply = (h.flags & Flag.REPLY) !== 0;
  const limit = h.opcode === Opcode.WAL_APPLY_COMPRESSED ? 128 * 1024 * 1024 : maxFrameBytes;
  if (h.length > limit) throw new ProtocolError("FRAME_TOO_LARGE", `payload of ${h.length} bytes is over ${limit}`);
  const known = OPCODE_NAMES.has(h.opcode);
  if (!known || (!reply && !CLIENT_OPCODES.has(h.opcode)) || (reply && false)) {
    throw new ProtocolError("UNKNOWN_OPCODE", `opcode 0x${h.opcode.toString(16)} is not defined in this direction`);
  }
  if (h.flags & 0x7e) throw new ProtocolError("UNSUPPORTED_FLAGS", `flags 0x${h.flags.toString(16)} use reserved bits`);
}

/** Frame chunks: header first. */
export type Chunks = Uint8Array[];

export function frameLength(chunks: Chunks): number {
  let n = 0;
  for (const c of chunks) n += c.byteLength;
  return n;
}

export function concatChunks(chunks: Chunks): Buffer {
  return Buffer.concat(chunks.map((c) => (Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength))));
}

function frame(opcode: number, flags: number, requestId: number, payload: Chunks): Chunks {
  return [encodeHeader(opcode, flags, frameLength(payload), requestId), ...payload];
}

// ---------------------------------------------------------------- writing helpers

class Writer {
  buf: Buffer;
  pos = 0;
  constructor(size: number) { this.buf = Buffer.allocUnsafe(size); }
  u8(v: number): void { this.buf[this.pos++] = v; }
  u16(v: number): void { this.buf.writeUInt16LE(v, this.pos); this.pos += 2; }
  u32(v: number): void { this.buf.writeUInt32LE(v, this.pos); this.pos += 4; }
  i64(v: bigint | number): void {
    if (typeof v === "number") {
      // A safe integer as two 32-bit halves (no BigInt per point).
      const lo = v % 0x100000000;
      const hi = Math.floor(v / 0x100000000);
      this.buf.writeUInt32LE(lo < 0 ? lo + 0x100000000 : lo, this.pos);
      this.buf.writeInt32LE(lo < 0 ? hi : hi, this.pos + 4);
    } else {
      this.buf.writeBigInt64LE(v, this.pos);
    }
    this.pos += 8;
  }
  f64(v: number): void { this.buf.writeDoubleLE(v, this.pos); this.pos += 8; }
  bytes(b: Uint8Array): void { this.buf.set(b, this.pos); this.pos += b.length; }
  str16(b: Uint8Array): void { this.u16(b.length); this.bytes(b); }
  done(): Buffer { return this.pos === this.buf.length ? this.buf : this.buf.subarray(0, this.pos); }
}

function str(text: string, field: string, limit: number): Uint8Array {
  const b = utf8.encode(text);
  if (b.length > limit) throw new ProtocolError("INVALID_REQUEST", `field '${field}' is ${b.length} bytes, over ${limit}`);
  return b;
}

/** Compact JSON as the server writes it: no spaces, no NaN/Infinity. */
export function jsonBytes(document: unknown, field: string): Uint8Array {
  const text = JSON.stringify(document, (_k, v: unknown) => {
    if (typeof v === "number" && !Number.isFinite(v)) throw new ProtocolError("INVALID_REQUEST", `field '${field}' holds ${v}, not JSON`);
    return v;
  });
  return utf8.encode(text);
}

// ---------------------------------------------------------------- reading helpers

class Reader {
  private pos = 0;
  private readonly dv: DataView;
  constructor(readonly data: Uint8Array, readonly what: string) {
    this.dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }
  fail(message: string, code: ErrorCodeName = "MALFORMED_FRAME"): ProtocolError {
    return new ProtocolError(code, `${this.what}: ${message}`);
  }
  left(): number { return this.data.length - this.pos; }
  need(n: number, field: string): void { if (this.left() < n) throw this.fail(`${field} needs ${n} bytes, ${this.left()} left`); }
  u8(f: string): number { this.need(1, f); return this.dv.getUint8(this.pos++); }
  u16(f: string): number { this.need(2, f); const v = this.dv.getUint16(this.pos, true); this.pos += 2; return v; }
  u32(f: string): number { this.need(4, f); const v = this.dv.getUint32(this.pos, true); this.pos += 4; return v; }
  i64(f: string): bigint { this.need(8, f); const v = this.dv.getBigInt64(this.pos, true); this.pos += 8; return v; }
  f64(f: string): number { this.need(8, f); const v = this.dv.getFloat64(this.pos, true); this.pos += 8; return v; }
  take(n: number, f: string): Uint8Array { this.need(n, f); const b = this.data.subarray(this.pos, this.pos + n); this.pos += n; return b; }
  text(n: number, f: string, limit?: number): string {
    if (limit !== undefined && n > limit) throw this.fail(`${f} is ${n} bytes, over ${limit}`, "INVALID_REQUEST");
    try { return strictUtf8.decode(this.take(n, f)); } catch (e) { if (e instanceof ProtocolError) throw e; throw this.fail(`${f} is not UTF-8`); }
  }
  str8(f: string): string { return this.text(this.u8(f), f); }
  str16(f: string, limit?: number): string { return this.text(this.u16(f), f, limit); }
  json(n: number, f: string): Record<string, unknown> {
    const text = this.text(n, f);
    const doc = parseStrictJson(text, (m) => this.fail(`${f}: ${m}`));
    if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw this.fail(`${f} is not a JSON object`);
    return doc as Record<string, unknown>;
  }
  f32(count: number, f: string): Float32Array {
    this.need(count * 4, f);
    const start = this.data.byteOffset + this.pos;
    this.pos += count * 4;
    if (start % 4 === 0) return new Float32Array(this.data.buffer, start, count);
    const copy = new Uint8Array(count * 4);
    copy.set(this.data.subarray(this.pos - count * 4, this.pos));
    return new Float32Array(copy.buffer);
  }
  end(): void { if (this.left()) throw this.fail(`${this.left()} bytes after the last field`); }
}

/**
 * JSON.parse plus the server's rules: no repeated key, no number that overflows a float64,
 * no lone surrogate escape (JSON.parse already refuses NaN/Infinity).
 */
export function parseStrictJson(text: string, fail: (m: string) => Error): unknown {
  if (/\\u[dD][89a-fA-F]/.test(text)) {
    // A \uD800-\uDFFF escape is fine only as half of a well-formed pair.
    const re = /\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([dD][89a-fA-F][0-9a-fA-F]{2})/g;
    for (const m of text.matchAll(re)) if (m[3] !== undefined) throw fail("a lone surrogate escape has no UTF-8");
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text, function (this: unknown, _key, value: unknown) {
      if (typeof value === "number" && !Number.isFinite(value)) throw new RangeError("a number overflows a float64");
      return value;
    });
  } catch (e) {
    throw fail(e instanceof Error ? e.message : String(e));
  }
  if (hasRepeatedKey(text)) throw fail("an object names one key twice");
  return doc;
}

/** A scan for a repeated key in any object of `text` (valid JSON). */
function hasRepeatedKey(text: string): boolean {
  if (!text.includes("{")) return false;
  const stack: Array<Set<string> | null> = [];
  let i = 0;
  let expectKey = false;
  while (i < text.length) {
    const ch = text[i]!;
    if (ch === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const top = stack[stack.length - 1];
      if (expectKey && top) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.has(key)) return true;
        top.add(key);
        expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (ch === "{") { stack.push(new Set()); expectKey = true; }
    else if (ch === "[") { stack.push(null); }
    else if (ch === "}" || ch === "]") { stack.pop(); }
    else if (ch === ",") { expectKey = stack[stack.length - 1] != null; }
    i++;
  }
  return false;
}

// ---------------------------------------------------------------- payload types

export interface TsPointWire {
  metric: string;
  entity: string;
  /** Milliseconds since the epoch, i64 (a number must be a safe integer). */
  timestamp_ms: bigint | number;
  value: number;
  /** Tag name → value, in wire order. */
  tags: Record<string, string> | undefined;
}

export interface VectorWireEntity {
  pk: string;
  vector: Float32Array | readonly number[];
  metadata?: Record<string, unknown> | null;
}

export interface ErrorReply {
  code: number;
  retriable: boolean;
  retryAfterMs: number;
  itemsAccepted: number;
  message: string;
}

export interface HelloOk { version: number; maxFrameBytes: number; maxInFlight: number; authMethods: string[] }
export interface GoAway { lastRequestId: number; code: number; message: string }
export interface WriteAck { accepted: number; bufferSize: number }

export type Body =
  | { type: "HelloRequest"; minVersion: number; maxVersion: number; clientId: string }
  | ({ type: "HelloOk" } & HelloOk)
  | { type: "AuthRequest"; method: string; credential: Uint8Array }
  | { type: "AuthOk"; role: string }
  | { type: "Ping"; data: Uint8Array }
  | ({ type: "GoAway" } & GoAway)
  | ({ type: "ErrorReply" } & ErrorReply)
  | ({ type: "TsPoint" } & TsPointWire)
  | { type: "TsBatch"; points: TsPointWire[] }
  | ({ type: "WriteAck" } & WriteAck)
  | { type: "VectorWrite"; pk: string; vector: Float32Array; metadata: Record<string, unknown> | null }
  | { type: "VectorBatch"; pks: string[]; vectors: Float32Array[]; metadata: Array<Record<string, unknown> | null> }
  | { type: "VectorRemove"; pk: string }
  | { type: "WalApply"; primaryId: string; batch: Uint8Array }
  | { type: "JsonBody"; document: Record<string, unknown> }
  | { type: "Empty" };

export interface Frame { opcode: number; flags: number; requestId: number; body: Body }

// ---------------------------------------------------------------- encoders

export function encodeHello(requestId: number, clientId: string, minVersion = 1, maxVersion = 1): Chunks {
  const id = str(clientId, "client_id", MAX_BINARY_ID_BYTES);
  const w = new Writer(10 + id.length);
  w.bytes(utf8.encode("THMB")); w.u16(minVersion); w.u16(maxVersion); w.str16(id);
  return frame(Opcode.HELLO, 0, requestId, [w.done()]);
}

export function encodeAuth(requestId: number, credential: Uint8Array | string, method = "api_key"): Chunks {
  const m = str(method, "method", 255);
  const c = typeof credential === "string" ? utf8.encode(credential) : credential;
  const w = new Writer(3 + m.length + c.length);
  w.u8(m.length); w.bytes(m); w.u16(c.length); w.bytes(c);
  return frame(Opcode.AUTH, 0, requestId, [w.done()]);
}

export function encodePing(requestId: number, data: Uint8Array = new Uint8Array(0), flags = 0): Chunks {
  if (data.length > MAX_BINARY_PING_BYTES) throw new ProtocolError("MALFORMED_FRAME", `ping of ${data.length} bytes, over ${MAX_BINARY_PING_BYTES}`);
  return frame(Opcode.PING, flags, requestId, [data]);
}

export function encodeEmpty(opcode: number, requestId: number, flags = 0): Chunks {
  return frame(opcode, flags, requestId, []);
}

export function encodeJson(opcode: number, requestId: number, document: Record<string, unknown>, flags = 0): Chunks {
  return frame(opcode, flags, requestId, [jsonBytes(document, "document")]);
}

function tagsBytes(tags: Record<string, string> | undefined): Uint8Array {
  if (!tags) return new Uint8Array(0);
  const keys = Object.keys(tags);
  if (keys.length === 0) return new Uint8Array(0);
  return jsonBytes(tags, "tags");
}

export function encodeTsPoint(requestId: number, p: TsPointWire, flags = 0): Chunks {
  const m = str(p.metric, "metric", MAX_METRIC_BYTES);
  const e = str(p.entity, "entity", MAX_ENTITY_BYTES);
  const t = tagsBytes(p.tags);
  if (t.length > 0xffff) throw new ProtocolError("INVALID_REQUEST", "field 'tags' is over 65535 bytes of JSON");
  const w = new Writer(22 + m.length + e.length + t.length);
  w.str16(m); w.str16(e); w.i64(p.timestamp_ms); w.f64(p.value); w.u16(t.length); w.bytes(t);
  return frame(Opcode.TS_PUT_BUFFERED, flags, requestId, [w.done()]);
}

/** TsBatch: a string table (each distinct string once, in order of first use), then the points. */
export function encodeTsBatch(requestId: number, points: readonly TsPointWire[], flags = 0): Chunks {
  if (points.length > MAX_FRAME_POINTS) throw new ProtocolError("INVALID_REQUEST", `a batch of ${points.length} points is over ${MAX_FRAME_POINTS}`);
  const index = new Map<string, number>();
  const strings: Uint8Array[] = [];
  let stringBytes = 0;
  let tagCount = 0;
  const ref = (s: string, field: string, limit: number): number => {
    let i = index.get(s);
    if (i === undefined) {
      const b = str(s, field, limit);
      i = strings.length;
      index.set(s, i);
      strings.push(b);
      stringBytes += 2 + b.length;
    }
    return i;
  };
  const refs = new Uint32Array(points.length * 3); // metric, entity, tag count
  const tagRefs: number[] = [];
  // Consecutive points mostly share their metric (and often their tags object): compare by
  // reference first, then the table.
  let lastMetric: string | undefined;
  let lastMetricRef = 0;
  let lastTags: Record<string, string> | undefined;
  let lastTagStart = 0;
  let lastTagCount = 0;
  for (let k = 0; k < points.length; k++) {
    const p = points[k]!;
    if (p.metric !== lastMetric) { lastMetric = p.metric; lastMetricRef = ref(p.metric, "metric", MAX_METRIC_BYTES); }
    refs[3 * k] = lastMetricRef;
    refs[3 * k + 1] = ref(p.entity, "entity", MAX_ENTITY_BYTES);
    const tags = p.tags;
    let n = 0;
    if (tags !== undefined && tags === lastTags) {
      for (let j = 0; j < 2 * lastTagCount; j++) tagRefs.push(tagRefs[lastTagStart + j]!);
      n = lastTagCount;
    } else if (tags) {
      const start = tagRefs.length;
      for (const name in tags) {
        tagRefs.push(ref(name, "tags", 0xffff), ref(tags[name]!, "tags", 0xffff));
        n++;
      }
      lastTags = tags; lastTagStart = start; lastTagCount = n;
    }
    refs[3 * k + 2] = n;
    tagCount += n;
  }
  const w = new Writer(8 + stringBytes + points.length * 26 + tagCount * 8);
  w.u32(strings.length);
  for (const s of strings) w.str16(s);
  w.u32(points.length);
  let t = 0;
  for (let k = 0; k < points.length; k++) {
    const p = points[k]!;
    w.u32(refs[3 * k]!); w.u32(refs[3 * k + 1]!); w.i64(p.timestamp_ms); w.f64(p.value);
    const n = refs[3 * k + 2]!;
    w.u16(n);
    for (let j = 0; j < n; j++) { w.u32(tagRefs[t++]!); w.u32(tagRefs[t++]!); }
  }
  return frame(Opcode.TS_PUT_BUFFERED_BATCH, flags, requestId, [w.done()]);
}

function vectorView(vector: Float32Array | readonly number[]): Uint8Array {
  const f = vector instanceof Float32Array ? vector : Float32Array.from(vector);
  return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
}

function checkDimension(d: number): void {
  if (d < 1 || d > MAX_VECTOR_DIMENSION) throw new ProtocolError("INVALID_REQUEST", `field 'vector' has dimension ${d}, not 1..${MAX_VECTOR_DIMENSION}`);
}

function metadataBytes(m: Record<string, unknown> | null | undefined): Uint8Array {
  return m === null || m === undefined ? new Uint8Array(0) : jsonBytes(m, "metadata");
}

/** VectorWrite; a Float32Array vector is sent as a view of its memory (no copy). */
export function encodeVectorWrite(opcode: number, requestId: number, v: VectorWireEntity, flags = 0): Chunks {
  checkDimension(v.vector.length);
  const pk = str(v.pk, "pk", 0xffff);
  const md = metadataBytes(v.metadata);
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32LE(v.vector.length, 0);
  const tail = new Writer(6 + pk.length + md.length);
  tail.str16(pk); tail.u32(md.length); tail.bytes(md);
  return frame(opcode, flags, requestId, [head, vectorView(v.vector), tail.done()]);
}

/** VectorBatch: count, dimension, one contiguous row-major f32 block, then pk + metadata each. */
export function encodeVectorBatch(opcode: number, requestId: number, items: readonly VectorWireEntity[], flags = 0): Chunks {
  const d = items.length ? items[0]!.vector.length : 0;
  if (items.length) checkDimension(d);
  const pks = items.map((v) => str(v.pk, "pk", 0xffff));
  const mds = items.map((v) => metadataBytes(v.metadata));
  let tailBytes = 0;
  for (let i = 0; i < items.length; i++) tailBytes += 6 + pks[i]!.length + mds[i]!.length;
  const w = new Writer(8 + items.length * d * 4 + tailBytes);
  w.u32(items.length); w.u32(d);
  const block = new Float32Array(w.buf.buffer, w.buf.byteOffset + 8, items.length * d);
  if ((w.buf.byteOffset + 8) % 4 !== 0) throw new Error("unaligned vector block");
  for (let i = 0; i < items.length; i++) {
    const v = items[i]!.vector;
    if (v.length !== d) throw new ProtocolError("INVALID_REQUEST", `vector ${i}: field 'vector' has dimension ${v.length}, the batch ${d}`);
    block.set(v, i * d);
  }
  w.pos = 8 + items.length * d * 4;
  for (let i = 0; i < items.length; i++) { w.str16(pks[i]!); w.u32(mds[i]!.length); w.bytes(mds[i]!); }
  return frame(opcode, flags, requestId, [w.done()]);
}

export function encodeVectorRemove(requestId: number, pk: string, flags = 0): Chunks {
  const b = str(pk, "pk", 0xffff);
  const w = new Writer(2 + b.length);
  w.str16(b);
  return frame(Opcode.VECTOR_REMOVE_BUFFERED, flags, requestId, [w.done()]);
}

export function encodeWalApply(requestId: number, primaryId: string, batch: Uint8Array, flags = 0): Chunks {
  const id = str(primaryId, "primary_id", MAX_BINARY_ID_BYTES);
  const w = new Writer(2 + id.length);
  w.str16(id);
  return frame(Opcode.WAL_APPLY_COMPRESSED, flags, requestId, [w.done(), batch]);
}

/** Any frame from its meaning (the golden frames' `frame` objects); servers' frames too. */
export function encodeFrame(f: Frame): Chunks {
  const b = f.body;
  const { opcode, flags, requestId } = f;
  const payload = (parts: Chunks): Chunks => frame(opcode, flags, requestId, parts);
  switch (b.type) {
    case "HelloRequest": { const c = encodeHello(requestId, b.clientId, b.minVersion, b.maxVersion); c[0] = encodeHeader(opcode, flags, frameLength(c.slice(1)), requestId); return c; }
    case "HelloOk": {
      const ms = b.authMethods.map((m) => utf8.encode(m));
      const w = new Writer(9 + ms.reduce((n, m) => n + 1 + m.length, 0));
      w.u16(b.version); w.u32(b.maxFrameBytes); w.u16(b.maxInFlight); w.u8(ms.length);
      for (const m of ms) { w.u8(m.length); w.bytes(m); }
      return payload([w.done()]);
    }
    case "AuthRequest": return payload(encodeAuth(requestId, b.credential, b.method).slice(1));
    case "AuthOk": { const r = utf8.encode(b.role); const w = new Writer(1 + r.length); w.u8(r.length); w.bytes(r); return payload([w.done()]); }
    case "Ping": return payload([b.data]);
    case "GoAway": { const m = utf8.encode(b.message); const w = new Writer(8 + m.length); w.u32(b.lastRequestId); w.u16(b.code); w.str16(m); return payload([w.done()]); }
    case "ErrorReply": {
      const m = utf8.encode(b.message);
      const w = new Writer(13 + m.length);
      w.u16(b.code); w.u8(b.retriable ? 1 : 0); w.u32(b.retryAfterMs); w.u32(b.itemsAccepted); w.str16(m);
      return payload([w.done()]);
    }
    case "TsPoint": return payload(encodeTsPoint(requestId, b, flags).slice(1));
    case "TsBatch": return payload(encodeTsBatch(requestId, b.points, flags).slice(1));
    case "WriteAck": { const w = new Writer(8); w.u32(b.accepted); w.u32(b.bufferSize); return payload([w.done()]); }
    case "VectorWrite": return payload(encodeVectorWrite(opcode, requestId, b, flags).slice(1));
    case "VectorBatch": return payload(encodeVectorBatch(opcode, requestId, b.pks.map((pk, i) => ({ pk, vector: b.vectors[i]!, metadata: b.metadata[i] ?? null })), flags).slice(1));
    case "VectorRemove": return payload(encodeVectorRemove(requestId, b.pk, flags).slice(1));
    case "WalApply": return payload(encodeWalApply(requestId, b.primaryId, b.batch, flags).slice(1));
    case "JsonBody": return payload([jsonBytes(b.document, "document")]);
    case "Empty": return payload([]);
  }
}

// ---------------------------------------------------------------- decoders

function tagsFrom(r: Reader, size: number): Record<string, string> {
  if (size === 0) return {};
  const doc = r.json(size, "tags");
  for (const v of Object.values(doc)) if (typeof v !== "string") throw r.fail("tags must map names to strings", "INVALID_REQUEST");
  return doc as Record<string, string>;
}

/** Decode one payload of a known header. */
export function decodeBody(h: FrameHeader, payload: Uint8Array): Body {
  const reply = (h.flags & Flag.REPLY) !== 0;
  const name = OPCODE_NAMES.get(h.opcode) ?? `0x${h.opcode.toString(16)}`;
  const r = new Reader(payload, name);
  let body: Body;
  if (h.opcode === Opcode.ERROR) {
    const code = r.u16("code"); const ef = r.u8("error_flags");
    if (ef & 0xfe) throw r.fail("error_flags bits 1-7 must be 0");
    body = { type: "ErrorReply", code, retriable: (ef & 1) === 1, retryAfterMs: r.u32("retry_after_ms"), itemsAccepted: r.u32("items_accepted"), message: r.str16("message", MAX_BINARY_MESSAGE_BYTES) };
  } else if (h.opcode === Opcode.GOAWAY) {
    body = { type: "GoAway", lastRequestId: r.u32("last_request_id"), code: r.u16("code"), message: r.str16("message", MAX_BINARY_MESSAGE_BYTES) };
  } else if (h.opcode === Opcode.PING) {
    if (payload.length > MAX_BINARY_PING_BYTES) throw r.fail(`ping of ${payload.length} bytes, over ${MAX_BINARY_PING_BYTES}`);
    return { type: "Ping", data: payload.slice() };
  } else if (h.opcode === Opcode.HELLO) {
    if (reply) {
      const version = r.u16("version"); const maxFrameBytes = r.u32("max_frame_bytes"); const maxInFlight = r.u16("max_in_flight");
      const n = r.u8("method_count"); const authMethods: string[] = [];
      for (let i = 0; i < n; i++) authMethods.push(r.str8("method"));
      body = { type: "HelloOk", version, maxFrameBytes, maxInFlight, authMethods };
    } else {
      if (strictUtf8.decode(r.take(4, "magic")) !== "THMB") throw r.fail("magic is not THMB");
      const minVersion = r.u16("min_version"); const maxVersion = r.u16("max_version");
      if (minVersion < 1 || maxVersion < minVersion) throw r.fail(`version range ${minVersion}..${maxVersion} is empty`);
      body = { type: "HelloRequest", minVersion, maxVersion, clientId: r.str16("client_id", MAX_BINARY_ID_BYTES) };
    }
  } else if (h.opcode === Opcode.AUTH) {
    if (reply) body = { type: "AuthOk", role: r.str8("role") };
    else { const method = r.str8("method"); body = { type: "AuthRequest", method, credential: r.take(r.u16("credential_len"), "credential").slice() }; }
  } else if (reply && (h.opcode === Opcode.TS_PUT_BUFFERED || h.opcode === Opcode.TS_PUT_BUFFERED_BATCH || (h.opcode >= 0x80 && h.opcode <= 0x82) || h.opcode === 0x85 || h.opcode === 0x86)) {
    body = { type: "WriteAck", accepted: r.u32("accepted"), bufferSize: r.u32("buffer_size") };
  } else if (reply || h.opcode === Opcode.REPLICATION_CONFIG) {
    return { type: "JsonBody", document: r.json(payload.length, "document") };
  } else if (EMPTY_REQUESTS.has(h.opcode)) {
    body = { type: "Empty" };
  } else if (h.opcode === Opcode.TS_PUT_BUFFERED) {
    const metric = r.str16("metric", MAX_METRIC_BYTES); const entity = r.str16("entity", MAX_ENTITY_BYTES);
    const timestamp_ms = r.i64("timestamp_ms"); const value = r.f64("value");
    body = { type: "TsPoint", metric, entity, timestamp_ms, value, tags: tagsFrom(r, r.u16("tags_len")) };
  } else if (h.opcode === Opcode.TS_PUT_BUFFERED_BATCH) {
    const sc = r.u32("string_count"); const strings: string[] = [];
    for (let i = 0; i < sc; i++) strings.push(r.str16("string"));
    const pc = r.u32("point_count");
    if (pc > MAX_FRAME_POINTS) throw r.fail(`point_count ${pc} is over ${MAX_FRAME_POINTS}`, "INVALID_REQUEST");
    const at = (i: number): string => { const s = strings[i]; if (s === undefined) throw r.fail(`string index ${i} of ${sc}`); return s; };
    const points: TsPointWire[] = [];
    for (let k = 0; k < pc; k++) {
      const metric = at(r.u32("metric")); const entity = at(r.u32("entity"));
      const timestamp_ms = r.i64("timestamp_ms"); const value = r.f64("value"); const tc = r.u16("tag_count");
      const tags: Record<string, string> = {};
      for (let j = 0; j < tc; j++) { const n = at(r.u32("tag name")); tags[n] = at(r.u32("tag value")); }
      points.push({ metric, entity, timestamp_ms, value, tags });
    }
    body = { type: "TsBatch", points };
  } else if (h.opcode === Opcode.VECTOR_ADD_BUFFERED || h.opcode === Opcode.VECTOR_UPDATE_BUFFERED) {
    const d = r.u32("dimension");
    if (d < 1 || d > MAX_VECTOR_DIMENSION) throw r.fail(`dimension ${d} is not 1..${MAX_VECTOR_DIMENSION}`, "INVALID_REQUEST");
    const vector = r.f32(d, "vector"); const pk = r.str16("pk"); const ml = r.u32("metadata_len");
    body = { type: "VectorWrite", pk, vector, metadata: ml ? r.json(ml, "metadata") : null };
  } else if (h.opcode === Opcode.VECTOR_ADD_BUFFERED_BATCH || h.opcode === Opcode.VECTOR_UPDATE_BUFFERED_BATCH) {
    const n = r.u32("count"); const d = r.u32("dimension");
    if (n > 0 && (d < 1 || d > MAX_VECTOR_DIMENSION)) throw r.fail(`dimension ${d} is not 1..${MAX_VECTOR_DIMENSION}`, "INVALID_REQUEST");
    const block = r.f32(n * d, "vectors");
    const vectors: Float32Array[] = []; const pks: string[] = []; const metadata: Array<Record<string, unknown> | null> = [];
    for (let i = 0; i < n; i++) {
      vectors.push(block.subarray(i * d, (i + 1) * d));
      pks.push(r.str16("pk")); const ml = r.u32("metadata_len"); metadata.push(ml ? r.json(ml, "metadata") : null);
    }
    body = { type: "VectorBatch", pks, vectors, metadata };
  } else if (h.opcode === Opcode.VECTOR_REMOVE_BUFFERED) {
    body = { type: "VectorRemove", pk: r.str16("pk") };
  } else if (h.opcode === Opcode.WAL_APPLY_COMPRESSED) {
    const primaryId = r.str16("primary_id", MAX_BINARY_ID_BYTES);
    return { type: "WalApply", primaryId, batch: r.take(r.left(), "batch").slice() };
  } else {
    throw r.fail("no layout for this opcode", "UNKNOWN_OPCODE");
  }
  r.end();
  return body;
}

/** Decode one whole frame (header checks, then the payload); trailing bytes are refused. */
export function decodeFrame(buf: Uint8Array, maxFrameBytes = MAX_FRAME_BYTES): Frame {
  const h = decodeHeader(buf);
  checkHeader(h, maxFrameBytes);
  if (buf.length - HEADER_BYTES !== h.length) {
    throw new ProtocolError("MALFORMED_FRAME", `header declares ${h.length} payload bytes, ${buf.length - HEADER_BYTES} follow`);
  }
  return { opcode: h.opcode, flags: h.flags, requestId: h.requestId, body: decodeBody(h, buf.subarray(HEADER_BYTES)) };
}
