/**
 * `npm test`: the unit tests, then the live tests against `THEMIS_STACK` or against a
 * stack started here (`themis stack up`, SIGTERM at the end).
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { startStack } from "./support/stack.js";

const here = fileURLToPath(new URL(".", import.meta.url));
let stopped: (() => void) | undefined;
if (!process.env["THEMIS_STACK"]) {
  const { path, proc } = await startStack();
  process.env["THEMIS_STACK"] = path;
  stopped = () => { proc.kill("SIGTERM"); };
  process.on("exit", () => stopped?.());
}
const args = ["--test", "--test-concurrency=1", ...process.argv.slice(2)];
if (process.argv.length <= 2) args.push(`${here}unit/`, `${here}live/`);
const r = spawnSync(process.execPath, args, { stdio: "inherit", env: process.env });
stopped?.();
process.exit(r.status ?? 1);
