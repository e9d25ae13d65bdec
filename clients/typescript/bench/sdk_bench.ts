/**
 * The SDK benchmark: points per second through `putBuffered` + `flush()` on the binary and
 * HTTP transports, and the same points pre-encoded as TS_PUT_BUFFERED_BATCH frames of the
 * same batch size pipelined over one raw socket (all acks awaited), in the same run.
 *
 *   node dist/bench/sdk_bench.js --stack /tmp/themis-stack/stack.json --size smoke|quick|full
 *
 * Prints one JSON object.
 */
import { readFileSync } from "node:fs";
import * as net from "node:net";
import { parseArgs } from "node:util";
import { ThemisTimeSeriesClient } from "../src/index.js";
import { HEADER_BYTES, concatChunks, decodeBody, decodeHeader, encodeAuth, encodeHello, encodeTsBatch, type TsPointWire } from "../src/codec.js";

const SIZES = { smoke: 20_000, quick: 200_000, full: 1_000_000 } as const;
const BATCH = 5000;
const SERIES = 100;

const { values } = parseArgs({ options: { stack: { type: "string" }, size: { type: "string", default: "smoke" } } });
const stackPath = values.stack ?? process.env["THEMIS_STACK"];
if (!stackPath) { console.error("--stack PATH (or THEMIS_STACK) is required"); process.exit(2); }
const size = values.size as keyof typeof SIZES;
if (!(size in SIZES)) { console.error(`--size must be smoke, quick or full, not ${String(values.size)}`); process.exit(2); }
const stack = JSON.parse(readFileSync(stackPath, "utf8")) as { conf: { http: string; themis: string }; http_addr: string; binary_addr: string; keys: { writer: string } };
const N = SIZES[size];
const run = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

function points(metric: string, n: number): TsPointWire[] {
  const out: TsPointWire[] = new Array<TsPointWire>(n);
  for (let i = 0; i < n; i++) out[i] = { metric, entity: `host${i % SERIES}`, timestamp_ms: 1_700_000_000_000 + Math.floor(i / SERIES), value: i * 0.5, tags: { dc: "eu" } };
  return out;
}

async function sdk(kind: "http" | "themis", n: number): Promise<number> {
  const ts = new ThemisTimeSeriesClient({ conf: stack.conf[kind], httpAddr: stack.http_addr, autoFlushRows: BATCH, maxBufferRows: Math.max(n, 100_000) });
  ts.putBufferedBatch(points(`bench_warm_${kind}_${run}`, 2 * BATCH));
  await ts.flush();
  const ps = points(`bench_sdk_${kind}_${run}`, n);
  const t0 = process.hrtime.bigint();
  for (const p of ps) ts.putBuffered(p);
  await ts.flush();
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  await ts.close();
  return n / s;
}

/** The same points as pre-encoded frames, all written at once on one socket; every ack awaited. */
async function raw(n: number): Promise<number> {
  const [host, port] = [stack.binary_addr.slice(0, stack.binary_addr.lastIndexOf(":")), Number(stack.binary_addr.slice(stack.binary_addr.lastIndexOf(":") + 1))];
  const sock = net.connect({ host, port });
  sock.setNoDelay(true);
  await new Promise<void>((r, j) => { sock.once("connect", r); sock.once("error", j); });
  let acc: Buffer = Buffer.alloc(0);
  let onFrame: (op: number, flags: number, id: number, payload: Buffer) => void = () => undefined;
  sock.on("data", (d: Buffer) => {
    acc = acc.length ? Buffer.concat([acc, d]) : d;
    while (acc.length >= HEADER_BYTES) {
      const h = decodeHeader(acc);
      if (acc.length < HEADER_BYTES + h.length) break;
      const payload = acc.subarray(HEADER_BYTES, HEADER_BYTES + h.length);
      acc = acc.subarray(HEADER_BYTES + h.length);
      onFrame(h.opcode, h.flags, h.requestId, payload);
    }
  });
  const oneReply = (): Promise<void> => new Promise((r, j) => { onFrame = (op, flags, id, p) => { op === 0x0f ? j(new Error(JSON.stringify(decodeBody({ opcode: op, flags, length: p.length, requestId: id }, p)))) : r(); }; });
  let w = oneReply(); sock.write(concatChunks(encodeHello(1, "sdk-bench-raw"))); await w;
  w = oneReply(); sock.write(concatChunks(encodeAuth(2, stack.keys.writer))); await w;
  const ps = points(`bench_raw_${run}`, n);
  const frames: Buffer[] = [];
  for (let i = 0, id = 10; i < n; i += BATCH, id++) frames.push(concatChunks(encodeTsBatch(id, ps.slice(i, i + BATCH))));
  let left = frames.length;
  const done = new Promise<void>((r, j) => {
    onFrame = (op, flags, id, p) => {
      if (op === 0x0f) j(new Error(JSON.stringify(decodeBody({ opcode: op, flags, length: p.length, requestId: id }, p))));
      else if (--left === 0) r();
    };
  });
  const t0 = process.hrtime.bigint();
  sock.cork();
  for (const f of frames) sock.write(f);
  sock.uncork();
  await done;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  sock.end();
  return n / s;
}

const rawRate = await raw(N);
const binary = await sdk("themis", N);
const http = await sdk("http", N);
const round = (x: number): number => Math.round(x);
console.log(JSON.stringify({
  size, points: N, batch_points: BATCH,
  points_per_s_binary: round(binary),
  points_per_s_http: round(http),
  raw_protocol_points_per_s: round(rawRate),
  binary_vs_raw: Math.round((binary / rawRate) * 1000) / 1000,
}));
