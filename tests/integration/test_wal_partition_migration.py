"""From today's single-partition WAL to a partitioned one, end to end on the live broker.

The procedure of docs/operations.md ("Partitioning the WAL"): a replica state written
with one WAL partition (one LSN, one vector index) is opened by the partitioned build
as partition 0's; the WAL topic grows to two partitions while the shipper runs; the
shipper starts the new partition's link by itself and both partitions ship in
parallel. Afterwards the replica equals what the entries describe: no entry lost, none
applied twice, every series' points, every live vector (including pks the old
partition 0 held that now live in partition 1) and the top-k answers.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.errors import InvalidArgument
from pipeline.kafka.clients import Producer
from pipeline.kafka.producer import key_partition
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.replication import ApplyAuth, ReplicaServer, ReplicaState, WalShipper
from pipeline.replication import cli as wal_cli
from pipeline.replication.topics import grow_wal_partitions
from pipeline.ts.block import decode_block, encode_block
from pipeline.ts.point import series_key
from pipeline.ts.store import merge_last_wins
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.entry import EntryType, encode_entry_record, format_lsn
from tests.fixtures.broker import MakeSettings
from tests.fixtures.support import wait_until

pytestmark = pytest.mark.integration

KEY = "wal-partition-migration-key"
DIM = 8
PKS = 60
SERIES = 6


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    settings = make_settings(
        vector_auto_buffer={"dimension": DIM, "ef_search": 256},
        compressed_wal_shipping={"apply_keys": KEY, "ship_key": KEY},
    )
    assert settings.kafka.bootstrap_servers
    wal = [spec for spec in load_specs() if spec.name == "wal"]
    apply_topics(settings.kafka.bootstrap_servers, settings, wal, partitions_override=1)
    return settings


class Load:
    """Entries routed to WAL partitions as the writers route them, and what they make."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.rng = np.random.default_rng(23)
        self.vectors: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
        self.blocks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.records: list[tuple[int, bytes]] = []
        self.per_partition = [0] * partitions

    def _add(self, partition: int, entry_type: EntryType, payload: bytes) -> None:
        stamp = int(time.time() * 1000)
        self.records.append((partition, encode_entry_record(entry_type, stamp, payload)))
        self.per_partition[partition] += 1

    def round(self, n: int) -> None:
        per: dict[int, list[VectorOp]] = {p: [] for p in range(self.partitions)}
        for i in range(PKS):
            pk = f"pk{i}"
            p = key_partition(pk.encode(), self.partitions)
            if n and i % 5 == n % 5:
                per[p].append(VectorOp(OpType.REMOVE, pk, None, {}))
                self.vectors.pop(pk, None)
            elif i % 3 != n % 3 or n == 0:
                vector = self.rng.normal(size=DIM).astype(np.float32)
                per[p].append(VectorOp(OpType.ADD, pk, vector, {"n": n, "i": i}))
                self.vectors[pk] = (vector, {"n": n, "i": i})
        for p, ops in per.items():
            if ops:
                self._add(p, EntryType.VECTOR_BATCH, encode_op_frame(ops, DIM))
        for s in range(SERIES):
            key = series_key("mig", f"host-{s}")
            ts = np.arange(n * 1000, n * 1000 + 20, dtype=np.int64) * 10
            block = encode_block(key, ts, np.round(self.rng.normal(size=20), 3))
            self.blocks.setdefault(key, []).append(decode_block(block).points())
            self._add(key_partition(key.encode(), self.partitions), EntryType.TS_BLOCK, block)

    def write(self, settings: Settings) -> None:
        assert settings.kafka.bootstrap_servers
        config = {"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True}
        with Producer(config) as producer:
            for partition, value in self.records:
                producer.produce(settings.topic("wal"), value, partition=partition)
                producer.poll(0)
            assert producer.flush(30) == 0
        self.records = []


def _assert_replica_equals(state: ReplicaState, load: Load) -> None:
    assert state.series_keys() == sorted(load.blocks)
    for key, blocks in load.blocks.items():
        want_ts, want_vs = merge_last_wins(blocks)
        got_ts, got_vs = state.query_ts(key, -(2**62), 2**62)
        assert got_ts.tolist() == want_ts.tolist()
        assert got_vs.tolist() == want_vs.tolist()
    assert state.vector_dump() == {pk: meta for pk, (_, meta) in sorted(load.vectors.items())}
    pks = sorted(load.vectors)
    matrix = np.array([load.vectors[pk][0] for pk in pks], dtype=np.float64)
    for probe in load.rng.normal(size=(5, DIM)).astype(np.float32):
        cosine = matrix @ probe / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(probe))
        want = [pks[i] for i in np.argsort(-cosine, kind="stable")[:5]]
        assert [hit.pk for hit in state.search(probe, 5, ef=256)] == want


def test_a_single_partition_wal_and_replica_grow_to_two_partitions_without_loss_or_duplicates(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap = settings.kafka.bootstrap_servers
    assert bootstrap
    replica_dir = tmp_path / "replica"
    # 1. Today: one WAL partition, everything in partition 0, shipped and applied.
    load = Load(partitions=1)
    for n in range(3):
        load.round(n)
    before = load.per_partition[0]
    load.write(settings)
    state = ReplicaState(replica_dir, settings)
    server = ReplicaServer(state, auth=ApplyAuth([KEY]))
    port = server.start()
    shipper = WalShipper(settings, primary_id="primary-mig", max_batch_entries=7)
    try:
        shipper.add_replica("r1", f"http://127.0.0.1:{port}")
        wait_until(shipper.caught_up, timeout_s=60, what="the single-partition WAL shipped")
    finally:
        shipper.close()
        server.stop()
        state.close()
    assert load.per_partition == [before]
    # What the build before the partitioned WAL left: no partition count, no legacy mark.
    with sqlite3.connect(replica_dir / "blocks.sqlite") as db:
        db.execute("DELETE FROM positions WHERE topic IN ('wal.partitions', 'wal.vector.legacy')")

    # 2. The partitioned build opens that state as partition 0's.
    state = ReplicaState(replica_dir, settings)
    assert state.applied_lsns() == {0: before}
    server = ReplicaServer(state, auth=ApplyAuth([KEY]))
    port = server.start()
    shipper = WalShipper(settings, primary_id="primary-mig", max_batch_entries=7)
    try:
        shipper.add_replica("r1", f"http://127.0.0.1:{port}")
        assert shipper.confirmed_lsns("r1") == {0: before}  # resumed, nothing re-sent
        # 3. The WAL grows to two partitions while the shipper runs; writers route by
        # input partition from now on, moving half the pks and series to partition 1.
        assert wal_cli.main_partitions(argparse.Namespace(count=2), settings) == 0
        assert json.loads(capsys.readouterr().out) == {
            "topic": settings.topic("wal"),
            "before": 1,
            "after": 2,
        }
        assert grow_wal_partitions(bootstrap, settings, 2) == (2, 2)
        with pytest.raises(InvalidArgument, match="cannot remove partitions"):
            grow_wal_partitions(bootstrap, settings, 1)
        assert shipper.refresh_partitions() == 1
        assert shipper.refresh_partitions() == 0
        load.partitions, load.per_partition = 2, [before, 0]
        for n in range(3, 7):
            load.round(n)
        load.write(settings)
        want = {0: load.per_partition[0], 1: load.per_partition[1]}
        # caught_up() knows a partition's end as last read (every half second): wait for
        # the replica to hold every entry first.
        wait_until(
            lambda: state.applied_lsns() == want, timeout_s=60, what="both partitions applied"
        )
        wait_until(shipper.caught_up, timeout_s=60, what="both WAL partitions confirmed")
        wait_until(
            lambda: shipper.stats()["replicas"][0]["lag_ms"] == 0, timeout_s=30, what="lag 0"
        )
        stats = shipper.stats()
    finally:
        shipper.close()
        server.stop()
    try:
        # No loss, no duplicate: each partition's LSNs run on from where they were.
        assert state.applied_lsns() == {0: load.per_partition[0], 1: load.per_partition[1]}
        assert load.per_partition[1] > 0
        assert state.entries_applied_total == sum(load.per_partition)
        _assert_replica_equals(state, load)
        # Stats: per partition, and the totals they sum to.
        assert stats["stats"]["wal_partitions"] == 2
        [row] = stats["replicas"]
        rows = row["partitions"]
        assert [r["partition"] for r in rows] == [0, 1]
        assert [r["last_confirmed_lsn"] for r in rows] == [
            format_lsn(n) for n in load.per_partition
        ]
        assert row["last_confirmed_lsn"] == format_lsn(sum(load.per_partition))
        shipped = sum(load.per_partition) - before
        assert sum(r["entries_shipped"] for r in rows) == row["entries_shipped"] == shipped
        assert stats["stats"]["total_entries_shipped"] == shipped
        for name in ("bytes_shipped", "batches", "failed_ships"):
            total = stats["stats"]["total_" + name if name != "failed_ships" else name]
            assert sum(r[name] for r in rows) == total
        assert row["is_healthy"]
        assert all(r["is_healthy"] for r in rows)
    finally:
        state.close()
    reopened = ReplicaState(replica_dir, settings)
    try:
        _assert_replica_equals(reopened, load)
    finally:
        reopened.close()
