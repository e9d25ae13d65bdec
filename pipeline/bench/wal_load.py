"""The load phase of ``themis bench wal``: replication lag while the primary works hard.

:func:`measure_load` first measures the primary's own maximum (frames through a
``themis worker``, pre-produced, as :mod:`pipeline.bench.ts_pipeline` measures
``pipeline_points_per_s_frames``), then runs a second worker for
:attr:`LoadSizes.seconds` seconds while a load generator (a child process, so that its
CPU does not share the shipper's interpreter) sends binary frames at
:attr:`LoadSizes.share` of that maximum and a steady :attr:`LoadSizes.vectors_per_s`
vector operations (adds, with one remove in :data:`REMOVE_EVERY`). The worker writes
its blocks and vector batches to the WAL; a :class:`~pipeline.replication.WalShipper` in
this process ships them over the binary protocol to ``themis wal serve`` (a child
process with its own replica state).

Lag is measured as ``lag_ms`` of ``/api/v1/replication/stats`` counts it
(:mod:`pipeline.replication.link`): for every WAL entry, from its WAL timestamp (stamped
by the worker when it appends the entry, just before the broker acknowledges it) to the
moment the replica's answer says it is applied, and so queryable.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from pipeline.bench.harness import (
    BenchBroker,
    BenchSize,
    bench_broker,
    exited,
    progress,
    rounded,
    wait_for,
    worker_page,
    worker_running,
)
from pipeline.bench.ts_codec import fleet
from pipeline.bench.ts_pipeline import measure_pipeline, produce_frames
from pipeline.bench.ts_sizes import SIZES as TS_SIZES
from pipeline.bench.wal_streams import DIMENSION
from pipeline.config import Settings, child_env, with_overrides
from pipeline.errors import BenchmarkFailed
from pipeline.kafka.clients import AdminClient
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics
from pipeline.replication import WalShipper
from pipeline.ts.point import series_key
from pipeline.ts.producer import TSProducer
from pipeline.vectors.ops import OpType, VectorOp
from pipeline.vectors.producer import VectorProducer
from pipeline.worker import pages
from pipeline.worker.process import ChildProcess, themis_command

__all__ = ["DEFINITIONS", "LOAD_SIZES", "REMOVE_EVERY", "LoadSizes", "measure_load"]

REMOVE_EVERY: Final = 20
"""One vector operation in this many removes a pk added earlier; the rest are adds."""
_PARTITION_FIGURES: Final = (
    "partition",
    "last_confirmed_lsn",
    "entries_shipped",
    "batches",
    "bytes_shipped",
    "last_entry_lag_ms",
)
"""What ``load.shipping_partitions`` shows of each WAL partition's replication stats."""
_TICK_S: Final = 0.05
_REPLICA_KEY: Final = "bench-wal-load-key"

DEFINITIONS: Mapping[str, str] = {
    "lag_under_load_ms_p50": "per WAL entry written during the load phase: from its WAL "
    "timestamp (stamped by the primary's worker as it appends the entry, before the "
    "broker acknowledges it) to the shipper receiving the replica's answer that the "
    "batch holding it is applied (queryable); the same time lag_ms of "
    "/api/v1/replication/stats counts. Replica: themis wal serve, over the binary "
    "protocol (WAL_APPLY_COMPRESSED), zstd level 3",
    "load_points_per_s": "points the load generator sent (acknowledged by the primary "
    "broker) per second of the load phase; its target is load_share_target x "
    "pipeline_points_per_s_frames measured in the same run",
    "load_vectors_per_s": "vector operations sent per second of the load phase (adds, "
    f"and one remove in {REMOVE_EVERY})",
    "wal_partitions": "partitions of the primary's WAL topic (one per input partition); "
    "load.shipping_partitions has each partition's shipping figures from "
    "/api/v1/replication/stats",
    "drain_seconds": "under load: from the generator's last acknowledged record to every "
    "point durable on the primary (the worker's backlog when the load stopped, plus up to "
    "ts_auto_buffer.flush_interval_ms for the last partial blocks)",
}


@dataclass(frozen=True)
class LoadSizes:
    """The load phase; the maximum-rate run is ``themis bench ts``'s frames run of the
    same size (:data:`pipeline.bench.ts_sizes.SIZES`)."""

    seconds: float
    series: int
    vectors_per_s: int
    share: float = 0.5
    """The load's points per second as a share of the measured maximum."""


LOAD_SIZES: Final[Mapping[BenchSize, LoadSizes]] = {
    "smoke": LoadSizes(4.0, 20, 50),
    "quick": LoadSizes(30.0, 100, 200),
    "full": LoadSizes(120.0, 200, 200),
}


def _part(base: Settings, broker: BenchBroker, part: str) -> Settings:
    """``base`` with a namespace, group, web port and data directory of its own."""
    return with_overrides(
        base,
        {
            "kafka": {
                "bootstrap_servers": broker.bootstrap,
                "topic_namespace": f"{broker.run_id}.{part}",
            },
            "worker": {
                "app_id": f"{broker.run_id}-{part}",
                "web_port": free_port(),
                "data_dir": broker.work_dir / part,
            },
            "vector_auto_buffer": {"dimension": DIMENSION},
            "compressed_wal_shipping": {"apply_keys": _REPLICA_KEY, "ship_key": _REPLICA_KEY},
        },
    )


def _maximum(base: Settings, broker: BenchBroker, size: BenchSize) -> float:
    """``pipeline_points_per_s_frames`` of this primary, as ``themis bench ts`` measures it:
    pre-produced frames, one worker, the same series, points and slices."""
    settings = _part(base, broker, "load-max")
    sizes = TS_SIZES[size]
    series = fleet(sizes.frames_series, sizes.frames_points_per_series)
    run = measure_pipeline(
        settings,
        broker.work_dir / "load-max-worker.log",
        lambda: produce_frames(TSProducer(settings), series, sizes.frame_slice_points),
        what="frames (the primary's maximum)",
        min_points_per_s=10_000,
        strict=size != "smoke",
    )
    return run.points_per_s


# -- the load generator (a child process) -----------------------------------------------


def _vector_ops(rng: np.random.Generator, centers: Any, start: int, count: int) -> list[VectorOp]:
    ops = []
    for j in range(start, start + count):
        if j % REMOVE_EVERY == REMOVE_EVERY - 1:
            ops.append(VectorOp(OpType.REMOVE, f"doc-{j - REMOVE_EVERY // 2}", None, {}))
            continue
        c = int(rng.integers(0, len(centers)))
        vector = (centers[c] + rng.normal(0, 0.05, DIMENSION)).astype(np.float32)
        ops.append(VectorOp(OpType.ADD, f"doc-{j}", vector, {"cluster": c, "n": j}))
    return ops


def generate_load(
    settings: Settings, seconds: float, points_per_s: float, series: int, vectors_per_s: int
) -> tuple[int, int, float]:
    """Send frames and vector operations at steady rates for ``seconds`` seconds;
    ``(points, vector operations, seconds)``, everything acknowledged."""
    rng = np.random.default_rng(3)
    centers = rng.normal(0, 1, (16, DIMENSION))
    keys = [series_key(f"load_metric_{i % 10}", f"host-{i}") for i in range(series)]
    levels = rng.normal(50, 10, series)
    per_series = max(1, round(points_per_s * _TICK_S / series))
    points = vectors = 0
    ts_producer, vector_producer = TSProducer(settings), VectorProducer(settings)
    started = time.monotonic()
    tick = 0
    while (elapsed := time.monotonic() - started) < seconds:
        delay = tick * _TICK_S - elapsed
        if delay > 0:
            time.sleep(delay)
        index = np.arange(tick * per_series, (tick + 1) * per_series, dtype=np.int64)
        timestamps = 1_700_000_000_000 + index * 10_000
        walk = np.cumsum(rng.normal(0, 0.5, (series, per_series)), axis=1) + levels[:, None]
        levels = walk[:, -1]
        points += ts_producer.put_arrays(
            (key, timestamps, np.round(walk[i], 1)) for i, key in enumerate(keys)
        )
        due = int(vectors_per_s * (tick + 1) * _TICK_S) - vectors
        if due > 0:
            vectors += vector_producer.send_many(_vector_ops(rng, centers, vectors, due))
        tick += 1
    elapsed = time.monotonic() - started
    ts_producer.close(timeout_s=120)
    vector_producer.close(timeout_s=120)
    return points, vectors, elapsed


def _generator_main(settings: Settings, rates: tuple[float, float, int, int], out: Any) -> None:
    """The child's entry: ``rates`` are ``(seconds, points/s, series, vector ops/s)``."""
    out.put(generate_load(settings, *rates))


# -- the replica (a child process) and the shipper ------------------------------------


def _replica_status(port: int) -> dict[str, Any] | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(
            "GET", "/api/v1/replica/status", headers={"Authorization": f"Bearer {_REPLICA_KEY}"}
        )
        response = connection.getresponse()
        body = response.read()
    except OSError:
        return None
    finally:
        connection.close()
    if response.status != 200:
        return None
    status: dict[str, Any] = orjson.loads(body)
    return status


@contextlib.contextmanager
def _replica_serving(settings: Settings, log_path: Path) -> Iterator[tuple[ChildProcess, int, int]]:
    """``themis wal serve`` with its own data directory; ``(child, HTTP port, binary port)``."""
    http_port, binary_port = free_port(), free_port()
    replica = ChildProcess(
        [
            *themis_command(),
            "wal",
            "serve",
            "--replica",
            "load",
            "--port",
            str(http_port),
            "--binary-port",
            str(binary_port),
        ],
        child_env(settings),
        log_path,
    )
    try:

        def ready() -> dict[str, Any] | None:
            exited(replica, "themis wal serve")
            return _replica_status(http_port)

        wait_for(ready, timeout_s=60, interval_s=0.1, what="themis wal serve to answer")
        yield replica, http_port, binary_port
    finally:
        replica.stop()


def _wal_partitions(settings: Settings) -> int:
    topic = settings.topic("wal")
    with AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers}) as admin:
        return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def measure_load(size: BenchSize, settings: Settings) -> dict[str, Any]:
    """The maximum, then the load phase, on a broker of their own
    (:func:`~pipeline.bench.harness.bench_broker`); the ``lag_under_load_*``, ``load_*``
    and ``wal_partitions`` figures and the ``load`` details."""
    with bench_broker(settings, "wal-load") as broker:
        figures = _measure(settings, broker, size)
        figures["load"]["broker"] = broker.handle.source
    return figures


def _measure(base: Settings, broker: BenchBroker, size: BenchSize) -> dict[str, Any]:
    sizes = LOAD_SIZES[size]
    maximum = _maximum(base, broker, size)
    target = sizes.share * maximum
    settings = _part(base, broker, "load")
    apply_topics(broker.bootstrap, settings)
    lags: list[int] = []
    lock = threading.Lock()

    def record(_replica: str, entry_lags: list[int]) -> None:
        with lock:
            lags.extend(entry_lags)

    work = broker.work_dir
    with (
        _replica_serving(settings, work / "load-replica.log") as (replica, http_port, binary_port),
        worker_running(settings, work / "load-worker.log") as worker,
    ):
        wait_for(
            lambda: worker_page(worker, pages.TS_STATS),
            timeout_s=120,
            interval_s=0.1,
            what="the load worker's stats page",
        )
        shipper = WalShipper(settings, primary_id="bench-primary", on_queryable=record)
        try:
            shipper.add_replica("load", f"themis://127.0.0.1:{binary_port}")
            progress(
                f"load: {target:,.0f} points/s ({sizes.share:.0%} of {maximum:,.0f}) and "
                f"{sizes.vectors_per_s} vector ops/s for {sizes.seconds:.0f} s"
            )
            points, vectors, seconds = _run_generator(settings, sizes, target)
            progress(f"load: sent {points:,} points and {vectors:,} vector ops; draining")
            generated_at = time.monotonic()
            wait_for(
                lambda: _flushed(worker, points),
                timeout_s=120,
                interval_s=0.1,
                what=f"the load worker to make all {points:,} points durable",
            )
            drain_s = time.monotonic() - generated_at
            wait_for(
                lambda: True if shipper.caught_up() else None,
                timeout_s=120,
                interval_s=0.05,
                what="the replica to confirm the WAL's end",
            )
            stats = shipper.stats()
        finally:
            shipper.close()
        exited(replica, "themis wal serve")
        status = _replica_status(http_port)
        partitions = _wal_partitions(settings)
    values = np.array(lags, dtype=np.float64)
    if values.size == 0:
        raise BenchmarkFailed("load: no WAL entry became queryable on the replica")
    return {
        "lag_under_load_ms_p50": rounded(float(np.percentile(values, 50))),
        "lag_under_load_ms_p99": rounded(float(np.percentile(values, 99))),
        "lag_under_load_ms_max": rounded(float(values.max())),
        "load_points_per_s": rounded(points / seconds),
        "load_vectors_per_s": rounded(vectors / seconds),
        "wal_partitions": partitions,
        "load": {
            "seconds": round(seconds, 2),
            "points": points,
            "vector_ops": vectors,
            "pipeline_points_per_s_frames": rounded(maximum),
            "load_share_target": sizes.share,
            "load_share_of_max": rounded(points / seconds / maximum),
            "drain_seconds": round(drain_s, 2),
            "series": sizes.series,
            "wal_entries_timed": int(values.size),
            "replica": {"endpoint": "themis wal serve, binary protocol", "status": status},
            "shipper": stats["stats"],
            "shipping_partitions": [
                {name: row[name] for name in _PARTITION_FIGURES}
                for row in stats["replicas"][0]["partitions"]
            ],
        },
    }


def _flushed(worker: Any, points: int) -> bool | None:
    page = worker_page(worker, pages.TS_STATS)
    return True if page is not None and page["points_flushed"] >= points else None


def _run_generator(
    settings: Settings, sizes: LoadSizes, points_per_s: float
) -> tuple[int, int, float]:
    """:func:`generate_load` in a child process (spawned: a fresh interpreter)."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(
        target=_generator_main,
        args=(settings, (sizes.seconds, points_per_s, sizes.series, sizes.vectors_per_s), out),
        name="wal-load-generator",
    )
    child.start()
    try:
        result: tuple[int, int, float] = out.get(timeout=sizes.seconds + 180)
    except Exception as exc:
        raise BenchmarkFailed(
            f"the load generator sent no result (exit code {child.exitcode}): {exc!r}"
        ) from None
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
    return result
