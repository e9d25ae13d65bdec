"""Faults between real components: nothing acked is lost, nothing applied twice, recovery bounded.

A real fault injector (Toxiproxy, ``tests/fixtures/toxiproxy.py``) sits between a
worker and a broker of its own (the broker advertises the proxy on a second listener,
so every connection of the worker stays behind it while the test's own clients go
direct) and between a WAL shipper and its HTTP replica. The broker is stopped with
SIGSTOP and killed with SIGKILL, then restarted with its data; the worker's data
directory fills up. Each test holds its fault for a stated time (the fault itself,
never a wait for something to happen), then asserts that every acknowledged point or
entry is there exactly once and that the pipeline caught up within its bound.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import KafkaException, TopicPartition

from pipeline.config import Settings, with_overrides
from pipeline.errors import KafkaOperationFailed
from pipeline.kafka.clients import Producer
from pipeline.kafka.consumer import open_consumer
from pipeline.kafka.local_broker import ClusterRecord, LocalKafka
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.replication import ApplyAuth, ReplicaServer, ReplicaState, WalShipper
from pipeline.ts import TSProducer, series_key
from pipeline.ts.block import encode_block
from pipeline.ts.store import BlockStore
from pipeline.vectors import OpType, VectorOp, VectorProducer
from pipeline.vectors.ops import encode_op_frame
from pipeline.wal.entry import EntryType, encode_entry_record, format_lsn
from pipeline.worker import search
from tests.fixtures.broker import MakeSettings
from tests.fixtures.support import (
    committed_total,
    settings_as_env,
    start_themis_worker,
    stop_process,
    wait_until,
)
from tests.fixtures.toxiproxy import MakeProxy, Proxy, Toxiproxy
from tests.fixtures.worker import ts_stats, vector_dump

pytestmark = pytest.mark.integration

SERIES = 20
ROUND_POINTS = 300
PARTITIONS = 2
RECOVERY_BOUND_S = 30.0
"""Every test: from the end of the fault until all is durable and committed (seconds)."""

Data = list[tuple[str, np.ndarray, np.ndarray]]
Report = Callable[[str, object], None]


# -- a broker of our own, behind a proxy --------------------------------------------------


@dataclass
class FaultBroker:
    """A local cluster the tests may stop and kill; ``proxy`` fronts its PROXIED listener."""

    cluster: LocalKafka
    proxy: Proxy
    record: ClusterRecord

    @property
    def direct(self) -> str:
        return self.record.bootstrap_servers

    def heal(self) -> None:
        """Whatever an earlier test left: running, answering, no toxics, proxy enabled."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.record.pid, signal.SIGCONT)
        running = self.cluster.status()
        self.record = running if running is not None else self.cluster.restart()
        self.proxy.remove_toxics()
        self.proxy.enable()


@pytest.fixture(scope="module")
def fault_broker(toxiproxy: Toxiproxy) -> Iterator[FaultBroker]:
    name = f"faults-{uuid.uuid4().hex[:8]}"
    proxy = toxiproxy.create_proxy(name, upstream="127.0.0.1:9")  # upstream known once up
    cluster = LocalKafka(name, proxied_at=proxy.listen)
    try:
        record = cluster.up()
        assert record.proxied_upstream
        proxy.set_upstream(record.proxied_upstream)
        yield FaultBroker(cluster, proxy, record)
    finally:
        cluster.down()
        proxy.delete()


@pytest.fixture
def on_fault_broker(fault_broker: FaultBroker, make_settings: MakeSettings) -> Settings:
    """Settings on the fault broker (direct), topics created, the broker healed first."""
    fault_broker.heal()
    settings = make_settings(
        kafka={"bootstrap_servers": fault_broker.direct},
        ts_auto_buffer={"flush_interval_ms": 300},
    )
    apply_topics(fault_broker.direct, settings, partitions_override=PARTITIONS)
    return settings


@pytest.fixture
def report(record_property: Callable[[str, object], None]) -> Report:
    """Record a measured figure in the JUnit report and print it (``-s`` shows it)."""

    def record(name: str, value: object) -> None:
        record_property(name, value)
        print(f"{name}: {value}")

    return record


# -- points, and reading them back ------------------------------------------------------


def _dataset(rounds: int, seed: int) -> Data:
    rng = np.random.default_rng(seed)
    n = rounds * ROUND_POINTS
    out = []
    for i in range(SERIES):
        ts = 1_700_000_000_000 + np.cumsum(rng.integers(900, 1_100, n))
        vs = np.round(np.cumsum(rng.normal(0, 1, n)), 3)
        out.append((series_key("fault", f"host{i:02d}", {"dc": str(i % 3)}), ts, vs))
    return out


def _send_round(producer: TSProducer, data: Data, r: int) -> None:
    sl = slice(r * ROUND_POINTS, (r + 1) * ROUND_POINTS)
    producer.put_arrays((key, ts[sl], vs[sl]) for key, ts, vs in data)


def _durable(settings: Settings, tmp_path: Path, data: Data) -> int:
    """Distinct points of ``data``'s series durable as blocks (each series queried once)."""
    store = BlockStore(tmp_path / f"check-{uuid.uuid4().hex[:6]}.sqlite")
    try:
        assert settings.kafka.bootstrap_servers
        store.catch_up(settings.kafka.bootstrap_servers, settings.topic("ts.blocks"))
        return sum(store.query(key, -(2**62), 2**62)[0].size for key, _, _ in data)
    finally:
        store.close()


def _assert_exactly(settings: Settings, tmp_path: Path, data: Data, report: Report) -> None:
    """Every point once, with its value; nothing else in the series."""
    store = BlockStore(tmp_path / "verify.sqlite")
    try:
        assert settings.kafka.bootstrap_servers
        store.catch_up(settings.kafka.bootstrap_servers, settings.topic("ts.blocks"))
        for key, ts, vs in data:
            got_ts, got_vs = store.query(key, -(2**62), 2**62)
            assert got_ts.tolist() == ts.tolist(), f"timestamps of {key} differ"
            assert got_vs.tolist() == vs.tolist(), f"values of {key} differ"
        # Blocks written again after a replay are stored once each; a replay cut at other
        # batch boundaries stores some points in two blocks, which queries merge.
        report("stored_point_copies", store.point_count() - sum(ts.size for _, ts, _ in data))
    finally:
        store.close()


def _all_committed(bootstrap: str, group: str, topic: str) -> bool:
    """The group's committed offsets reached the end of every partition of ``topic``."""
    with open_consumer(bootstrap, f"ends-{uuid.uuid4().hex[:6]}") as consumer:
        end = sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        )
    return committed_total(bootstrap, group, topic, PARTITIONS) == end


def _ts_caught_up(settings: Settings, tmp_path: Path, data: Data) -> bool:
    bootstrap = settings.kafka.bootstrap_servers or ""
    total = sum(ts.size for _, ts, _ in data)
    try:
        return _durable(settings, tmp_path, data) == total and _all_committed(
            bootstrap, f"{settings.worker.app_id}-ts", settings.topic("ts.points")
        )
    except (KafkaException, KafkaOperationFailed):  # a broker just resumed may not know them yet
        return False


@contextlib.contextmanager
def _worker(
    env: dict[str, str], settings: Settings, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``themis worker`` whose pages answer; it must still run at the end, and stop cleanly."""
    proc = start_themis_worker(env, log)
    try:
        wait_until(lambda: bool(ts_stats(settings.worker.web_port)), timeout_s=60, what="worker")
        yield proc
        assert proc.poll() is None, f"the worker exited: {log.read_text()[-3000:]}"
    finally:
        code = stop_process(proc)
    assert code == 0, log.read_text()[-3000:]


def _hold(seconds: float) -> None:
    """Keep a fault in place for ``seconds``: the fault's duration, not a wait for a state."""
    time.sleep(seconds)


def _recovered_within(bound_s: float, since: float, report: Report, name: str) -> None:
    took = round(time.monotonic() - since, 2)
    report(name, took)
    assert took < bound_s, f"{name}: {took} s, bound {bound_s} s"


# -- worker <-> broker ------------------------------------------------------------------


def _wait_first_flush(settings: Settings, fault: str) -> None:
    """Wait until the worker made some points durable, before ``fault`` is injected."""
    wait_until(
        lambda: ts_stats(settings.worker.web_port).get("points_flushed", 0) > 0,
        timeout_s=60,
        what=f"points durable before the {fault}",
    )


def _wait_recovered(
    settings: Settings, tmp_path: Path, data: Data, since: float, report: Report, name: str
) -> None:
    """Wait until every point is durable and committed; recovery counted from ``since``."""
    wait_until(
        lambda: _ts_caught_up(settings, tmp_path, data),
        timeout_s=RECOVERY_BOUND_S + 30,
        what=f"every point durable and committed ({name})",
    )
    _recovered_within(RECOVERY_BOUND_S, since, report, name)


def test_worker_behind_latency_resets_and_a_black_hole_loses_and_doubles_no_point(
    on_fault_broker: Settings, fault_broker: FaultBroker, tmp_path: Path, report: Report
) -> None:
    settings = on_fault_broker
    data = _dataset(5, seed=1)
    proxy = fault_broker.proxy
    behind_proxy = with_overrides(settings, {"kafka": {"bootstrap_servers": proxy.listen}})
    # The test's producer goes direct: only the worker's traffic goes through the proxy.
    with (
        TSProducer(settings) as producer,
        _worker(settings_as_env(behind_proxy), settings, tmp_path / "worker.log"),
    ):
        _send_round(producer, data, 0)
        producer.flush()
        _wait_first_flush(settings, "faults")
        # 1. Slow network: 300 +- 100 ms each way on every connection.
        slow = [
            proxy.add_toxic("latency", stream=s, latency=300, jitter=100)
            for s in ("upstream", "downstream")
        ]
        _send_round(producer, data, 1)
        producer.flush()
        _hold(4)
        for toxic in slow:
            proxy.remove_toxic(toxic)
        # 2. Every connection reset (RST) as soon as the worker sends: longer than the
        # 6 s session, so the group expires the worker and it must rejoin.
        reset = proxy.add_toxic("reset_peer", stream="upstream", timeout=0)
        _send_round(producer, data, 2)
        producer.flush()
        _hold(8)
        proxy.remove_toxic(reset)
        # 3. A black hole: requests vanish, connections close after 2 s.
        hole = proxy.add_toxic("timeout", stream="upstream", timeout=2_000)
        _send_round(producer, data, 3)
        producer.flush()
        _hold(4)
        proxy.remove_toxic(hole)
        healed = time.monotonic()
        _send_round(producer, data, 4)
        producer.flush()
        _wait_recovered(settings, tmp_path, data, healed, report, "network_recovery_s")
    _assert_exactly(settings, tmp_path, data, report)


def test_broker_sigstopped_for_15_s_under_ingest_loses_and_doubles_no_point(
    on_fault_broker: Settings, fault_broker: FaultBroker, tmp_path: Path, report: Report
) -> None:
    settings = on_fault_broker
    data = _dataset(4, seed=2)
    with (
        TSProducer(settings) as producer,
        _worker(settings_as_env(settings), settings, tmp_path / "worker.log"),
    ):
        _send_round(producer, data, 0)
        producer.flush()
        _wait_first_flush(settings, "stop")
        _send_round(producer, data, 1)
        producer.flush()
        os.kill(fault_broker.record.pid, signal.SIGSTOP)
        try:
            _send_round(producer, data, 2)  # queued; acknowledged once the broker runs again
            _hold(15)
        finally:
            os.kill(fault_broker.record.pid, signal.SIGCONT)
        resumed = time.monotonic()
        producer.flush()
        _send_round(producer, data, 3)
        producer.flush()
        _wait_recovered(settings, tmp_path, data, resumed, report, "sigstop_recovery_s")
    _assert_exactly(settings, tmp_path, data, report)


def test_broker_sigkilled_then_restarted_with_its_data_loses_and_doubles_no_acked_point(
    on_fault_broker: Settings, fault_broker: FaultBroker, tmp_path: Path, report: Report
) -> None:
    settings = on_fault_broker
    data = _dataset(5, seed=3)
    with (
        TSProducer(settings) as producer,
        _worker(settings_as_env(settings), settings, tmp_path / "worker.log"),
    ):
        for r in range(2):
            _send_round(producer, data, r)
            producer.flush()
        _wait_first_flush(settings, "kill")
        _send_round(producer, data, 2)
        producer.flush()  # acknowledged, most of it not yet durable as blocks
        os.kill(fault_broker.record.pid, signal.SIGKILL)
        wait_until(lambda: fault_broker.cluster.status() is None, timeout_s=10, what="JVM gone")
        _send_round(producer, data, 3)  # queued while the broker is down
        killed = time.monotonic()
        fault_broker.record = fault_broker.cluster.restart()
        report("broker_restart_s", fault_broker.record.startup_seconds)
        producer.flush()
        _send_round(producer, data, 4)
        producer.flush()
        _wait_recovered(settings, tmp_path, data, killed, report, "sigkill_recovery_s")
    _assert_exactly(settings, tmp_path, data, report)


# -- shipper <-> replica ----------------------------------------------------------------

WAL_DIM = 8


@dataclass
class WalModel:
    """What a run of WAL entries describes: points per series, metadata per pk."""

    points: dict[str, tuple[list[int], list[float]]]
    vectors: dict[str, dict[str, Any]]


def _wal_entries(count: int, seed: int) -> tuple[list[tuple[EntryType, bytes]], WalModel]:
    """``count`` entries: blocks of new points (two in three) and vector adds."""
    rng = np.random.default_rng(seed)
    model = WalModel({}, {})
    entries: list[tuple[EntryType, bytes]] = []
    for i in range(count):
        if i % 3 == 2:
            ops = [
                VectorOp(
                    OpType.ADD, f"pk{i}-{j}", rng.normal(0, 1, WAL_DIM).astype(np.float32), {"i": i}
                )
                for j in range(4)
            ]
            model.vectors.update({op.pk: op.metadata for op in ops})
            entries.append((EntryType.VECTOR_BATCH, encode_op_frame(ops, WAL_DIM)))
            continue
        key = series_key("wal", f"e{i % 7}", {})
        ts = np.arange(i * 100, i * 100 + 50, dtype=np.int64)
        vs = np.round(rng.normal(0, 1, 50), 3)
        got_ts, got_vs = model.points.setdefault(key, ([], []))
        got_ts.extend(ts.tolist())
        got_vs.extend(vs.tolist())
        entries.append((EntryType.TS_BLOCK, encode_block(key, ts, vs)))
    return entries, model


def _append_to_wal(settings: Settings, entries: list[tuple[EntryType, bytes]]) -> None:
    """Entries onto the primary's WAL the way ``WalWriter`` writes them (acknowledged)."""
    config = {"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True}
    with Producer(config) as producer:
        for entry_type, payload in entries:
            value = encode_entry_record(entry_type, 1_700_000_000_000, payload)
            key = entry_type.name.lower().encode()
            producer.produce(settings.topic("wal"), value, key=key, partition=0)
            producer.poll(0)
        assert producer.flush(30) == 0


def _assert_replica_holds(state: ReplicaState, model: WalModel) -> None:
    assert state.series_keys() == sorted(model.points)
    for key, (ts, vs) in model.points.items():
        got_ts, got_vs = state.query_ts(key, -(2**62), 2**62)
        assert got_ts.tolist() == ts, f"timestamps of {key} differ"
        assert got_vs.tolist() == vs, f"values of {key} differ"
    assert state.vector_dump() == model.vectors


def test_replica_cut_off_from_its_shipper_converges_after_with_every_entry_applied_once(
    make_settings: MakeSettings, make_proxy: MakeProxy, tmp_path: Path, report: Report
) -> None:
    key = "fault-test-replicator-key"
    settings = make_settings(
        vector_auto_buffer={"dimension": WAL_DIM}, compressed_wal_shipping={"ship_key": key}
    )
    assert settings.kafka.bootstrap_servers
    apply_topics(
        settings.kafka.bootstrap_servers, settings, [s for s in load_specs() if s.name == "wal"]
    )
    payloads, model = _wal_entries(400, seed=5)
    _append_to_wal(settings, payloads[:100])
    state = ReplicaState(tmp_path / "replica", settings)
    server = ReplicaServer(state, auth=ApplyAuth([key]))
    proxy = make_proxy(f"127.0.0.1:{server.start()}")
    shipper = WalShipper(settings, primary_id="primary-f", max_batch_entries=20)
    try:
        shipper.add_replica("r1", f"http://{proxy.listen}")
        wait_until(lambda: state.last_applied_lsn == 100, timeout_s=60, what="first entries")
        # 1. A partition: every connection closed, new ones refused, while the WAL grows.
        proxy.disable()
        _append_to_wal(settings, payloads[100:200])
        _hold(5)
        assert state.last_applied_lsn == 100
        proxy.enable()
        # 2. Answers lost: the replica applies a batch, the shipper never hears of it and
        # sends the same batch again and again.
        reset = proxy.add_toxic("reset_peer", stream="downstream", timeout=0)
        wait_until(
            lambda: state.last_applied_lsn > 100,
            timeout_s=RECOVERY_BOUND_S,
            what="a batch applied while its answer is reset",
        )
        applied_unconfirmed = state.last_applied_lsn
        _append_to_wal(settings, payloads[200:300])
        _hold(3)
        assert state.last_applied_lsn == applied_unconfirmed  # resent, not applied again
        [replica] = shipper.stats()["replicas"]
        assert replica["last_confirmed_lsn"] == format_lsn(100)
        proxy.remove_toxic(reset)
        # 3. A black hole: nothing arrives, connections close after 2 s.
        hole = proxy.add_toxic("timeout", stream="upstream", timeout=2_000)
        _append_to_wal(settings, payloads[300:])
        _hold(4)
        proxy.remove_toxic(hole)
        healed = time.monotonic()
        wait_until(
            lambda: state.last_applied_lsn == 400 and shipper.caught_up(),
            timeout_s=RECOVERY_BOUND_S + 30,
            what="the replica and the shipper's confirmations to converge",
        )
        _recovered_within(RECOVERY_BOUND_S, healed, report, "replica_recovery_s")
        stats = shipper.stats()
    finally:
        shipper.close()
        server.stop()
    report("failed_ships", stats["stats"]["failed_ships"])
    assert stats["stats"]["failed_ships"] > 0
    assert state.entries_applied_total == 400  # a batch sent again was not applied again
    _assert_replica_holds(state, model)
    state.close()


# -- the worker's disk ------------------------------------------------------------------


VEC_DIM = 16


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Fill ``disk`` up; the filler file is returned, to be removed to free the space."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1024 * 1024, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    return filler


def _vectors_caught_up(settings: Settings, expected: dict[str, dict[str, Any]]) -> bool:
    return vector_dump(settings) == expected and _all_committed(
        settings.kafka.bootstrap_servers or "",
        f"{settings.worker.app_id}-vectors",
        settings.topic("vectors.ops"),
    )


def _snapshot_failures(settings: Settings) -> float:
    url = f"http://127.0.0.1:{settings.worker.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("vector_index_snapshot_failures_total "):
                return float(line.split()[1])
    return 0.0


def test_worker_with_a_full_data_dir_keeps_every_acked_operation_and_catches_up_once_freed(
    make_settings: MakeSettings, small_disk: Path, tmp_path: Path, report: Report
) -> None:
    settings = make_settings(
        worker={"data_dir": str(small_disk / "data")},
        ts_auto_buffer={"flush_interval_ms": 300},
        vector_auto_buffer={
            "dimension": VEC_DIM,
            "snapshot_interval_ms": 300,
            "flush_interval_ms": 200,
        },
    )
    assert settings.kafka.bootstrap_servers
    apply_topics(settings.kafka.bootstrap_servers, settings, partitions_override=PARTITIONS)
    group = f"{settings.worker.app_id}-vectors"
    rng = np.random.default_rng(4)
    vectors = rng.normal(0, 1, (3_000, VEC_DIM)).astype(np.float32)
    expected = {f"doc{i}": {"n": i} for i in range(1_500)}
    points = _dataset(1, seed=6)
    env = settings_as_env(settings)
    with (
        VectorProducer(settings) as producer,
        TSProducer(settings) as ts_producer,
        _worker(env, settings, tmp_path / "worker.log"),
    ):
        producer.add_many((f"doc{i}", vectors[i], {"n": i}) for i in range(1_500))
        producer.flush()
        wait_until(
            lambda: _vectors_caught_up(settings, expected), timeout_s=60, what="first snapshots"
        )
        filler = _fill(small_disk)
        producer.add_many((f"doc{i}", vectors[i], {"n": i}) for i in range(1_500, 3_000))
        for i in range(300):
            producer.remove(f"doc{i}")
        producer.flush()
        _send_round(ts_producer, points, 0)
        ts_producer.flush()
        expected = {f"doc{i}": {"n": i} for i in range(300, 3_000)}
        wait_until(
            lambda: vector_dump(settings) == expected,
            timeout_s=60,
            what="the operations applied (searchable) while no snapshot can be written",
        )
        wait_until(
            lambda: _snapshot_failures(settings) >= 3,
            timeout_s=30,
            what="the worker to report failed snapshots",
        )
        assert not _all_committed(
            settings.kafka.bootstrap_servers, group, settings.topic("vectors.ops")
        ), "offsets committed past operations no snapshot covers"
        wait_until(  # the TS stage keeps nothing on disk: it goes on
            lambda: _ts_caught_up(settings, tmp_path, points),
            timeout_s=60,
            what="points durable while the disk is full",
        )
        report("snapshot_failures", _snapshot_failures(settings))
        filler.unlink()
        freed = time.monotonic()
        wait_until(
            lambda: _vectors_caught_up(settings, expected),
            timeout_s=RECOVERY_BOUND_S + 30,
            what="snapshots written and offsets committed once the disk has room",
        )
        _recovered_within(RECOVERY_BOUND_S, freed, report, "disk_full_recovery_s")
    # A new worker rebuilds every shard from its snapshot and the committed offsets.
    with _worker(env, settings, tmp_path / "worker2.log"):
        wait_until(lambda: vector_dump(settings) == expected, timeout_s=60, what="shards rebuilt")
        everything = search(vectors[500], 10_000, settings=settings)
        assert sorted(h.pk for h in everything) == sorted(expected)  # each pk once
