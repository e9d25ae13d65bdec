// The replication client on both transports: replicas, stats, compression.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { PermissionDeniedError, ThemisReplicationClient, ValidationError } from "../../src/index.js";
import { eventually, loadStack, unique } from "../support/stack.js";

const stack = loadStack();

for (const kind of ["http", "themis"] as const) {
  describe(`replication over ${kind === "http" ? "HTTP" : "the binary protocol"}`, () => {
    const admin = new ThemisReplicationClient({ conf: stack.conf[kind], httpAddr: stack.http_addr, apiKey: stack.keys.admin });
    const writer = new ThemisReplicationClient({ conf: stack.conf[kind], httpAddr: stack.http_addr });
    after(async () => { await admin.close(); await writer.close(); });

    test("addReplica shows the replica in getReplicationStats; removeReplica takes it out", async () => {
      const id = unique("ts-sdk-replica");
      await admin.addReplica(id, "https://127.0.0.1:1");
      const stats = await eventually("the replica is listed", async () => {
        const s = await writer.getReplicationStats();
        return s.replicas.some((r) => r.replica_id === id) ? s : undefined;
      });
      assert.equal(typeof stats.stats.total_entries_shipped, "number");
      assert.equal(stats.replicas.find((r) => r.replica_id === id)!.endpoint, "https://127.0.0.1:1");
      await admin.removeReplica(id);
      const s = await writer.getReplicationStats();
      assert.ok(!s.replicas.some((r) => r.replica_id === id));
    });

    test("configureCompression applies and echoes the setting", async () => {
      assert.deepEqual(await admin.configureCompression({ compression_type: "zstd", compression_level: 3 }),
        { compression_type: "zstd", compression_level: 3 });
      await assert.rejects(admin.configureCompression({ compression_type: "zstd", compression_level: 99 }),
        (e: unknown) => e instanceof ValidationError && e.field === "compression_level");
    });

    test("configureCompression with a writer key is PermissionDeniedError", async () => {
      await assert.rejects(writer.configureCompression({ compression_type: "none", compression_level: 1 }), PermissionDeniedError);
    });
  });
}
