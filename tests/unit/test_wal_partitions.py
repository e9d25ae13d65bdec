"""A partitioned WAL: batches name their partition, a replica applies each on its own."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from pipeline.config import Settings, load_settings, with_overrides
from pipeline.errors import CorruptBatch, InvalidArgument, ThemisError, WalGap
from pipeline.kafka.producer import key_partition
from pipeline.replication import ReplicaState, WalShipper, kafka_applier, targets
from pipeline.replication import cli as wal_cli
from pipeline.replication.replica_partition import vector_batch
from pipeline.ts.block import encode_block
from pipeline.ts.point import series_key
from pipeline.vectors.buffer import VectorBatch
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.vectors.shard import merge_hits, new_index
from pipeline.wal import writer as writer_module
from pipeline.wal.batch import MAX_PARTITION, decode_batch, encode_batch, read_header
from pipeline.wal.entry import EntryType, WalEntry
from pipeline.wal.writer import WalWriter
from tests.fixtures.wal import resigned

pytestmark = pytest.mark.unit

DIM = 8
PARTITIONS = 3
STAMP = 1_700_000_000_000


@pytest.fixture
def settings() -> Settings:
    return load_settings(
        path=Path("/dev/null"), env={}, overrides={"vector_auto_buffer": {"dimension": DIM}}
    )


def _vector(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=DIM).astype(np.float32)


def _block(metric: str, start: int) -> bytes:
    ts = np.arange(start, start + 10, dtype=np.int64)
    return encode_block(series_key(metric, "e"), ts, ts.astype(np.float64) / 3)


class Workload:
    """Vector and block entries split by pk/series over WAL partitions, and what they make."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.entries: dict[int, list[WalEntry]] = {p: [] for p in range(PARTITIONS)}
        self.vectors: dict[str, dict[str, Any]] = {}
        self.probe: dict[str, np.ndarray] = {}

    def vector_entry(self, partition: int, ops: list[VectorOp]) -> None:
        lsn = len(self.entries[partition]) + 1
        payload = encode_op_frame(ops, DIM)
        self.entries[partition].append(
            WalEntry(lsn, EntryType.VECTOR_BATCH, STAMP, payload, partition)
        )
        for op in ops:
            if op.op is OpType.REMOVE:
                self.vectors.pop(op.pk, None)
                self.probe.pop(op.pk, None)
            else:
                assert op.vector is not None
                self.vectors[op.pk] = op.metadata
                self.probe[op.pk] = op.vector

    def add_round(self, round_no: int, pks: int = 40) -> None:
        """One entry per partition upserting the pks of that partition (a few removed)."""
        per: dict[int, list[VectorOp]] = {p: [] for p in range(PARTITIONS)}
        for i in range(pks):
            pk = f"pk{i}"
            partition = key_partition(pk.encode(), PARTITIONS)
            if round_no and i % 7 == 0:
                per[partition].append(VectorOp(OpType.REMOVE, pk, None, {}))
            else:
                meta = {"round": round_no, "i": i}
                per[partition].append(VectorOp(OpType.ADD, pk, _vector(self.rng), meta))
        for p, ops in per.items():
            self.vector_entry(p, ops)
            lsn = len(self.entries[p]) + 1
            block = _block(f"m{p}", 1000 * round_no)
            self.entries[p].append(WalEntry(lsn, EntryType.TS_BLOCK, STAMP, block, p))

    def batches(self, partition: int, size: int = 2) -> list[bytes]:
        entries = self.entries[partition]
        return [
            encode_batch(entries[i : i + size], "zstd", 3, "p1", partition=partition)
            for i in range(0, len(entries), size)
        ]


def test_a_batch_names_its_wal_partition_and_one_without_is_partition_0() -> None:
    entries = [WalEntry(lsn, EntryType.TS_BLOCK, STAMP, _block("m", lsn * 100)) for lsn in (1, 2)]
    for version in (1, 2):
        named = encode_batch(entries, "zstd", 3, "p1", partition=5, format_version=version)
        header, decoded = decode_batch(named)
        assert (header.partition, [e.partition for e in decoded]) == (5, [5, 5])
        assert [e.lsn for e in decoded] == [1, 2]
        # Bit 7 of the format byte: a replica built before partitions refuses the batch
        # ("format 129/130") instead of applying partition 5's LSNs as partition 0's.
        assert named[4] == 0x80 | version
        older = encode_batch(entries, "zstd", 3, "p1", format_version=version)
        assert (older[4], older[7]) == (version, 0)  # what an older primary wrote
        assert read_header(older).partition == 0
        unmarked = bytearray(named)
        unmarked[4] = version
        with pytest.raises(CorruptBatch, match="names partition 5 but its format byte"):
            read_header(resigned(unmarked))
        marked = bytearray(older)
        marked[4] = 0x80 | version
        with pytest.raises(CorruptBatch, match="names partition 0 but its format byte"):
            read_header(resigned(marked))
    with pytest.raises(InvalidArgument, match=r"outside 0\.\.255"):
        encode_batch(entries, "none", 1, "p1", partition=MAX_PARTITION + 1)


class _Recorder:
    def __init__(self) -> None:
        self.partitions: list[int | None] = []

    def produce(self, topic: str, value: bytes, **kwargs: Any) -> asyncio.Future[Any]:
        self.partitions.append(kwargs.get("partition"))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0

    def close(self) -> None:
        return None


def test_the_writer_sends_input_partition_p_to_wal_partition_p_mod_its_count() -> None:
    recorder = _Recorder()
    writer = WalWriter(recorder, "ns.wal", partitions=4)

    async def write() -> None:
        for partition in (0, 1, 3, 5, 9):
            await writer.append(EntryType.TS_BLOCK, b"x", partition=partition)

    asyncio.run(write())
    assert recorder.partitions == [0, 1, 3, 1, 1]
    assert writer.entries_written == 5
    with pytest.raises(InvalidArgument, match="at least 1 partition"):
        WalWriter(recorder, "ns.wal", partitions=0)


def test_a_writer_without_a_count_takes_the_one_read_in_its_process_and_keeps_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts: dict[str, int] = {}
    monkeypatch.setattr(writer_module, "_COUNTS_READ", counts)
    unknown = WalWriter(_Recorder(), "ns.wal")
    assert unknown.partitions == 1  # nothing read yet: the single-partition WAL ...
    counts["ns.wal"] = 6
    assert unknown.partitions == 1  # ... for good, so no series changes partition
    assert WalWriter(_Recorder(), "ns.wal").partitions == 6
    assert WalWriter(_Recorder(), "other.wal").partitions == 1


def test_every_wal_partition_has_its_own_lsn_sequence_and_gap_on_the_replica(
    tmp_path: Path, settings: Settings
) -> None:
    work = Workload()
    for round_no in range(3):
        work.add_round(round_no)
    state = ReplicaState(tmp_path, settings)
    try:
        for batch in work.batches(0):
            state.apply_batch(batch)
        # Partition 1 starts beyond its LSN 1: a gap there, named for partition 1 ...
        with pytest.raises(WalGap, match="partition 1 starts at LSN 0000000000000003") as gap:
            state.apply_batch(work.batches(1)[1])
        assert gap.value.expected_lsn == 1
        # ... while partition 2 applies from its own LSN 1 on.
        for batch in work.batches(2):
            state.apply_batch(batch)
        assert state.applied_lsns() == {0: 6, 1: 0, 2: 6}
        for batch in work.batches(1):
            state.apply_batch(batch)
        assert state.applied_lsns() == {0: 6, 1: 6, 2: 6}
        status = state.status()
        assert status["wal_partitions"] == PARTITIONS
        assert status["last_applied_lsn"] == f"{18:016X}"
        assert {p: s["last_applied_lsn"] for p, s in status["partitions"].items()} == {
            str(p): f"{6:016X}" for p in range(PARTITIONS)
        }
        assert sum(s["vectors"] for s in status["partitions"].values()) == len(work.vectors)
        assert state.vector_dump() == dict(sorted(work.vectors.items()))
        assert state.series_keys() == sorted(series_key(f"m{p}", "e") for p in range(3))
        # A batch sent twice is applied once, per partition.
        again = state.apply_batch(work.batches(1)[0])
        assert (again.entries_applied, again.entries_skipped, again.partition) == (0, 2, 1)
    finally:
        state.close()
    reopened = ReplicaState(tmp_path, settings)
    try:
        assert reopened.applied_lsns() == {0: 6, 1: 6, 2: 6}
        assert reopened.vector_dump() == dict(sorted(work.vectors.items()))
    finally:
        reopened.close()


def test_partitions_apply_in_parallel_and_search_answers_equal_the_primarys_shards(
    tmp_path: Path, settings: Settings
) -> None:
    work = Workload(seed=11)
    for round_no in range(6):
        work.add_round(round_no, pks=90)
    # The primary: one shard per partition, each applying its partition's batches in order.
    primary = [new_index(settings.vector_auto_buffer) for _ in range(PARTITIONS)]
    for p, entries in work.entries.items():
        for entry in entries:
            if entry.type is EntryType.VECTOR_BATCH:
                primary[p].apply(_batch_of(entry, settings))
    state = ReplicaState(tmp_path, settings)
    errors: list[BaseException] = []

    def apply_partition(p: int) -> None:
        try:
            for batch in work.batches(p, size=1):
                state.apply_batch(batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=apply_partition, args=(p,)) for p in range(PARTITIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert state.vector_dump() == dict(sorted(work.vectors.items()))
        rng = np.random.default_rng(3)
        for query in [_vector(rng) for _ in range(20)]:
            want = merge_hits([shard.search(query, 10) for shard in primary], 10)
            got = state.search(query, 10)
            assert [(h.pk, h.distance) for h in got] == [(h.pk, h.distance) for h in want]
    finally:
        state.close()


def _batch_of(entry: WalEntry, settings: Settings) -> VectorBatch:
    return vector_batch(entry.payload, settings.vector_auto_buffer)


def _as_written_before_partitions(data_dir: Path) -> None:
    """Drop what only the partitioned replica writes: the state an older build left."""
    with sqlite3.connect(data_dir / "blocks.sqlite") as db:
        db.execute("DELETE FROM positions WHERE topic IN ('wal.partitions', 'wal.vector.legacy')")


def test_a_state_written_before_partitions_opens_as_partition_0s_and_its_vectors_move_on_write(
    tmp_path: Path, settings: Settings
) -> None:
    rng = np.random.default_rng(5)
    legacy_ops = [VectorOp(OpType.ADD, f"pk{i}", _vector(rng), {"v": 0}) for i in range(30)]
    legacy = [
        WalEntry(1, EntryType.VECTOR_BATCH, STAMP, encode_op_frame(legacy_ops[:15], DIM)),
        WalEntry(2, EntryType.TS_BLOCK, STAMP, _block("m", 0)),
        WalEntry(3, EntryType.VECTOR_BATCH, STAMP, encode_op_frame(legacy_ops[15:], DIM)),
    ]
    old = ReplicaState(tmp_path, settings)
    old.apply_batch(encode_batch(legacy, "zstd", 3, "p1"))
    old.close()
    _as_written_before_partitions(tmp_path)
    want = {op.pk: op.metadata for op in legacy_ops}

    state = ReplicaState(tmp_path, settings)
    try:
        assert state.applied_lsns() == {0: 3}
        assert state.status()["wal_partitions"] == 1
        assert state.vector_dump() == want
        # After the WAL grew to 2 partitions: partition 1 writes pks that the single
        # partition WAL had put into partition 0's shard.
        moved = [f"pk{i}" for i in range(30) if key_partition(f"pk{i}".encode(), 2) == 1]
        ops = [VectorOp(OpType.ADD, pk, _vector(rng), {"v": 1}) for pk in moved[:5]]
        ops += [VectorOp(OpType.REMOVE, pk, None, {}) for pk in moved[5:8]]
        new = WalEntry(1, EntryType.VECTOR_BATCH, STAMP, encode_op_frame(ops, DIM), 1)
        state.apply_batch(encode_batch([new], "zstd", 3, "p1", partition=1))
        for op in ops:
            if op.op is OpType.REMOVE:
                del want[op.pk]
            else:
                want[op.pk] = op.metadata
        assert state.vector_dump() == dict(sorted(want.items()))
        assert sum(s["vectors"] for s in state.status()["partitions"].values()) == len(want)
        assert state.applied_lsns() == {0: 3, 1: 1}
        probe = ops[0].vector
        assert probe is not None
        assert state.search(probe, 1)[0].pk == ops[0].pk
    finally:
        state.close()
    reopened = ReplicaState(tmp_path, settings)
    try:
        assert reopened.vector_dump() == dict(sorted(want.items()))
        assert reopened.applied_lsns() == {0: 3, 1: 1}
    finally:
        reopened.close()


def test_a_status_record_names_each_partitions_positions_and_an_older_one_is_partition_0s(
    tmp_path: Path, settings: Settings
) -> None:
    work = Workload(seed=2)
    work.add_round(0)
    state = ReplicaState(tmp_path, settings)
    try:
        for p in (0, 2):
            for batch in work.batches(p):
                state.apply_batch(batch)
        record = orjson.loads(kafka_applier._status_record("r1", state, {1}))
    finally:
        state.close()
    assert record["partitions"] == {
        "0": {"last_applied_lsn": f"{2:016X}", "expected_lsn": f"{3:016X}", "gap": False},
        "1": {"last_applied_lsn": f"{0:016X}", "expected_lsn": f"{1:016X}", "gap": True},
        "2": {"last_applied_lsn": f"{2:016X}", "expected_lsn": f"{3:016X}", "gap": False},
    }
    # The top level is partition 0's, what a shipper built before partitions reads.
    assert (record["last_applied_lsn"], record["gap"]) == (f"{2:016X}", False)
    assert targets._partition_status(record, 1) == record["partitions"]["1"]
    assert targets._partition_status(record, 5) is None
    older = {"last_applied_lsn": f"{7:016X}", "gap": False}
    assert targets._partition_status(older, 0) is older
    assert targets._partition_status(older, 1) is None
    assert targets._partition_status({"partitions": {"1": 3}}, 1) is None


def test_growing_the_wal_and_bounding_parallel_ships_name_what_is_missing(
    settings: Settings,
) -> None:
    assert not settings.kafka.bootstrap_servers
    with pytest.raises(ThemisError, match="KAFKA_BOOTSTRAP_SERVERS"):
        wal_cli.main_partitions(argparse.Namespace(count=6), settings)
    bootstrapped = with_overrides(settings, {"kafka": {"bootstrap_servers": "127.0.0.1:1"}})
    with pytest.raises(InvalidArgument, match="parallel_ships must be >= 1"):
        WalShipper(bootstrapped, parallel_ships=0)
