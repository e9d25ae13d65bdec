"""WAL shipping between two real clusters: the session broker (primary) and a replica cluster."""

from __future__ import annotations

import http.client
import signal
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest

from pipeline.config import Settings, with_overrides
from pipeline.errors import ReplicaRewind, ShipFailed
from pipeline.ingest.deadletter import REASON
from pipeline.kafka.clients import Producer
from pipeline.kafka.consumer import open_consumer
from pipeline.kafka.local_broker import LocalKafka, free_port
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.replication import (
    REPLICA_STATE,
    ApplierStats,
    ApplyAuth,
    ReplicaServer,
    ReplicaState,
    WalShipper,
    run_kafka_applier,
    server_ssl_context,
)
from pipeline.replication import targets as targets_module
from pipeline.ts.block import decode_block, encode_block
from pipeline.ts.dataset import devops_dataset
from pipeline.ts.store import merge_last_wins
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.batch import encode_batch, read_header
from pipeline.wal.entry import EntryType, WalEntry, encode_entry_record, format_lsn
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import FacadeThread, facade_settings
from tests.fixtures.support import (
    REPO,
    THEMIS,
    committed_total,
    settings_as_env,
    settings_env,
    start_process,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.integration

DIM = 16


@pytest.fixture(scope="module")
def replica_cluster() -> Iterator[str]:
    """A second local cluster, the replica's; stopped and deleted at the end."""
    cluster = LocalKafka(f"replica-{uuid.uuid4().hex[:8]}")
    record = cluster.up()
    try:
        yield record.bootstrap_servers
    finally:
        cluster.down()


@pytest.fixture
def wal_settings(make_settings: MakeSettings) -> Settings:
    settings = make_settings(vector_auto_buffer={"dimension": DIM})
    assert settings.kafka.bootstrap_servers
    wal_spec = [spec for spec in load_specs() if spec.name == "wal"]
    apply_topics(settings.kafka.bootstrap_servers, settings, wal_spec)
    return settings


# -- a workload and what it describes ---------------------------------------------------


class Model:
    """The state the WAL entries describe: points per series, metadata per pk."""

    def __init__(self) -> None:
        self.blocks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.vectors: dict[str, dict[str, Any]] = {}
        self.probe: dict[str, np.ndarray] = {}
        self.entries = 0

    def points(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        return merge_last_wins(self.blocks[key])


def mixed_payloads(count: int, seed: int = 0) -> tuple[list[tuple[EntryType, bytes]], Model]:
    """``count`` real entries: Gorilla blocks of devops series and vector op frames."""
    data = devops_dataset(5, 40 * count, seed=seed)
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (4, DIM))
    model = Model()
    out: list[tuple[EntryType, bytes]] = []
    cursor = dict.fromkeys(range(len(data)), 0)
    for i in range(count):
        if i % 3 == 2:
            ops = []
            for j in range(6):
                pk = f"doc{int(rng.integers(0, 3 * count))}"
                if j == 5 and model.vectors:
                    pk = sorted(model.vectors)[int(rng.integers(0, len(model.vectors)))]
                    ops.append(VectorOp(OpType.REMOVE, pk, None, {}))
                    continue
                vector = (centers[j % 4] + rng.normal(0, 0.1, DIM)).astype(np.float32)
                ops.append(VectorOp(OpType.ADD, pk, vector, {"entry": i, "slot": j, "src": "t"}))
            coalesced: dict[str, VectorOp] = {}
            for op in ops:
                coalesced.pop(op.pk, None)
                coalesced[op.pk] = op
            for op in coalesced.values():
                if op.op is OpType.REMOVE:
                    model.vectors.pop(op.pk, None)
                    model.probe.pop(op.pk, None)
                else:
                    assert op.vector is not None
                    model.vectors[op.pk] = op.metadata
                    model.probe[op.pk] = op.vector
            out.append((EntryType.VECTOR_BATCH, encode_op_frame(coalesced.values(), DIM)))
        else:
            s = i % len(data)
            key, ts, vs = data[s]
            start = cursor[s]
            cursor[s] += 40
            block = encode_block(key, ts[start : start + 40], vs[start : start + 40])
            model.blocks.setdefault(key, []).append(decode_block(block).points())
            out.append((EntryType.TS_BLOCK, block))
        model.entries += 1
    return out, model


def wal_entries(payloads: list[tuple[EntryType, bytes]]) -> list[WalEntry]:
    """``payloads`` as the WAL entries ``append_to_wal`` makes of them (LSN 1 on)."""
    return [
        WalEntry(lsn, entry_type, 1_700_000_000_000, payload)
        for lsn, (entry_type, payload) in enumerate(payloads, start=1)
    ]


def append_to_wal(settings: Settings, payloads: list[tuple[EntryType, bytes]]) -> None:
    """Write entries onto the primary's WAL the way ``WalWriter`` does."""
    assert settings.kafka.bootstrap_servers
    config = {"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True}
    with Producer(config) as producer:
        for entry_type, payload in payloads:
            value = encode_entry_record(entry_type, int(time.time() * 1000), payload)
            producer.produce(
                settings.topic("wal"), value, key=entry_type.name.lower().encode(), partition=0
            )
            producer.poll(0)
        assert producer.flush(30) == 0


def assert_replica_equals(state: ReplicaState, model: Model) -> None:
    assert state.series_keys() == sorted(model.blocks)
    for key in model.blocks:
        want_ts, want_vs = model.points(key)
        got_ts, got_vs = state.query_ts(key, -(2**62), 2**62)
        np.testing.assert_array_equal(got_ts, want_ts)
        np.testing.assert_array_equal(got_vs, want_vs)
    assert state.vector_dump() == model.vectors
    for pk in sorted(model.probe)[:5]:
        assert state.search(model.probe[pk], 1)[0].pk == pk


class ApplierThread:
    """``run_kafka_applier`` in a thread, stopped by :meth:`stop`."""

    def __init__(self, state: ReplicaState, bootstrap: str, settings: Settings) -> None:
        self.stop_event = threading.Event()
        self.stats: ApplierStats | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.stats = run_kafka_applier(
                    state, bootstrap, settings, "r1", stop=self.stop_event, status_interval_s=0.2
                )
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def stop(self) -> ApplierStats:
        self.stop_event.set()
        self.thread.join(60)
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


# -- tests ------------------------------------------------------------------------------


def test_mixed_wal_shipped_to_a_replica_cluster_equals_what_the_entries_describe(
    wal_settings: Settings, replica_cluster: str, tmp_path: Path
) -> None:
    payloads, model = mixed_payloads(240)
    append_to_wal(wal_settings, payloads[:150])
    state = ReplicaState(tmp_path / "replica", wal_settings)
    applier = ApplierThread(state, replica_cluster, wal_settings)
    shipper = WalShipper(wal_settings, primary_id="primary-a", max_batch_entries=50)
    try:
        shipper.add_replica("r1", f"kafka://{replica_cluster}")
        wait_until(lambda: state.last_applied_lsn == 150, timeout_s=60, what="first 150 entries")
        append_to_wal(wal_settings, payloads[150:])  # while shipping
        wait_until(lambda: state.last_applied_lsn == 240, timeout_s=60, what="all 240 entries")
        wait_until(shipper.caught_up, timeout_s=30, what="the shipper to see it caught up")
        # lag_ms counts to the applier's report of what it applied, which follows.
        wait_until(
            lambda: shipper.stats()["replicas"][0]["lag_ms"] == 0,
            timeout_s=30,
            what="lag_ms 0 once the applier reported LSN 240 applied",
        )
        stats = shipper.stats()
    finally:
        shipper.close()
        applier_stats = applier.stop()
    assert_replica_equals(state, model)
    assert state.entries_applied_total == 240
    assert applier_stats.corrupt_batches == 0
    [replica] = stats["replicas"]
    assert list(replica) == [
        "replica_id",
        "endpoint",
        "last_confirmed_lsn",
        "lag_bytes",
        "lag_ms",
        "is_healthy",
        "last_entry_lag_ms",
        "entries_shipped",
        "partitions",
    ]
    assert replica["last_confirmed_lsn"] == format_lsn(240)
    partitions = stats["stats"]["wal_partitions"]
    assert [p["partition"] for p in replica["partitions"]] == list(range(partitions))
    # Everything was written to partition 0 (the writer above names no partition).
    assert replica["partitions"][0]["last_confirmed_lsn"] == format_lsn(240)
    assert sum(p["entries_shipped"] for p in replica["partitions"]) == 240
    assert (replica["lag_bytes"], replica["lag_ms"], replica["is_healthy"]) == (0, 0, True)
    # The last 90 entries were appended while shipping: queryable within seconds.
    assert 0 < replica["last_entry_lag_ms"] < 30_000
    totals = stats["stats"]
    assert list(totals) == [
        "total_entries_shipped",
        "total_bytes_shipped",
        "total_bytes_uncompressed",
        "avg_compression_ratio",
        "total_batches",
        "failed_ships",
        "wal_partitions",
    ]
    assert totals["wal_partitions"] >= 1
    assert totals["total_entries_shipped"] == 240
    assert totals["total_batches"] >= 5
    assert totals["failed_ships"] == 0
    assert totals["total_bytes_shipped"] < totals["total_bytes_uncompressed"]
    assert totals["avg_compression_ratio"] == pytest.approx(
        totals["total_bytes_uncompressed"] / totals["total_bytes_shipped"], rel=1e-3
    )
    state.close()
    reopened = ReplicaState(tmp_path / "replica", wal_settings)
    assert reopened.last_applied_lsn == 240
    assert_replica_equals(reopened, model)
    reopened.close()


def test_corrupted_batch_is_dead_lettered_then_resent_and_the_replica_converges(
    wal_settings: Settings,
    replica_cluster: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payloads, model = mixed_payloads(90, seed=4)
    append_to_wal(wal_settings, payloads)
    original = targets_module.KafkaTarget.ship
    damaged: list[int] = []

    def ship_damaging_the_third(self: Any, data: bytes, header: Any) -> None:
        if header.first_lsn == 21 and not damaged:
            damaged.append(header.first_lsn)
            broken = bytearray(data)
            broken[len(broken) // 2] ^= 0xFF
            data = bytes(broken)
        original(self, data, header)

    monkeypatch.setattr(targets_module.KafkaTarget, "ship", ship_damaging_the_third)
    state = ReplicaState(tmp_path / "replica", wal_settings)
    applier = ApplierThread(state, replica_cluster, wal_settings)
    shipper = WalShipper(wal_settings, primary_id="primary-b", max_batch_entries=10)
    try:
        shipper.add_replica("r1", f"kafka://{replica_cluster}")
        wait_until(lambda: state.last_applied_lsn == 90, timeout_s=90, what="convergence")
    finally:
        shipper.close()
        stats = applier.stop()
    assert damaged == [21]
    assert stats.corrupt_batches == 1
    assert stats.gaps >= 1
    assert state.entries_applied_total == 90
    assert_replica_equals(state, model)
    state.close()
    reasons = []
    with open_consumer(replica_cluster, "dlq") as consumer:
        consumer.subscribe([wal_settings.topic("deadletter")])
        for _ in range(100):
            msg = consumer.poll(0.3)
            if msg is not None and not msg.error():
                reasons.append(dict(cast("list[tuple[str, bytes]]", msg.headers() or []))[REASON])
                break
    assert len(reasons) == 1
    assert b"checksum" in reasons[0]


def test_shipper_killed_mid_stream_resumes_from_the_confirmed_lsn_without_loss_or_double_apply(
    wal_settings: Settings, replica_cluster: str, tmp_path: Path
) -> None:
    total = 1500
    payloads, model = mixed_payloads(total, seed=9)
    append_to_wal(wal_settings, payloads)
    env = settings_as_env(wal_settings)
    args = [
        *THEMIS,
        "wal",
        "ship",
        "--replica",
        f"r1=kafka://{replica_cluster}",
        "--compression",
        "none",
        "--max-batch-entries",
        "5",
        "--once",
    ]
    group = f"{wal_settings.worker.app_id}-wal-r1"
    assert wal_settings.kafka.bootstrap_servers
    primary = wal_settings.kafka.bootstrap_servers
    first = start_process(args, env, tmp_path / "ship1.log")
    try:
        wait_until(
            lambda: committed_total(primary, group, wal_settings.topic("wal"), 1) >= 100,
            timeout_s=60,
            what="the first confirmations",
        )
    finally:
        stop_process(first, sig=signal.SIGKILL)
    killed_at = committed_total(primary, group, wal_settings.topic("wal"), 1)
    assert killed_at < total, "the shipper finished before it was killed; ship more entries"
    second = subprocess.run(
        args, env=settings_env(env), cwd=REPO, capture_output=True, timeout=180, check=False
    )
    assert second.returncode == 0, second.stderr.decode()[-3000:]
    stats = orjson.loads(second.stdout.splitlines()[-1])
    assert stats["replicas"][0]["last_confirmed_lsn"] == format_lsn(total)
    assert stats["stats"]["total_entries_shipped"] <= total - killed_at + 5
    state = ReplicaState(tmp_path / "replica", wal_settings)
    applier = ApplierThread(state, replica_cluster, wal_settings)
    try:
        wait_until(lambda: state.last_applied_lsn == total, timeout_s=90, what="all entries")
    finally:
        applier_stats = applier.stop()
    assert state.entries_applied_total == total
    assert applier_stats.entries_applied == total
    assert applier_stats.corrupt_batches == 0
    assert_replica_equals(state, model)
    state.close()


# -- HTTP replica with mutual TLS --------------------------------------------------------


def _post(port: int, context: ssl.SSLContext, body: bytes, primary: str) -> tuple[int, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
    try:
        conn.request(
            "POST",
            "/api/v1/wal/apply",
            body=body,
            headers={"X-Primary-ID": primary, "Content-Encoding": "zstd"},
        )
        response = conn.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        conn.close()


def test_http_replica_with_mutual_tls_applies_batches_and_answers_400_and_409(
    wal_settings: Settings, pki: Path, tmp_path: Path
) -> None:
    payloads, model = mixed_payloads(60, seed=2)
    append_to_wal(wal_settings, payloads)
    state = ReplicaState(tmp_path / "http-replica", wal_settings)
    server_context = server_ssl_context(pki / "server.pem", pki / "server.key", pki / "ca.pem")
    server = ReplicaServer(
        state, auth=ApplyAuth(client_certificates=True), ssl_context=server_context
    )
    port = server.start()
    client = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    client.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    try:
        entries = wal_entries(payloads)
        gap = encode_batch(entries[10:20], "zstd", 3, "primary-h")
        status, body = _post(port, client, gap, "primary-h")
        assert (status, body["success"], body["expected_lsn"]) == (409, False, format_lsn(1))
        damaged = bytearray(encode_batch(entries[:5], "zstd", 3, "primary-h"))
        damaged[-3] ^= 0x10
        status, body = _post(port, client, bytes(damaged), "primary-h")
        assert (status, body["success"]) == (400, False)
        assert "checksum" in body["error"]
        assert state.last_applied_lsn == 0
        anonymous = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            _post(port, anonymous, gap, "primary-h")

        shipper = WalShipper(
            wal_settings, primary_id="primary-h", ssl_context=client, max_batch_entries=25
        )
        try:
            shipper.add_replica("h1", f"https://127.0.0.1:{port}")
            wait_until(lambda: state.last_applied_lsn == 60, timeout_s=60, what="HTTP replica")
            wait_until(shipper.caught_up, timeout_s=30, what="shipper caught up")
            stats = shipper.stats()
        finally:
            shipper.close()
        assert stats["stats"]["total_entries_shipped"] == 60
        assert stats["replicas"][0]["is_healthy"] is True
        assert_replica_equals(state, model)
        again = encode_batch(entries[:5], "zstd", 3, "primary-h")
        status, body = _post(port, client, again, "primary-h")
        assert (status, body["success"], body["entries_applied"]) == (200, True, 0)
        assert set(body) == {
            "success",
            "entries_applied",
            "compression_ratio",
            "decompression_time_ms",
        }
    finally:
        server.stop()
        state.close()


def test_a_facades_binary_door_takes_the_shipped_wal_over_themis_and_asks_for_a_gap(
    wal_settings: Settings, make_settings: MakeSettings
) -> None:
    payloads, model = mixed_payloads(60, seed=4)
    append_to_wal(wal_settings, payloads)
    keys = "writer-key:writer,admin-key:admin,ship-key:replicator"
    replica = FacadeThread(
        facade_settings(make_settings, binary_port=free_port(), api_keys=keys), replication=True
    )
    endpoint = f"themis://127.0.0.1:{replica.settings.facade.binary_port}"
    ship = with_overrides(wal_settings, {"compressed_wal_shipping": {"ship_key": "ship-key"}})
    state = replica.app[REPLICA_STATE]
    try:
        entries = wal_entries(payloads)
        gap = encode_batch(entries[10:20], "zstd", 3, "primary-t")
        target = targets_module.open_target(endpoint, ship, None)
        try:
            with pytest.raises(ReplicaRewind) as rewind:
                target.ship(gap, read_header(gap))
        finally:
            target.close()
        assert rewind.value.expected_lsn == 1
        wrong_key = targets_module.open_target(endpoint, wal_settings, None)  # no ship key
        with pytest.raises(ShipFailed, match=r"NOT_AUTHENTICATED|AUTHENTICATION_FAILED"):
            wrong_key.ship(gap, read_header(gap))

        shipper = WalShipper(ship, primary_id="primary-t", max_batch_entries=25)
        try:
            shipper.add_replica("t1", endpoint)
            wait_until(lambda: state.last_applied_lsn == 60, timeout_s=60, what="binary replica")
            wait_until(shipper.caught_up, timeout_s=30, what="shipper caught up")
            stats = shipper.stats()
        finally:
            shipper.close()
        assert stats["stats"]["total_entries_shipped"] == 60
        assert stats["replicas"][0]["is_healthy"] is True
        assert_replica_equals(state, model)
    finally:
        replica.close()
