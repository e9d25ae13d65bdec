/**
 * The binary protocol's payload codec (docs/api/BINARY_PROTOCOL_EXTENSIONS.md, version 1):
 * an encoder and a decoder for every payload. The frame layer (opcodes, limits, the
 * 10-byte header, the writing and reading helpers) is `frame.ts`, re-exported here.
 *
 * Encoders return a list of chunks so that a `Float32Array` vector goes to the socket as a
 * view of its own memory (no copy); `concatChunks` joins them when one buffer is wanted.
 */

export * from "./frame.js";
import {
  type Body,
  checkHeader,
  type Chunks,
  decodeHeader,
  EMPTY_REQUESTS,
  encodeHeader,
  type ErrorReply,
  Flag,
  type Frame,
  frame,
  type FrameHeader,
  frameLength,
  type GoAway,
  HEADER_BYTES,
  type HelloOk,
  jsonBytes,
  MAX_BINARY_ID_BYTES,
  MAX_BINARY_MESSAGE_BYTES,
  MAX_BINARY_PING_BYTES,
  MAX_ENTITY_BYTES,
  MAX_FRAME_BYTES,
  MAX_FRAME_POINTS,
  MAX_METRIC_BYTES,
  MAX_VECTOR_DIMENSION,
  Opcode,
  OPCODE_NAMES,
  ProtocolError,
  Reader,
  str,
  strictUtf8,
  type TsPointWire,
  utf8,
  type VectorWireEntity,
  type WriteAck,
  Writer,
} from "./frame.js";

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
