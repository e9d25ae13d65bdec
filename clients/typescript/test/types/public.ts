// Type tests: `tsc -p test/types` over the package's published declarations (imported by
// its own name, through `exports`). Each `@ts-expect-error` line must be an error.
import {
  BufferOverflowError, RateLimitedError, ThemisError, ThemisReplicationClient, ThemisTimeSeriesClient,
  ThemisVectorClient, WriteError,
  type BufferStats, type DataPoint, type QueryResult, type VectorEntity, type WriterCounters,
} from "@themisdb/client";

const ts = new ThemisTimeSeriesClient({ conf: "http::addr=localhost:8080;api_key=k", onError: (e, points) => { void e; void points.length; } });
const vc = new ThemisVectorClient({ addr: "localhost:9090", schema: "themis" });
const rc = new ThemisReplicationClient({ conf: "http::addr=localhost:8080" });

const p: DataPoint = { metric: "cpu", entity: "s1", timestamp_ms: 1702645200000, value: 75.5, tags: { dc: "eu" } };
const big: DataPoint = { metric: "cpu", entity: "s1", timestamp_ms: 1702645200000n, value: 1 };
ts.putBuffered(p);
ts.putBuffered(big);
ts.putBuffered({ metric: "cpu", entity: "s1", value: 1 }); // timestamp defaults to now
// @ts-expect-error value is required
ts.putBuffered({ metric: "cpu", entity: "s1" });
// @ts-expect-error timestamp_ms is a number or bigint, not a string
ts.putBuffered({ metric: "cpu", entity: "s1", value: 1, timestamp_ms: "1" });
// @ts-expect-error tags are strings
ts.putBuffered({ metric: "cpu", entity: "s1", value: 1, tags: { n: 1 } });
// @ts-expect-error putBuffered returns nothing to await
const nothing: Promise<void> = ts.putBuffered(p);
void nothing;

async function usage(): Promise<void> {
  const stats: BufferStats = await ts.getBufferStats();
  const n: number = stats.points_buffered + stats.points_flushed + stats.current_buffer_size + stats.avg_compression_ratio;
  void n;
  const q: QueryResult = await ts.query({ metric: "cpu", entity: "s1", start: 0, end: 10n });
  const first: number | undefined = q.points[0]?.value;
  void first;
  await ts.flushBuffer();
  await ts.put(p);
  const c: Readonly<WriterCounters> = ts.counters;
  // @ts-expect-error counters are read-only
  c.sent = 1;

  const e1: VectorEntity = { pk: "a", vector: [0.1, 0.2], metadata: { any: { nested: [1] } } };
  const e2: VectorEntity = { pk: "b", vector: new Float32Array(16) };
  vc.addBuffered(e1);
  vc.updateBuffered(e2);
  vc.removeBuffered("a");
  // @ts-expect-error a vector is number[] or Float32Array
  vc.addBuffered({ pk: "c", vector: new Float64Array(2) });
  // @ts-expect-error removeBuffered takes a pk
  vc.removeBuffered(e1);
  const hits = await vc.search({ vector: [0.1, 0.2], k: 3, filter: { category: "x" } });
  const pk: string | undefined = hits.results[0]?.pk;
  void pk;
  await vc.getBufferStats();

  await rc.addReplica("r1", "https://replica:8443");
  const rs = await rc.getReplicationStats();
  const lag: number | undefined = rs.replicas[0]?.lag_ms;
  void lag;
  await rc.configureCompression({ compression_type: "zstd", compression_level: 3 });
  // @ts-expect-error only zstd or none
  await rc.configureCompression({ compression_type: "lz4", compression_level: 3 });

  try {
    await ts.flush();
  } catch (e) {
    if (e instanceof WriteError) { const failed: readonly unknown[] = e.failed; void failed; }
    if (e instanceof BufferOverflowError) { const size: number = e.bufferSize; void size; }
    if (e instanceof RateLimitedError) { const ms: number = e.retryAfterMs; void ms; }
    if (e instanceof ThemisError) { const r: boolean = e.retriable; void r; }
  }
  await ts.close();
}
void usage;
