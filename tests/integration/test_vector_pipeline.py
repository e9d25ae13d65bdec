"""Vector operations through Kafka and the worker into HNSW shards, searched back."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.ingest.deadletter import REASON
from pipeline.kafka.clients import Producer
from pipeline.kafka.consumer import open_consumer
from pipeline.vectors import OpType, VectorOp, VectorProducer
from pipeline.worker import search
from tests.fixtures.broker import MakeSettings
from tests.fixtures.support import settings_as_env, start_themis_worker, stop_process, wait_until
from tests.fixtures.worker import vector_dump, worker_answers, worker_page

pytestmark = pytest.mark.integration

DIM = 32


@pytest.fixture
def vec_settings(make_settings: MakeSettings) -> Settings:
    from pipeline.kafka.topics import apply_topics

    settings = make_settings(
        vector_auto_buffer={"dimension": DIM, "snapshot_interval_ms": 300, "flush_interval_ms": 200}
    )
    assert settings.kafka.bootstrap_servers
    apply_topics(settings.kafka.bootstrap_servers, settings, partitions_override=2)
    return settings


def _clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (8, DIM))
    return (centers[rng.integers(0, 8, n)] + rng.normal(0, 0.15, (n, DIM))).astype(np.float32)


def _answers(settings: Settings) -> bool:
    return worker_answers(settings)


def _dump(settings: Settings) -> dict[str, Any]:
    return vector_dump(settings)


def test_adds_updates_removes_are_searchable_and_bad_ops_are_dead_lettered(
    vec_settings: Settings, tmp_path: Path
) -> None:
    vectors = _clustered(300, 1)
    producer = VectorProducer(vec_settings)
    producer.add_many((f"doc{i}", vectors[i], {"n": i, "v": 1}) for i in range(200))
    for i in range(200, 300):
        producer.add(f"doc{i}", vectors[i], {"n": i, "v": 1})
    updated = _clustered(50, 2)
    for i in range(50):
        producer.update(f"doc{i}", updated[i], {"n": i, "v": 2})
    for i in range(250, 280):
        producer.remove(f"doc{i}")
    producer.add("late", vectors[0] * -1, {"v": 1})
    producer.remove("late")  # ADD then REMOVE -> absent
    producer.remove("again")
    producer.add("again", vectors[1], {"v": 3})  # REMOVE then ADD -> present
    producer.close()  # raises unless the broker acknowledged every operation
    bootstrap = vec_settings.kafka.bootstrap_servers
    assert bootstrap
    bad = [
        b'{"op": "add", "pk": "short", "vector": [1.0, 2.0]}',
        b'{"op": "add", "pk": "", "vector": [' + b",".join([b"0.5"] * DIM) + b"]}",
        b'{"op": "explode", "pk": "x"}',
    ]
    with Producer({"bootstrap.servers": bootstrap}) as raw:
        for value in bad:
            raw.produce(vec_settings.topic("vectors.ops"), value, key=b"bad")
        assert raw.flush(10) == 0

    worker = start_themis_worker(settings_as_env(vec_settings), tmp_path / "worker.log")
    try:
        wait_until(lambda: _answers(vec_settings), timeout_s=60, what="worker web server")
        expected = {f"doc{i}" for i in range(300)} - {f"doc{i}" for i in range(250, 280)}
        expected.add("again")
        wait_until(
            lambda: set(_dump(vec_settings)) == expected, timeout_s=60, what="the index to settle"
        )
        dump = _dump(vec_settings)
        assert all(dump[f"doc{i}"]["v"] == 2 for i in range(50))
        assert dump["again"] == {"v": 3}
        for i in (0, 7, 49):  # updated: the new vector is found, the old one is gone
            top = search(updated[i], 1, settings=vec_settings)[0]
            assert top.pk == f"doc{i}"
            assert top.distance < 1e-4
            assert top.metadata == {"n": i, "v": 2}
        for i in range(250, 280):
            hits = search(vectors[i], 10, settings=vec_settings)
            assert f"doc{i}" not in {h.pk for h in hits}
        everything = search(vectors[100], 10_000, settings=vec_settings)
        assert {h.pk for h in everything} == expected
        only = search(vectors[100], 5, filter={"n": 123}, settings=vec_settings)
        assert [h.pk for h in only] == ["doc123"]
        stats = worker_page(vec_settings, "/vectors/buffer/stats")
        assert list(stats)[:7] == [
            "vectors_buffered",
            "vectors_flushed",
            "flush_count",
            "current_buffer_size",
            "current_buffer_memory",
            "compression_type",
            "last_flush_time",
        ]
        assert stats["vectors_buffered"] == 200 + 100 + 50 + 30 + 4
        assert stats["dead_letters"] == 3
        with urllib.request.urlopen(
            f"http://127.0.0.1:{vec_settings.worker.web_port}/metrics", timeout=5
        ) as resp:
            exposition = resp.read().decode()
        for name in (
            "vector_auto_buffer_vectors_buffered_total 384.0",
            "vector_auto_buffer_vectors_flushed_total",
            "vector_auto_buffer_current_size",
            "vector_auto_buffer_flush_duration_seconds_bucket",
            "vector_search_latency_seconds_bucket",
        ):
            assert name in exposition
    finally:
        assert stop_process(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    reasons = []
    with open_consumer(bootstrap, "dlq") as consumer:
        consumer.subscribe([vec_settings.topic("deadletter")])
        for _ in range(100):
            msg = consumer.poll(0.3)
            if msg is not None and not msg.error():
                reasons.append(dict(cast("list[tuple[str, bytes]]", msg.headers() or []))[REASON])
            if len(reasons) == 3:
                break
    assert sorted(reasons) == [
        b"field 'op' must be one of 'add', 'update', 'remove'; got 'explode'",
        b"field 'pk' must be a non-empty string",
        b"vector has 2 dimensions; the index has 32",
    ]


def test_sigkill_mid_ingest_of_20000_mixed_ops_then_restart_equals_the_offset_order_model(
    vec_settings: Settings, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    pool = _clustered(4_000, 3)
    ops: list[VectorOp] = []
    for n in range(20_000):
        pk = f"p{int(rng.integers(0, 3_000))}"
        kind = rng.random()
        if kind < 0.6:
            ops.append(VectorOp(OpType.ADD, pk, pool[n % 4_000], {"n": n}))
        elif kind < 0.85:
            ops.append(VectorOp(OpType.UPDATE, pk, pool[(n * 7) % 4_000], {"n": n}))
        else:
            ops.append(VectorOp(OpType.REMOVE, pk, None, {}))
    model: dict[str, VectorOp] = {}
    for op in ops:  # offset order per pk == the order sent
        if op.op is OpType.REMOVE:
            model.pop(op.pk, None)
        else:
            model[op.pk] = op

    env = settings_as_env(vec_settings)
    producer = VectorProducer(vec_settings)
    worker = start_themis_worker(env, tmp_path / "worker1.log")
    try:
        wait_until(lambda: _answers(vec_settings), timeout_s=60, what="worker web server")
        for start in range(0, 20_000, 1_000):
            chunk = ops[start : start + 1_000]
            if start % 2000:
                producer.send_many(chunk)
            else:
                for op in chunk:
                    producer.send_op(op)
            producer.flush()
            if start == 8_000:
                wait_until(
                    lambda: (
                        worker_page(vec_settings, "/vectors/buffer/stats")["vectors_buffered"]
                        > 5_000
                    ),
                    timeout_s=60,
                    what="ingest under way",
                )
                # Killed while running: it had not exited on its own.
                assert stop_process(worker, sig=signal.SIGKILL) == -signal.SIGKILL
    finally:
        stop_process(worker, sig=signal.SIGKILL)
        producer.close()
    assert producer.ops_sent == 20_000

    restarted = start_themis_worker(env, tmp_path / "worker2.log")
    try:
        wait_until(lambda: _answers(vec_settings), timeout_s=60, what="restarted worker")
        wait_until(
            lambda: (
                {pk: m["n"] for pk, m in _dump(vec_settings).items()}
                == {pk: op.metadata["n"] for pk, op in model.items()}
            ),
            timeout_s=120,
            what="the index to equal the model",
        )
        for pk in sorted(model)[:40]:
            vector = model[pk].vector
            assert vector is not None
            # Several pks may hold the same pool vector: ask for enough neighbours.
            hits = search(vector, 50, settings=vec_settings)
            assert pk in {h.pk for h in hits if h.distance < 1e-4}
    finally:
        assert stop_process(restarted) == 0
