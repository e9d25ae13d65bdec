"""A fresh HNSW graph of an index's live vectors: how :class:`~pipeline.vectors.index.VectorIndex`
compacts away the slots that deletes and updates left behind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import hnswlib
import numpy as np

__all__ = ["rebuilt_graph"]

_CHUNK: Final = 10_000
"""Vectors copied per ``get_items``/``add_items`` call (bounds the copy's memory)."""
_GROWTH: Final = 1.5


def rebuilt_graph(
    old: Any, labels: Sequence[int], *, space: str, ef_search: int, threads: int
) -> Any:
    """A new hnswlib index holding the vectors of ``labels`` in ``old``, in order.

    The vector of ``labels[i]`` gets label ``i``. The new graph keeps ``old``'s
    ``M`` and ``ef_construction`` and has room for half as many vectors again.
    ``old`` is only read, so searches may run on it meanwhile.
    """
    fresh = hnswlib.Index(space=space, dim=int(old.dim))
    fresh.init_index(
        max_elements=max(int(len(labels) * _GROWTH), 16),
        M=int(old.M),
        ef_construction=int(old.ef_construction),
        allow_replace_deleted=True,
    )
    fresh.set_ef(ef_search)
    for start in range(0, len(labels), _CHUNK):
        chunk = list(labels[start : start + _CHUNK])
        vectors = np.asarray(old.get_items(chunk), dtype=np.float32)
        fresh.add_items(vectors, np.arange(start, start + len(chunk)), num_threads=threads)
    return fresh
