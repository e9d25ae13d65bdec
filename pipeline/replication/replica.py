"""The replica's side of WAL shipping: state that applies batches, and the Kafka applier loop.

:class:`ReplicaState` holds what a replica serves: a :class:`~pipeline.ts.store.BlockStore`
of Gorilla blocks and one :class:`~pipeline.vectors.index.VectorIndex`, under one
directory::

    <dir>/blocks.sqlite        blocks by id + positions: "wal.lsn" (last applied LSN),
                               "wal.ts.entries", "wal.vector.last_entry_lsn"
    <dir>/vectors/             vector index snapshots; ``extra`` = {"lsn", "entries"}
    <dir>/dictionaries/<id>    zstd dictionaries received in batches

Applying a batch, atomically and in LSN order:

1. verify the checksum and decompress (:func:`~pipeline.wal.batch.decode_batch`);
   a corrupt batch raises :class:`~pipeline.wal.batch.CorruptBatch` and changes nothing;
2. a batch whose first LSN is beyond ``last_applied_lsn + 1`` raises :class:`WalGap`
   (naming the LSN expected) and changes nothing; entries at or below
   ``last_applied_lsn`` are skipped, so a batch sent twice is applied once;
3. every payload is decoded before anything is written; an entry whose payload does
   not decode is *rejected* (logged, counted, its LSN passed), because sending it
   again cannot repair it;
4. vector batches are applied to the index in LSN order and the index is
   snapshotted with the batch's last LSN;
5. the blocks (``INSERT OR IGNORE`` by block id) and the last LSN are committed in
   one SQLite transaction.

A crash between 4 and 5 leaves the snapshot ahead of SQLite: on restart
``last_applied_lsn`` is SQLite's, the range after it is applied again, vector
entries at or below the snapshot's LSN are skipped and blocks are stored once.

The Kafka applier (:func:`run_kafka_applier`, ``themis wal apply``) reads
``<namespace>.wal.replica`` on the replica cluster (created by
:func:`ensure_replica_topics` with ``<namespace>.deadletter`` and
``<namespace>.wal.replica.status``) and commits its consumer offset (group
``<app_id>-wal-apply-<replica>``) only after a batch applied. A corrupt batch is
dead-lettered on the replica cluster with the reason and skipped; a gap is skipped
without committing (the missing range comes later, re-sent by the shipper). After
each batch, and at once after a gap, the applier writes its status (last applied
LSN, expected LSN) to the status topic, where the shipper reads it to re-send a
missing range.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy.typing as npt
import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    KafkaError,
    Producer,
    TopicPartition,
)

from pipeline.config import Settings
from pipeline.errors import CorruptBatch, CorruptBlock, InvalidRecord, WalGap
from pipeline.ingest.deadletter import DeadLetter
from pipeline.kafka.consumer import LARGE_FETCH, commit_offset, committed_offset, make_consumer
from pipeline.kafka.topics import TopicSpec, apply_topics, load_specs
from pipeline.ts.block import decode_block
from pipeline.ts.store import BlockStore, Points
from pipeline.vectors.buffer import VectorBatch
from pipeline.vectors.index import SearchHit, VectorIndex
from pipeline.vectors.ops import OpType, VectorOp, decode_op_frame
from pipeline.wal.batch import Dictionary, decode_batch
from pipeline.wal.entry import EntryType, WalEntry, format_lsn

__all__ = [
    "REPLICA_STATUS_TOPIC",
    "REPLICA_TOPIC",
    "ApplierStats",
    "ApplyResult",
    "ReplicaState",
    "ensure_replica_topics",
    "run_kafka_applier",
]

_LOG = logging.getLogger(__name__)

REPLICA_TOPIC: Final = "wal.replica"
"""Spec name of the replica cluster's batch topic: ``<namespace>.wal.replica``."""
REPLICA_STATUS_TOPIC: Final = "wal.replica.status"
"""Spec name of the topic where Kafka appliers report their position."""

_LSN: Final = ("wal.lsn", 0)
_TS_ENTRIES: Final = ("wal.ts.entries", 0)
_VECTOR_NEEDED: Final = ("wal.vector.last_entry_lsn", 0)


SNAPSHOT_INTERVAL_S = 1.0
"""The vector index is snapshotted at most this often (and on close). After a crash the
replica resumes from the older of the block store's and the snapshot's LSN: a batch
beyond it is refused as a gap and the shipper resends; replayed entries are idempotent."""


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

    def __init__(self, data_dir: Path, settings: Settings) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
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
            self._index = VectorIndex(
                dimension=vs.dimension,
                space=vs.space,
                m=vs.m,
                ef_construction=vs.ef_construction,
                ef_search=vs.ef_search,
                initial_capacity=1024,
            )
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
        self._snapshot_at = time.monotonic()

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
        with self._lock:
            if self._vector_dirty:
                self._snapshot_vectors()
            self._store.close()

    def _snapshot_vectors(self) -> None:
        """Snapshot the index with the LSN it covers (at most every SNAPSHOT_INTERVAL_S)."""
        self._index.save(
            self._vector_dir, extra={"lsn": self._vector_lsn, "entries": self._vector_entries}
        )
        self._vector_dirty = False
        self._snapshot_at = time.monotonic()

    # -- applying -------------------------------------------------------------

    def apply_batch(self, data: bytes) -> ApplyResult:
        """Verify, decompress and apply one batch (see the module docstring).

        Raises :class:`~pipeline.wal.batch.CorruptBatch` (checksum, decompression,
        unknown dictionary) or :class:`WalGap`; either way nothing was applied.
        """
        with self._lock:
            t0 = time.perf_counter()
            header, entries = decode_batch(data, self._dictionaries)
            decompression_ms = (time.perf_counter() - t0) * 1000.0
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
            if self._vector_dirty and time.monotonic() - self._snapshot_at >= SNAPSHOT_INTERVAL_S:
                self._snapshot_vectors()
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

    def search(self, vector: npt.ArrayLike, k: int) -> list[SearchHit]:
        """The ``k`` nearest vectors, closest first."""
        return self._index.search(vector, k)

    def vector_dump(self) -> dict[str, dict[str, Any]]:
        """Every pk in the index with its metadata."""
        out: dict[str, dict[str, Any]] = {}
        for pk in sorted(self._index.pks()):
            got = self._index.get(pk)
            if got is not None:
                out[pk] = got[1]
        return out


# -- the replica cluster's topics ------------------------------------------------------


def replica_topic_specs() -> list[TopicSpec]:
    """The batch topic, its status topic and the dead-letter topic of a replica cluster."""
    return [
        TopicSpec(
            name=REPLICA_TOPIC,
            purpose="WAL batches shipped from a primary, in LSN order (pipeline.wal.batch).",
            partitions=1,
            replication_factor=1,
            key_format="primary id, UTF-8",
            value_format="WAL batch TWB1; headers themis.wal.*",
            configs={
                "cleanup.policy": "delete",
                "retention.ms": "604800000",
                "compression.type": "producer",
                "max.message.bytes": "67108864",
            },
        ),
        TopicSpec(
            name=REPLICA_STATUS_TOPIC,
            purpose="Positions reported by the replica's WAL applier, read by the shipper.",
            partitions=1,
            replication_factor=1,
            key_format="replica name, UTF-8",
            value_format='JSON {"replica", "last_applied_lsn", "expected_lsn", "gap", "at_ms"}',
            configs={"cleanup.policy": "delete", "retention.ms": "86400000"},
        ),
        *[spec for spec in load_specs() if spec.name == "deadletter"],
    ]


def ensure_replica_topics(bootstrap: str, settings: Settings) -> None:
    """Create the replica cluster's WAL topics if missing (idempotent)."""
    apply_topics(bootstrap, settings, replica_topic_specs())


# -- the Kafka applier -------------------------------------------------------------


@dataclass
class ApplierStats:
    """Counters of one :func:`run_kafka_applier` run."""

    batches_applied: int = 0
    entries_applied: int = 0
    corrupt_batches: int = 0
    gaps: int = 0
    duplicate_batches: int = 0
    errors: list[str] = field(default_factory=list)


def _status_record(name: str, state: ReplicaState, gap: bool) -> bytes:
    last = state.last_applied_lsn
    return orjson.dumps(
        {
            "replica": name,
            "last_applied_lsn": format_lsn(last),
            "expected_lsn": format_lsn(last + 1),
            "gap": gap,
            "at_ms": int(time.time() * 1000),
        }
    )


def run_kafka_applier(
    state: ReplicaState,
    bootstrap: str,
    settings: Settings,
    replica_name: str,
    *,
    stop: threading.Event,
    until_caught_up: bool = False,
    on_result: Callable[[ApplyResult], None] | None = None,
    status_interval_s: float = 0.5,
) -> ApplierStats:
    """Apply batches from ``<namespace>.wal.replica`` on ``bootstrap`` until ``stop`` is set.

    ``until_caught_up`` returns once the topic's end is reached and nothing is
    missing. ``on_result`` sees every successful apply. See the module docstring for
    offsets, dead letters and gaps.
    """
    ensure_replica_topics(bootstrap, settings)
    topic = settings.topic(REPLICA_TOPIC)
    consumer = make_consumer(
        bootstrap, f"{settings.worker.app_id}-wal-apply-{replica_name}", **LARGE_FETCH
    )
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    stats = ApplierStats()
    try:
        committed = committed_offset(consumer, TopicPartition(topic, 0))
        start = committed if committed >= 0 else OFFSET_BEGINNING
        consumer.assign([TopicPartition(topic, 0, start)])
        last_status = 0.0
        gap_open = False
        while not stop.is_set():
            msg = consumer.poll(0.2)
            now = time.monotonic()
            if msg is None:
                if until_caught_up and not gap_open:
                    position = consumer.position([TopicPartition(topic, 0)])[0].offset
                    _, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, 0), timeout=10, cached=False
                    )
                    if position >= high or (position < 0 and high == 0):
                        break
                if now - last_status > status_interval_s:
                    _send_status(producer, settings, replica_name, state, gap_open)
                    last_status = now
                continue
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    _LOG.warning("WAL applier %s: %s", replica_name, error.str())
                continue
            value = msg.value() or b""
            offset = msg.offset()
            assert offset is not None
            try:
                result = state.apply_batch(value)
            except WalGap as gap:
                stats.gaps += 1
                if not gap_open:
                    _LOG.warning("WAL applier %s: %s; waiting for the range", replica_name, gap)
                gap_open = True
                _send_status(producer, settings, replica_name, state, True)
                last_status = now
                continue
            except CorruptBatch as exc:
                stats.corrupt_batches += 1
                _LOG.error(
                    "WAL applier %s: batch at offset %d dead-lettered: %s",
                    replica_name,
                    offset,
                    exc,
                )
                letter = DeadLetter(
                    msg.key(), value, str(exc), type(exc).__name__, topic, 0, offset
                )
                dead_headers: list[tuple[str, str | bytes | None]] = list(letter.headers())
                producer.produce(
                    settings.topic("deadletter"), value, key=msg.key(), headers=dead_headers
                )
                producer.flush(30)
                commit_offset(consumer, TopicPartition(topic, 0, offset + 1))
                continue
            commit_offset(consumer, TopicPartition(topic, 0, offset + 1))
            gap_open = False
            if result.entries_applied == 0 and result.entries_rejected == 0:
                stats.duplicate_batches += 1
            else:
                stats.batches_applied += 1
                stats.entries_applied += result.entries_applied
            if on_result is not None:
                on_result(result)
            if now - last_status > status_interval_s:
                _send_status(producer, settings, replica_name, state, False)
                last_status = now
        _send_status(producer, settings, replica_name, state, gap_open)
        producer.flush(10)
    finally:
        consumer.close()
    return stats


def _send_status(
    producer: Producer, settings: Settings, name: str, state: ReplicaState, gap: bool
) -> None:
    producer.produce(
        settings.topic(REPLICA_STATUS_TOPIC), _status_record(name, state, gap), key=name.encode()
    )
    producer.poll(0)
