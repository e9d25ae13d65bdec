"""Recall where it can discriminate: unclustered vectors, the worker against bare hnswlib.

On the clustered data of the main run the worker and bare hnswlib both find every exact
neighbour at the default ``ef_search``, so that recall separates nothing.
:func:`measure_hard` uses :func:`~pipeline.bench.embeddings.random_unit_vectors`
instead, where a graph index at ``ef_search`` 64 misses some neighbours:

1. N random unit vectors are sent as ADDs (binary frames) to a topic of their own,
   vector ``i`` with metadata ``{"part": i % FILTER_PARTS}``; the same vectors go
   into :class:`~pipeline.bench.vectors_bare.BareShards` (same shards, same settings).
2. A worker of its own indexes them (timed as the main run's ``indexed`` step).
3. Q fresh random unit queries ask both for their 10 nearest: recall@10 of each against
   the exact top 10 (brute-force cosine over the N vectors).
4. Query ``j`` asks again with the filter ``{"part": j % FILTER_PARTS}`` (a tenth of the
   vectors): the worker's filtered search (what ``themis vectors search --where`` and
   the facade's ``filter`` use) and bare hnswlib's own filter on the same shards, each
   against the exact top 10 of that part.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from pipeline.bench import vectors_steps as steps
from pipeline.bench.embeddings import SEED, random_unit_vectors
from pipeline.bench.harness import progress, worker_running
from pipeline.bench.vectors_bare import BareShards
from pipeline.config import Settings
from pipeline.errors import BenchmarkFailed
from pipeline.vectors.ops import OpType, VectorOp
from pipeline.vectors.producer import VectorProducer
from pipeline.worker.client import Hit
from pipeline.worker.query import search

__all__ = ["FILTER_PARTS", "HARD_SEED", "HardRecall", "measure_hard"]

HARD_SEED: Final = SEED + 3
"""Seed of the random vectors and their queries."""
FILTER_PARTS: Final = 10
"""Values of the ``part`` metadata: a filter on one keeps a tenth of the vectors."""


@dataclass(frozen=True)
class HardRecall:
    """Recall@10 of the worker and of bare hnswlib on random unit vectors."""

    vectors: int
    queries: int
    recall: float
    bare_recall: float
    filtered_recall: float
    bare_filtered_recall: float
    indexed: steps.Indexed
    bare_seconds: float
    shards: int
    worker_exit_code: int


def measure_hard(
    settings: Settings, log_path: Path, n: int, queries: int, partitions: int
) -> HardRecall:
    """Steps 1-4 of the module docstring on ``settings``' (empty) topics, with a worker
    logging to ``log_path``. Raises :class:`BenchmarkFailed` when a step fails."""
    rng = np.random.default_rng(HARD_SEED)
    dimension = settings.vector_auto_buffer.dimension
    vectors = random_unit_vectors(n, dimension, rng)
    probes = random_unit_vectors(queries, dimension, rng)
    pks = [f"h{i}" for i in range(n)]
    parts = np.arange(n) % FILTER_PARTS
    with VectorProducer(settings) as producer:
        steps.send(
            producer,
            [
                VectorOp(OpType.ADD, pk, vectors[i], {"part": int(parts[i])})
                for i, pk in enumerate(pks)
            ],
        )
    bare = BareShards(pks, vectors, settings.vector_auto_buffer, partitions)
    progress(f"hard data: {n:,} random unit vectors sent; bare hnswlib built")
    exact = steps.exact_top(vectors, probes, steps.RECALL_K)
    members = [np.flatnonzero(parts == p) for p in range(FILTER_PARTS)]
    found = bare_found = filtered = bare_filtered = 0
    with worker_running(settings, log_path) as worker:
        indexed = steps.measure_indexed(worker, time.monotonic(), n)
        for j, query in enumerate(probes):
            truth = set(exact[j].tolist())
            found += len({int(h.pk[1:]) for h in _search(settings, query)} & truth)
            bare_found += len(set(bare.search(query, steps.RECALL_K)) & truth)
            part = j % FILTER_PARTS
            rows = members[part]
            top = steps.exact_top(vectors[rows], query[None], steps.RECALL_K)[0]
            truth = set(rows[top].tolist())
            hits = _search(settings, query, {"part": part})
            filtered += len({int(h.pk[1:]) for h in hits} & truth)
            allowed = set(rows.tolist())
            bare_hits = bare.search(query, steps.RECALL_K, allowed.__contains__)
            bare_filtered += len(set(bare_hits) & truth)
    wanted = steps.RECALL_K * queries
    result = HardRecall(
        vectors=n,
        queries=queries,
        recall=found / wanted,
        bare_recall=bare_found / wanted,
        filtered_recall=filtered / wanted,
        bare_filtered_recall=bare_filtered / wanted,
        indexed=indexed,
        bare_seconds=bare.build_seconds,
        shards=len(bare.indexes),
        worker_exit_code=worker.stop(),  # stopped when the block ended: its exit code
    )
    progress(
        f"hard data: recall@10 {result.recall:.4f} (bare {result.bare_recall:.4f}), "
        f"filtered {result.filtered_recall:.4f} (bare {result.bare_filtered_recall:.4f})"
    )
    return result


def _search(
    settings: Settings, query: np.ndarray, where: dict[str, int] | None = None
) -> list[Hit]:
    hits = search(query, steps.RECALL_K, filter=where, settings=settings)
    if len(hits) != steps.RECALL_K:
        raise BenchmarkFailed(f"a search with filter {where} returned {len(hits)} hits, not 10")
    return hits
