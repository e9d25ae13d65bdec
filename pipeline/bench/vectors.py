"""``themis bench vectors``: how fast, how exact and how big the vector path is.

Run ``themis bench vectors [--quick] [--json]`` or ``python -m pipeline.bench.vectors
[...]``. The broker is the one of ``KAFKA_BOOTSTRAP_SERVERS``, else one started for
the run by :func:`pipeline.kafka.broker.provide_broker`; topics live under a
namespace of their own, ``bench-<pid>-<random>.vectors`` (deleted at the end on a
given broker). One ``themis worker`` child process serves every pipeline
measurement, with ``flush_interval_ms`` = :data:`FLUSH_INTERVAL_MS` and the other
index settings (space, M, ef_construction, ef_search) from the settings (defaults:
cosine, 16, 200, 64); the dimension is always :data:`DIMENSION`.

Data
    :class:`ClusteredEmbeddings` draws unit vectors shaped like text embeddings
    rather than uniform noise: a direction shared by every vector (so cosines are
    mostly positive, as with real models), :data:`CLUSTERS` topic centres, and per
    centre a random :data:`RANK`-dimensional subspace the points spread in (low
    intrinsic dimension), plus a little isotropic noise::

        x = 0.5 * common + centre[c] + basis[c] @ z + noise,   z ~ N(0, 0.25^2 I_rank)
        noise ~ N(0, 0.3^2 / d I_d); then x / |x|

    (``common`` a unit vector, ``centre[c]`` and the columns of ``basis[c]`` about
    unit length). Points of one cluster have a cosine of about 0.5, of two clusters
    about 0.1. Seed :data:`SEED`; queries and updates are fresh draws from the same
    model.

Measurements (one JSON object with ``--json``; :data:`DEFINITIONS` is copied into it)
    see :data:`DEFINITIONS`; ``vectors`` has the counts behind every rate,
    ``pipeline`` each step's details, ``memory`` the figures behind
    ``bytes_per_vector``, ``settings`` the index and buffer settings, ``broker`` and
    ``machine`` where it ran.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from pipeline.bench.harness import (
    WorkerProcess,
    delete_topics_under,
    machine_info,
    progress,
    rounded,
    run_bench_main,
    wait_for,
)
from pipeline.config import Settings, load_settings
from pipeline.errors import BenchmarkFailed
from pipeline.kafka.broker import BrokerHandle, provide_broker
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.producer import key_partition
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.vectors.index import VectorIndex
from pipeline.vectors.ops import OpType, VectorOp
from pipeline.vectors.producer import VectorProducer
from pipeline.worker.client import run_with_client, worker_urls
from pipeline.worker.query import search

__all__ = [
    "DEFINITIONS",
    "DIMENSION",
    "FLUSH_INTERVAL_MS",
    "ClusteredEmbeddings",
    "main",
    "render_table",
    "run_vector_bench",
]

DIMENSION: Final = 768
FLUSH_INTERVAL_MS: Final = 100
"""The worker's ``flush_interval_ms`` (milliseconds): how long a lone operation waits."""
SEED: Final = 0
CLUSTERS: Final = 64
RANK: Final = 16
RECALL_K: Final = 10
SEND_CALL: Final = 1000
"""Operations per ``send_many`` call (frames of about this many over the partitions)."""

_STATS_PAGE = "/vectors/buffer/stats"
_STARTUP_TIMEOUT_S = 120.0

DEFINITIONS: Mapping[str, str] = {
    "indexed_vectors_per_s": "sustained Kafka -> searchable: N ADDs pre-produced in binary "
    "frames (send_many, 1000 per call) and flushed before a themis worker starts; clock "
    "from the first consumed op seen on /vectors/buffer/stats to vectors_flushed and "
    "live_vectors covering all N; rate = vectors applied after the clock started / seconds",
    "bare_hnswlib_vectors_per_s": "hnswlib Index.add_items of the same N vectors in this "
    "process, same space, M, ef_construction and threads (all cores), split into the same "
    "shards as the worker (one index per topic partition, pk -> partition as the "
    "producer does), one add_items call per shard, capacity preallocated; N / seconds",
    "indexed_vs_bare": "indexed_vectors_per_s / bare_hnswlib_vectors_per_s",
    "recall_at_10": "after a mix of updates, removes and adds through the pipeline, the "
    "mean over fresh queries of |search(q, 10) via the worker ∩ exact top 10| / 10; exact = "
    "brute-force cosine over the live set as the client knows it; searched at the "
    "configured ef_search (see ef_search)",
    "buffered_vectors_per_s": "client-observed, durable and searchable: M new ADDs sent "
    "with VectorProducer.send_many (binary frames), producer flushed (acks=all), then "
    "/vectors/buffer/stats polled until live_vectors covers all M; M / seconds from the "
    "first send",
    "direct_vectors_per_s": "client-observed, durable and searchable, one at a time: per "
    "vector, VectorProducer.add (one JSON op, acks=all) and flush, then search(vector, 1) "
    "polled every 10 ms until it returns that pk, before the next vector; D / seconds. A "
    "lone op is applied by the worker's time trigger (flush_interval_ms), so this is the "
    "latency a client pays without batching",
    "buffered_vs_direct": "buffered_vectors_per_s / direct_vectors_per_s (same worker, "
    "same generator; the direct side uses fewer vectors, so rates are compared)",
    "bytes_per_vector": "VectorIndex.memory_bytes() of the worker's shards (loaded from "
    "their final snapshots) / live vectors: hnswlib's allocated slots (vector, links, "
    "label) plus pks, metadata and Python bookkeeping; free slots (preallocated capacity, "
    "removed vectors) count, so small runs overstate it; "
    "bytes_per_vector_without_free_slots subtracts (capacity - live) * "
    "(4 * dimension + 8 * M + 32); raw_bytes_per_vector = 4 * dimension",
}


@dataclass(frozen=True)
class Sizes:
    """How many vectors each measurement uses."""

    indexed: int
    mix_fraction: float
    """Of ``indexed``: this fraction updated, this fraction removed, this fraction added."""
    queries: int
    buffered: int
    direct: int


QUICK = Sizes(indexed=20_000, mix_fraction=0.1, queries=200, buffered=5_000, direct=25)
FULL = Sizes(indexed=100_000, mix_fraction=0.1, queries=500, buffered=20_000, direct=100)

_Vectors = npt.NDArray[np.float32]


class ClusteredEmbeddings:
    """Unit vectors in clusters on low-rank subspaces (the model in the module docstring)."""

    def __init__(
        self,
        dimension: int = DIMENSION,
        *,
        clusters: int = CLUSTERS,
        rank: int = RANK,
        seed: int = SEED,
    ) -> None:
        rng = np.random.default_rng(seed)
        scale = 1.0 / np.sqrt(dimension)
        common = rng.normal(size=dimension)
        self.common = (common / np.linalg.norm(common)).astype(np.float32)
        self.centres = (rng.normal(size=(clusters, dimension)) * scale).astype(np.float32)
        self.bases = (rng.normal(size=(clusters, dimension, rank)) * scale).astype(np.float32)
        self.dimension = dimension
        self.clusters = clusters
        self.rank = rank
        self._rng = np.random.default_rng(seed + 1)

    def draw(self, n: int) -> tuple[_Vectors, npt.NDArray[np.int64]]:
        """``(vectors, cluster ids)``: ``n`` fresh unit float32 vectors."""
        rng = self._rng
        labels = rng.integers(0, self.clusters, n)
        out = 0.5 * self.common + self.centres[labels]
        latent = rng.normal(0.0, 0.25, (n, self.rank)).astype(np.float32)
        for c in np.unique(labels):
            rows = labels == c
            out[rows] += latent[rows] @ self.bases[c].T
        out += rng.normal(0.0, 0.3 / np.sqrt(self.dimension), out.shape).astype(np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out, dtype=np.float32), labels


# -- steps --------------------------------------------------------------------------


def _send(producer: VectorProducer, ops: list[VectorOp]) -> None:
    for start in range(0, len(ops), SEND_CALL):
        producer.send_many(ops[start : start + SEND_CALL])
    producer.flush(timeout_s=300)


def _adds(pks: Sequence[str], vectors: _Vectors, labels: npt.NDArray[np.int64]) -> list[VectorOp]:
    return [
        VectorOp(OpType.ADD, pk, vectors[i], {"cluster": int(labels[i])})
        for i, pk in enumerate(pks)
    ]


def _bare_hnswlib(
    pks: Sequence[str], vectors: _Vectors, settings: Settings, partitions: int
) -> tuple[float, int]:
    """``(seconds, shards)`` building one hnswlib index per shard with one add_items each."""
    import hnswlib

    config = settings.vector_auto_buffer
    shard_of = np.array([key_partition(pk.encode(), partitions) for pk in pks])
    shards = [np.flatnonzero(shard_of == p) for p in range(partitions)]
    shards = [rows for rows in shards if rows.size]
    indexes = []
    for rows in shards:
        index = hnswlib.Index(space=config.space, dim=config.dimension)
        index.init_index(
            max_elements=int(rows.size),
            M=config.m,
            ef_construction=config.ef_construction,
            allow_replace_deleted=True,
        )
        indexes.append(index)
    data = [np.ascontiguousarray(vectors[rows]) for rows in shards]
    t0 = time.perf_counter()
    for index, rows, block in zip(indexes, shards, data, strict=True):
        index.add_items(block, rows.astype(np.uint64), num_threads=-1)
    return time.perf_counter() - t0, len(shards)


def _is_top_hit(settings: Settings, vector: _Vectors, pk: str) -> bool | None:
    """``True`` when ``pk`` is the nearest neighbour of ``vector``, else ``None`` (poll again)."""
    hits = search(vector, 1, settings=settings)
    return True if hits and hits[0].pk == pk else None


def _percentile_ms(values: list[float], q: float) -> float:
    return rounded(float(np.percentile(np.asarray(values) * 1000, q)))


def _exact_top(live: _Vectors, queries: _Vectors, k: int) -> npt.NDArray[np.int64]:
    """Row numbers of the exact ``k`` nearest (cosine) live vectors per query."""
    scores = queries @ live.T  # unit vectors: larger is closer
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.asarray(top, dtype=np.int64)


@dataclass
class _Run:
    settings: Settings
    worker: WorkerProcess
    producer: VectorProducer
    model: ClusteredEmbeddings

    def stats(self) -> dict[str, Any]:
        stats = self.worker.stats(_STATS_PAGE)
        if stats is None:
            raise BenchmarkFailed("the worker's /vectors/buffer/stats page stopped answering")
        return stats

    def wait_settled(
        self, ops_total: int, live: int, what: str, timeout_s: float
    ) -> dict[str, Any]:
        """Poll until the worker buffered ``ops_total`` ops, drained them and holds ``live``."""

        def settled() -> dict[str, Any] | None:
            stats = self.worker.stats(_STATS_PAGE)
            if stats is None:
                return None
            done = (
                stats["vectors_buffered"] >= ops_total
                and stats["current_buffer_size"] == 0
                and stats["live_vectors"] == live
            )
            return stats if done else None

        return wait_for(settled, timeout_s=timeout_s, interval_s=0.01, what=what)


def _measure(settings: Settings, sizes: Sizes, work_dir: Path, partitions: int) -> dict[str, Any]:
    model = ClusteredEmbeddings()
    n = sizes.indexed
    vectors, labels = model.draw(n)
    pks = [f"v{i}" for i in range(n)]
    producer = VectorProducer(settings)

    t0 = time.perf_counter()
    _send(producer, _adds(pks, vectors, labels))
    produce_s = time.perf_counter() - t0
    progress(f"indexed: {n:,} ADDs produced in {produce_s:.1f} s")

    progress(f"bare hnswlib: add_items of the same {n:,} vectors")
    bare_s, shards = _bare_hnswlib(pks, vectors, settings, partitions)
    bare_rate = n / bare_s
    progress(f"bare hnswlib: {bare_rate:,.0f} vectors/s over {shards} shards")

    worker = WorkerProcess(settings, work_dir / "worker.log")
    run = _Run(settings, worker, producer, model)
    launched = time.monotonic()
    try:
        first = wait_for(
            lambda: (
                s
                if (s := worker.stats(_STATS_PAGE)) is not None and s["vectors_buffered"] > 0
                else None
            ),
            timeout_s=_STARTUP_TIMEOUT_S,
            interval_s=0.02,
            what="the worker to consume its first vector operation",
        )
        started = time.monotonic()
        indexed_final = wait_for(
            lambda: (
                s
                if (s := worker.stats(_STATS_PAGE)) is not None
                and s["vectors_flushed"] >= n
                and s["live_vectors"] >= n
                else None
            ),
            timeout_s=60 + n / 100,
            interval_s=0.02,
            what=f"all {n:,} vectors searchable",
        )
        indexed_s = time.monotonic() - started
        indexed_timed = n - int(first["vectors_flushed"])
        indexed_rate = indexed_timed / indexed_s
        progress(
            f"indexed: {indexed_rate:,.0f} vectors/s ({indexed_timed:,} in {indexed_s:.2f} s "
            f"after a {started - launched:.1f} s start-up)"
        )

        # -- a mix of updates, removes and adds, then recall --------------------------
        live: dict[str, _Vectors] = dict(zip(pks, vectors, strict=True))
        rng = np.random.default_rng(SEED + 2)
        k = int(n * sizes.mix_fraction)
        chosen = rng.permutation(n)[: 2 * k]
        updated = [pks[i] for i in chosen[:k]]
        removed = [pks[i] for i in chosen[k:]]
        new_vectors, new_labels = model.draw(2 * k)
        added = [f"v{n + i}" for i in range(k)]
        ops = [
            VectorOp(OpType.UPDATE, pk, new_vectors[i], {"cluster": int(new_labels[i])})
            for i, pk in enumerate(updated)
        ]
        ops += [VectorOp(OpType.REMOVE, pk, None, {}) for pk in removed]
        ops += _adds(added, new_vectors[k:], new_labels[k:])
        order = rng.permutation(len(ops))
        ops = [ops[i] for i in order]
        for op in ops:
            if op.vector is None:
                del live[op.pk]
            else:
                live[op.pk] = op.vector
        ops_total = n + len(ops)
        progress(f"mix: {k:,} updates, {k:,} removes, {k:,} adds")
        _send(producer, ops)
        run.wait_settled(ops_total, len(live), "the mix to be applied", 60 + len(ops) / 100)
        dump = run_with_client(worker_urls(settings), lambda c: c.vector_dump(), timeout_s=60)
        if set(dump) != set(live):
            raise BenchmarkFailed(
                f"after the mix the worker holds {len(dump):,} pks, {len(set(dump) ^ set(live)):,} "
                "differ from what was sent"
            )
        live_pks = list(live)
        live_matrix = np.stack([live[pk] for pk in live_pks])
        queries, _ = model.draw(sizes.queries)
        exact = _exact_top(live_matrix, queries, RECALL_K)
        found = 0
        latencies = []
        for q, row in zip(queries, exact, strict=True):
            t = time.perf_counter()
            hits = search(q, RECALL_K, settings=settings)
            latencies.append(time.perf_counter() - t)
            found += len({h.pk for h in hits} & {live_pks[i] for i in row})
        recall = found / (RECALL_K * sizes.queries)
        progress(f"recall@{RECALL_K}: {recall:.4f} over {sizes.queries} queries")

        # -- buffered against direct, durable and searchable ----------------------------
        m = sizes.buffered
        buf_vectors, buf_labels = model.draw(m)
        buf_ops = _adds([f"b{i}" for i in range(m)], buf_vectors, buf_labels)
        live_before = len(live)
        t0 = time.perf_counter()
        _send(producer, buf_ops)
        run.wait_settled(ops_total + m, live_before + m, "the buffered vectors", 60 + m / 100)
        buffered_s = time.perf_counter() - t0
        buffered_rate = m / buffered_s
        for i in range(0, m, max(1, m // 20)):
            if search(buf_vectors[i], 1, settings=settings)[0].pk != f"b{i}":
                raise BenchmarkFailed(f"buffered vector b{i} is not its own nearest neighbour")
        progress(f"buffered: {buffered_rate:,.0f} vectors/s ({m:,} in {buffered_s:.2f} s)")

        d = sizes.direct
        direct_vectors, _ = model.draw(d)
        direct_latencies = []
        t0 = time.perf_counter()
        for i in range(d):
            pk = f"d{i}"
            t = time.perf_counter()
            producer.add(pk, direct_vectors[i])
            producer.flush()
            wait_for(
                partial(_is_top_hit, settings, direct_vectors[i], pk),
                timeout_s=30,
                interval_s=0.01,
                what=f"direct vector {pk} searchable",
            )
            direct_latencies.append(time.perf_counter() - t)
        direct_s = time.perf_counter() - t0
        direct_rate = d / direct_s
        progress(f"direct: {direct_rate:,.1f} vectors/s ({d} in {direct_s:.2f} s)")

        final = run.stats()
        run_with_client(worker_urls(settings), lambda c: c.flush_vectors())
    except BenchmarkFailed as exc:
        raise BenchmarkFailed(f"{exc}\nworker log tail:\n{worker.log_tail()}") from None
    finally:
        exit_code = worker.stop()
    if final["dead_letters"]:
        raise BenchmarkFailed(f"the worker dead-lettered {final['dead_letters']} records")
    memory = _memory(settings)
    return {
        "indexed_vectors_per_s": rounded(indexed_rate),
        "bare_hnswlib_vectors_per_s": rounded(bare_rate),
        "indexed_vs_bare": rounded(indexed_rate / bare_rate),
        "recall_at_10": round(recall, 4),
        "ef_search": settings.vector_auto_buffer.ef_search,
        "buffered_vectors_per_s": rounded(buffered_rate),
        "direct_vectors_per_s": rounded(direct_rate),
        "buffered_vs_direct": rounded(buffered_rate / direct_rate),
        "direct_latency_ms": {
            "p50": _percentile_ms(direct_latencies, 50),
            "p90": _percentile_ms(direct_latencies, 90),
            "max": _percentile_ms(direct_latencies, 100),
        },
        "search_latency_ms": {
            "p50": _percentile_ms(latencies, 50),
            "p90": _percentile_ms(latencies, 90),
        },
        "bytes_per_vector": rounded(memory["bytes"] / memory["live_vectors"]),
        "bytes_per_vector_without_free_slots": rounded(
            (memory["bytes"] - memory["free_slot_bytes"]) / memory["live_vectors"]
        ),
        "raw_bytes_per_vector": 4 * settings.vector_auto_buffer.dimension,
        "vectors": {
            "indexed": n,
            "bare_hnswlib": n,
            "mix": {"updates": k, "removes": k, "adds": k},
            "live_after_mix": live_before,
            "queries": sizes.queries,
            "buffered": m,
            "direct": d,
            "live_at_end": memory["live_vectors"],
        },
        "pipeline": {
            "produce_seconds": round(produce_s, 3),
            "worker_ready_seconds": round(started - launched, 3),
            "indexed_timed": indexed_timed,
            "indexed_seconds": round(indexed_s, 3),
            "indexed_flush_count": int(indexed_final["flush_count"]),
            "bare_seconds": round(bare_s, 3),
            "bare_shards": shards,
            "buffered_seconds": round(buffered_s, 3),
            "direct_seconds": round(direct_s, 3),
            "worker_exit_code": exit_code,
        },
        "memory": memory,
    }


def _memory(settings: Settings) -> dict[str, Any]:
    """Memory estimate of the worker's shards, read back from their final snapshots."""
    root = settings.worker.data_dir / "vectors"
    total = live = capacity = on_disk = 0
    shards = 0
    for directory in sorted(root.glob("p*")):
        if not VectorIndex.has_snapshot(directory):
            continue
        index, _ = VectorIndex.load(directory)
        total += index.memory_bytes()
        live += index.live_count()
        capacity += index.capacity()
        on_disk += sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
        shards += 1
    if not live:
        raise BenchmarkFailed(f"no snapshot with vectors under {root}")
    config = settings.vector_auto_buffer
    slot_bytes = 4 * config.dimension + 8 * config.m + 32
    return {
        "bytes": total,
        "free_slot_bytes": (capacity - live) * slot_bytes,
        "live_vectors": live,
        "capacity_slots": capacity,
        "shards": shards,
        "snapshot_bytes_on_disk": on_disk,
        "snapshot_bytes_per_vector": rounded(on_disk / live),
    }


# -- the run ------------------------------------------------------------------------


def run_vector_bench(quick: bool, *, settings: Settings | None = None) -> dict[str, object]:
    """Run every measurement and return the result described in :data:`DEFINITIONS`.

    ``quick`` picks :data:`QUICK` sizes (about a minute) over :data:`FULL`.
    ``settings`` defaults to :func:`~pipeline.config.load_settings`; its
    ``kafka.bootstrap_servers`` (``KAFKA_BOOTSTRAP_SERVERS``) chooses a given broker.
    Raises :class:`~pipeline.errors.BenchmarkFailed` when a step fails.
    """
    settings = settings if settings is not None else load_settings()
    sizes = QUICK if quick else FULL
    begun = time.monotonic()
    run_id = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with contextlib.redirect_stdout(sys.stderr):
        progress("finding a broker (KAFKA_BOOTSTRAP_SERVERS, else Docker, else a local JVM)")
        with (
            provide_broker(settings, local_name=f"bench-{os.getpid()}") as broker,
            tempfile.TemporaryDirectory(prefix="themis-bench-") as work_dir,
        ):
            progress(
                f"broker at {broker.bootstrap_servers} ({broker.source}, "
                f"started in {broker.startup_seconds} s); topics under {run_id}.*"
            )
            bench = _bench_settings(settings, broker, run_id, Path(work_dir))
            spec = next(s for s in load_specs() if s.name == "vectors.ops")
            try:
                apply_topics(broker.bootstrap_servers, bench)
                measured = _measure(bench, sizes, Path(work_dir), spec.partitions)
            finally:
                if broker.source == "environment":
                    left = delete_topics_under(broker.bootstrap_servers, f"{run_id}.")
                    if left:
                        progress(f"could not delete topics {', '.join(left)}")
    config = bench.vector_auto_buffer
    return {
        "benchmark": "vectors",
        "quick": quick,
        "dataset": {
            "generator": "pipeline.bench.vectors.ClusteredEmbeddings",
            "dimension": DIMENSION,
            "clusters": CLUSTERS,
            "rank": RANK,
            "seed": SEED,
            "description": f"unit {DIMENSION}-dim vectors: 0.5 * a shared direction + one of "
            f"{CLUSTERS} cluster centres + a point of that cluster's random {RANK}-dim "
            "subspace (sd 0.25) + isotropic noise (sd 0.3/sqrt(d)), normalised; cosine about "
            "0.5 within a cluster, 0.1 across",
        },
        **measured,
        "settings": {
            "space": config.space,
            "m": config.m,
            "ef_construction": config.ef_construction,
            "ef_search": config.ef_search,
            "threads": "all cores (hnswlib num_threads=-1), worker and bare alike",
            "partitions": spec.partitions,
            "max_vectors_per_buffer": config.max_vectors_per_buffer,
            "flush_interval_ms": config.flush_interval_ms,
            "snapshot_interval_ms": config.snapshot_interval_ms,
            "producer": "acks=all, idempotent, linger.ms=5, lz4 (VectorProducer)",
        },
        "topic_prefix": f"{run_id}.",
        "broker": {
            "source": broker.source,
            "bootstrap_servers": broker.bootstrap_servers,
            "startup_seconds": broker.startup_seconds,
        },
        "machine": machine_info(),
        "seconds_total": round(time.monotonic() - begun, 1),
        "definitions": dict(DEFINITIONS),
    }


def _bench_settings(base: Settings, broker: BrokerHandle, run_id: str, work_dir: Path) -> Settings:
    return replace(
        base,
        kafka=replace(
            base.kafka, bootstrap_servers=broker.bootstrap_servers, topic_namespace=run_id
        ),
        worker=replace(
            base.worker, app_id=run_id, web_port=free_port(), data_dir=work_dir / "data"
        ),
        vector_auto_buffer=replace(
            base.vector_auto_buffer, dimension=DIMENSION, flush_interval_ms=FLUSH_INTERVAL_MS
        ),
    )


# -- output and command line ----------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:,.0f} vectors/s" if value >= 100 else f"{value:.3g} vectors/s"


def render_table(result: Mapping[str, object]) -> str:
    """The result as a readable table (the JSON has every detail)."""
    r: Any = result
    v, s = r["vectors"], r["settings"]
    rows = [
        (
            "indexed (Kafka -> searchable)",
            _rate(r["indexed_vectors_per_s"]),
            f"{v['indexed']:,} vectors, {s['partitions']} shards",
        ),
        (
            "bare hnswlib add_items",
            _rate(r["bare_hnswlib_vectors_per_s"]),
            "same vectors, parameters, threads and shards",
        ),
        ("indexed / bare", f"{r['indexed_vs_bare']}", ""),
        (
            f"recall@{RECALL_K}",
            f"{r['recall_at_10']}",
            f"ef_search {r['ef_search']}, {v['queries']} queries after a mix of "
            f"{v['mix']['updates']:,} updates, removes and adds each",
        ),
        (
            "buffered writes",
            _rate(r["buffered_vectors_per_s"]),
            f"{v['buffered']:,} vectors in frames, durable and searchable",
        ),
        (
            "direct writes",
            _rate(r["direct_vectors_per_s"]),
            f"{v['direct']} vectors, one durable op and a search poll each; "
            f"p50 {r['direct_latency_ms']['p50']} ms",
        ),
        ("buffered / direct", f"{r['buffered_vs_direct']}", ""),
        (
            "memory",
            f"{r['bytes_per_vector']:,.0f} bytes/vector",
            f"raw {r['raw_bytes_per_vector']:,} bytes (4 * {r['dataset']['dimension']})",
        ),
    ]
    width = max(len(name) for name, _, _ in rows)
    machine, broker = r["machine"], r["broker"]
    lines = [
        f"vector benchmark ({'quick' if r['quick'] else 'full'} run): {machine['nproc']} CPUs, "
        f"Python {machine['python']}; broker {broker['source']}",
        f"dataset: {r['dataset']['description']}",
        f"index: {s['space']}, M {s['m']}, ef_construction {s['ef_construction']}, "
        f"ef_search {s['ef_search']}; flush interval {s['flush_interval_ms']} ms",
        "",
        *(f"  {name:<{width}}  {value:<22}  {note}".rstrip() for name, value, note in rows),
        "",
        f"{r['seconds_total']} s in all; definitions: --json",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.bench.vectors [--quick] [--json]``; returns the exit code."""
    return run_bench_main(
        "vectors",
        "How fast, how exact and how big the vector path is.",
        run_vector_bench,
        render_table,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
