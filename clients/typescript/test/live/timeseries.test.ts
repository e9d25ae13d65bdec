// Every time-series method on both transports, each result checked through the API.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  ThemisTimeSeriesClient, ValidationError, AuthenticationError, PermissionDeniedError, WriteError,
  type DataPoint,
} from "../../src/index.js";
import { eventually, loadStack, unique } from "../support/stack.js";

const stack = loadStack();

for (const kind of ["http", "themis"] as const) {
  describe(`time series over ${kind === "http" ? "HTTP" : "the binary protocol"}`, () => {
    const ts = new ThemisTimeSeriesClient({ conf: stack.conf[kind], httpAddr: stack.http_addr });
    const admin = new ThemisTimeSeriesClient({ conf: stack.conf[kind], httpAddr: stack.http_addr, apiKey: stack.keys.admin });
    after(async () => { await ts.close(); await admin.close(); });

    const queryUntil = (metric: string, entity: string, count: number, tags?: Record<string, string>) =>
      eventually(`${metric} has ${count} points`, async () => {
        const q = await ts.query({ metric, entity, ...(tags ? { tags } : {}) });
        return q.count === count ? q : undefined;
      });

    test("putBuffered then flush stores every point with its value, timestamp and tags", async () => {
      const metric = unique("ts_put_buffered");
      const tags = { dc: "eu-west-1", env: "test" };
      for (let i = 0; i < 25; i++) ts.putBuffered({ metric, entity: "s1", timestamp_ms: 1_700_000_000_000 + i, value: i * 1.5, tags });
      await ts.flush();
      const q = await queryUntil(metric, "s1", 25, tags);
      assert.deepEqual(q.points.map((p) => p.value), Array.from({ length: 25 }, (_, i) => i * 1.5));
      assert.equal(q.points[0]!.timestamp_ms, 1_700_000_000_000);
      assert.ok(ts.counters.sent >= 25);
    });

    test("putBuffered accepts a bigint timestamp and defaults the timestamp to now", async () => {
      const metric = unique("ts_bigint");
      const before = Date.now();
      ts.putBuffered({ metric, entity: "e", timestamp_ms: 1_700_000_000_123n, value: 1 });
      ts.putBuffered({ metric, entity: "e", value: 2 });
      await ts.flush();
      const q = await queryUntil(metric, "e", 2);
      assert.equal(q.points[0]!.timestamp_ms, 1_700_000_000_123);
      assert.ok(q.points[1]!.timestamp_ms >= before && q.points[1]!.timestamp_ms <= Date.now());
    });

    test("a timestamp outside the safe integer range is refused, never rounded", () => {
      assert.throws(() => ts.putBuffered({ metric: "m", entity: "e", timestamp_ms: 2n ** 60n, value: 1 }), ValidationError);
      assert.throws(() => ts.putBuffered({ metric: "m", entity: "e", timestamp_ms: 2 ** 60, value: 1 }),
        (e: unknown) => e instanceof ValidationError && e.field === "timestamp_ms");
      assert.throws(() => ts.putBuffered({ metric: "m", entity: "e", timestamp_ms: 1.5, value: 1 }), ValidationError);
    });

    test("putBufferedBatch queues all points and they are stored", async () => {
      const metric = unique("ts_buffered_batch");
      const points: DataPoint[] = Array.from({ length: 40 }, (_, i) => ({ metric, entity: "b", timestamp_ms: 10 + i, value: i }));
      ts.putBufferedBatch(points);
      await ts.flush();
      const q = await queryUntil(metric, "b", 40);
      assert.equal(q.points[39]!.value, 39);
    });

    test("putBatch sends at once and resolves with the accepted count", async () => {
      const metric = unique("ts_put_batch");
      const r = await ts.putBatch([{ metric, entity: "x", timestamp_ms: 1, value: 1 }, { metric, entity: "x", timestamp_ms: 2, value: 2 }]);
      assert.equal(r.accepted, 2);
      const q = await queryUntil(metric, "x", 2);
      assert.deepEqual(q.points.map((p) => p.timestamp_ms), [1, 2]);
    });

    test("put is durable: queryable as soon as it resolves", async () => {
      const metric = unique("ts_put_direct");
      await ts.put({ metric, entity: "d", timestamp_ms: 5, value: 42.25 });
      const q = await ts.query({ metric, entity: "d" });
      assert.equal(q.count, 1);
      assert.equal(q.points[0]!.value, 42.25);
    });

    test("query honours start and end (inclusive)", async () => {
      const metric = unique("ts_query_range");
      await ts.putBatch(Array.from({ length: 10 }, (_, i) => ({ metric, entity: "r", timestamp_ms: 100 + i, value: i })));
      await queryUntil(metric, "r", 10);
      const q = await ts.query({ metric, entity: "r", start: 102, end: 104n });
      assert.deepEqual(q.points.map((p) => p.timestamp_ms), [102, 103, 104]);
    });

    test("getBufferStats returns the workers' figures", async () => {
      const s = await ts.getBufferStats();
      for (const k of ["points_buffered", "points_flushed", "current_buffer_size", "avg_compression_ratio"] as const) {
        assert.equal(typeof s[k], "number", k);
      }
    });

    test("flushBuffer with an admin key flushes the workers and keeps the points queryable", async () => {
      const metric = unique("ts_flush_buffer");
      admin.putBuffered({ metric, entity: "f", timestamp_ms: 7, value: 7 });
      const r = await admin.flushBuffer();
      assert.equal(r.success, true);
      assert.equal(typeof r.points_flushed, "number");
      await queryUntil(metric, "f", 1);
    });

    test("flushBuffer with a writer key is PermissionDeniedError", async () => {
      await assert.rejects(ts.flushBuffer(), PermissionDeniedError);
    });

    test("a wrong api_key makes flush reject with the points and tells the listener", async () => {
      const bad = new ThemisTimeSeriesClient({ conf: stack.conf[kind], httpAddr: stack.http_addr, apiKey: "wrong-key" });
      const seen: number[] = [];
      bad.onError((_e, items) => { seen.push(items.length); });
      bad.onError(() => { throw new Error("a listener that throws never stops the writer"); });
      bad.putBuffered({ metric: unique("ts_badkey"), entity: "e", timestamp_ms: 1, value: 1 });
      await assert.rejects(bad.flush(), (e: unknown) => e instanceof WriteError && e.failed.length === 1 && e.cause instanceof AuthenticationError);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(seen, [1]);
      assert.deepEqual(bad.counters, { queued: 1, sent: 0, retried: 0, failed: 1 });
      await bad.close();
    });
  });
}

test("both transports store the same points for the same writes", async () => {
  const metric = unique("ts_identical");
  const results = [];
  for (const kind of ["http", "themis"] as const) {
    const c = new ThemisTimeSeriesClient({ conf: stack.conf[kind], httpAddr: stack.http_addr });
    c.putBufferedBatch(Array.from({ length: 5 }, (_, i) => ({ metric, entity: kind, timestamp_ms: i, value: i / 3, tags: { k: "ü✓" } })));
    await c.close();
    results.push(await eventually(`${kind} points`, async () => {
      const q = await c.query({ metric, entity: kind, tags: { k: "ü✓" } });
      return q.count === 5 ? q.points : undefined;
    }));
  }
  assert.deepEqual(results[0], results[1]);
});
