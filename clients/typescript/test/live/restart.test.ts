// A facade killed and restarted mid-write: nothing acknowledged is lost, the rest is
// reported to the error listener, and the counters add up.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { ThemisTimeSeriesClient, type DataPoint } from "../../src/index.js";
import { eventually, freePort, loadStack, unique } from "../support/stack.js";

const stack = loadStack();

class OwnFacade {
  proc: ChildProcess | undefined;
  log = "";
  constructor(readonly httpPort: number, readonly binaryPort: number) {}

  async start(): Promise<void> {
    const [cmd, ...pre] = stack.themis;
    const env = { ...process.env, ...stack.facade_env, THEMIS_FACADE_PORT: String(this.httpPort), THEMIS_FACADE_BINARY_PORT: String(this.binaryPort) };
    this.proc = spawn(cmd!, [...pre, "facade", "--port", String(this.httpPort), "--binary-port", String(this.binaryPort)], { env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stdout!.on("data", (d: Buffer) => { this.log = (this.log + d.toString()).slice(-4000); });
    this.proc.stderr!.on("data", (d: Buffer) => { this.log = (this.log + d.toString()).slice(-4000); });
    await eventually(`facade on ${this.httpPort} answers`, async () => {
      if (this.proc!.exitCode !== null) throw new Error(`facade exited ${this.proc!.exitCode}: ${this.log}`);
      const r = await fetch(`http://127.0.0.1:${this.httpPort}/ts/buffer/stats`, { headers: { "x-api-key": stack.keys.writer } });
      return r.ok ? true : undefined;
    }, 60_000);
  }

  async stop(signal: NodeJS.Signals): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill(signal);
    await exited;
  }
}

const facade = new OwnFacade(await freePort(), await freePort());
after(async () => { await facade.stop("SIGKILL"); });

test("a facade restart mid-write loses nothing acknowledged and reports the rest", { timeout: 180_000 }, async () => {
  await facade.start();
  const metric = unique("ts_restart");
  const ts = new ThemisTimeSeriesClient({
    conf: `themis::addr=127.0.0.1:${facade.binaryPort};api_key=${stack.keys.writer};auto_flush_rows=500;request_timeout_ms=3000`,
    httpAddr: stack.http_addr,
  });
  const failed: DataPoint[] = [];
  ts.onError((_e, items) => { failed.push(...items); });
  const SERIES = 4;
  const TOTAL = 20_000;
  let i = 0;
  const write = async (n: number): Promise<void> => {
    for (const end = i + n; i < end; i++) {
      ts.putBuffered({ metric, entity: `e${i % SERIES}`, timestamp_ms: 1_000 + Math.floor(i / SERIES), value: i });
      if (i % 500 === 499) await new Promise((r) => setTimeout(r, 2));
    }
  };
  await write(5000);
  await facade.stop("SIGTERM"); // GOAWAY, drain
  await write(2500);
  await facade.start();
  await write(5000);
  await facade.stop("SIGKILL"); // no goodbye
  await write(2500);
  await facade.start();
  await write(TOTAL - i);
  const closed = await ts.close().then(() => undefined, (e: unknown) => e);
  const c = ts.counters;
  assert.equal(c.queued, TOTAL);
  assert.equal(c.sent + c.failed, TOTAL, JSON.stringify(c));
  assert.equal(failed.length, c.failed);
  if (c.failed > 0) assert.ok(closed !== undefined, "close() rejects when items were not written");
  // Every acknowledged point is there (the shared facade reads the same worker).
  const failedKeys = new Set(failed.map((p) => `${p.entity}/${String(p.timestamp_ms)}`));
  const reader = new ThemisTimeSeriesClient({ conf: stack.conf.http });
  for (let s = 0; s < SERIES; s++) {
    const want = new Set<number>();
    for (let k = s; k < TOTAL; k += SERIES) {
      const t = 1_000 + Math.floor(k / SERIES);
      if (!failedKeys.has(`e${s}/${t}`)) want.add(t);
    }
    await eventually(`series e${s} holds every acknowledged point`, async () => {
      const q = await reader.query({ metric, entity: `e${s}` });
      const have = new Set(q.points.map((p) => p.timestamp_ms));
      for (const t of want) if (!have.has(t)) return undefined;
      return true;
    }, 60_000);
  }
  await reader.close();
  console.log(`restart: ${JSON.stringify(c)}`);
});
