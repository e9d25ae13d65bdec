/**
 * The binary protocol's frame layer (docs/api/BINARY_PROTOCOL_EXTENSIONS.md, version 1):
 * opcodes, flags, error codes, limits, the 10-byte header, the writing and reading
 * helpers the payload codec uses, and the payload types. `codec.ts` re-exports it.
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
export const EMPTY_REQUESTS = new Set<number>([
  Opcode.TS_BUFFER_STATS, Opcode.TS_BUFFER_FLUSH, Opcode.VECTOR_BUFFER_STATS,
  Opcode.VECTOR_BUFFER_FLUSH, Opcode.REPLICATION_STATS,
]);

export interface FrameHeader {
  opcode: number;
  flags: number;
  length: number;
  requestId: number;
}

export const utf8 = new TextEncoder();
export const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

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

export function frame(opcode: number, flags: number, requestId: number, payload: Chunks): Chunks {
  return [encodeHeader(opcode, flags, frameLength(payload), requestId), ...payload];
}

// ---------------------------------------------------------------- writing helpers

export class Writer {
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

export function str(text: string, field: string, limit: number): Uint8Array {
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

export class Reader {
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
