"""After a load through a real primary, the replica holds what the primary holds.

A ``themis worker`` (the primary) takes frames of points and vector operations (adds,
re-adds of a pk with a new vector, removes) in rounds while a :class:`WalShipper`
ships its WAL to a replica server on loopback. When the load has stopped and the
shipper reports every entry queryable (``lag_ms`` 0), the replica must answer as the
primary does: every series' points (against the primary's blocks topic, read into a
block store as the query processes read it), every live vector with its metadata
(against the worker's ``/vectors/dump``), and the top-k of probe vectors (against the
worker's ``/vectors/search``), each also equal to what was sent.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.kafka.topics import apply_topics
from pipeline.replication import ApplyAuth, ReplicaServer, ReplicaState, WalShipper
from pipeline.replication.topics import grow_wal_partitions
from pipeline.ts.point import series_key
from pipeline.ts.producer import TSProducer
from pipeline.ts.store import BlockStore
from pipeline.vectors.ops import OpType, VectorOp
from pipeline.vectors.producer import VectorProducer
from pipeline.wal.writer import topic_partition_count
from pipeline.worker import pages
from pipeline.worker.process import WorkerProcess
from tests.fixtures.broker import MakeSettings
from tests.fixtures.support import wait_until

KEY = "replica-after-load-key"
DIM = 16
SERIES = 12
ROUNDS = 10
POINTS_PER_ROUND = 150
ADDS_PER_ROUND = 30
K = 10
EF = 512  # above the live vectors: both indexes search (nearly) exhaustively
T0 = 1_702_645_200_000


@pytest.fixture
def load_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(
        ts_auto_buffer={"flush_interval_ms": 300},
        vector_auto_buffer={"dimension": DIM, "flush_interval_ms": 200, "ef_search": EF},
        compressed_wal_shipping={"apply_keys": KEY, "ship_key": KEY},
    )


def _page(worker: WorkerProcess, path: str, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    method = "GET" if data is None else "POST"
    request = urllib.request.Request(worker.url + path, data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _primary_top_k(worker: WorkerProcess, probe: np.ndarray) -> list[str]:
    body = {"vector": probe.tolist(), "k": K, "ef": EF}
    return [hit["pk"] for hit in _page(worker, pages.VECTORS_SEARCH, body)["results"]]


def _answers(worker: WorkerProcess, path: str, body: object = None) -> Any:
    """The page's JSON, or ``None`` while the worker does not answer yet."""
    worker.check_alive()
    try:
        return _page(worker, path, body)
    except OSError:
        return None


class Model:
    """What was sent: points per series, and the live vectors with their metadata."""

    def __init__(self) -> None:
        self.points: dict[str, tuple[list[int], list[float]]] = {}
        self.vectors: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}

    def top_k(self, probe: np.ndarray) -> list[str]:
        pks = sorted(self.vectors)
        matrix = np.array([self.vectors[pk][0] for pk in pks], dtype=np.float64)
        cosine = matrix @ probe / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(probe))
        return [pks[i] for i in np.argsort(-cosine, kind="stable")[:K]]


def _send_round(
    n: int, rng: np.random.Generator, ts: TSProducer, vectors: VectorProducer, model: Model
) -> None:
    """One round: ``POINTS_PER_ROUND`` points of every series in one put_arrays call, and
    vector adds, a re-add of an earlier pk with a new vector, and a remove."""
    arrays = []
    for s in range(SERIES):
        key = series_key(f"load_{s % 3}", f"host-{s}")
        stamps = T0 + (n * POINTS_PER_ROUND + np.arange(POINTS_PER_ROUND, dtype=np.int64)) * 1000
        values = np.round(rng.normal(50, 10, POINTS_PER_ROUND), 2)
        arrays.append((key, stamps, values))
        got_ts, got_vs = model.points.setdefault(key, ([], []))
        got_ts.extend(stamps.tolist())
        got_vs.extend(values.tolist())
    ts.put_arrays(arrays)
    ops = []
    for i in range(ADDS_PER_ROUND):
        pk, metadata = f"doc-{n}-{i}", {"round": n, "i": i}
        ops.append(VectorOp(OpType.ADD, pk, rng.normal(0, 1, DIM).astype(np.float32), metadata))
    if n:
        again = f"doc-{n - 1}-0"  # a new vector and metadata for an existing pk
        ops.append(VectorOp(OpType.ADD, again, rng.normal(0, 1, DIM).astype(np.float32), {"v": 2}))
        ops.append(VectorOp(OpType.REMOVE, f"doc-{n - 1}-1", None, {}))
    vectors.send_many(ops)
    for op in ops:
        if op.op is OpType.REMOVE:
            model.vectors.pop(op.pk, None)
        else:
            assert op.vector is not None
            model.vectors[op.pk] = (op.vector, dict(op.metadata))


def test_replica_equals_the_primary_after_a_load_of_points_adds_re_adds_and_removes(
    load_settings: Settings, tmp_path: Path
) -> None:
    settings = load_settings
    bootstrap = settings.kafka.bootstrap_servers
    assert bootstrap
    apply_topics(bootstrap, settings)
    # One WAL partition per input partition (topics/wal.yaml has 6, the inputs' count).
    inputs = topic_partition_count(bootstrap, settings.topic("vectors.ops"))
    assert grow_wal_partitions(bootstrap, settings, inputs)[1] == inputs
    state = ReplicaState(tmp_path / "replica", settings)
    server = ReplicaServer(state, auth=ApplyAuth([KEY]))
    port = server.start()
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    shipper = WalShipper(settings, primary_id="primary-load")
    rng = np.random.default_rng(17)
    model = Model()
    try:
        wait_until(
            lambda: _answers(worker, pages.TS_STATS) is not None,
            timeout_s=120,
            what="the worker's stats page",
        )
        shipper.add_replica("r1", f"http://127.0.0.1:{port}")
        with TSProducer(settings) as ts, VectorProducer(settings) as vectors:
            for n in range(ROUNDS):  # shipping runs all along
                _send_round(n, rng, ts, vectors, model)
                ts.flush()
                vectors.flush()
        points_sent = ROUNDS * SERIES * POINTS_PER_ROUND
        wait_until(
            lambda: _answers(worker, pages.TS_STATS)["points_flushed"] >= points_sent,
            timeout_s=60,
            what=f"all {points_sent} points durable on the primary",
        )
        expected_dump = {pk: metadata for pk, (_, metadata) in model.vectors.items()}
        wait_until(
            lambda: _answers(worker, pages.VECTORS_DUMP) == expected_dump,
            timeout_s=60,
            what="the primary's live vectors to be what was sent",
        )
        # A vector batch is searchable on the primary a moment before its WAL entry is
        # acknowledged, so the shipper can look caught up before that entry exists: wait
        # for the replica to hold every live vector, then for the WAL's end.
        wait_until(
            lambda: state.vector_dump() == expected_dump,
            timeout_s=60,
            what="the replica's live vectors to be what was sent",
        )
        wait_until(shipper.caught_up, timeout_s=60, what="the replica to confirm the WAL's end")
        wait_until(
            lambda: shipper.stats()["replicas"][0]["lag_ms"] == 0,
            timeout_s=30,
            what="lag_ms 0",
        )
        stats = shipper.stats()
        [row] = stats["replicas"]
        assert 0 < row["last_entry_lag_ms"] < 30_000
        # One WAL partition per input partition, each with its own LSNs, shipped on its
        # own; the rows per partition sum to the replica's and the shipper's totals.
        assert stats["stats"]["wal_partitions"] == inputs > 1
        rows = row["partitions"]
        confirmed = [int(r["last_confirmed_lsn"], 16) for r in rows]
        assert len(confirmed) == inputs
        assert sum(lsn > 0 for lsn in confirmed) > 1
        assert state.applied_lsns() == dict(enumerate(confirmed))
        assert sum(r["entries_shipped"] for r in rows) == stats["stats"]["total_entries_shipped"]
        assert sum(r["batches"] for r in rows) == stats["stats"]["total_batches"]
        probes = rng.normal(0, 1, (5, DIM)).astype(np.float32)
        primary_top = [_primary_top_k(worker, p) for p in probes]
    finally:
        shipper.close()
        worker.stop()
        server.stop()

    # Points: the primary's durable blocks, the replica's blocks and what was sent.
    primary_blocks = BlockStore(tmp_path / "primary-blocks.sqlite")
    primary_blocks.catch_up(bootstrap, settings.topic("ts.blocks"))
    assert sorted(primary_blocks.series_keys()) == state.series_keys() == sorted(model.points)
    for key, (sent_ts, sent_vs) in model.points.items():
        primary_ts, primary_vs = primary_blocks.query(key, 0, 2**62)
        replica_ts, replica_vs = state.query_ts(key, 0, 2**62)
        assert replica_ts.tolist() == primary_ts.tolist() == sent_ts, key
        assert replica_vs.tolist() == primary_vs.tolist() == sent_vs, key
    primary_blocks.close()

    # Vectors: every live pk with its metadata, each vector its own nearest, and top-k.
    assert state.vector_dump() == expected_dump
    for pk, (vector, _) in model.vectors.items():
        assert [hit.pk for hit in state.search(vector, 1, ef=EF)] == [pk]
    replica_top = [[hit.pk for hit in state.search(p, K, ef=EF)] for p in probes]
    assert replica_top == primary_top == [model.top_k(p) for p in probes]
    state.close()
