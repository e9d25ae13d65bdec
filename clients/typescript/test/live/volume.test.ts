// 100,000 points through putBuffered, then close(): exactly 100,000 queryable.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ThemisTimeSeriesClient } from "../../src/index.js";
import { eventually, loadStack, unique } from "../support/stack.js";

const stack = loadStack();
const TOTAL = 100_000;
const SERIES = 10;

for (const kind of ["themis", "http"] as const) {
  test(`${kind}: ${TOTAL} points through putBuffered then close() are exactly ${TOTAL} queryable`, { timeout: 240_000 }, async () => {
    const metric = unique(`ts_volume_${kind}`);
    const ts = new ThemisTimeSeriesClient({ conf: stack.conf[kind], httpAddr: stack.http_addr });
    const failures: number[] = [];
    ts.onError((_e, items) => { failures.push(items.length); });
    for (let i = 0; i < TOTAL; i++) {
      ts.putBuffered({ metric, entity: `e${i % SERIES}`, timestamp_ms: 1_000_000 + Math.floor(i / SERIES), value: i });
      // Let the auto-flushed batches go out now and then; the queue stays well under max_buffer_rows.
      if (i % 20_000 === 19_999) await new Promise((r) => setImmediate(r));
    }
    await ts.close();
    assert.deepEqual(failures, []);
    assert.deepEqual(ts.counters, { queued: TOTAL, sent: TOTAL, retried: ts.counters.retried, failed: 0 });
    let total = 0;
    for (let s = 0; s < SERIES; s++) {
      const q = await eventually(`series e${s} complete`, async () => {
        const r = await ts.query({ metric, entity: `e${s}` });
        return r.count === TOTAL / SERIES ? r : undefined;
      }, 60_000);
      assert.equal(new Set(q.points.map((p) => p.timestamp_ms)).size, TOTAL / SERIES);
      total += q.count;
    }
    assert.equal(total, TOTAL);
  });
}
