"""The steps of the vector benchmark, in the order :mod:`pipeline.bench.vectors` runs them.

1. :func:`send` N ADDs in binary frames before any worker runs, and build the same
   vectors with bare hnswlib in this process (:func:`bare_hnswlib`).
2. Start one ``themis worker`` (:class:`VectorRun`) and time it from its first
   consumed op to every vector searchable (:func:`measure_indexed`).
3. A mix of updates, removes and adds (:func:`apply_mix`), then recall@10 against an
   exact search over the live set the client knows (:func:`measure_recall`).
4. Buffered writes (:func:`measure_buffered`) against one durable, searchable write
   at a time (:func:`measure_direct`).
5. After the worker stopped, its memory figures from its final snapshots
   (:func:`memory`).

Worker pages are read through :class:`~pipeline.worker.client.WorkerClient`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from pipeline.bench.embeddings import SEED, ClusteredEmbeddings, Vectors
from pipeline.bench.harness import rounded, time_worker, wait_for, worker_page
from pipeline.bench.vectors_bare import BareShards
from pipeline.config import Settings
from pipeline.errors import BenchmarkFailed
from pipeline.vectors.index import VectorIndex
from pipeline.vectors.ops import OpType, VectorOp
from pipeline.vectors.producer import VectorProducer
from pipeline.worker import pages
from pipeline.worker.client import run_with_client, worker_urls
from pipeline.worker.process import WorkerProcess
from pipeline.worker.query import search

__all__ = [
    "RECALL_K",
    "Indexed",
    "VectorRun",
    "adds",
    "apply_mix",
    "bare_hnswlib",
    "exact_top",
    "measure_buffered",
    "measure_direct",
    "measure_indexed",
    "measure_recall",
    "memory",
    "send",
]

RECALL_K: Final = 10
SEND_CALL: Final = 1000
"""Operations per ``send_many`` call (frames of about this many over the partitions)."""
MIX_SEED: Final = SEED + 2
"""Seed of the choice of updated and removed pks."""
_STARTUP_TIMEOUT_S: Final = 120.0


def send(producer: VectorProducer, ops: list[VectorOp]) -> None:
    """``ops`` in ``send_many`` calls of :data:`SEND_CALL`, then a flush (``acks=all``)."""
    for start in range(0, len(ops), SEND_CALL):
        producer.send_many(ops[start : start + SEND_CALL])
    producer.flush(timeout_s=300)


def adds(pks: Sequence[str], vectors: Vectors, labels: npt.NDArray[np.int64]) -> list[VectorOp]:
    """One ADD per pk, its cluster as metadata."""
    return [
        VectorOp(OpType.ADD, pk, vectors[i], {"cluster": int(labels[i])})
        for i, pk in enumerate(pks)
    ]


def bare_hnswlib(
    pks: Sequence[str], vectors: Vectors, settings: Settings, partitions: int
) -> tuple[float, int]:
    """``(seconds, shards)`` building one hnswlib index per shard with one add_items each
    (:class:`~pipeline.bench.vectors_bare.BareShards`: shards as the worker has them,
    capacity preallocated, all cores)."""
    shards = BareShards(pks, vectors, settings.vector_auto_buffer, partitions)
    return shards.build_seconds, len(shards.indexes)


@dataclass
class VectorRun:
    """One worker and one producer, the ops sent so far and the live set the client knows."""

    settings: Settings
    worker: WorkerProcess
    producer: VectorProducer
    model: ClusteredEmbeddings
    launched: float
    """``time.monotonic()`` when the worker was launched."""
    live: dict[str, Vectors] = field(default_factory=dict)
    ops_sent: int = 0
    """Every op produced to the worker's topic, the pre-produced ADDs included."""

    def send(self, ops: list[VectorOp]) -> None:
        send(self.producer, ops)
        self.ops_sent += len(ops)

    def stats(self) -> dict[str, Any]:
        stats = worker_page(self.worker, pages.VECTORS_STATS)
        if stats is None:
            raise BenchmarkFailed("the worker's /vectors/buffer/stats page stopped answering")
        return stats

    def wait_settled(self, live: int, what: str, timeout_s: float) -> dict[str, Any]:
        """Poll until the worker buffered every op sent, drained them and holds ``live``."""

        def settled() -> dict[str, Any] | None:
            stats = worker_page(self.worker, pages.VECTORS_STATS)
            if stats is None:
                return None
            done = (
                stats["vectors_buffered"] >= self.ops_sent
                and stats["current_buffer_size"] == 0
                and stats["live_vectors"] == live
            )
            return stats if done else None

        return wait_for(settled, timeout_s=timeout_s, interval_s=0.01, what=what)


@dataclass(frozen=True)
class Indexed:
    """Kafka -> searchable: ``timed`` vectors applied in ``seconds`` after the clock started."""

    timed: int
    seconds: float
    ready_seconds: float
    flush_count: int

    @property
    def rate(self) -> float:
        return self.timed / self.seconds


def measure_indexed(worker: WorkerProcess, launched: float, n: int) -> Indexed:
    """Time ``worker`` (launched at ``time.monotonic()`` ``launched``) from its first
    consumed op to all ``n`` pre-produced ADDs searchable."""
    timing = time_worker(
        worker,
        pages.VECTORS_STATS,
        launched=launched,
        consumed=lambda page: page["vectors_buffered"] > 0,
        done=lambda page: page["vectors_flushed"] >= n and page["live_vectors"] >= n,
        startup_timeout_s=_STARTUP_TIMEOUT_S,
        done_timeout_s=60 + n / 100,
        done_interval_s=0.02,
        what="vector operations",
        done_what=f"all {n:,} vectors searchable",
    )
    return Indexed(
        timed=n - int(timing.first["vectors_flushed"]),
        seconds=timing.seconds,
        ready_seconds=timing.ready_seconds,
        flush_count=int(timing.final["flush_count"]),
    )


def apply_mix(run: VectorRun, fraction: float) -> int:
    """Update, remove and add ``fraction`` of the live vectors each, in a random order;
    wait until applied and check the worker holds exactly the live set. Returns the
    count of each kind."""
    pks = list(run.live)
    n = len(pks)
    rng = np.random.default_rng(MIX_SEED)
    k = int(n * fraction)
    chosen = rng.permutation(n)[: 2 * k]
    new_vectors, new_labels = run.model.draw(2 * k)
    ops = [
        VectorOp(OpType.UPDATE, pks[i], new_vectors[j], {"cluster": int(new_labels[j])})
        for j, i in enumerate(chosen[:k])
    ]
    ops += [VectorOp(OpType.REMOVE, pks[i], None, {}) for i in chosen[k:]]
    ops += adds([f"v{n + i}" for i in range(k)], new_vectors[k:], new_labels[k:])
    ops = [ops[i] for i in rng.permutation(len(ops))]
    for op in ops:
        if op.vector is None:
            del run.live[op.pk]
        else:
            run.live[op.pk] = op.vector
    run.send(ops)
    run.wait_settled(len(run.live), "the mix to be applied", 60 + len(ops) / 100)
    dump = run_with_client(worker_urls(run.settings), lambda c: c.vector_dump(), timeout_s=60)
    if set(dump) != set(run.live):
        raise BenchmarkFailed(
            f"after the mix the worker holds {len(dump):,} pks, "
            f"{len(set(dump) ^ set(run.live)):,} differ from what was sent"
        )
    return k


def exact_top(live: Vectors, queries: Vectors, k: int) -> npt.NDArray[np.int64]:
    """Row numbers of the exact ``k`` nearest (cosine) live vectors per query."""
    scores = queries @ live.T  # unit vectors: larger is closer
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.asarray(top, dtype=np.int64)


def measure_recall(run: VectorRun, queries: int) -> tuple[float, list[float]]:
    """``(recall@10, seconds of each search)`` over fresh queries through the worker."""
    live_pks = list(run.live)
    vectors, _ = run.model.draw(queries)
    exact = exact_top(np.stack([run.live[pk] for pk in live_pks]), vectors, RECALL_K)
    found = 0
    latencies = []
    for query, row in zip(vectors, exact, strict=True):
        t = time.perf_counter()
        hits = search(query, RECALL_K, settings=run.settings)
        latencies.append(time.perf_counter() - t)
        found += len({h.pk for h in hits} & {live_pks[i] for i in row})
    return found / (RECALL_K * queries), latencies


def measure_buffered(run: VectorRun, m: int) -> float:
    """Seconds from the first send of ``m`` new ADDs to all of them searchable."""
    vectors, labels = run.model.draw(m)
    ops = adds([f"b{i}" for i in range(m)], vectors, labels)
    live_after = len(run.live) + m
    t0 = time.perf_counter()
    run.send(ops)
    run.wait_settled(live_after, "the buffered vectors", 60 + m / 100)
    seconds = time.perf_counter() - t0
    for i in range(0, m, max(1, m // 20)):
        if search(vectors[i], 1, settings=run.settings)[0].pk != f"b{i}":
            raise BenchmarkFailed(f"buffered vector b{i} is not its own nearest neighbour")
    return seconds


def _is_top_hit(settings: Settings, vector: Vectors, pk: str) -> bool | None:
    """``True`` when ``pk`` is the nearest neighbour of ``vector``, else ``None`` (poll again)."""
    hits = search(vector, 1, settings=settings)
    return True if hits and hits[0].pk == pk else None


def measure_direct(run: VectorRun, d: int) -> tuple[float, list[float]]:
    """``(seconds, per-vector seconds)`` for ``d`` ADDs, each durable and searchable
    before the next: one JSON op and a flush, then a search polled every 10 ms."""
    vectors, _ = run.model.draw(d)
    latencies = []
    t0 = time.perf_counter()
    for i in range(d):
        pk = f"d{i}"
        t = time.perf_counter()
        run.producer.add(pk, vectors[i])
        run.producer.flush()
        wait_for(
            partial(_is_top_hit, run.settings, vectors[i], pk),
            timeout_s=30,
            interval_s=0.01,
            what=f"direct vector {pk} searchable",
        )
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - t0, latencies


def memory(settings: Settings) -> dict[str, Any]:
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
