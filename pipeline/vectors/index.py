"""An HNSW vector index (hnswlib) that applies coalesced batches and answers k-NN queries.

:class:`VectorIndex` maps string pks onto hnswlib's integer labels and keeps each
pk's metadata beside it. :meth:`VectorIndex.apply` writes a whole
:class:`~pipeline.vectors.buffer.VectorBatch` under the write side of a
:class:`~pipeline.vectors.rwlock.ReadWriteLock`, so a search (read side) sees
either none or all of a batch.

How a batch is written
    1. Removes: ``mark_deleted`` on the pk's label. The slot stays in the graph as a
       waypoint (hnswlib walks deleted nodes but never returns them).
    2. Upserts: every upserted pk gets a fresh label, and an existing pk's old label
       is marked deleted. Slots are never reused or overwritten in place: both
       hnswlib's ``replace_deleted`` and its in-place update rewrite a node's links,
       which leaves other live nodes unreachable. Over 20,000 clustered adds,
       updates and removes on 3,000 pks, 1-7 live vectors per run could no longer
       be found by their own vector, even with ``ef`` above the shard's size; with
       fresh labels, none.
    3. Capacity: if the slots the batch needs exceed ``max_elements``, the index
       grows to ``max(1.5 * capacity, needed + batch size)`` first.
    4. One ``add_items`` call for all upserts on all threads.
    5. Compaction: once deleted slots outnumber live ones (and exceed
       :attr:`VectorIndex.compact_min_dead`), the live vectors are copied into a new
       graph with fresh labels, built while searches go on against the old one, and
       swapped in under the write lock. The copy costs one insert per live vector
       per time the index's deletes reach its live count, so churn keeps the slots
       within about twice the live vectors.

Distances are hnswlib's: ``l2`` is the squared Euclidean distance, ``ip`` is
``1 - <a, b>`` and ``cosine`` is ``1 - cos(a, b)`` (hnswlib normalises vectors on
insert, so :meth:`VectorIndex.get` returns the unit vector in that space).

Snapshots (:meth:`VectorIndex.save` / :meth:`VectorIndex.load`) hold hnswlib's
``save_index`` file and a ``state.json`` (parameters, pk -> label, metadata, the
caller's ``extra``) in the crash-safe directory layout of :mod:`pipeline.vectors.snapshot`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import hnswlib
import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError, InvalidArgument, ThemisError
from pipeline.vectors.buffer import VectorBatch
from pipeline.vectors.compaction import rebuilt_graph
from pipeline.vectors.ops import VectorOp, op_metadata_bytes, validate_vector
from pipeline.vectors.rwlock import ReadWriteLock
from pipeline.vectors.snapshot import (
    INDEX_FILE,
    current_snapshot,
    has_snapshot,
    read_state,
    write_snapshot,
)

__all__ = ["SNAPSHOT_FORMAT", "SPACES", "SearchHit", "VectorIndex"]

SPACES: Final = ("cosine", "l2", "ip")
SNAPSHOT_FORMAT: Final = 1
"""Version of ``state.json``; :meth:`VectorIndex.load` refuses other versions."""

_GROWTH: Final = 1.5
_log = logging.getLogger(__name__)
_PK_ENTRY_BYTES: Final = 232
"""Estimated bytes of Python bookkeeping per live pk: two dict entries, a label int,
a tuple and the pk and metadata objects' headers (measured on CPython 3.11, rounded)."""

Filter = Callable[[str, dict[str, Any]], bool]
"""A search filter: ``(pk, metadata) -> keep``."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result: ``distance`` in the index's space (smaller is closer)."""

    pk: str
    distance: float
    metadata: dict[str, Any]


@dataclass(slots=True)
class _Entry:
    label: int
    metadata: dict[str, Any]
    aux_bytes: int


class VectorIndex:
    """A thread-safe HNSW index of float32 vectors keyed by string pks.

    ``space`` is ``cosine``, ``l2`` or ``ip``; ``m``, ``ef_construction`` and
    ``ef_search`` are hnswlib's ``M``, ``ef_construction`` and ``ef``.
    ``initial_capacity`` is the number of slots allocated up front; ``threads`` is
    how many threads ``add_items`` uses (-1: every core). Searches and reads may
    run from any number of threads while one thread applies batches.
    """

    compact_min_dead: int = 1024
    """Deleted slots below which the index is never compacted (step 5 of the module doc)."""

    def __init__(
        self,
        *,
        dimension: int,
        space: str,
        m: int,
        ef_construction: int,
        ef_search: int,
        initial_capacity: int = 10_000,
        threads: int = -1,
    ) -> None:
        if space not in SPACES:
            raise InvalidArgument(f"space must be one of {', '.join(SPACES)}; got {space!r}")
        if dimension < 1 or initial_capacity < 1 or m < 2 or ef_construction < 1 or ef_search < 1:
            raise InvalidArgument(
                "dimension, initial_capacity and ef_* must be >= 1 and m >= 2; got "
                f"dimension={dimension} initial_capacity={initial_capacity} m={m} "
                f"ef_construction={ef_construction} ef_search={ef_search}"
            )
        index = hnswlib.Index(space=space, dim=dimension)
        index.init_index(
            max_elements=initial_capacity,
            M=m,
            ef_construction=ef_construction,
            allow_replace_deleted=True,
        )
        self._setup(index, dimension=dimension, space=space, ef_search=ef_search, threads=threads)

    def _setup(
        self, index: Any, *, dimension: int, space: str, ef_search: int, threads: int
    ) -> None:
        index.set_ef(ef_search)
        self._index = index
        self._dimension = dimension
        self._space = space
        self._ef_search = ef_search
        self._threads = threads
        self._lock = ReadWriteLock()
        self._apply_mutex = threading.Lock()
        self.compactions = 0
        self._entries: dict[str, _Entry] = {}
        self._pk_of: dict[int, str] = {}
        self._next_label = 0
        self._aux_bytes = 0

    # -- properties -----------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def space(self) -> str:
        return self._space

    def capacity(self) -> int:
        """Slots allocated now (hnswlib's ``max_elements``); shrinks only when compacted."""
        with self._lock.read():
            return int(self._index.get_max_elements())

    def live_count(self) -> int:
        """Pks in the index."""
        with self._lock.read():
            return len(self._entries)

    def pks(self) -> set[str]:
        """Every pk in the index."""
        with self._lock.read():
            return set(self._entries)

    def memory_bytes(self) -> int:
        """Estimated bytes held: the hnswlib graph plus the pk maps.

        ``capacity * (4 * dimension + 8 * m + 32)`` for hnswlib (vector, level-0
        links of ``2 * m`` u32, label, link-list pointer, level and lock per slot)
        ``+ live * (4 * m + 4) / (m - 1)`` for the upper levels (an element reaches
        level 1 with probability ``1/m``), plus per live pk its UTF-8 length, its
        metadata as compact JSON and 232 bytes of Python bookkeeping.
        """
        with self._lock.read():
            m = int(self._index.M)
            capacity = int(self._index.get_max_elements())
            live = len(self._entries)
            graph = capacity * (4 * self._dimension + 8 * m + 32)
            upper = live * (4 * m + 4) // max(1, m - 1)
            return graph + upper + self._aux_bytes + live * _PK_ENTRY_BYTES

    # -- writing --------------------------------------------------------------

    def apply(self, batch: VectorBatch) -> None:
        """Write ``batch``: remove, then upsert, as described in the module docstring.

        Removing a pk the index does not hold does nothing. Raises ``ValueError``
        (before changing anything) when a pk is both upserted and removed or a
        vector has the wrong dimension.
        """
        upserts: dict[str, VectorOp] = {}
        for op in batch.upserts:
            upserts.pop(op.pk, None)  # last one wins, in its position
            upserts[op.pk] = op
        removes = list(dict.fromkeys(batch.removes))
        both = upserts.keys() & set(removes)
        if both:
            raise InvalidArgument(
                f"batch both upserts and removes {sorted(both)[:5]}; a coalesced batch "
                "lists each pk once"
            )
        vectors = _stack(list(upserts.values()), self._dimension)
        aux = [
            len(pk.encode("utf-8")) + op_metadata_bytes(op.metadata) for pk, op in upserts.items()
        ]
        with self._apply_mutex:
            with self._lock.write():
                self._write(upserts, removes, vectors, aux)
                dead = int(self._index.get_current_count()) - len(self._entries)
            if dead > max(len(self._entries), self.compact_min_dead):
                self._compact()

    def _write(
        self,
        upserts: dict[str, VectorOp],
        removes: list[str],
        vectors: npt.NDArray[np.float32],
        aux: list[int],
    ) -> None:
        """Steps 1-4 of the module docstring; the caller holds the write lock."""
        index = self._index
        for pk in removes:
            entry = self._entries.pop(pk, None)
            if entry is not None:
                index.mark_deleted(entry.label)
                del self._pk_of[entry.label]
                self._aux_bytes -= entry.aux_bytes
        if not upserts:
            return
        labels = np.arange(self._next_label, self._next_label + len(upserts), dtype=np.uint64)
        self._next_label += len(upserts)
        for pk in upserts:
            entry = self._entries.get(pk)
            if entry is not None:
                index.mark_deleted(entry.label)
                del self._pk_of[entry.label]
        needed = int(index.get_current_count()) + len(upserts)
        capacity = int(index.get_max_elements())
        if needed > capacity:
            index.resize_index(max(int(capacity * _GROWTH), needed + len(upserts)))
        index.add_items(vectors, labels, num_threads=self._threads)
        for (pk, op), label, size in zip(upserts.items(), labels.tolist(), aux, strict=True):
            old = self._entries.get(pk)
            if old is not None:
                self._aux_bytes -= old.aux_bytes
            self._entries[pk] = _Entry(label, op.metadata, size)
            self._pk_of[label] = pk
            self._aux_bytes += size

    def _compact(self) -> None:
        """Step 5: rebuild the graph from the live vectors; the caller holds the apply mutex.

        Only :meth:`apply` changes the index, and it waits for the apply mutex, so the
        live set cannot change while the new graph is built outside the write lock.
        """
        pks = list(self._entries)
        fresh = rebuilt_graph(
            self._index,
            [self._entries[pk].label for pk in pks],
            space=self._space,
            ef_search=self._ef_search,
            threads=self._threads,
        )
        with self._lock.write():
            self._index = fresh
            self._pk_of = {}
            for label, pk in enumerate(pks):
                self._entries[pk].label = label
                self._pk_of[label] = pk
            self._next_label = len(pks)
            self.compactions += 1
        _log.info("vector index compacted: %d live vectors in a new graph", len(pks))

    # -- reading --------------------------------------------------------------

    def search(
        self,
        vector: npt.ArrayLike,
        k: int,
        ef: int | None = None,
        filter: Filter | None = None,  # the name the interface was specified with
    ) -> list[SearchHit]:
        """The ``k`` nearest live vectors to ``vector``, closest first.

        ``ef`` widens the search for this call: hnswlib keeps
        ``max(ef_search, ef, k)`` candidates (a value below ``ef_search`` has no
        effect). ``filter(pk, metadata)`` keeps only the hits it returns true for.
        Fewer than ``k`` hits come back when fewer live vectors (or filter matches)
        exist. If hnswlib cannot find ``k`` (a selective filter, a graph thinned by
        deletes) the answer is computed exactly over the live vectors instead.
        Raises :class:`~pipeline.errors.InvalidRecord` for a query vector of the
        wrong dimension or with a non-finite component.
        """
        query = validate_vector(vector, self._dimension)
        if k < 1:
            return []
        with self._lock.read():
            live = len(self._entries)
            if live == 0:
                return []
            want = min(k, live)
            ask = min(max(want, ef or 0), live)
            label_filter = None if filter is None else self._label_filter(filter)
            for count in dict.fromkeys((ask, want)):
                try:
                    labels, distances = self._index.knn_query(
                        query, k=count, num_threads=1, filter=label_filter
                    )
                except RuntimeError:
                    continue  # hnswlib raises when it finds fewer than `count` results
                return self._hits(labels[0][:want].tolist(), distances[0][:want].tolist())
            return self._exact_search(query, want, filter)

    def get(self, pk: str) -> tuple[npt.NDArray[np.float32], dict[str, Any]] | None:
        """``(vector, metadata)`` of ``pk`` (a unit vector in cosine space), ``None`` if absent."""
        with self._lock.read():
            entry = self._entries.get(pk)
            if entry is None:
                return None
            vector = np.asarray(self._index.get_items([entry.label])[0], dtype=np.float32)
            return vector, dict(entry.metadata)

    # -- snapshots ------------------------------------------------------------

    @staticmethod
    def has_snapshot(directory: Path) -> bool:
        """Whether ``directory`` holds a snapshot written by :meth:`save`."""
        return has_snapshot(Path(directory))

    def save(self, directory: Path, *, extra: dict[str, Any]) -> None:
        """Write an atomic snapshot into ``directory`` (created if missing).

        ``extra`` (JSON-serialisable, string keys) is stored with it and returned
        by :meth:`load`; the worker keeps the Kafka offsets the snapshot covers
        there. Searches continue while saving; :meth:`apply` waits. Not safe to
        call from two processes on one directory at once.
        """

        def write(snapshot: Path) -> dict[str, Any]:
            with self._lock.read():
                self._index.save_index(str(snapshot / INDEX_FILE))
                return {
                    "format": SNAPSHOT_FORMAT,
                    "dimension": self._dimension,
                    "space": self._space,
                    "ef_search": self._ef_search,
                    "capacity": int(self._index.get_max_elements()),
                    "next_label": self._next_label,
                    "pks": [[pk, e.label, e.metadata] for pk, e in self._entries.items()],
                    "extra": extra,
                }

        write_snapshot(Path(directory), write)

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        dimension: int | None = None,
        space: str | None = None,
        ef_search: int | None = None,
        threads: int = -1,
        **ignored: Any,
    ) -> tuple[VectorIndex, dict[str, Any]]:
        """The index in the snapshot ``CURRENT`` names, and the ``extra`` saved with it.

        ``dimension`` and ``space``, when given, must match the snapshot
        (:class:`~pipeline.errors.ConfigError` otherwise: rebuild the index from the
        topic or change the setting back). ``ef_search`` and ``threads`` apply to
        the loaded index. Other keyword arguments of the constructor (``m``,
        ``ef_construction``, ``initial_capacity``) are accepted and ignored: the
        graph keeps the values it was built with. Raises ``FileNotFoundError``
        without a snapshot and :class:`~pipeline.errors.ThemisError` when the
        snapshot is unreadable or inconsistent.
        """
        directory = Path(directory)
        snapshot = current_snapshot(directory)
        state = read_state(snapshot)
        if state.get("format") != SNAPSHOT_FORMAT:
            raise ThemisError(
                f"vector index snapshot {snapshot} has format {state.get('format')!r}; "
                f"this version reads {SNAPSHOT_FORMAT}: rebuild the index"
            )
        for setting, wanted in (("dimension", dimension), ("space", space)):
            if wanted is not None and state[setting] != wanted:
                raise ConfigError(
                    f"features.vector_auto_buffer.{setting} is {wanted!r} but the snapshot in "
                    f"{directory} was built with {state[setting]!r}: set it back or delete the "
                    "snapshot and rebuild the index from the topic"
                )
        index = hnswlib.Index(space=state["space"], dim=state["dimension"])
        try:
            index.load_index(
                str(snapshot / INDEX_FILE),
                max_elements=state["capacity"],
                allow_replace_deleted=True,
            )
        except RuntimeError as exc:
            raise ThemisError(f"vector index snapshot {snapshot} is unreadable: {exc}") from None
        self = cls.__new__(cls)
        self._setup(
            index,
            dimension=state["dimension"],
            space=state["space"],
            ef_search=ef_search or state["ef_search"],
            threads=threads,
        )
        self._next_label = state["next_label"]
        known = set(index.get_ids_list())
        for pk, label, metadata in state["pks"]:
            if label not in known:
                raise ThemisError(
                    f"vector index snapshot {snapshot}: pk {pk!r} has label {label}, which the "
                    "index file does not hold; rebuild the index"
                )
            size = len(pk.encode("utf-8")) + op_metadata_bytes(metadata)
            self._entries[pk] = _Entry(label, metadata, size)
            self._pk_of[label] = pk
            self._aux_bytes += size
        return self, state["extra"]

    # -- internals (caller holds the read lock) ---------------------------------

    def _label_filter(self, keep: Filter) -> Callable[[int], bool]:
        pk_of = self._pk_of
        entries = self._entries

        def allowed(label: int) -> bool:
            pk = pk_of.get(label)
            return pk is not None and bool(keep(pk, entries[pk].metadata))

        return allowed

    def _hits(self, labels: list[int], distances: list[float]) -> list[SearchHit]:
        hits: list[SearchHit] = []
        for label, distance in zip(labels, distances, strict=True):
            pk = self._pk_of.get(label)
            if pk is not None:  # every live label has a pk; a miss would be a stale slot
                hits.append(SearchHit(pk, float(distance), dict(self._entries[pk].metadata)))
        return hits

    def _exact_search(
        self, query: npt.NDArray[np.float32], k: int, keep: Filter | None
    ) -> list[SearchHit]:
        """Brute force over the live vectors (that ``keep`` accepts), hnswlib's distances."""
        labels = [
            e.label for pk, e in self._entries.items() if keep is None or bool(keep(pk, e.metadata))
        ]
        if not labels:
            return []
        data = np.asarray(self._index.get_items(labels), dtype=np.float32)
        if self._space == "l2":
            diff = data - query
            distances = np.einsum("ij,ij->i", diff, diff)
        else:
            if self._space == "cosine":  # stored vectors are unit vectors already
                norm = float(np.linalg.norm(query))
                query = query / (norm + 1e-30)
            distances = 1.0 - data @ query
        top = min(k, len(labels))
        order = np.argpartition(distances, top - 1)[:top]
        order = order[np.argsort(distances[order], kind="stable")]
        return self._hits([labels[i] for i in order], distances[order].tolist())


def _stack(ops: list[VectorOp], dimension: int) -> npt.NDArray[np.float32]:
    """The upserts' vectors as one C-contiguous ``(n, dimension)`` float32 array."""
    out = np.empty((len(ops), dimension), dtype=np.float32)
    for i, op in enumerate(ops):
        vector = op.vector
        if vector is None or vector.shape != (dimension,):
            shape = None if vector is None else vector.shape
            raise InvalidArgument(
                f"{op.op.value} of {op.pk!r} has vector shape {shape}; the index has "
                f"dimension {dimension}"
            )
        out[i] = vector
    return out
