"""Bare hnswlib, sharded as the worker shards: the vector benchmark's baseline.

:class:`BareShards` builds one ``hnswlib.Index`` per topic partition (pk -> partition
as the producer places it, :func:`~pipeline.kafka.producer.key_partition`), with the
index settings of the worker (space, M, ef_construction, ``ef_search``), capacity
preallocated and one ``add_items`` call per shard on all cores. Its
:meth:`~BareShards.search` asks every shard for ``k`` and merges by distance, as the
worker's search fans out over its shards, so recall is compared on the same shards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.bench.embeddings import Vectors
from pipeline.config import VectorAutoBufferSettings
from pipeline.kafka.producer import key_partition

__all__ = ["BareShards"]


class BareShards:
    """The vectors of ``pks`` in one bare hnswlib index per partition; rows are labels."""

    def __init__(
        self,
        pks: Sequence[str],
        vectors: Vectors,
        config: VectorAutoBufferSettings,
        partitions: int,
    ) -> None:
        import hnswlib

        shard_of = np.array([key_partition(pk.encode(), partitions) for pk in pks])
        rows_of = [np.flatnonzero(shard_of == p) for p in range(partitions)]
        self.rows = [rows for rows in rows_of if rows.size]
        """Row numbers (labels) of each non-empty shard."""
        self.indexes: list[Any] = []
        for rows in self.rows:
            index = hnswlib.Index(space=config.space, dim=config.dimension)
            index.init_index(
                max_elements=int(rows.size),
                M=config.m,
                ef_construction=config.ef_construction,
                allow_replace_deleted=True,
            )
            self.indexes.append(index)
        data = [np.ascontiguousarray(vectors[rows]) for rows in self.rows]
        t0 = time.perf_counter()
        for index, rows, block in zip(self.indexes, self.rows, data, strict=True):
            index.add_items(block, rows.astype(np.uint64), num_threads=-1)
        self.build_seconds = time.perf_counter() - t0
        """Seconds of the ``add_items`` calls alone."""
        for index in self.indexes:
            index.set_ef(config.ef_search)

    def search(
        self, query: Vectors, k: int, allowed: Callable[[int], bool] | None = None
    ) -> list[int]:
        """Labels (rows) of the ``k`` nearest over every shard, closest first.

        ``allowed(label)`` is hnswlib's own filter; a shard with fewer than ``k``
        allowed vectors found contributes none (hnswlib raises for it).
        """
        found: list[tuple[float, int]] = []
        for index in self.indexes:
            try:
                labels, distances = index.knn_query(query, k=k, num_threads=1, filter=allowed)
            except RuntimeError:
                continue
            found += zip(distances[0].tolist(), labels[0].tolist(), strict=True)
        found.sort()
        return [int(label) for _, label in found[:k]]
