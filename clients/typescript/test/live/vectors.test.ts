// Every vector method on both transports, each result checked through search.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { NotFoundError, ThemisVectorClient, ValidationError, WriteError, type SearchHit } from "../../src/index.js";
import { eventually, loadStack, unique } from "../support/stack.js";

const stack = loadStack();
const DIM = stack.vector_dimension;

/** A unit-ish vector pointing mostly along axis `i`, a little along `j`, distinct per seed. */
function vec(seed: number): number[] {
  const v = Array.from({ length: DIM }, (_, k) => ((seed * 7 + k * 13) % 17) / 17 + 0.01);
  v[seed % DIM]! += 3;
  return v;
}

for (const kind of ["http", "themis"] as const) {
  describe(`vectors over ${kind === "http" ? "HTTP" : "the binary protocol"}`, () => {
    const vc = new ThemisVectorClient({ conf: stack.conf[kind], httpAddr: stack.http_addr });
    const admin = new ThemisVectorClient({ conf: stack.conf[kind], httpAddr: stack.http_addr, apiKey: stack.keys.admin });
    after(async () => { await vc.close(); await admin.close(); });

    const hit = (vector: number[] | Float32Array, pk: string, tag: string) =>
      eventually<SearchHit>(`${pk} is found`, async () => {
        const r = await vc.search({ vector, k: 5, filter: { tag } });
        return r.results.find((h) => h.pk === pk);
      });

    test("addBuffered then flush makes the vector searchable with its metadata", async () => {
      const pk = unique("vec_add");
      const tag = unique("t");
      vc.addBuffered({ pk, vector: vec(1), metadata: { tag, title: "one" } });
      await vc.flush();
      const h = await hit(vec(1), pk, tag);
      assert.ok(h.distance < 1e-4, `distance ${h.distance}`);
      assert.equal(h.metadata?.["title"], "one");
    });

    test("addBuffered takes a Float32Array", async () => {
      const pk = unique("vec_f32");
      const tag = unique("t");
      const f = Float32Array.from(vec(2));
      vc.addBuffered({ pk, vector: f, metadata: { tag } });
      await vc.flush();
      const h = await hit(f, pk, tag);
      assert.ok(h.distance < 1e-4);
    });

    test("updateBuffered replaces the vector and metadata", async () => {
      const pk = unique("vec_update");
      const tag = unique("t");
      vc.addBuffered({ pk, vector: vec(3), metadata: { tag, v: 1 } });
      await vc.flush();
      await hit(vec(3), pk, tag);
      vc.updateBuffered({ pk, vector: vec(4), metadata: { tag, v: 2 } });
      await vc.flush();
      const h = await eventually("the update is visible", async () => {
        const r = await vc.search({ vector: vec(4), k: 5, filter: { tag } });
        const x = r.results.find((y) => y.pk === pk);
        return x && x.metadata?.["v"] === 2 ? x : undefined;
      });
      assert.ok(h.distance < 1e-4);
    });

    test("removeBuffered removes a known pk from search", async () => {
      const pk = unique("vec_remove");
      const tag = unique("t");
      vc.addBuffered({ pk, vector: vec(5), metadata: { tag } });
      await vc.flush();
      await hit(vec(5), pk, tag);
      vc.removeBuffered(pk);
      await vc.flush();
      await eventually("the pk is gone", async () => {
        const r = await vc.search({ vector: vec(5), k: 5, filter: { tag } });
        return r.results.some((h) => h.pk === pk) ? undefined : true;
      });
    });

    test("removeBuffered of an unknown pk goes to the listener as NotFoundError", async () => {
      const errors: Error[] = [];
      const off = vc.onError((e) => { errors.push(e); });
      vc.removeBuffered(unique("never_added"));
      await assert.rejects(vc.flush(), (e: unknown) => e instanceof WriteError && e.cause instanceof NotFoundError);
      await new Promise((r) => setImmediate(r));
      off();
      assert.equal(errors.length, 1);
      assert.ok(errors[0] instanceof NotFoundError);
    });

    test("addBatch and updateBatch write many vectors in one call", async () => {
      const tag = unique("t");
      const pks = [0, 1, 2].map((i) => unique(`vec_batch${i}`));
      const r = await vc.addBatch(pks.map((pk, i) => ({ pk, vector: vec(10 + i), metadata: { tag, n: i } })));
      assert.equal(r.accepted, 3);
      for (let i = 0; i < 3; i++) await hit(vec(10 + i), pks[i]!, tag);
      const u = await vc.updateBatch([{ pk: pks[0]!, vector: vec(20), metadata: { tag, n: 9 } }]);
      assert.equal(u.accepted, 1);
      await eventually("the batch update is visible", async () => {
        const s = await vc.search({ vector: vec(20), k: 3, filter: { tag } });
        return s.results[0]?.pk === pks[0] && s.results[0]?.metadata?.["n"] === 9 ? true : undefined;
      });
    });

    test("addBufferedBatch queues all and they are searchable", async () => {
      const tag = unique("t");
      const pks = [0, 1].map((i) => unique(`vec_bb${i}`));
      vc.addBufferedBatch(pks.map((pk, i) => ({ pk, vector: vec(30 + i), metadata: { tag } })));
      await vc.flush();
      for (let i = 0; i < 2; i++) await hit(vec(30 + i), pks[i]!, tag);
    });

    test("add is durable and searchable soon after", async () => {
      const pk = unique("vec_direct");
      const tag = unique("t");
      await vc.add({ pk, vector: vec(6), metadata: { tag } });
      await hit(vec(6), pk, tag);
    });

    test("getBufferStats and an admin flushBuffer answer with the workers' figures", async () => {
      const s = await vc.getBufferStats();
      assert.equal(typeof s.vectors_buffered, "number");
      assert.equal(typeof s.current_buffer_size, "number");
      const f = await admin.flushBuffer();
      assert.equal(f.success, true);
      assert.equal(typeof f.vectors_flushed, "number");
    });

    test("a vector of the wrong dimension is a ValidationError naming the field", async () => {
      await assert.rejects(vc.addBatch([{ pk: unique("bad"), vector: [1, 2, 3] }]),
        (e: unknown) => e instanceof ValidationError && e.field === "vector");
      assert.throws(() => vc.addBuffered({ pk: "x", vector: [] }), ValidationError);
      assert.throws(() => vc.addBuffered({ pk: "x", vector: [NaN] }), ValidationError);
    });
  });
}
