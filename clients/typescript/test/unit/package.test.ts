// The package as published: `npm pack` holds the build and declarations only, publint
// and (when installed) @arethetypeswrong/cli find nothing, and the type tests compile.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const bin = (name: string): string => `${root}node_modules/.bin/${name}`;
const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { cwd: root, encoding: "utf8", timeout: 120_000 });

test("npm pack holds the ESM build with its declarations and no tests", () => {
  const r = run("npm", ["pack", "--dry-run", "--json"]);
  assert.equal(r.status, 0, r.stderr);
  const files = (JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
  for (const f of ["package.json", "README.md", "dist/src/index.js", "dist/src/index.d.ts", "dist/src/codec.js"]) assert.ok(files.includes(f), f);
  assert.ok(!files.some((f) => f.startsWith("dist/test") || f.startsWith("src/")), files.join(" "));
});

test("publint --strict finds nothing", () => {
  const r = run(bin("publint"), ["--strict"]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /All good/);
});

test("@arethetypeswrong/cli finds no problem for ESM consumers", { skip: !existsSync(bin("attw")) && "attw not installed" }, () => {
  const r = run(bin("attw"), ["--pack", ".", "--profile", "esm-only", "--format", "ascii"]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test("the type tests compile, every @ts-expect-error included", () => {
  const r = run(bin("tsc"), ["-p", "test/types/tsconfig.json"]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});
