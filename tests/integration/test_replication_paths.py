"""WAL shipping off the happy path: replicas that refuse, vanish, forget or start over.

The session broker is the primary and, for Kafka targets, the replica cluster too (each
test has its own topic namespace). HTTP replicas are real ``ReplicaServer`` instances
restarted on the same port; the facade runs in-process with its replication routes.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from pipeline.config import Settings, load_settings, with_overrides
from pipeline.errors import (
    ConfigError,
    Conflict,
    InvalidArgument,
    NotFound,
    ShipFailed,
    ThemisError,
)
from pipeline.facade.replication_routes import (
    SHIPPER,
    ReplicationControl,
)
from pipeline.kafka.clients import Producer
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.metrics import WalShipperMetrics
from pipeline.replication import (
    REPLICA_STATE,
    ApplyAuth,
    ReplicaServer,
    ReplicaState,
    WalShipper,
    run_kafka_applier,
)
from pipeline.replication import targets as targets_module
from pipeline.replication.replica import ApplyResult
from pipeline.replication.targets import KafkaTarget
from pipeline.replication.topics import (
    REPLICA_STATUS_TOPIC,
    REPLICA_TOPIC,
    replica_topic_specs,
)
from pipeline.ts.block import encode_block
from pipeline.ts.point import series_key
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.batch import Codec, Dictionary, encode_batch, read_header, train_dictionary
from pipeline.wal.entry import EntryType, WalEntry, encode_entry_record, format_lsn
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import ADMIN, KEYS, WRITER, FacadeThread, facade_settings
from tests.fixtures.support import wait_until
from tests.fixtures.wal import wal_shipping_settings

pytestmark = pytest.mark.integration

DIM = 4
SHIP_KEY = "ship-key"
SERIES = series_key("rep", "e")


@pytest.fixture
def wal_settings(make_settings: MakeSettings) -> Settings:
    return wal_shipping_settings(make_settings, dimension=DIM, ship_key=SHIP_KEY)


def _bootstrap(settings: Settings) -> str:
    assert settings.kafka.bootstrap_servers
    return settings.kafka.bootstrap_servers


# -- a workload: entries the replica must end up holding --------------------------------


def _payload(lsn: int) -> tuple[EntryType, bytes]:
    """Entry ``lsn``'s payload: a vector ``v<lsn>`` for odd LSNs, else a two-point block."""
    if lsn % 2:
        op = VectorOp(OpType.ADD, f"v{lsn}", np.full(DIM, lsn, dtype=np.float32), {"lsn": lsn})
        return EntryType.VECTOR_BATCH, encode_op_frame([op], DIM)
    ts = np.array([lsn * 10, lsn * 10 + 1], dtype=np.int64)
    return EntryType.TS_BLOCK, encode_block(SERIES, ts, ts / 4.0)


class Wal:
    """The primary's WAL as this test wrote it: real entries, and records that are not."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.records: list[int | None] = []  # per LSN - 1: the workload LSN, None = garbage

    def append(self, count: int, *, garbage_every: int = 0) -> None:
        config = {"bootstrap.servers": _bootstrap(self.settings), "enable.idempotence": True}
        with Producer(config) as producer:
            for _ in range(count):
                lsn = len(self.records) + 1
                if garbage_every and lsn % garbage_every == 0:
                    value, workload_lsn = b"not a WAL entry record", None
                else:
                    entry_type, payload = _payload(lsn)
                    now_ms = int(time.time() * 1000)
                    value, workload_lsn = encode_entry_record(entry_type, now_ms, payload), lsn
                producer.produce(self.settings.topic("wal"), value, partition=0)
                self.records.append(workload_lsn)
            assert producer.flush(30) == 0

    @property
    def end(self) -> int:
        return len(self.records)

    @property
    def entries(self) -> int:
        return sum(1 for lsn in self.records if lsn is not None)

    def assert_replica_holds_it(self, state: ReplicaState) -> None:
        lsns = [lsn for lsn in self.records if lsn is not None]
        assert state.last_applied_lsn == self.end
        assert state.vector_dump() == {f"v{n}": {"lsn": n} for n in lsns if n % 2}
        ts, values = state.query_ts(SERIES, 0, 10**9)
        want = [t for n in lsns if n % 2 == 0 for t in (n * 10, n * 10 + 1)]
        assert ts.tolist() == want
        np.testing.assert_array_equal(values, np.array(want) / 4.0)


def _dictionary() -> Dictionary:
    samples = [
        encode_entry_record(entry_type, i, payload + bytes([i % 251]) * (i % 40))
        for i, (entry_type, payload) in enumerate(_payload(n) for n in range(1, 601))
    ]
    return train_dictionary(samples, 4 * 1024)


class HttpReplica:
    """A ``ReplicaServer`` on a fixed port that can go away and come back (another state)."""

    def __init__(self, directory: Path, settings: Settings, keys: list[str]) -> None:
        self.settings = settings
        self.port = free_port()
        self.state: ReplicaState | None = None
        self.server: ReplicaServer | None = None
        self.start(directory, keys)

    def start(self, directory: Path, keys: list[str]) -> ReplicaState:
        self.state = ReplicaState(directory, self.settings)
        self.server = ReplicaServer(self.state, auth=ApplyAuth(keys), port=self.port)
        assert self.server.start() == self.port
        return self.state

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.state is not None:
            self.state.close()
        self.server = self.state = None


def _replica_row(shipper: WalShipper) -> dict[str, Any]:
    [row] = shipper.stats()["replicas"]
    return dict(row)


def _failures(metrics: WalShipperMetrics, replica: str) -> float:
    return (
        metrics.registry.get_sample_value("wal_shipper_failures_total", {"replica": replica}) or 0.0
    )


# -- the shipper's own refusals ---------------------------------------------------------


def test_shipper_refuses_bad_limits_codecs_ids_and_unknown_replicas(wal_settings: Settings) -> None:
    with pytest.raises(InvalidArgument, match=r"batch limits.*got 0, 1, -1"):
        WalShipper(wal_settings, max_batch_entries=0, max_batch_bytes=1, max_batch_interval_ms=-1)
    no_cluster = load_settings(path=Path("/dev/null"), env={})
    with pytest.raises(ConfigError, match="set KAFKA_BOOTSTRAP_SERVERS"):
        WalShipper(no_cluster)
    shipper = WalShipper(wal_settings, primary_id="p1")
    try:
        with pytest.raises(InvalidArgument, match=r"compression level must be 1\.\.22.*got 23"):
            shipper.configure_compression("zstd", 23)
        with pytest.raises(InvalidArgument, match="allowed: none, zstd"):
            shipper.configure_compression("brotli", 3)
        assert shipper.compression()[:2] == (Codec.ZSTD, 3)
        with pytest.raises(InvalidArgument, match="'bad id!' must be letters, digits"):
            shipper.add_replica("bad id!", "http://127.0.0.1:1")
        with pytest.raises(InvalidArgument, match="use kafka://host:port, themis"):
            shipper.add_replica("r1", "ftp://127.0.0.1:21")
        with pytest.raises(InvalidArgument, match="needs a host and a port: themis://"):
            shipper.add_replica("r1", "themis://127.0.0.1")
        with pytest.raises(NotFound, match=r"'r9' is not configured \(configured: none\)"):
            shipper.remove_replica("r9")
        shipper.add_replica("r1", f"http://127.0.0.1:{free_port()}")
        with pytest.raises(Conflict, match="'r1' is already configured; remove it first"):
            shipper.add_replica("r1", f"http://127.0.0.1:{free_port()}")
        with pytest.raises(NotFound, match=r"'r9' is not configured \(configured: r1\)"):
            shipper.confirmed_lsn("r9")
        assert shipper.confirmed_lsn("r1") == 0
        Wal(wal_settings).append(2)  # r1 listens nowhere: the link retries until closed
        wait_until(lambda: shipper.stats()["stats"]["failed_ships"] >= 2, timeout_s=30,
                   what="failed ships")  # fmt: skip
        assert shipper.caught_up() is False
        assert _replica_row(shipper)["lag_bytes"] > 0
    finally:
        shipper.close()
    stats = shipper.stats()  # a removed replica's counts stay in the totals
    assert stats["replicas"] == []
    assert stats["stats"]["failed_ships"] >= 2
    assert (stats["stats"]["total_batches"], stats["stats"]["total_bytes_shipped"]) == (0, 0)


def test_a_target_failing_unexpectedly_stops_its_link_and_the_shipper_says_so(
    wal_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: Any, data: bytes, header: Any) -> None:
        raise RuntimeError("replica client bug")

    monkeypatch.setattr(targets_module.HttpTarget, "ship", explode)
    Wal(wal_settings).append(3)
    shipper = WalShipper(wal_settings, primary_id="p1")
    try:
        shipper.add_replica("r1", f"http://127.0.0.1:{free_port()}")

        errors: list[str] = []

        def stopped() -> bool:
            try:
                shipper.caught_up()
            except ThemisError as exc:
                errors.append(str(exc))
                return True
            return False

        wait_until(stopped, timeout_s=30, what="the link to stop")
        assert errors == ["shipping to r1 stopped: replica client bug"]
        row = _replica_row(shipper)
        assert (row["is_healthy"], row["last_confirmed_lsn"]) == (False, format_lsn(0))
    finally:
        shipper.close()


# -- HTTP: a refusing, vanished, forgetful and new replica -------------------------------


def test_http_replica_refusing_then_down_then_without_dictionaries_then_new_converges(
    wal_settings: Settings, tmp_path: Path
) -> None:
    wal = Wal(wal_settings)
    wal.append(60, garbage_every=9)  # undecodable records ship as empty LSNs
    metrics = WalShipperMetrics()
    dictionary = _dictionary()
    replica = HttpReplica(tmp_path / "r1", wal_settings, ["not-the-ship-key"])
    shipper = WalShipper(
        wal_settings, primary_id="p1", metrics=metrics, dictionary=dictionary, max_batch_entries=25
    )
    try:
        shipper.add_replica("h1", f"http://127.0.0.1:{replica.port}")
        # 1. The replica refuses the key: the bytes reached it, nothing is confirmed.
        wait_until(lambda: _failures(metrics, "h1") >= 3, timeout_s=30, what="three refusals")
        assert _replica_row(shipper)["is_healthy"] is False
        assert metrics.registry.get_sample_value("wal_shipper_batches_total") == 0
        assert (metrics.registry.get_sample_value("wal_shipper_bytes_shipped_total") or 0) > 0
        replica.stop()
        state = replica.start(tmp_path / "r1", [SHIP_KEY])
        wait_until(lambda: state.last_applied_lsn == wal.end, timeout_s=30, what="first 60")
        wal.assert_replica_holds_it(state)
        stored = tmp_path / "r1" / "dictionaries" / str(dictionary.dictionary_id)
        assert stored.read_bytes() == dictionary.data  # carried by the first batch
        wait_until(lambda: _replica_row(shipper)["is_healthy"], timeout_s=30, what="healthy")

        # 2. The replica goes away; the link retries with backoff, nothing reaches it,
        #    and the lag it reports keeps up with a WAL that goes on growing.
        replica.stop()
        failures = _failures(metrics, "h1")
        wal.append(20)
        wait_until(lambda: _failures(metrics, "h1") >= failures + 2, timeout_s=30,
                   what="refused connections")  # fmt: skip
        assert shipper.caught_up() is False
        lag = _replica_row(shipper)["lag_bytes"]
        assert lag > 0
        wal.append(20)
        wait_until(lambda: _replica_row(shipper)["lag_bytes"] > lag, timeout_s=30,
                   what="the lag to grow while the replica is down")  # fmt: skip
        # 3. It comes back without its dictionaries: it asks, the batch is sent with it.
        shutil.rmtree(tmp_path / "r1" / "dictionaries")
        state = replica.start(tmp_path / "r1", [SHIP_KEY])
        wait_until(lambda: state.last_applied_lsn == wal.end, timeout_s=30, what="100 entries")
        assert stored.read_bytes() == dictionary.data
        wal.assert_replica_holds_it(state)

        # The replica applied the batch before the shipper read its answer and counted it.
        def shipped_count() -> int:
            return int(shipper.stats()["stats"]["total_entries_shipped"])

        wait_until(lambda: shipped_count() >= wal.entries, timeout_s=30, what="the count")
        shipped = shipped_count()
        assert shipped == wal.entries

        # 4. A new, empty replica behind the same address: a 409 rewinds to LSN 1.
        replica.stop()
        state = replica.start(tmp_path / "r2", [SHIP_KEY])
        wal.append(10)
        wait_until(lambda: state.last_applied_lsn == wal.end, timeout_s=30, what="all again")
        wal.assert_replica_holds_it(state)
        wait_until(shipper.caught_up, timeout_s=30, what="the shipper to see it caught up")
        stats = shipper.stats()
    finally:
        shipper.close()
        replica.stop()
    assert stats["stats"]["total_entries_shipped"] >= shipped + wal.entries
    assert stats["replicas"][0]["last_confirmed_lsn"] == format_lsn(wal.end)
    assert stats["replicas"][0]["is_healthy"] is True


def test_link_started_before_the_wal_topic_exists_ships_once_it_is_created(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(
        vector_auto_buffer={"dimension": DIM}, compressed_wal_shipping={"ship_key": SHIP_KEY}
    )
    replica = HttpReplica(tmp_path / "r1", settings, [SHIP_KEY])
    shipper = WalShipper(settings, primary_id="p1")
    try:
        shipper.add_replica("h1", f"http://127.0.0.1:{replica.port}")
        time.sleep(1.5)  # several rounds of the link's loop without a WAL topic
        assert shipper.caught_up() is False  # its end was never read
        assert shipper.confirmed_lsn("h1") == 0
        apply_topics(_bootstrap(settings), settings, [s for s in load_specs() if s.name == "wal"])
        wal = Wal(settings)
        wal.append(6)
        state = replica.state
        assert state is not None
        wait_until(lambda: state.last_applied_lsn == 6, timeout_s=60, what="the new WAL")
        wal.assert_replica_holds_it(state)
    finally:
        shipper.close()
        replica.stop()


# -- Kafka: the target, the status topic and the applier ---------------------------------


def _produce_status(settings: Settings, values: list[bytes]) -> None:
    with Producer({"bootstrap.servers": _bootstrap(settings)}) as producer:
        for value in values:
            producer.produce(settings.topic(REPLICA_STATUS_TOPIC), value, key=b"r1")
        assert producer.flush(30) == 0


def _gap(lsn: int) -> bytes:
    return orjson.dumps({"replica": "r1", "expected_lsn": format_lsn(lsn), "gap": True})


def test_kafka_target_reports_only_gaps_it_can_read_and_names_failed_deliveries(
    wal_settings: Settings,
) -> None:
    target = KafkaTarget(_bootstrap(wal_settings), wal_settings)
    try:
        # The status reader starts at the topic's end: report until it sees the latest.
        attempts = iter(range(1, 1000))

        def sees_the_latest() -> bool:
            lsn = next(attempts)
            _produce_status(wal_settings, [_gap(lsn)])
            time.sleep(0.6)
            return target.reported_gap() == lsn

        wait_until(sees_the_latest, timeout_s=30, what="the status reader")
        # What cannot be read reports no gap, whether the latest record or behind it.
        rounds = [
            [b"", b"{not json", b"[1, 2]", orjson.dumps({"gap": True, "expected_lsn": "zz"})],
            [orjson.dumps({"gap": True})],
            [orjson.dumps({"gap": False, "expected_lsn": format_lsn(4)})],
        ]
        seen: list[int | None] = []
        for values in rounds:
            _produce_status(wal_settings, values)
            for _ in range(2):
                time.sleep(0.55)
                seen.append(target.reported_gap())
        assert seen == [None] * 6
        _produce_status(wal_settings, [_gap(9)])
        wait_until(lambda: target.reported_gap() == 9, timeout_s=30, what="the gap at LSN 9")

        batch = encode_batch([WalEntry(1, EntryType.TS_BLOCK, 1, bytes(6000))], "none", 3, "p1")
        header = read_header(batch)
        with pytest.raises(ShipFailed, match=r"producing to .*\.wal\.replica failed"):
            target.ship(bytes(64 * 1024 * 1024 + 1), header)
        [spec] = [s for s in replica_topic_specs() if s.name == REPLICA_TOPIC]
        small = dataclasses.replace(spec, configs=spec.configs | {"max.message.bytes": "4096"})
        apply_topics(_bootstrap(wal_settings), wal_settings, [small])
        refusals: list[str] = []

        def refused() -> bool:  # the broker applies the new limit within moments
            try:
                target.ship(batch, header)
            except ShipFailed as exc:
                refusals.append(str(exc))
                return True
            return False

        wait_until(refused, timeout_s=30, what="the topic's smaller limit")
        assert "wal.replica: delivery failed" in refusals[0]
        assert "too large" in refusals[0].lower()
    finally:
        target.close()


def test_a_kafka_replicas_lag_counts_until_its_applier_reports_the_entries_applied(
    wal_settings: Settings, tmp_path: Path
) -> None:
    wal = Wal(wal_settings)
    wal.append(10)
    lags: list[int] = []
    shipper = WalShipper(
        wal_settings, primary_id="p1", on_queryable=lambda _replica, got: lags.extend(got)
    )
    try:
        shipper.add_replica("k1", f"kafka://{_bootstrap(wal_settings)}")
        wait_until(lambda: shipper.confirmed_lsn("k1") == 10, timeout_s=30, what="10 confirmed")
        # On the replica cluster, but no applier ran: nothing is queryable, the lag grows.
        wait_until(
            lambda: _replica_row(shipper)["lag_ms"] >= 300, timeout_s=30, what="lag past 300 ms"
        )
        assert (lags, _replica_row(shipper)["last_entry_lag_ms"]) == ([], 0)
        state = ReplicaState(tmp_path / "replica", wal_settings)
        run_kafka_applier(
            state,
            _bootstrap(wal_settings),
            wal_settings,
            "r1",
            stop=threading.Event(),
            until_caught_up=True,
        )
        wal.assert_replica_holds_it(state)
        state.close()
        wait_until(lambda: _replica_row(shipper)["lag_ms"] == 0, timeout_s=30, what="lag 0")
        row = _replica_row(shipper)
    finally:
        shipper.close()
    # Every entry was timed once, from its WAL timestamp to the applier's report.
    assert len(lags) == 10
    assert min(lags) >= 300
    assert row["last_entry_lag_ms"] == lags[-1]


def test_a_stale_gap_report_is_ignored_and_duplicates_reach_the_applier_as_such(
    wal_settings: Settings, tmp_path: Path
) -> None:
    wal = Wal(wal_settings)
    wal.append(12)
    shipper = WalShipper(wal_settings, primary_id="p1", max_batch_entries=100)
    try:
        shipper.add_replica("k1", f"kafka://{_bootstrap(wal_settings)}")
        wait_until(lambda: shipper.confirmed_lsn("k1") == 12, timeout_s=30, what="12 confirmed")
        shipped = shipper.stats()["stats"]["total_entries_shipped"]
        assert shipped == 12

        def entries_shipped() -> int:
            return int(shipper.stats()["stats"]["total_entries_shipped"])

        reported_at = [0.0]

        def resent() -> bool:  # the applier lost 5..12 (reported until the link reads it)
            if entries_shipped() == 12 + 8:
                return True
            if time.monotonic() - reported_at[0] > 2.0:
                _produce_status(wal_settings, [_gap(5)])
                reported_at[0] = time.monotonic()
            return False

        wait_until(resent, timeout_s=30, what="5..12 again")
        assert shipper.confirmed_lsn("k1") == 12
        _produce_status(wal_settings, [_gap(5)])  # the same report again, seconds later: stale
        time.sleep(1.5)
        assert entries_shipped() == 20
        assert shipper.confirmed_lsn("k1") == 12
    finally:
        shipper.close()
    state = ReplicaState(tmp_path / "replica", wal_settings)
    results: list[ApplyResult] = []
    stats = run_kafka_applier(
        state,
        _bootstrap(wal_settings),
        wal_settings,
        "r1",
        stop=threading.Event(),
        until_caught_up=True,
        on_result=results.append,
    )
    wal.assert_replica_holds_it(state)
    state.close()
    assert stats.duplicate_batches >= 1
    assert stats.entries_applied == sum(r.entries_applied for r in results) == 12
    assert (stats.corrupt_batches, stats.gaps) == (0, 0)
    assert sum(r.entries_skipped for r in results) == 8


# -- the facade's replication routes, in-process -----------------------------------------


class _Admin:
    """Calls to a facade with the key each route needs (writer for reads, else admin)."""

    def __init__(self, facade: FacadeThread) -> None:
        self.facade = facade
        self.port = facade.port
        self.app = facade.app

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = WRITER if path.startswith("/ts") or path.endswith("stats") else ADMIN
        status, answer, _ = self.facade.call(method, path, body, headers)
        return status, answer


def _compression(kind: object, level: object) -> dict[str, object]:
    return {"compression_type": kind, "compression_level": level}


def _replica(replica_id: str, endpoint: str) -> dict[str, str]:
    return {"replica_id": replica_id, "endpoint": endpoint}


def _shipper_of(control: ReplicationControl) -> WalShipper | None:
    return control.shipper


@pytest.fixture
def facade(make_settings: MakeSettings) -> Iterator[_Admin]:
    settings = facade_settings(make_settings, api_keys=f"{KEYS},{SHIP_KEY}:replicator")
    settings = with_overrides(settings, {"compressed_wal_shipping": {"ship_key": SHIP_KEY}})
    running = FacadeThread(settings, replication=True)
    try:
        yield _Admin(running)
    finally:
        running.close()


def test_facade_replication_routes_name_bad_fields_duplicates_and_unknown_replicas(
    facade: _Admin,
) -> None:
    config = "/api/v1/replication/config"
    replicas = "/api/v1/replication/replicas"
    control = facade.app[SHIPPER]
    status, stats = facade.call("GET", "/api/v1/replication/stats")
    assert (status, stats["replicas"], stats["stats"]["total_batches"]) == (200, [], 0)
    # Before a shipper exists the choice is kept for the one made later.
    assert facade.call("POST", config, {"compression_type": "none", "compression_level": 4}) == (
        200,
        {"success": True, "compression_type": "none", "compression_level": 4},
    )
    assert _shipper_of(control) is None
    refusals: list[tuple[str, object, int, str]] = [
        (config, [1], 400, "the request body must be a JSON object"),
        (config, _compression(5, 3), 400, "'compression_type' must be a str"),
        (config, _compression("zstd", True), 400, "'compression_level' must be a int"),
        (config, _compression("lz4", 3), 400, "must be 'zstd' or 'none'"),
        (config, _compression("zstd", 30), 400, "must be between 1 and 22"),
        (replicas, _replica("", "http://h:1"), 400, "'replica_id' must not be empty"),
        (replicas, _replica("r1", "ftp://h:1"), 400, "must start with kafka://"),
        (replicas, _replica("bad id!", "http://h:1"), 400, "must be letters, digits"),
    ]
    for path, body, status, message in refusals:
        got, answer = facade.call("POST", path, body)
        assert (got, answer["success"]) == (status, False), (path, body, answer)
        assert message in answer["error"], (path, body, answer)
    status, answer = facade.call("DELETE", replicas, {"replica_id": "self"})
    assert status == 404
    assert "'self' is not a replica" in answer["error"]
    # The refused add made the shipper, with the compression chosen before.
    assert control.shipper is not None
    assert control.shipper.compression()[:2] == (Codec.NONE, 4)
    assert control.shipper.stats()["replicas"] == []
    me = {"replica_id": "self", "endpoint": f"http://127.0.0.1:{facade.port}"}
    assert facade.call("POST", replicas, me)[0] == 200
    assert (
        facade.call("POST", config, {"compression_type": "zstd", "compression_level": 7})[0] == 200
    )
    assert control.shipper.compression()[:2] == (Codec.ZSTD, 7)
    status, answer = facade.call("POST", replicas, me)
    assert status == 409
    assert "already configured" in answer["error"]

    for i in range(3):  # durable direct writes append WAL entries, shipped to itself
        point = {"metric": "rep", "entity": "e", "timestamp_ms": 1000 + i, "value": i * 1.5}
        assert facade.call("POST", "/ts/put", point)[0] == 200
    state = facade.app[REPLICA_STATE]
    key = series_key("rep", "e")

    def replicated() -> bool:
        return key in state.series_keys() and state.query_ts(key, 0, 10**6)[0].size == 3

    wait_until(replicated, timeout_s=60, what="the facade's own replica to apply its WAL")
    ts, values = state.query_ts(key, 0, 10**6)
    assert (ts.tolist(), values.tolist()) == ([1000, 1001, 1002], [0.0, 1.5, 3.0])

    assert facade.call("DELETE", replicas, {"replica_id": "self"}) == (
        200,
        {"success": True, "replica_id": "self"},
    )
    assert facade.call("DELETE", replicas, {"replica_id": "self"})[0] == 404
    status, stats = facade.call("GET", "/api/v1/replication/stats")
    assert (status, stats["replicas"]) == (200, [])
    assert stats["stats"]["total_entries_shipped"] >= 3
