// The binary transport against a scripted server on a local socket: session, pipelining,
// ERROR frames to typed errors, GOAWAY and reconnects.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import {
  ErrorCode, Flag, HEADER_BYTES, Opcode, concatChunks, decodeBody, decodeHeader, encodeFrame, type Body,
} from "../../src/codec.js";
import { RateLimitedError, ServerUnavailableError, ThemisTimeSeriesClient } from "../../src/index.js";

type Handler = (opcode: number, requestId: number, body: Body, socket: net.Socket, connection: number) => void;

function reply(socket: net.Socket, opcode: number, requestId: number, body: Body): void {
  socket.write(concatChunks(encodeFrame({ opcode, flags: Flag.REPLY, requestId, body })));
}

async function server(handle: Handler): Promise<{ port: number; close: () => Promise<void>; connections: () => number }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((socket) => {
    const n = ++connections;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    let acc: Buffer = Buffer.alloc(0);
    socket.on("data", (d: Buffer) => {
      acc = Buffer.concat([acc, d]);
      while (acc.length >= HEADER_BYTES) {
        const h = decodeHeader(acc);
        if (acc.length < HEADER_BYTES + h.length) break;
        const body = decodeBody(h, acc.subarray(HEADER_BYTES, HEADER_BYTES + h.length));
        acc = acc.subarray(HEADER_BYTES + h.length);
        if (h.opcode === Opcode.HELLO) reply(socket, Opcode.HELLO, h.requestId, { type: "HelloOk", version: 1, maxFrameBytes: 4 << 20, maxInFlight: 8, authMethods: ["api_key"] });
        else if (h.opcode === Opcode.AUTH) reply(socket, Opcode.AUTH, h.requestId, { type: "AuthOk", role: "writer" });
        else handle(h.opcode, h.requestId, body, socket, n);
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    connections: () => connections,
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); srv.close(() => r()); }),
  };
}

const ack = (accepted: number): Body => ({ type: "WriteAck", accepted, bufferSize: 0 });

test("a batch goes as one TS_PUT_BUFFERED_BATCH frame with every point", async () => {
  const seen: number[] = [];
  const s = await server((op, id, body, sock) => {
    if (op === Opcode.TS_PUT_BUFFERED_BATCH && body.type === "TsBatch") { seen.push(body.points.length); reply(sock, op, id, ack(body.points.length)); }
  });
  const ts = new ThemisTimeSeriesClient({ conf: `themis::addr=127.0.0.1:${s.port};api_key=k;auto_flush_rows=3` });
  for (let i = 0; i < 7; i++) ts.putBuffered({ metric: "m", entity: "e", timestamp_ms: i, value: NaN });
  await ts.close();
  assert.deepEqual(seen.sort(), [1, 3, 3]);
  assert.deepEqual(ts.counters, { queued: 7, sent: 7, retried: 0, failed: 0 });
  await s.close();
});

test("RATE_LIMITED is retried after its retry_after_ms", async () => {
  let calls = 0;
  const s = await server((op, id, body, sock) => {
    if (++calls === 1) reply(sock, Opcode.ERROR, id, { type: "ErrorReply", code: ErrorCode.RATE_LIMITED, retriable: true, retryAfterMs: 150, itemsAccepted: 0, message: "slow down" });
    else reply(sock, op, id, ack(1));
  });
  const ts = new ThemisTimeSeriesClient({ conf: `themis::addr=127.0.0.1:${s.port};api_key=k` });
  const errors: Error[] = [];
  ts.onError((e) => errors.push(e));
  ts.putBuffered({ metric: "m", entity: "e", timestamp_ms: 1, value: 1 });
  const t0 = Date.now();
  await ts.flush();
  assert.ok(Date.now() - t0 >= 140, `retried after ${Date.now() - t0} ms`);
  assert.deepEqual(ts.counters, { queued: 1, sent: 1, retried: 1, failed: 0 });
  assert.equal(errors.length, 0);
  await ts.close();
  await s.close();
});

test("GOAWAY: requests after last_request_id fail retriable, then a new connection takes them", async () => {
  let first = true;
  const s = await server((op, id, _body, sock, conn) => {
    if (conn === 1 && first) {
      first = false;
      // Answer nothing; announce that nothing from this id on was applied, and close.
      reply(sock, Opcode.GOAWAY, 0, { type: "GoAway", lastRequestId: id - 1, code: ErrorCode.SHUTTING_DOWN, message: "draining" });
      sock.end();
      return;
    }
    reply(sock, op, id, ack(1));
  });
  const ts = new ThemisTimeSeriesClient({ conf: `themis::addr=127.0.0.1:${s.port};api_key=k;retry_initial_backoff_ms=1` });
  ts.putBuffered({ metric: "m", entity: "e", timestamp_ms: 1, value: 1 });
  await ts.flush();
  assert.equal(s.connections(), 2);
  assert.deepEqual(ts.counters, { queued: 1, sent: 1, retried: 1, failed: 0 });
  await ts.close();
  await s.close();
});

test("a server that is gone is ServerUnavailableError (retriable) after the retries", async () => {
  const s = await server(() => undefined);
  const port = s.port;
  await s.close();
  const ts = new ThemisTimeSeriesClient({ conf: `themis::addr=127.0.0.1:${port};max_retries=1;retry_initial_backoff_ms=1` });
  ts.putBuffered({ metric: "m", entity: "e", timestamp_ms: 1, value: 1 });
  await assert.rejects(ts.flush(), (e: unknown) => e instanceof Error && "cause" in e && e.cause instanceof ServerUnavailableError && e.cause.retriable);
  await ts.close().catch(() => undefined);
});

test("RateLimitedError carries retryAfterMs", () => {
  assert.equal(new RateLimitedError("x", 1500).retryAfterMs, 1500);
});
