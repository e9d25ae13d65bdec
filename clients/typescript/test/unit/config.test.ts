import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigurationError, parseConnectionString, resolveConfig } from "../../src/index.js";

test("a connection string sets the schema and the keys", () => {
  const c = resolveConfig({ conf: "themis::addr=db:9999;api_key=k;auto_flush_rows=10;auto_flush=off;tls_verify=false" });
  assert.equal(c.schema, "themis");
  assert.equal(c.addr, "db:9999");
  assert.equal(c.httpAddr, "db:8080");
  assert.equal(c.apiKey, "k");
  assert.equal(c.autoFlushRows, 10);
  assert.equal(c.autoFlush, false);
  assert.equal(c.tlsVerify, false);
  assert.equal(c.maxBufferRows, 100_000);
});

test("explicit options win over the connection string, which wins over THEMIS_CLIENT_CONF", () => {
  process.env["THEMIS_CLIENT_CONF"] = "http::addr=env:1;api_key=env";
  try {
    assert.equal(resolveConfig({}).addr, "env:1");
    assert.equal(resolveConfig({ conf: "http::addr=s:2;api_key=s" }).apiKey, "s");
    assert.equal(resolveConfig({ conf: "http::addr=s:2;api_key=s", apiKey: "o" }).apiKey, "o");
  } finally {
    delete process.env["THEMIS_CLIENT_CONF"];
  }
});

test("a doubled ';' is a literal ';' in a value", () => {
  assert.equal(parseConnectionString("http::addr=h:1;api_key=a;;b;client_id=x").values.apiKey, "a;b");
});

test("default ports follow the schema", () => {
  assert.equal(resolveConfig({ conf: "http::addr=h" }).addr, "h:8080");
  assert.equal(resolveConfig({ conf: "https::addr=h" }).addr, "h:8443");
  assert.equal(resolveConfig({ conf: "themis::addr=h" }).addr, "h:9090");
  assert.equal(resolveConfig({ conf: "themis+tls::addr=h" }).addr, "h:9443");
});

for (const [conf, key] of [
  ["http::addr=h:1;bogus=1", "bogus"],
  ["http::api_key=k", "addr"],
  ["http::addr=h:1;auto_flush_rows=ten", "auto_flush_rows"],
  ["http::addr=h:1;auto_flush=maybe", "auto_flush"],
  ["ftp::addr=h:1", "schema"],
  ["http::addr=h:1;max_buffer_rows=0", "max_buffer_rows"],
] as const) {
  test(`'${conf}' is a ConfigurationError naming '${key}'`, () => {
    assert.throws(() => resolveConfig({ conf }), (e: unknown) => e instanceof ConfigurationError && e.key === key && e.retriable === false);
  });
}
