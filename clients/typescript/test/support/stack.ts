/** The live stack the tests use: `THEMIS_STACK` (a stack.json path) or one started here. */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as net from "node:net";

export interface Stack {
  pid: number;
  dir: string;
  http_addr: string;
  binary_addr: string;
  keys: { writer: string; admin: string; replicator: string };
  conf: { http: string; themis: string };
  vector_dimension: number;
  themis: string[];
  facade_env: Record<string, string>;
  replica: { https_url: string; binary_addr: string; ca: string; client_cert: string; client_key: string };
}

export const THEMIS = process.env["THEMIS_BIN"] ?? "/work/main/.venv/bin/themis";

export function loadStack(path = process.env["THEMIS_STACK"]): Stack {
  if (!path) throw new Error("THEMIS_STACK is not set: run the tests with `npm test` (it starts a stack) or point it at a stack.json");
  return JSON.parse(readFileSync(path, "utf8")) as Stack;
}

/** Poll `check` until it returns a value other than undefined, or fail after `timeoutMs`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (let delay = 50; ; delay = Math.min(delay * 2, 500)) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms${last ? ` (last error: ${String(last)})` : ""}`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

export function unique(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
}

/** A free TCP port on 127.0.0.1 (closed again; a small race is acceptable for tests). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Start `themis stack up --dir <tmp>` and wait for its stack.json. */
export async function startStack(timeoutMs = 180_000): Promise<{ path: string; proc: ChildProcess }> {
  const dir = mkdtempSync(join(tmpdir(), "themis-ts-stack-"));
  const proc = spawn(THEMIS, ["stack", "up", "--dir", dir], { stdio: ["ignore", "inherit", "inherit"] });
  const path = join(dir, "stack.json");
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (proc.exitCode !== null) throw new Error(`themis stack up exited with ${proc.exitCode}`);
    if (Date.now() > deadline) { proc.kill("SIGTERM"); throw new Error(`no stack.json within ${timeoutMs} ms`); }
    await new Promise((r) => setTimeout(r, 250));
  }
  await new Promise((r) => setTimeout(r, 100)); // the file is written whole; give the writer a moment
  return { path, proc };
}
