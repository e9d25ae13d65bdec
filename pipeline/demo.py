"""``themis demo``: the main job end to end on a local broker.

Brings up the broker (the one order of preference), applies the topic specs,
starts a worker, sends a sample load through the pipeline and prints what the
pipeline did. Each pipeline path adds its step here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Settings, child_env, load_settings
from pipeline.kafka.broker import running_broker
from pipeline.kafka.local_broker import LocalKafka, free_port
from pipeline.kafka.topics import apply_topics
from pipeline.ts.dataset import devops_dataset
from pipeline.ts.point import DataPoint, series_key
from pipeline.ts.producer import TSProducer
from pipeline.ts.reader import query
from pipeline.vectors.client import search as vector_search
from pipeline.vectors.producer import VectorProducer


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def start_worker_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """``themis worker`` as a child process with the same settings."""
    env = child_env(settings)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker", "-l", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM the worker, wait for a clean exit (it flushes and commits), SIGKILL late."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def _get_json(url: str, *, method: str = "GET") -> dict[str, Any] | None:
    try:
        request = urllib.request.Request(url, method=method)  # noqa: S310 - loopback worker
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback worker
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: {what} not ready after {timeout_s:.0f} s")
        time.sleep(0.2)


def demo_time_series(settings: Settings, worker_url: str) -> None:
    """Stream a devops-like load through the TS path; print buffer stats and a query."""
    series = [
        (series_key(name.split("{")[0], name.split("=")[1].rstrip("}")), ts, vs)
        for name, ts, vs in devops_dataset(50, 2000, seed=1)
    ]
    total_frames = sum(len(ts) for _, ts, _ in series)
    json_points = [
        DataPoint(
            "cpu_usage",
            f"server{i % 10:02d}",
            1_702_645_200_000 + 10_000 * (i // 10),
            round(40 + (i % 37) * 1.5, 1),
            {"datacenter": "eu-west-1"},
        )
        for i in range(1000)
    ]
    stats_before = _get_json(f"{worker_url}/ts/buffer/stats") or {}
    base = int(stats_before.get("points_buffered", 0))
    _say(f"time series: {total_frames} points in binary frames + {len(json_points)} JSON points")
    producer = TSProducer(settings)
    t0 = time.monotonic()
    producer.put_arrays(series)
    for point in json_points:
        producer.put(point)
    producer.flush()
    total = total_frames + len(json_points)
    _wait_for(
        lambda: (
            int((_get_json(f"{worker_url}/ts/buffer/stats") or {}).get("points_buffered", 0))
            >= base + total
        ),
        120,
        "points buffered by the worker",
    )
    print(f"    produced and buffered in {time.monotonic() - t0:.2f} s")
    _get_json(f"{worker_url}/ts/buffer/flush", method="POST")
    stats = _get_json(f"{worker_url}/ts/buffer/stats") or {}
    _say("TS buffer stats (GET /ts/buffer/stats on the worker)")
    for key in (
        "points_buffered",
        "points_flushed",
        "flush_count",
        "auto_flush_count",
        "manual_flush_count",
        "current_buffer_size",
        "current_buffer_memory",
        "avg_compression_ratio",
        "last_flush_time",
        "blocks_written",
        "dead_letters",
    ):
        print(f"    {key}: {stats.get(key)}")
    result = query(
        "cpu_usage", "server03", 0, 2**62, {"datacenter": "eu-west-1"}, settings=settings
    )
    _say("themis ts query --metric cpu_usage --entity server03 --tag datacenter=eu-west-1")
    print(f"    {len(result)} points; first: {result.to_list()[:3]}")


def demo_vectors(settings: Settings, worker_url: str) -> np.ndarray:
    """Send clustered embeddings with updates and removes; print stats and a search."""
    dim = settings.vector_auto_buffer.dimension
    rng = np.random.default_rng(3)
    centers = rng.normal(0, 1, (16, dim))
    labels = rng.integers(0, 16, 2000)
    vectors = (centers[labels] + rng.normal(0, 0.2, (2000, dim))).astype(np.float32)
    categories = ["technology", "science", "sports", "finance"]
    _say(f"vectors: 2000 ADDs ({dim} dimensions) in frames, 200 UPDATEs and 100 REMOVEs as JSON")
    producer = VectorProducer(settings)
    producer.add_many(
        (f"doc_{i:05d}", vectors[i], {"title": f"Document {i}", "category": categories[i % 4]})
        for i in range(2000)
    )
    for i in range(200):
        producer.update(
            f"doc_{i:05d}", vectors[i], {"title": f"Document {i} v2", "category": "updated"}
        )
    for i in range(1900, 2000):
        producer.remove(f"doc_{i:05d}")
    producer.flush()
    _wait_for(
        lambda: (
            int((_get_json(f"{worker_url}/vectors/buffer/stats") or {}).get("live_vectors", 0))
            == 1900
        ),
        120,
        "the vector index to hold 1900 live vectors",
    )
    stats = _get_json(f"{worker_url}/vectors/buffer/stats") or {}
    _say("vector buffer stats (GET /vectors/buffer/stats on the worker)")
    for key in (
        "vectors_buffered",
        "vectors_flushed",
        "flush_count",
        "current_buffer_size",
        "current_buffer_memory",
        "compression_type",
        "last_flush_time",
        "live_vectors",
    ):
        print(f"    {key}: {stats.get(key)}")
    hits = vector_search(vectors[42], 3, settings=settings)
    _say("search: the 3 nearest neighbours of doc_00042's vector")
    for hit in hits:
        print(f"    {hit.pk}  distance={hit.distance:.4f}  {hit.metadata}")
    probe: np.ndarray = vectors[42]
    return probe


def demo_replication(settings: Settings, probe: np.ndarray) -> None:
    """Start a replica cluster, ship the WAL zstd-compressed, apply it, compare answers."""
    from pipeline.wal.applier import ReplicaState, run_kafka_applier
    from pipeline.wal.shipper import WalShipper

    replica = LocalKafka("replica")
    record = replica.status() or replica.up()
    _say(f"replica cluster 'replica' at {record.bootstrap_servers}; shipping the WAL (zstd)")
    shipper = WalShipper(settings)
    try:
        shipper.add_replica("replica-1", f"kafka://{record.bootstrap_servers}")
        _wait_for(shipper.caught_up, 120, "the shipper to reach the WAL's end")
        stats = shipper.stats()
    finally:
        shipper.close()
    for key, value in stats["stats"].items():
        print(f"    {key}: {value}")
    for row in stats["replicas"]:
        print(
            f"    replica {row['replica_id']}: last_confirmed_lsn={row['last_confirmed_lsn']} "
            f"lag_bytes={row['lag_bytes']} healthy={row['is_healthy']}"
        )
    state = ReplicaState(settings.worker.data_dir / "replica-replica", settings)
    try:
        run_kafka_applier(
            state,
            record.bootstrap_servers,
            settings,
            "replica",
            stop=threading.Event(),
            until_caught_up=True,
        )
        key = series_key("cpu_usage", "server03", {"datacenter": "eu-west-1"})
        primary = query(
            "cpu_usage",
            "server03",
            0,
            2**62,
            {"datacenter": "eu-west-1"},
            settings=settings,
            include_buffered=False,
        )
        ts, vs = state.query_ts(key, 0, 2**62)
        same_ts = ts.tolist() == primary.timestamps.tolist()
        same_values = vs.tolist() == primary.values.tolist()
        replica_hits = [hit.pk for hit in state.search(probe, 3)]
        primary_hits = [hit.pk for hit in vector_search(probe, 3, settings=settings)]
        _say(f"replica applied up to LSN {state.status().get('last_applied_lsn')}")
        print(
            f"    ts query on the replica equals the primary's: {same_ts and same_values}"
            f" ({len(ts)} points)"
        )
        print(
            f"    live vectors on the replica: {len(state.vector_dump())}; "
            f"top-3 search equals the primary's: {replica_hits == primary_hits}"
        )
    finally:
        state.close()


def run_demo() -> int:
    """Run the demo; returns the process exit code."""
    t0 = time.monotonic()
    # SIGTERM ends the demo like Ctrl-C does, so the worker child is stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    settings = load_settings()
    handle = running_broker(settings)
    if handle is None:
        _say(f"starting local Kafka cluster {settings.kafka.cluster!r}")
        record = LocalKafka(settings.kafka.cluster).up()
        print(f"    broker at {record.bootstrap_servers}, started in {record.startup_seconds} s")
        bootstrap = record.bootstrap_servers
    else:
        bootstrap = handle.bootstrap_servers
        _say(f"using broker at {bootstrap} ({handle.source})")
    web_port = free_port(settings.worker.web_port)  # another worker may hold the default
    settings = load_settings(
        overrides={"kafka": {"bootstrap_servers": bootstrap}, "worker": {"web_port": web_port}}
    )
    _say("applying topic specs (topics/*.yaml)")
    for report in apply_topics(bootstrap, settings):
        print(f"    {report.topic}: {report.action}")
    log_path = settings.worker.data_dir / "demo-worker.log"
    _say(f"starting worker (log: {log_path})")
    worker = start_worker_process(settings, log_path)
    try:
        worker_url = f"http://127.0.0.1:{settings.worker.web_port}"
        _wait_for(lambda: _get_json(f"{worker_url}/ts/buffer/stats") is not None, 120, "worker")
        demo_time_series(settings, worker_url)
        probe = demo_vectors(settings, worker_url)
        demo_replication(settings, probe)
    finally:
        code = stop_worker_process(worker)
        _say(f"worker stopped (exit {code})")
    _say(f"demo finished in {time.monotonic() - t0:.1f} s; the broker keeps running")
    print(f"    stop it with: themis kafka down --name {settings.kafka.cluster}")
    return 0
