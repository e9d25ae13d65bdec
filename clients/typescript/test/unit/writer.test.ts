// The batching writer against a scripted send: bounds, auto-flush, retries, listeners.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BufferOverflowError, RateLimitedError, ServerUnavailableError, ValidationError, WriteError } from "../../src/errors.js";
import { BatchWriter, type WriterSettings } from "../../src/writer.js";

const SETTINGS: WriterSettings = {
  autoFlush: true, autoFlushRows: 3, autoFlushBytes: 1_000_000, autoFlushIntervalMs: 20, maxBufferRows: 5,
  maxBufferBytes: 1_000_000, maxRetries: 3, retryTimeoutMs: 5000, retryInitialBackoffMs: 1, retryMaxBackoffMs: 5,
};

function writer(send: (items: number[]) => Promise<void>, s: Partial<WriterSettings> = {}) {
  const batches: number[][] = [];
  const w = new BatchWriter<number>({ ...SETTINGS, ...s }, {
    send: async (items) => { batches.push([...items]); await send(items); },
    maxBatchBytes: () => 1_000_000, concurrency: 2,
  });
  return { w, batches };
}

test("a full queue fails the call at once with BufferOverflowError and does not queue the item", () => {
  const { w } = writer(async () => undefined, { autoFlush: false });
  for (let i = 0; i < 5; i++) w.add(i, 10);
  assert.throws(() => w.add(5, 10), (e: unknown) => e instanceof BufferOverflowError && e.bufferSize === 5 && !e.retriable);
  assert.equal(w.pending, 5);
  assert.equal(w.counters.queued, 5);
});

test("max_buffer_bytes bounds the queue too", () => {
  const { w } = writer(async () => undefined, { autoFlush: false, maxBufferBytes: 25 });
  w.add(1, 10); w.add(2, 10);
  assert.throws(() => w.add(3, 10), (e: unknown) => e instanceof BufferOverflowError && e.bufferSize === 25);
});

test("auto-flush sends a batch once auto_flush_rows are queued", async () => {
  const { w, batches } = writer(async () => undefined);
  w.add(1, 1); w.add(2, 1); w.add(3, 1);
  await w.flush();
  assert.deepEqual(batches, [[1, 2, 3]]);
});

test("auto-flush sends what is queued after auto_flush_interval_ms", async () => {
  const { w, batches } = writer(async () => undefined);
  w.add(7, 1);
  await new Promise((r) => setTimeout(r, 60));
  assert.deepEqual(batches, [[7]]);
  assert.deepEqual(w.counters, { queued: 1, sent: 1, retried: 0, failed: 0 });
});

test("with auto_flush off only flush() sends", async () => {
  const { w, batches } = writer(async () => undefined, { autoFlush: false });
  w.add(1, 1); w.add(2, 1); w.add(3, 1); w.add(4, 1);
  await new Promise((r) => setTimeout(r, 40));
  assert.deepEqual(batches, []);
  await w.flush();
  assert.deepEqual(batches, [[1, 2, 3], [4]]);
});

test("a retriable error is retried and then acknowledged", async () => {
  let calls = 0;
  const { w } = writer(async () => { if (++calls < 3) throw new ServerUnavailableError("down"); });
  w.add(1, 1);
  await w.flush();
  assert.deepEqual(w.counters, { queued: 1, sent: 1, retried: 2, failed: 0 });
});

test("retry_after_ms from the server is honoured when longer than the back-off", async () => {
  let calls = 0;
  const { w } = writer(async () => { if (++calls === 1) throw new RateLimitedError("slow down", 80); });
  w.add(1, 1);
  const t0 = Date.now();
  await w.flush();
  assert.ok(Date.now() - t0 >= 75, `waited ${Date.now() - t0} ms`);
});

test("a non-retriable error is not retried; flush rejects with the items and the listener gets them", async () => {
  const { w } = writer(async () => { throw new ValidationError("field 'value' bad", "value"); });
  const seen: number[][] = [];
  w.onError((_e, items) => { seen.push([...items]); });
  w.onError(() => { throw new Error("ignored"); });
  w.add(1, 1); w.add(2, 1);
  await assert.rejects(w.flush(), (e: unknown) => e instanceof WriteError && (e.failed as number[]).length === 2 && e.cause instanceof ValidationError);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(seen, [[1, 2]]);
  assert.deepEqual(w.counters, { queued: 2, sent: 0, retried: 0, failed: 2 });
});

test("retries stop after max_retries", async () => {
  const { w } = writer(async () => { throw new ServerUnavailableError("down"); }, { maxRetries: 2 });
  w.add(1, 1);
  await assert.rejects(w.flush(), WriteError);
  assert.deepEqual(w.counters, { queued: 1, sent: 0, retried: 2, failed: 1 });
});

test("a listener that never returns does not block the writer", async () => {
  const { w } = writer(async (items) => { if (items[0] === 1) throw new ValidationError("bad"); });
  w.onError(() => { /* a busy or hanging listener is never awaited */ });
  w.add(1, 1);
  await assert.rejects(w.flush());
  w.add(2, 1);
  await w.flush();
  assert.equal(w.counters.sent, 1);
});

test("close() flushes, refuses further items, and closing twice is harmless", async () => {
  const { w, batches } = writer(async () => undefined);
  w.add(1, 1);
  await w.close();
  await w.close();
  assert.deepEqual(batches, [[1]]);
  assert.throws(() => w.add(2, 1), /closed/);
});

test("the interval timer does not keep the process alive", async () => {
  const { spawnSync } = await import("node:child_process");
  const url = new URL("../../src/writer.js", import.meta.url).href;
  const script = `import { BatchWriter } from ${JSON.stringify(url)};
    const w = new BatchWriter({ autoFlush: true, autoFlushRows: 100, autoFlushBytes: 1e9, autoFlushIntervalMs: 60000,
      maxBufferRows: 1000, maxBufferBytes: 1e9, maxRetries: 0, retryTimeoutMs: 1, retryInitialBackoffMs: 1, retryMaxBackoffMs: 1 },
      { send: async () => {}, maxBatchBytes: () => 1e9, concurrency: 1 });
    w.add(1, 1);`;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { timeout: 20_000 });
  assert.equal(r.status, 0, String(r.stderr));
  assert.ok(Date.now() - t0 < 10_000);
});
