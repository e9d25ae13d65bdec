"""``themis demo``: the main job end to end on a local broker, driven through the facade.

Brings up the broker (the one order of preference), applies the topic specs, starts a
worker and the HTTP facade as child processes (:mod:`pipeline.worker.process`), sends a
sample load (time series and vectors) through the facade and the producers, prints the
facade's stats and answers, then ships the WAL zstd-compressed to a replica cluster and
shows that the replica answers the same. :func:`run_demo` is what ``themis demo`` runs.
"""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
from confluent_kafka import TopicPartition

from pipeline.config import Settings, child_env, with_overrides
from pipeline.kafka.broker import running_broker
from pipeline.kafka.consumer import open_consumer
from pipeline.kafka.local_broker import LocalKafka, free_port
from pipeline.kafka.topics import apply_topics
from pipeline.ts.dataset import devops_dataset
from pipeline.ts.point import series_key
from pipeline.ts.producer import TSProducer
from pipeline.vectors.producer import VectorProducer
from pipeline.worker.process import ChildProcess, WorkerProcess, themis_command

__all__ = ["FacadeClient", "run_demo"]


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


class FacadeClient:
    """Tiny JSON client for the demo's facade (loopback, one API key per role)."""

    def __init__(self, port: int, writer_key: str, admin_key: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.writer_key = writer_key
        self.admin_key = admin_key

    def call(
        self, method: str, path: str, body: Any = None, *, admin: bool = False, raw: bytes = b""
    ) -> tuple[int, dict[str, Any]]:
        data = raw or (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(  # noqa: S310 - loopback facade
            self.base + path, data=data, method=method
        )
        request.add_header(
            "Authorization", f"Bearer {self.admin_key if admin else self.writer_key}"
        )
        request.add_header("Content-Type", "application/x-ndjson" if raw else "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def answers(self) -> bool:
        try:
            return self.call("GET", "/ts/buffer/stats")[0] == 200
        except OSError:
            return False


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: {what} not ready after {timeout_s:.0f} s")
        time.sleep(0.2)


def _print_fields(body: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        print(f"    {key}: {body.get(key)}")


def demo_time_series(settings: Settings, facade: FacadeClient) -> None:
    """100,000 points in frames (producer) and 1,000 JSON points through the facade."""
    series = [
        (series_key(name.split("{")[0], name.split("=")[1].rstrip("}")), ts, vs)
        for name, ts, vs in devops_dataset(50, 2000, seed=1)
    ]
    total_frames = sum(len(ts) for _, ts, _ in series)
    json_points = [
        {
            "metric": "cpu_usage",
            "entity": f"server{i % 10:02d}",
            "timestamp_ms": 1_702_645_200_000 + 10_000 * (i // 10),
            "value": round(40 + (i % 37) * 1.5, 1),
            "tags": {"datacenter": "eu-west-1"},
        }
        for i in range(1000)
    ]
    _say(f"time series: {total_frames} points as binary frames (TSProducer), 1000 JSON points")
    t0 = time.monotonic()
    with TSProducer(settings) as producer:
        producer.put_arrays(series)
    status, body = facade.call("POST", "/ts/put/buffered", json_points[0])
    print(f"    POST /ts/put/buffered -> {status} {body}")
    ndjson = "\n".join(json.dumps(p) for p in json_points[1:]).encode()
    status, body = facade.call("POST", "/ts/put/buffered/batch", raw=ndjson)
    print(f"    POST /ts/put/buffered/batch (999 points, NDJSON) -> {status} {body}")
    _wait_for(
        lambda: (
            int(facade.call("GET", "/ts/buffer/stats")[1].get("points_buffered", 0))
            >= total_frames + len(json_points)
        ),
        120,
        "the worker to buffer every point",
    )
    print(f"    sent and buffered in {time.monotonic() - t0:.2f} s")
    status, body = facade.call("POST", "/ts/buffer/flush", {}, admin=True)
    print(f"    POST /ts/buffer/flush (admin) -> {status}")
    _say("GET /ts/buffer/stats")
    _print_fields(
        facade.call("GET", "/ts/buffer/stats")[1],
        (
            "points_buffered",
            "points_flushed",
            "flush_count",
            "auto_flush_count",
            "manual_flush_count",
            "current_buffer_size",
            "current_buffer_memory",
            "avg_compression_ratio",
            "last_flush_time",
        ),
    )
    path = "/ts/query?metric=cpu_usage&entity=server03&tag=datacenter:eu-west-1"
    status, body = facade.call("GET", path)
    points = body.get("points", [])
    _say(f"GET {path}")
    print(f"    {len(points)} points; first: {points[:3]}")


def demo_vectors(settings: Settings, facade: FacadeClient) -> np.ndarray:
    """2000 ADDs in frames, UPDATEs and REMOVEs through the facade; stats and a search."""
    dim = settings.vector_auto_buffer.dimension
    rng = np.random.default_rng(3)
    centers = rng.normal(0, 1, (16, dim))
    vectors = (centers[rng.integers(0, 16, 2000)] + rng.normal(0, 0.2, (2000, dim))).astype(
        np.float32
    )
    categories = ["technology", "science", "sports", "finance"]
    _say(f"vectors: 2000 ADDs ({dim} dimensions) as frames, 50 UPDATEs and 100 REMOVEs via HTTP")
    with VectorProducer(settings) as producer:
        producer.add_many(
            (f"doc_{i:05d}", vectors[i], {"title": f"Document {i}", "category": categories[i % 4]})
            for i in range(2000)
        )
    _wait_for(
        lambda: facade.call("GET", "/vectors/buffer/stats")[1].get("vectors_flushed", 0) >= 2000,
        120,
        "the worker to index the ADDs",
    )
    for i in range(50):
        body = {
            "pk": f"doc_{i:05d}",
            "vector": vectors[i].tolist(),
            "metadata": {"title": f"Document {i} v2", "category": "updated"},
        }
        facade.call("POST", "/vectors/update/buffered", body)
    for i in range(1900, 2000):
        facade.call("DELETE", "/vectors/remove/buffered", {"pk": f"doc_{i:05d}"})
    # The facade's answers mean "on the topic"; wait until the worker consumed them all.
    _wait_for(
        lambda: facade.call("GET", "/vectors/buffer/stats")[1].get("vectors_buffered", 0) >= 2150,
        60,
        "the worker to receive the UPDATEs and REMOVEs",
    )
    facade.call("POST", "/vectors/buffer/flush", {}, admin=True)
    _wait_for(
        lambda: facade.call("GET", "/vectors/buffer/stats")[1].get("current_buffer_size") == 0,
        60,
        "the vector buffer to drain",
    )
    _say("GET /vectors/buffer/stats")
    _print_fields(
        facade.call("GET", "/vectors/buffer/stats")[1],
        (
            "vectors_buffered",
            "vectors_flushed",
            "flush_count",
            "current_buffer_size",
            "current_buffer_memory",
            "compression_type",
            "last_flush_time",
        ),
    )
    _, body = facade.call("POST", "/vectors/search", {"vector": vectors[42].tolist(), "k": 3})
    _say("POST /vectors/search: the 3 nearest neighbours of doc_00042's vector")
    for hit in body.get("results", []):
        print(f"    {hit['pk']}  distance={hit['distance']:.4f}  {hit['metadata']}")
    probe: np.ndarray = vectors[42]
    return probe


def _wal_end_lsns(settings: Settings) -> dict[int, int]:
    """Per WAL partition, the LSN of its last entry now (high watermark: offset + 1)."""
    topic = settings.topic("wal")
    with open_consumer(settings.kafka.bootstrap_servers or "", "themis-demo") as consumer:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1])
            for p in partitions
        }


def demo_replication(settings: Settings, facade: FacadeClient, probe: np.ndarray) -> None:
    """Add a replica cluster through the facade, ship the WAL, apply it, compare answers."""
    from pipeline.replication import ReplicaState, run_kafka_applier

    replica = LocalKafka("replica")
    record = replica.status() or replica.up()
    _say(f"replica cluster 'replica' at {record.bootstrap_servers}")
    endpoint = {"replica_id": "replica-1", "endpoint": f"kafka://{record.bootstrap_servers}"}
    status, _ = facade.call("POST", "/api/v1/replication/replicas", endpoint, admin=True)
    print(f"    POST /api/v1/replication/replicas (admin) -> {status}")

    wal_ends = _wal_end_lsns(settings)

    def caught_up() -> bool:
        rows = facade.call("GET", "/api/v1/replication/stats")[1].get("replicas", [])
        confirmed = {
            int(row["partition"]): int(row["last_confirmed_lsn"], 16)
            for row in (rows[0].get("partitions", []) if rows else [])
        }
        return bool(rows) and all(confirmed.get(p, 0) >= end for p, end in wal_ends.items())

    _wait_for(caught_up, 120, "the replica to confirm the WAL's end")
    stats = facade.call("GET", "/api/v1/replication/stats")[1]
    _say("GET /api/v1/replication/stats (WAL shipped zstd-compressed)")
    _print_fields(stats["stats"], tuple(stats["stats"]))
    for row in stats["replicas"]:
        print(
            f"    replica {row['replica_id']}: last_confirmed_lsn={row['last_confirmed_lsn']} "
            f"lag_bytes={row['lag_bytes']} lag_ms={row['lag_ms']} healthy={row['is_healthy']}"
        )
    facade.call("DELETE", "/api/v1/replication/replicas", {"replica_id": "replica-1"}, admin=True)
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
        path = "/ts/query?metric=cpu_usage&entity=server03&tag=datacenter:eu-west-1"
        primary_points = facade.call("GET", path)[1].get("points", [])
        key = series_key("cpu_usage", "server03", {"datacenter": "eu-west-1"})
        ts, vs = state.query_ts(key, -(2**62), 2**62)
        primary_pairs = [(p["timestamp_ms"], p["value"]) for p in primary_points]
        same = list(zip(ts.tolist(), vs.tolist(), strict=True)) == primary_pairs
        replica_hits = [hit.pk for hit in state.search(probe, 3)]
        primary = facade.call("POST", "/vectors/search", {"vector": probe.tolist(), "k": 3})[1]
        primary_hits = [hit["pk"] for hit in primary.get("results", [])]
        _say(f"replica applied up to LSN {state.status().get('last_applied_lsn')}")
        print(f"    ts query on the replica equals the primary's: {same} ({len(ts)} points)")
        print(
            f"    live vectors on the replica: {len(state.vector_dump())}; "
            f"top-3 search equals the primary's: {replica_hits == primary_hits}"
        )
    finally:
        state.close()


def run_demo(settings: Settings) -> int:
    """Run the demo with the settings ``themis`` loaded; returns the process exit code."""
    t0 = time.monotonic()
    # SIGTERM ends the demo like Ctrl-C does, so the children are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    handle = running_broker(settings)
    if handle is None:
        _say(f"starting local Kafka cluster {settings.kafka.cluster!r}")
        record = LocalKafka(settings.kafka.cluster).up()
        print(f"    broker at {record.bootstrap_servers}, started in {record.startup_seconds} s")
        bootstrap = record.bootstrap_servers
    else:
        bootstrap = handle.bootstrap_servers
        _say(f"using broker at {bootstrap} ({handle.source})")
    writer_key, admin_key = secrets.token_hex(16), secrets.token_hex(16)
    settings = with_overrides(
        settings,
        {
            "kafka": {"bootstrap_servers": bootstrap},
            # other workers or facades may hold the default ports
            "worker": {"web_port": free_port(settings.worker.web_port)},
            "facade": {
                "port": free_port(settings.facade.port),
                "api_keys": f"{writer_key}:writer,{admin_key}:admin",
            },
        },
    )
    _say("applying topic specs (topics/*.yaml)")
    for report in apply_topics(bootstrap, settings):
        print(f"    {report.topic}: {report.action}")
    logs = settings.worker.data_dir
    _say(f"starting worker and facade (logs: {logs}/demo-*.log)")
    worker = WorkerProcess(settings, logs / "demo-worker.log", loglevel="info")
    facade_proc = ChildProcess(
        [*themis_command(), "facade"], child_env(settings), logs / "demo-facade.log"
    )
    facade = FacadeClient(settings.facade.port, writer_key, admin_key)
    try:
        _wait_for(facade.answers, 120, "the facade and the worker")
        print(
            f"    facade at http://127.0.0.1:{settings.facade.port} (keys generated for this run)"
        )
        demo_time_series(settings, facade)
        probe = demo_vectors(settings, facade)
        demo_replication(settings, facade, probe)
    finally:
        _say(f"facade stopped (exit {facade_proc.stop()})")
        _say(f"worker stopped (exit {worker.stop()})")
    _say(f"demo finished in {time.monotonic() - t0:.1f} s; the brokers keep running")
    print(
        f"    stop them with: themis kafka down --name {settings.kafka.cluster}; "
        "themis kafka down --name replica"
    )
    return 0
