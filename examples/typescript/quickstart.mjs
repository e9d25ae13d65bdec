// Quickstart for @themisdb/client: buffered time-series writes, a query, a vector and a search.
//
//   npm ci --prefix clients/typescript && npm run build --prefix clients/typescript
//   THEMIS_CLIENT_CONF='http::addr=127.0.0.1:8080;api_key=writer-key' node examples/typescript/quickstart.mjs
//
// (`themis::addr=...` uses the binary protocol instead; add `http_addr=` for its HTTP door.)
// In an application, import from "@themisdb/client"; this example imports the local build.
import { ThemisTimeSeriesClient, ThemisVectorClient, WriteError } from "../../clients/typescript/dist/src/index.js";

const run = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
const metric = `example_cpu_${run}`;
const dimension = Number(process.env.THEMIS_VECTOR_DIMENSION ?? 16);

// Settings come from THEMIS_CLIENT_CONF; options given here would win over it.
const ts = new ThemisTimeSeriesClient({
  onError: (error, points) => console.error(`not written: ${points.length} points: ${error.message}`),
});
const now = Date.now();
for (let i = 0; i < 100; i++) {
  ts.putBuffered({ metric, entity: "server01", timestamp_ms: now - 100 + i, value: 50 + (i % 10), tags: { dc: "eu-west-1" } });
}
try {
  await ts.flush(); // resolves once every point is on the broker's topic
} catch (e) {
  if (e instanceof WriteError) console.error(`${e.failed.length} points failed`);
  throw e;
}

// The worker consumes shortly after the acknowledgement: poll until all 100 are there.
let count = 0;
for (const deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
  ({ count } = await ts.query({ metric, entity: "server01", tags: { dc: "eu-west-1" } }));
  if (count === 100) break;
}
console.log(`queried ${count} points of ${metric}`);
console.log(`counters ${JSON.stringify(ts.counters)}`);
await ts.close();

const vc = new ThemisVectorClient();
const pk = `example_doc_${run}`;
const vector = Float32Array.from({ length: dimension }, (_, k) => (k + 1) / dimension);
vc.addBuffered({ pk, vector, metadata: { title: "Sample Document", run } });
await vc.flush();
let found;
for (const deadline = Date.now() + 30_000; !found && Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
  found = (await vc.search({ vector, k: 3, filter: { run } })).results.find((h) => h.pk === pk);
}
console.log(`search found ${found ? found.pk : "nothing"}`);
await vc.close();
process.exitCode = count === 100 && found ? 0 : 1;
