// The runnable example in examples/typescript works against the live stack on both transports.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { loadStack } from "../support/stack.js";

const stack = loadStack();
const example = fileURLToPath(new URL("../../../../../examples/typescript/quickstart.mjs", import.meta.url));

for (const [kind, conf] of [["http", stack.conf.http], ["binary", `${stack.conf.themis};http_addr=${stack.http_addr}`]] as const) {
  test(`examples/typescript/quickstart.mjs runs over ${kind}`, () => {
    const r = spawnSync(process.execPath, [example], {
      encoding: "utf8", timeout: 90_000,
      env: { ...process.env, THEMIS_CLIENT_CONF: conf, THEMIS_VECTOR_DIMENSION: String(stack.vector_dimension) },
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /queried 100 points/);
    assert.match(r.stdout, /search found example_doc_/);
  });
}
