"""The replica's state: the blocks and vector shards it serves, applied from WAL batches.

:class:`ReplicaState` holds what a replica serves: a :class:`~pipeline.ts.store.BlockStore`
of Gorilla blocks and one :class:`~pipeline.vectors.index.VectorIndex` shard per WAL
partition (:mod:`pipeline.replication.replica_partition`), under one directory::

    <dir>/blocks.sqlite        blocks by id + positions per WAL partition p: ("wal.lsn", p)
                               (last applied LSN), ("wal.ts.entries", p),
                               ("wal.vector.last_entry_lsn", p); ("wal.partitions", 0),
                               ("wal.vector.legacy", 0)
    <dir>/vectors/, vectors.<p>/  each partition's vector shard snapshots;
                               ``extra`` = {"lsn", "entries"}
    <dir>/dictionaries/<id>    zstd dictionaries received in batches

Partitions. A batch names its WAL partition (:mod:`pipeline.wal.batch`); every
partition has its own LSN sequence, last applied LSN and gap, and batches of
different partitions apply in parallel (one at a time per partition). A pk lives in
one input partition, hence one WAL partition, so the shards hold what the primary's
shards of the same partitions hold and a search merges them the same way.

Migration. A state written before the partitioned WAL (no ``wal.partitions``
position) opens as partition 0's: its positions and its one index are partition 0's.
If that index holds vectors, they are *legacy*: a pk that later arrives in another
partition is removed from partition 0's shard when that partition applies it, so
every pk is live in exactly one shard (docs/operations.md, "Partitioning the WAL").

Applying a batch, atomically and in LSN order within its partition:

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
   one SQLite transaction (the rows built before the store's lock is taken); the
   snapshot thread of step 4 checkpoints SQLite's WAL file into the database, so no
   commit that a batch waits for does.

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
from pipeline.errors import CorruptBlock, ForeignPrimary, InvalidRecord, WalGap
from pipeline.replication.replica_partition import (
    LSN,
    TS_ENTRIES,
    VECTOR_NEEDED,
    PartitionState,
    check_range,
    open_partition,
    vector_batch,
)
from pipeline.ts.store import BlockRow, BlockStore, Points, block_row
from pipeline.vectors.buffer import VectorBatch
from pipeline.vectors.index import SearchHit
from pipeline.vectors.shard import merge_hits
from pipeline.wal.batch import BatchHeader, Dictionary, decode_batch
from pipeline.wal.entry import EntryType, WalEntry, format_lsn

__all__ = ["SNAPSHOT_INTERVAL_S", "ApplyResult", "ReplicaState"]

_LOG = logging.getLogger(__name__)

_PARTITIONS: Final = ("wal.partitions", 0)
"""How many WAL partitions the state knows (absent: written before partitions)."""
_LEGACY: Final = ("wal.vector.legacy", 0)
"""1: partition 0's shard holds vectors from the single-partition WAL."""


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
    partition: int = 0
    """The WAL partition of the batch."""

    def to_json(self) -> dict[str, Any]:
        """The roadmap's response body of ``POST /api/v1/wal/apply``."""
        return {
            "success": True,
            "entries_applied": self.entries_applied,
            "compression_ratio": round(self.compression_ratio, 3),
            "decompression_time_ms": round(self.decompression_time_ms, 3),
        }


class ReplicaState:
    """A replica's blocks and vector shards, applied from WAL batches (see the module
    docstring).

    Thread-safe: batches of one WAL partition apply one at a time, batches of different
    partitions in parallel; queries may run from any thread.
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
        """Guards the partitions, the block store, the dictionaries and the counters."""
        self._vector_settings = settings.vector_auto_buffer
        self._store = BlockStore(self.data_dir / "blocks.sqlite", checkpoint_in_background=True)
        known = self._store.position(*_PARTITIONS)
        self._parts: dict[int, PartitionState] = {}
        for partition in range(known or 1):
            self._parts[partition] = open_partition(
                self._store, self.data_dir, partition, self._vector_settings
            )
        if known is None:  # a new state, or one written before the partitioned WAL
            self._legacy_vectors = self._parts[0].index.live_count() > 0
            self._store.insert_blocks(
                [], positions={_PARTITIONS: 1, _LEGACY: int(self._legacy_vectors)}
            )
        else:
            self._legacy_vectors = bool(self._store.position(*_LEGACY))
        self._dict_dir = self.data_dir / "dictionaries"
        self._dictionaries: dict[int, Dictionary] = {}
        if self._dict_dir.is_dir():
            for path in self._dict_dir.iterdir():
                with contextlib.suppress(ValueError):
                    found = Dictionary.from_bytes(path.read_bytes())
                    self._dictionaries[found.dictionary_id] = found
        self.batches_applied = 0
        self.entries_rejected = 0
        self._snapshot_lock = threading.Lock()
        self._closing = threading.Event()
        self._snapshotter = threading.Thread(
            target=self._snapshot_loop, name="replica-vector-snapshot", daemon=True
        )
        self._snapshotter.start()

    # -- state ----------------------------------------------------------------

    def _partitions(self) -> list[PartitionState]:
        with self._lock:
            return [self._parts[p] for p in sorted(self._parts)]

    def _partition(self, partition: int) -> PartitionState:
        """Partition ``partition``'s state, opened (and every partition below it) if new."""
        with self._lock:
            if partition not in self._parts:
                for p in range(len(self._parts), partition + 1):
                    self._parts[p] = open_partition(
                        self._store, self.data_dir, p, self._vector_settings
                    )
                self._store.insert_blocks([], positions={_PARTITIONS: len(self._parts)})
            return self._parts[partition]

    def applied_lsns(self) -> dict[int, int]:
        """Each WAL partition's last applied LSN."""
        out = {}
        for part in self._partitions():
            with part.lock:
                out[part.partition] = part.last_applied
        return out

    @property
    def last_applied_lsn(self) -> int:
        """The sum of the partitions' last applied LSNs: with one WAL partition, every
        entry up to this LSN is applied (vectors durable at the next snapshot)."""
        return sum(self.applied_lsns().values())

    @property
    def entries_applied_total(self) -> int:
        """Entries applied over the replica's life (a replayed entry counts once)."""
        total = 0
        for part in self._partitions():
            with part.lock:
                total += part.ts_entries + part.vector_entries
        return total

    def status(self) -> dict[str, Any]:
        """``GET /api/v1/replica/status``: positions and counters.

        ``last_applied_lsn`` is the sum over the partitions (the LSN with one),
        ``expected_lsn`` partition 0's next; ``partitions`` has each partition's.
        """
        partitions: dict[str, dict[str, Any]] = {}
        applied = entries = vectors = 0
        expected = 1
        for part in self._partitions():
            with part.lock:
                partitions[str(part.partition)] = part.status()
                applied += part.last_applied
                entries += part.ts_entries + part.vector_entries
                vectors += part.index.live_count()
                if part.partition == 0:
                    expected = part.last_applied + 1
        with self._lock:
            return {
                "last_applied_lsn": format_lsn(applied),
                "expected_lsn": format_lsn(expected),
                "entries_applied_total": entries,
                "batches_applied": self.batches_applied,
                "entries_rejected": self.entries_rejected,
                "blocks": self._store.block_count(),
                "vectors": vectors,
                "wal_partitions": len(self._parts),
                "partitions": partitions,
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
                self._store.checkpoint()  # not in a commit that a batch waits for
            except Exception:  # the disk: the next round tries again, close() raises
                _LOG.exception("snapshotting the replica's vector shards failed")

    def _snapshot_vectors(self) -> None:
        """Snapshot every changed shard with the LSN and entry count it covers.

        Every shard's position is read (under its partition's lock) before any is
        written, and partition 0's shard is written first: a legacy vector another
        partition removed from it (module docstring) is gone from partition 0's
        snapshot before the other partition's snapshot can cover the removal. Shards
        are written outside the locks (an index's own lock holds applies back only
        while its files are written, not while they are fsynced).
        """
        with self._snapshot_lock:
            due: list[tuple[PartitionState, dict[str, Any]]] = []
            for part in self._partitions():
                with part.lock:
                    if part.dirty:
                        due.append((part, part.snapshot_extra()))
                        part.dirty = False
            for at, (part, extra) in enumerate(due):
                try:
                    part.index.save(part.vector_dir, extra=extra)
                except BaseException:
                    for unsaved, _ in due[at:]:
                        with unsaved.lock:
                            unsaved.dirty = True
                    raise

    # -- applying -------------------------------------------------------------

    def apply_batch(self, data: bytes) -> ApplyResult:
        """Verify, decompress and apply one batch (see the module docstring).

        Raises :class:`~pipeline.errors.CorruptBatch` (checksum, decompression,
        unknown dictionary) or :class:`~pipeline.errors.WalGap` (for the batch's
        partition); either way nothing was applied.
        """
        t0 = time.perf_counter()
        with self._lock:
            dictionaries = dict(self._dictionaries)
        header, entries = decode_batch(data, dictionaries)
        decompression_ms = (time.perf_counter() - t0) * 1000.0
        check_range(header.first_lsn, header.last_lsn, len(entries))
        with self._lock:
            self._check_primary(header.primary_id)
        part = self._partition(header.partition)
        with part.lock:
            last_applied = part.last_applied
            if header.first_lsn > last_applied + 1:
                raise WalGap(
                    f"WAL batch of partition {part.partition} starts at LSN "
                    f"{format_lsn(header.first_lsn)} but this replica applied up to "
                    f"{format_lsn(last_applied)}; send from {format_lsn(last_applied + 1)}",
                    expected_lsn=last_applied + 1,
                    first_lsn=header.first_lsn,
                )
            if header.dictionary is not None:
                with self._lock:
                    self._keep_dictionary(header.dictionary)
            if header.last_lsn <= last_applied:
                return ApplyResult(
                    0,
                    header.compression_ratio,
                    decompression_ms,
                    header.first_lsn,
                    header.last_lsn,
                    entries_skipped=len(entries),
                    partition=part.partition,
                )
            return self._apply(part, header, entries, decompression_ms)

    def _apply(
        self,
        part: PartitionState,
        header: BatchHeader,
        entries: list[WalEntry],
        decompression_ms: float,
    ) -> ApplyResult:
        """Apply decoded ``entries`` to ``part`` (its lock held)."""
        blocks, vector_batches, rejected, applied_ts, skipped, last_vector = self._decode(
            part, entries
        )
        p = part.partition
        ts_entries = part.ts_entries + len(blocks)
        if vector_batches:
            if self._legacy_vectors and p != 0:
                self._drop_legacy(vector_batches)
            for batch in vector_batches:
                part.index.apply(batch)
            part.vector_entries += len(vector_batches)
            part.dirty = True
        part.vector_lsn = max(part.vector_lsn, header.last_lsn)
        # A replay (after a crash between vector snapshots) never moves the LSN back.
        lsn = max(part.lsn, header.last_lsn)
        positions = {(LSN, p): lsn, (TS_ENTRIES, p): ts_entries}
        if last_vector:
            positions[(VECTOR_NEEDED, p)] = last_vector
        with self._lock:
            self._store.insert_rows(blocks, positions=positions)
            self.batches_applied += 1
            self.entries_rejected += rejected
        part.lsn = lsn
        part.ts_entries = ts_entries
        return ApplyResult(
            len(blocks) + len(vector_batches),
            header.compression_ratio,
            decompression_ms,
            header.first_lsn,
            header.last_lsn,
            entries_skipped=skipped,
            entries_rejected=rejected,
            applied_timestamps_ms=tuple(applied_ts),
            partition=p,
        )

    def _drop_legacy(self, batches: list[VectorBatch]) -> None:
        """Remove from partition 0's shard the legacy copies of pks another partition
        now writes (a pk of another partition is in partition 0's shard only as a vector
        applied from the single-partition WAL)."""
        legacy = self._partition(0)
        pks = {op.pk for batch in batches for op in batch.upserts}
        pks.update(pk for batch in batches for pk in batch.removes)
        with legacy.lock:
            held = [pk for pk in pks if legacy.index.get(pk) is not None]
            if held:
                legacy.index.apply(VectorBatch([], held, [], len(held)))
                legacy.dirty = True

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
        self, part: PartitionState, entries: list[WalEntry]
    ) -> tuple[list[BlockRow], list[VectorBatch], int, list[int], int, int]:
        """Payloads to apply: ``(block rows, vector batches, rejected, timestamps,
        skipped, LSN of the last vector batch)``; decoded here, outside the store's lock."""
        blocks: list[BlockRow] = []
        last_vector = 0
        vector_batches: list[VectorBatch] = []
        applied_ts: list[int] = []
        rejected = skipped = 0
        for entry in entries:
            if entry.type is EntryType.TS_BLOCK:
                if entry.lsn <= part.lsn:
                    skipped += 1
                    continue
                try:
                    blocks.append(block_row(entry.payload))
                except CorruptBlock as exc:
                    _LOG.error("WAL entry %s rejected: %s", format_lsn(entry.lsn), exc)
                    rejected += 1
                    continue
            else:
                if entry.lsn <= part.vector_lsn:
                    skipped += 1
                    continue
                try:
                    batch = vector_batch(entry.payload, self._vector_settings)
                except InvalidRecord as exc:
                    _LOG.error("WAL entry %s rejected: %s", format_lsn(entry.lsn), exc)
                    rejected += 1
                    continue
                vector_batches.append(batch)
                last_vector = entry.lsn
            applied_ts.append(entry.timestamp_ms)
        return blocks, vector_batches, rejected, applied_ts, skipped, last_vector

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
        """The ``k`` nearest vectors over every shard, closest first (``ef`` as
        :meth:`VectorIndex.search`), merged as the primary merges its shards."""
        return merge_hits([part.index.search(vector, k, ef=ef) for part in self._partitions()], k)

    def vector_dump(self) -> dict[str, dict[str, Any]]:
        """Every live pk over the shards with its metadata."""
        out: dict[str, dict[str, Any]] = {}
        for part in self._partitions():
            for pk in part.index.pks():
                got = part.index.get(pk)
                if got is not None:
                    out[pk] = got[1]
        return dict(sorted(out.items()))
