"""The replica's state: the blocks and vector index it serves, applied from WAL batches.

:class:`ReplicaState` holds what a replica serves: a :class:`~pipeline.ts.store.BlockStore`
of Gorilla blocks and one :class:`~pipeline.vectors.index.VectorIndex`, under one
directory::

    <dir>/blocks.sqlite        blocks by id + positions: "wal.lsn" (last applied LSN),
                               "wal.ts.entries", "wal.vector.last_entry_lsn"
    <dir>/vectors/             vector index snapshots; ``extra`` = {"lsn", "entries"}
    <dir>/dictionaries/<id>    zstd dictionaries received in batches

Applying a batch, atomically and in LSN order:

1. verify the checksum and decompress (:func:`~pipeline.wal.batch.decode_batch`);
   a corrupt batch raises :class:`~pipeline.errors.CorruptBatch` and changes nothing;
2. a batch whose first LSN is beyond ``last_applied_lsn + 1`` raises
   :class:`~pipeline.errors.WalGap` (naming the LSN expected) and changes nothing;
   entries at or below ``last_applied_lsn`` are skipped, so a batch sent twice is
   applied once;
3. every payload is decoded before anything is written; an entry whose payload does
   not decode is *rejected* (logged, counted, its LSN passed), because sending it
   again cannot repair it;
4. vector batches are applied to the index in LSN order (searchable at once); a
   background thread snapshots the index with the LSN it covers at most every
   :data:`SNAPSHOT_INTERVAL_S` seconds (and :meth:`ReplicaState.close` once more), so
   no batch waits for a snapshot's writes and fsyncs;
5. the blocks (``INSERT OR IGNORE`` by block id) and the last LSN are committed in
   one SQLite transaction.

After a crash ``last_applied_lsn`` is the older of SQLite's LSN and the snapshot's:
a batch beyond it is refused as a gap (the shipper re-sends from there), vector
entries at or below the snapshot's LSN and blocks already stored are skipped, and
SQLite's LSN never moves back.

Batches reach a replica through :mod:`pipeline.replication.kafka_applier` (the
replica cluster's topic) or :mod:`pipeline.replication.server` (HTTP).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy.typing as npt

from pipeline.config import Settings
from pipeline.errors import CorruptBatch, CorruptBlock, ForeignPrimary, InvalidRecord, WalGap
from pipeline.limits import MAX_LSN, MAX_LSN_HOLES
from pipeline.ts.block import decode_block
from pipeline.ts.store import BlockStore, Points
from pipeline.vectors.buffer import VectorBatch
from pipeline.vectors.index import SearchHit, VectorIndex
from pipeline.vectors.ops import OpType, VectorOp, decode_op_frame
from pipeline.vectors.shard import new_index
from pipeline.wal.batch import Dictionary, decode_batch
from pipeline.wal.entry import EntryType, WalEntry, format_lsn

__all__ = ["SNAPSHOT_INTERVAL_S", "ApplyResult", "ReplicaState"]

_LOG = logging.getLogger(__name__)

_LSN: Final = ("wal.lsn", 0)
_TS_ENTRIES: Final = ("wal.ts.entries", 0)
_VECTOR_NEEDED: Final = ("wal.vector.last_entry_lsn", 0)


SNAPSHOT_INTERVAL_S = 1.0
"""The vector index is snapshotted at most this often (and on close), off the apply
path. After a crash the replica resumes from the older of the block store's and the
snapshot's LSN: a batch beyond it is refused as a gap and the shipper resends; replayed
entries are idempotent. A snapshot may hold entries beyond the LSN it records (applied
while it was written); replaying them again leaves the same index."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one :meth:`ReplicaState.apply_batch` did; times in milliseconds."""

    entries_applied: int
    compression_ratio: float
    decompression_time_ms: float
    first_lsn: int
    last_lsn: int
    entries_skipped: int = 0
    entries_rejected: int = 0
    applied_timestamps_ms: tuple[int, ...] = ()
    """Primary append times of the entries applied (for lag measurements)."""

    def to_json(self) -> dict[str, Any]:
        """The roadmap's response body of ``POST /api/v1/wal/apply``."""
        return {
            "success": True,
            "entries_applied": self.entries_applied,
            "compression_ratio": round(self.compression_ratio, 3),
            "decompression_time_ms": round(self.decompression_time_ms, 3),
        }


class ReplicaState:
    """A replica's blocks and vector index, applied from WAL batches (see the module docstring).

    Thread-safe: one batch applies at a time; queries may run from any thread.
    """

    def __init__(
        self, data_dir: Path, settings: Settings, *, primary_id: str | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._primary_file = self.data_dir / "primary_id"
        pinned = (
            self._primary_file.read_text(encoding="utf-8") if self._primary_file.is_file() else None
        )
        if primary_id is not None and pinned is not None and pinned != primary_id:
            raise ForeignPrimary(
                f"{self.data_dir} holds a replica of primary {pinned!r}, not {primary_id!r}: "
                "use another data directory for another primary"
            )
        self.primary_id: str | None = primary_id or pinned
        """The primary this replica follows: configured, or the first it heard from."""
        self._lock = threading.RLock()
        self._vector_settings = settings.vector_auto_buffer
        self._store = BlockStore(self.data_dir / "blocks.sqlite")
        self._lsn = self._store.position(*_LSN) or 0
        self._ts_entries = self._store.position(*_TS_ENTRIES) or 0
        vector_needed = self._store.position(*_VECTOR_NEEDED) or 0
        self._vector_dir = self.data_dir / "vectors"
        vs = self._vector_settings
        if VectorIndex.has_snapshot(self._vector_dir):
            self._index, extra = VectorIndex.load(
                self._vector_dir, dimension=vs.dimension, space=vs.space, ef_search=vs.ef_search
            )
            self._vector_lsn = int(extra["lsn"])
            self._vector_entries = int(extra["entries"])
        else:
            self._index = new_index(vs, initial_capacity=1024)
            self._vector_lsn = 0
            self._vector_entries = 0
        if self._vector_lsn >= vector_needed:
            # No vector entry after the snapshot: the index is complete through SQLite's LSN.
            self._vector_lsn = max(self._vector_lsn, self._lsn)
        self._dict_dir = self.data_dir / "dictionaries"
        self._dictionaries: dict[int, Dictionary] = {}
        if self._dict_dir.is_dir():
            for path in self._dict_dir.iterdir():
                with contextlib.suppress(ValueError):
                    found = Dictionary.from_bytes(path.read_bytes())
                    self._dictionaries[found.dictionary_id] = found
        self.batches_applied = 0
        self.entries_rejected = 0
        self._vector_dirty = False
        self._snapshot_lock = threading.Lock()
        self._closing = threading.Event()
        self._snapshotter = threading.Thread(
            target=self._snapshot_loop, name="replica-vector-snapshot", daemon=True
        )
        self._snapshotter.start()

    # -- state ----------------------------------------------------------------

    @property
    def last_applied_lsn(self) -> int:
        """Every entry up to this LSN is applied (vectors durable at the next snapshot)."""
        with self._lock:
            return min(self._lsn, self._vector_lsn)

    @property
    def entries_applied_total(self) -> int:
        """Entries applied over the replica's life (a replayed entry counts once)."""
        with self._lock:
            return self._ts_entries + self._vector_entries

    def status(self) -> dict[str, Any]:
        """``GET /api/v1/replica/status``: positions and counters."""
        with self._lock:
            last = min(self._lsn, self._vector_lsn)
            return {
                "last_applied_lsn": format_lsn(last),
                "expected_lsn": format_lsn(last + 1),
                "entries_applied_total": self._ts_entries + self._vector_entries,
                "batches_applied": self.batches_applied,
                "entries_rejected": self.entries_rejected,
                "blocks": self._store.block_count(),
                "vectors": self._index.live_count(),
            }

    def close(self) -> None:
        """Stop the snapshot thread, snapshot what it has not covered, close the store."""
        self._closing.set()
        self._snapshotter.join()
        self._snapshot_vectors()
        with self._lock:
            self._store.close()

    def _snapshot_loop(self) -> None:
        while not self._closing.wait(SNAPSHOT_INTERVAL_S):
            try:
                self._snapshot_vectors()
            except Exception:  # the disk: the next round tries again, close() raises
                _LOG.exception("snapshotting the replica's vector index failed")

    def _snapshot_vectors(self) -> None:
        """Snapshot the index with the LSN and entry count it covers, if it changed.

        The positions are read under the state's lock; the index is written outside
        it (the index's own lock holds applies back only while its files are written,
        not while they are fsynced).
        """
        with self._snapshot_lock:
            with self._lock:
                if not self._vector_dirty:
                    return
                extra = {"lsn": self._vector_lsn, "entries": self._vector_entries}
                self._vector_dirty = False
            try:
                self._index.save(self._vector_dir, extra=extra)
            except BaseException:
                with self._lock:
                    self._vector_dirty = True
                raise

    # -- applying -------------------------------------------------------------

    def apply_batch(self, data: bytes) -> ApplyResult:
        """Verify, decompress and apply one batch (see the module docstring).

        Raises :class:`~pipeline.errors.CorruptBatch` (checksum, decompression,
        unknown dictionary) or :class:`~pipeline.errors.WalGap`; either way nothing
        was applied.
        """
        with self._lock:
            t0 = time.perf_counter()
            header, entries = decode_batch(data, self._dictionaries)
            decompression_ms = (time.perf_counter() - t0) * 1000.0
            self._check_range(header.first_lsn, header.last_lsn, len(entries))
            self._check_primary(header.primary_id)
            last_applied = min(self._lsn, self._vector_lsn)
            if header.first_lsn > last_applied + 1:
                raise WalGap(
                    f"WAL batch starts at LSN {format_lsn(header.first_lsn)} but this replica "
                    f"applied up to {format_lsn(last_applied)}; send from "
                    f"{format_lsn(last_applied + 1)}",
                    expected_lsn=last_applied + 1,
                    first_lsn=header.first_lsn,
                )
            if header.dictionary is not None:
                self._keep_dictionary(header.dictionary)
            if header.last_lsn <= last_applied:
                return ApplyResult(
                    0,
                    header.compression_ratio,
                    decompression_ms,
                    header.first_lsn,
                    header.last_lsn,
                    entries_skipped=len(entries),
                )
            blocks, vector_batches, rejected, applied_ts, skipped, last_vector = self._decode(
                entries
            )
            ts_entries = self._ts_entries + len(blocks)
            vector_entries = self._vector_entries + len(vector_batches)
            if vector_batches:
                for batch in vector_batches:
                    self._index.apply(batch)
                self._vector_entries = vector_entries
                self._vector_dirty = True
            self._vector_lsn = max(self._vector_lsn, header.last_lsn)
            # A replay (after a crash between vector snapshots) never moves the LSN back.
            lsn = max(self._lsn, header.last_lsn)
            positions = {_LSN: lsn, _TS_ENTRIES: ts_entries}
            if last_vector:
                positions[_VECTOR_NEEDED] = last_vector
            self._store.insert_blocks(blocks, positions=positions)
            self._lsn = lsn
            self._ts_entries = ts_entries
            self.batches_applied += 1
            self.entries_rejected += rejected
            return ApplyResult(
                len(blocks) + len(vector_batches),
                header.compression_ratio,
                decompression_ms,
                header.first_lsn,
                header.last_lsn,
                entries_skipped=skipped,
                entries_rejected=rejected,
                applied_timestamps_ms=tuple(applied_ts),
            )

    @staticmethod
    def _check_range(first: int, last: int, entries: int) -> None:
        """A batch may skip few LSNs (WAL records that could not be read), never jump far."""
        if last > MAX_LSN:
            raise CorruptBatch(
                f"WAL batch ends at LSN {last}, beyond {MAX_LSN} (MAX_LSN); nothing applied"
            )
        holes = last - first + 1 - entries
        if holes > MAX_LSN_HOLES:
            raise CorruptBatch(
                f"WAL batch claims LSNs {format_lsn(first)}..{format_lsn(last)} but carries "
                f"{entries} entries; at most {MAX_LSN_HOLES} LSNs of a batch may be empty "
                "(MAX_LSN_HOLES)"
            )

    def _check_primary(self, primary_id: str) -> None:
        """Pin the replica to the first primary it hears from (or the configured one)."""
        if self.primary_id is None:
            self._primary_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._primary_file.with_suffix(".tmp")
            tmp.write_text(primary_id, encoding="utf-8")
            tmp.replace(self._primary_file)
            self.primary_id = primary_id
        elif primary_id != self.primary_id:
            raise ForeignPrimary(
                f"this replica follows primary {self.primary_id!r}; a batch from "
                f"{primary_id!r} was refused and nothing applied"
            )

    def _decode(
        self, entries: list[WalEntry]
    ) -> tuple[list[bytes], list[VectorBatch], int, list[int], int, int]:
        """Payloads to apply: ``(blocks, vector batches, rejected, timestamps, skipped,
        LSN of the last vector batch)``."""
        blocks: list[bytes] = []
        last_vector = 0
        vector_batches: list[VectorBatch] = []
        applied_ts: list[int] = []
        rejected = skipped = 0
        for entry in entries:
            if entry.type is EntryType.TS_BLOCK:
                if entry.lsn <= self._lsn:
                    skipped += 1
                    continue
                try:
                    decode_block(entry.payload).points()
                except CorruptBlock as exc:
                    _LOG.error("WAL entry %s rejected: %s", format_lsn(entry.lsn), exc)
                    rejected += 1
                    continue
                blocks.append(entry.payload)
            else:
                if entry.lsn <= self._vector_lsn:
                    skipped += 1
                    continue
                try:
                    batch = self._vector_batch(entry.payload)
                except InvalidRecord as exc:
                    _LOG.error("WAL entry %s rejected: %s", format_lsn(entry.lsn), exc)
                    rejected += 1
                    continue
                vector_batches.append(batch)
                last_vector = entry.lsn
            applied_ts.append(entry.timestamp_ms)
        return blocks, vector_batches, rejected, applied_ts, skipped, last_vector

    def _vector_batch(self, payload: bytes) -> VectorBatch:
        ops = decode_op_frame(
            payload,
            dimension=self._vector_settings.dimension,
            max_metadata_bytes=self._vector_settings.max_metadata_bytes,
        )
        last: dict[str, VectorOp] = {}
        for op in ops:  # a frame from the primary lists each pk once; last wins otherwise
            last.pop(op.pk, None)
            last[op.pk] = op
        upserts = [op for op in last.values() if op.op is not OpType.REMOVE]
        removes = [op.pk for op in last.values() if op.op is OpType.REMOVE]
        return VectorBatch(upserts, removes, [], len(ops))

    def _keep_dictionary(self, dictionary: Dictionary) -> None:
        if dictionary.dictionary_id in self._dictionaries:
            return
        self._dict_dir.mkdir(parents=True, exist_ok=True)
        path = self._dict_dir / str(dictionary.dictionary_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(dictionary.data)
        tmp.replace(path)
        self._dictionaries[dictionary.dictionary_id] = dictionary

    # -- queries --------------------------------------------------------------

    def query_ts(self, series_key: str, start_ms: int, end_ms: int) -> Points:
        """Points of one series with ``start_ms <= t <= end_ms`` (last write wins)."""
        with self._lock:
            return self._store.query(series_key, start_ms, end_ms)

    def series_keys(self) -> list[str]:
        with self._lock:
            return sorted(self._store.series_keys())

    @property
    def dimension(self) -> int:
        """The dimension of the replica's vectors (the primary's)."""
        return self._vector_settings.dimension

    def search(self, vector: npt.ArrayLike, k: int, ef: int | None = None) -> list[SearchHit]:
        """The ``k`` nearest vectors, closest first (``ef`` as :meth:`VectorIndex.search`)."""
        return self._index.search(vector, k, ef=ef)

    def vector_dump(self) -> dict[str, dict[str, Any]]:
        """Every pk in the index with its metadata."""
        out: dict[str, dict[str, Any]] = {}
        for pk in sorted(self._index.pks()):
            got = self._index.get(pk)
            if got is not None:
                out[pk] = got[1]
        return out
