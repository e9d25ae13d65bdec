"""Nothing lost, nothing doubled: a SIGKILLed worker and a rebalancing consumer group."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from pipeline.config import Settings
from pipeline.kafka.local_broker import free_port
from pipeline.ts import TSProducer, series_key
from pipeline.ts.store import BlockStore
from tests.fixtures.support import settings_as_env, start_themis_worker, stop_process, wait_until
from tests.fixtures.worker import ts_stats

pytestmark = pytest.mark.integration

SERIES = 100


def _dataset(points_per_series: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    out = []
    for i in range(SERIES):
        ts = 1_600_000_000_000 + np.cumsum(rng.integers(9_500, 10_500, points_per_series))
        vs = np.round(np.cumsum(rng.normal(0, 1, points_per_series)), 2)
        out.append((series_key("load", f"host{i:03d}", {"rack": str(i % 4)}), ts, vs))
    return out


def _assert_store_holds_exactly(
    settings: Settings, tmp_path: Path, data: list[tuple[str, np.ndarray, np.ndarray]]
) -> None:
    store = BlockStore(tmp_path / "verify.sqlite")
    try:
        assert settings.kafka.bootstrap_servers
        store.catch_up(settings.kafka.bootstrap_servers, settings.topic("ts.blocks"))
        total = 0
        for key, ts, vs in data:
            got_ts, got_vs = store.query(key, -(2**62), 2**62)
            assert got_ts.tolist() == ts.tolist(), f"timestamps of {key} differ"
            assert got_vs.tolist() == vs.tolist(), f"values of {key} differ"
            total += got_ts.size
        assert total == sum(ts.size for _, ts, _ in data)
    finally:
        store.close()


def _durable_distinct(
    settings: Settings, tmp_path: Path, data: list[tuple[str, np.ndarray, np.ndarray]]
) -> int:
    store = BlockStore(tmp_path / "progress.sqlite")
    try:
        assert settings.kafka.bootstrap_servers
        store.catch_up(settings.kafka.bootstrap_servers, settings.topic("ts.blocks"))
        return sum(store.query(key, -(2**62), 2**62)[0].size for key, _, _ in data)
    finally:
        store.close()


Send = Callable[[TSProducer, list[tuple[str, np.ndarray, np.ndarray]], slice], None]


def _kill_mid_ingest_then_restart(topics: Settings, tmp_path: Path, send: Send, what: str) -> None:
    """A million points in ten rounds, SIGKILL after the fifth, a restart: all there once."""
    rounds, per_round = 10, 1_000
    data = _dataset(rounds * per_round)
    env = settings_as_env(topics) | {"THEMIS_TS_AUTO_BUFFER_FLUSH_INTERVAL_MS": "500"}
    producer = TSProducer(topics)
    worker = start_themis_worker(env, tmp_path / "worker1.log")
    port = topics.worker.web_port
    try:
        wait_until(lambda: bool(ts_stats(port)), timeout_s=60, what="worker web server")
        for r in range(rounds):
            send(producer, data, slice(r * per_round, (r + 1) * per_round))
            producer.flush()
            if r == 4:
                wait_until(
                    lambda: ts_stats(port).get("points_flushed", 0) >= 200_000,
                    timeout_s=60,
                    what="some points durable before the kill",
                )
                stop_process(worker, sig=signal.SIGKILL)
                assert ts_stats(port) == {}, "the worker still answers after SIGKILL"
    finally:
        stop_process(worker, sig=signal.SIGKILL)
        producer.close()

    restarted = start_themis_worker(env, tmp_path / "worker2.log")
    try:
        wait_until(
            lambda: _durable_distinct(topics, tmp_path, data) == SERIES * rounds * per_round,
            timeout_s=180,
            what=f"all 1,000,000 {what} durable after the restart",
        )
    finally:
        assert stop_process(restarted) == 0
    _assert_store_holds_exactly(topics, tmp_path, data)


def _send_frames(
    producer: TSProducer, data: list[tuple[str, np.ndarray, np.ndarray]], sl: slice
) -> None:
    producer.put_arrays((key, ts[sl], vs[sl]) for key, ts, vs in data)


def _send_json(
    producer: TSProducer, data: list[tuple[str, np.ndarray, np.ndarray]], sl: slice
) -> None:
    """One JSON point per record, keyed by its series, as a Kafka producer writes them."""
    for key, ts, vs in data:
        metric, entity, tags = json.loads(key)
        for t, v in zip(ts[sl].tolist(), vs[sl].tolist(), strict=True):
            point = {"metric": metric, "entity": entity, "timestamp_ms": t, "value": v}
            producer.send(orjson.dumps(point | {"tags": tags}), key=key.encode())


def test_sigkill_mid_ingest_of_a_million_points_loses_and_doubles_nothing(
    topics: Settings, tmp_path: Path
) -> None:
    _kill_mid_ingest_then_restart(topics, tmp_path, _send_frames, "points in frames")


def test_sigkill_mid_ingest_of_a_million_json_points_loses_and_doubles_nothing(
    topics: Settings, tmp_path: Path
) -> None:
    _kill_mid_ingest_then_restart(topics, tmp_path, _send_json, "JSON points")


def test_two_workers_split_partitions_and_a_rebalance_loses_and_doubles_nothing(
    topics: Settings, tmp_path: Path
) -> None:
    data = _dataset(2_000)
    env_a = settings_as_env(topics) | {"THEMIS_TS_AUTO_BUFFER_FLUSH_INTERVAL_MS": "300"}
    port_b = free_port()
    env_b = env_a | {"THEMIS_WORKER_WEB_PORT": str(port_b)}
    producer = TSProducer(topics)
    a = start_themis_worker(env_a, tmp_path / "a.log")
    b = None
    try:
        wait_until(lambda: bool(ts_stats(topics.worker.web_port)), timeout_s=60, what="worker A")
        for r in range(4):
            sl = slice(r * 500, (r + 1) * 500)
            producer.put_arrays((key, ts[sl], vs[sl]) for key, ts, vs in data)
            producer.flush()
            if r == 0:
                b = start_themis_worker(env_b, tmp_path / "b.log")
                wait_until(
                    lambda: (
                        len(ts_stats(port_b).get("assigned_partitions", [])) == 1
                        and len(ts_stats(topics.worker.web_port).get("assigned_partitions", []))
                        == 1
                    ),
                    timeout_s=60,
                    what="workers A and B to own one partition each",
                )
            if r == 2:
                wait_until(
                    lambda: ts_stats(port_b).get("points_buffered", 0) > 0,
                    timeout_s=60,
                    what="worker B to own a partition",
                )
                assert ts_stats(topics.worker.web_port).get("points_buffered", 0) > 0
                assert stop_process(a) == 0  # A leaves: B takes over its partition
        wait_until(
            lambda: _durable_distinct(topics, tmp_path, data) == SERIES * 2_000,
            timeout_s=120,
            what="every point durable after the rebalance",
        )
    finally:
        producer.close()
        stop_process(a)
        if b is not None:
            assert stop_process(b) == 0
    _assert_store_holds_exactly(topics, tmp_path, data)


def test_a_replacement_worker_consumes_within_15_s_of_a_sigkill(
    topics: Settings, tmp_path: Path
) -> None:
    env = settings_as_env(topics) | {"THEMIS_TS_AUTO_BUFFER_FLUSH_INTERVAL_MS": "500"}
    producer = TSProducer(topics)
    producer.put({"metric": "beat", "entity": "e", "timestamp_ms": 1, "value": 1.0})
    producer.flush()
    port = topics.worker.web_port
    first = start_themis_worker(env, tmp_path / "worker1.log")
    try:
        wait_until(
            lambda: ts_stats(port).get("points_buffered", 0) >= 1,
            timeout_s=60,
            what="the first worker consuming",
        )
    finally:
        stop_process(first, sig=signal.SIGKILL)
    killed = time.monotonic()
    replacement = start_themis_worker(env, tmp_path / "worker2.log")
    try:
        producer.put({"metric": "beat", "entity": "e", "timestamp_ms": 2, "value": 2.0})
        producer.flush()
        wait_until(
            lambda: ts_stats(port).get("points_buffered", 0) >= 1,
            timeout_s=60,
            what="the replacement consuming",
        )
        assert time.monotonic() - killed < 15.0
    finally:
        producer.close()
        assert stop_process(replacement) == 0
