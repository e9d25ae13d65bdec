"""The worker's vector stage: operations topic -> VectorAutoBuffer -> HNSW shards.

Design
    One index **shard per partition** of the operations topic (operations are keyed by
    pk, so a pk lives in exactly one shard; :mod:`pipeline.vectors.shard`). A worker
    holds the shards of the partitions assigned to it and a search fans out over them.

Durability
    Batches of records come from the stage's
    :class:`~pipeline.ingest.batch_consumer.BatchConsumer` (group ``<app_id>-vectors``).
    A flushed buffer is applied to its shard at once (searchable) and appended to the
    WAL partition of its shard's input partition (so a replica builds the same shard),
    but the offsets of the records it came from are released for commit only
    after a **snapshot** of the shard covers them (at most every
    ``snapshot_interval_ms``). So the committed offset never passes an operation that a
    restart could not recover.

Recovery and rebalance
    When a partition is assigned, :class:`~pipeline.vectors.shard.ShardStore` loads its
    snapshot and replays the partition up to the group's committed offset; consuming
    continues from there. A revoked partition's shard is flushed and snapshotted (its
    offsets then commit) and dropped; a lost one is dropped as it is. Its new owner
    rebuilds it the same way.

A full disk
    A snapshot that cannot be written (a full or failing disk under ``worker.data_dir``)
    is logged and counted (``vector_index_snapshot_failures_total``); what it would have
    covered stays held, so those offsets wait, and the next tick tries again. Ingest and
    searches go on meanwhile; once the disk has room the offsets catch up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final, cast

import numpy as np
from confluent_kafka import Message

from pipeline.config import Settings
from pipeline.errors import BufferOverflow, InvalidRecord
from pipeline.ingest.batch_consumer import BatchConsumer
from pipeline.ingest.buffer_core import FlushReason
from pipeline.ingest.deadletter import DeadLetterWriter
from pipeline.ingest.offsets import OffsetTracker
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics
from pipeline.vectors.buffer import VectorBatch
from pipeline.vectors.index import SearchHit
from pipeline.vectors.ops import VectorOp
from pipeline.vectors.shard import ShardStore, VectorShard, batch_payload, decode_ops, merge_hits
from pipeline.wal.entry import EntryType
from pipeline.wal.writer import WalWriter, topic_partition_count

__all__ = ["VectorStage"]

_LOG = logging.getLogger(__name__)

_ADD_CHUNK: Final = 500
"""Operations given to the buffer at a time, so an empty buffer always has room."""


class VectorStage:
    """State of the vector stage in one worker."""

    def __init__(
        self,
        settings: Settings,
        metrics: PipelineMetrics,
        producer: AsyncProducer,
        bootstrap: str,
    ) -> None:
        self.settings = settings
        self.config = settings.vector_auto_buffer
        self.metrics = metrics
        self.topic = settings.topic("vectors.ops")
        self.group = f"{settings.worker.app_id}-vectors"
        self.store = ShardStore(
            self.config,
            bootstrap=bootstrap,
            topic=self.topic,
            group=self.group,
            root=settings.worker.data_dir / "vectors",
        )
        self.shards: dict[int, VectorShard] = {}
        self.offsets = OffsetTracker()
        wal_topic = settings.topic("wal")
        # Shard p's batches go to WAL partition p (mod the WAL's partition count).
        self.wal = WalWriter(
            producer, wal_topic, partitions=topic_partition_count(bootstrap, wal_topic)
        )
        self.dead_letters = DeadLetterWriter(producer, settings.topic("deadletter"), metrics)
        metrics.dead_letters.labels(source_topic=self.topic)  # at 0 before the first letter
        self._lock = asyncio.Lock()
        self._failure: BaseException | None = None
        self.consumer: BatchConsumer | None = None
        """The batch consumer feeding this stage (set when the worker wires it)."""

    # -- shards ---------------------------------------------------------------

    async def on_assigned(self, partitions: set[int]) -> None:
        async with self._lock:
            for p in sorted(partitions - self.shards.keys()):
                self.shards[p] = await asyncio.to_thread(self.store.open, p)

    async def on_revoked(self, partitions: set[int]) -> None:
        """Apply and snapshot the shards of ``partitions``, then let them go."""
        async with self._lock:
            for p in sorted(partitions & self.shards.keys()):
                shard = self.shards[p]
                await self._apply(shard, shard.buffer.flush(reason=FlushReason.REVOKE))
                await self._snapshot(shard)
                del self.shards[p]

    async def on_lost(self, partitions: set[int]) -> None:
        """Drop the shards of ``partitions`` unsnapshotted: their new owner rebuilds them."""
        async with self._lock:
            for p in sorted(partitions & self.shards.keys()):
                del self.shards[p]

    # -- ingest ---------------------------------------------------------------

    async def on_batch(self, messages: list[Message]) -> None:
        """Buffer the operations of one batch of records (dead-lettering the bad ones)."""
        if self._failure is not None:
            raise self._failure
        per_partition: dict[int, list[VectorOp]] = {}
        ends: dict[int, tuple[int, int]] = {}
        rejected: list[tuple[Message, Exception]] = []
        for message in messages:
            # Consumed records always have a partition and an offset.
            partition = cast(int, message.partition())
            seen = ends.get(partition)
            end = cast(int, message.offset()) + 1
            ends[partition] = (end, 1 if seen is None else seen[1] + 1)
            value = message.value()
            try:
                if value is None:
                    raise InvalidRecord("record has no value")
                ops = decode_ops(value, self.config)
            except InvalidRecord as exc:
                rejected.append((message, exc))
                continue
            per_partition.setdefault(partition, []).extend(ops)
        await self.dead_letters.write_all(rejected)
        for partition, (end, records) in ends.items():
            ops = per_partition.get(partition, [])
            token = self.offsets.hold(partition, end, len(ops), records=records)
            await self._buffer(partition, ops, token, end)

    async def _buffer(self, partition: int, ops: list[VectorOp], token: object, end: int) -> None:
        shard = self.shards.get(partition)
        if shard is None:
            await self.on_assigned({partition})
            shard = self.shards[partition]
        shard.next_offset = end
        step = max(1, min(_ADD_CHUNK, self.config.max_total_vectors))
        for start in range(0, len(ops), step):
            chunk = ops[start : start + step]
            while True:
                try:
                    batch = shard.buffer.add_many(chunk, token)
                    break
                except BufferOverflow:
                    await self._apply(shard, shard.buffer.flush(reason=FlushReason.MEMORY))
            if batch is None and not self.config.enabled:
                # Rolled back (features.vector_auto_buffer.enabled = false): nothing waits
                # in the buffer, so a direct add is searchable once its record is consumed.
                batch = shard.buffer.flush(reason=FlushReason.SIZE)
            await self._apply(shard, batch)
        self.metrics.vec_buffered.inc(len(ops))

    async def _apply(self, shard: VectorShard, batch: VectorBatch | None) -> None:
        """Apply a batch to the shard (searchable now); its records wait for a snapshot."""
        if batch is None:
            return
        t0 = time.perf_counter()
        if batch.vectors:
            await asyncio.to_thread(shard.index.apply, batch)
            # Awaited by the snapshot: the entry is durable before the offsets move.
            shard.wal_pending.append(
                self.wal.append(
                    EntryType.VECTOR_BATCH,
                    batch_payload(batch, self.config),
                    partition=shard.partition,
                )
            )
        shard.buffer.record_durable(batch.vectors)
        shard.applied_offset = shard.next_offset
        shard.unsnapshotted.extend(batch.tokens)
        self.metrics.vec_flushed.inc(batch.vectors)
        self.metrics.vec_flush_duration.observe(time.perf_counter() - t0)
        self.metrics.vec_current_size.set(self.current_size())

    async def _snapshot(self, shard: VectorShard) -> None:
        """Write a snapshot covering everything applied; once it and the WAL entries of
        what it covers are durable, release their offsets."""
        shard.last_snapshot = time.monotonic()
        if shard.applied_offset <= shard.snapshot_offset and not shard.unsnapshotted:
            return
        tokens, shard.unsnapshotted = shard.unsnapshotted, []
        wal, shard.wal_pending = shard.wal_pending, []
        t0 = time.perf_counter()
        try:
            await asyncio.to_thread(self.store.snapshot, shard, shard.applied_offset)
        except OSError as exc:
            # Held again, ahead of what was applied meanwhile: the offsets wait for a snapshot.
            shard.unsnapshotted[:0] = tokens
            shard.wal_pending[:0] = wal
            self.metrics.vec_snapshot_failures.inc()
            _LOG.error(
                "snapshot of vector shard %s failed, retrying in %s ms (its input offsets "
                "wait; free space under %s): %s",
                shard.partition,
                self.config.snapshot_interval_ms,
                shard.directory,
                exc,
            )
            return
        self.metrics.vec_snapshot_duration.observe(time.perf_counter() - t0)
        try:
            await asyncio.gather(*wal)
        except Exception as exc:
            # A lost WAL entry: its offsets must never commit; the worker stops and replays.
            self._failure = exc
            raise
        self.offsets.release_all(tokens)

    async def tick(self) -> None:
        """Timer: time-triggered flushes, then snapshots that are due."""
        interval = self.config.snapshot_interval_ms / 1000
        for shard in list(self.shards.values()):
            await self._apply(shard, shard.buffer.due())
            if time.monotonic() - shard.last_snapshot >= interval:
                await self._snapshot(shard)

    async def flush(self, *, snapshot: bool = True) -> int:
        """Apply every buffered operation now (and snapshot); returns vectors applied."""
        applied = 0
        for shard in list(self.shards.values()):
            batch = shard.buffer.flush(reason=FlushReason.MANUAL)
            applied += 0 if batch is None else batch.vectors
            await self._apply(shard, batch)
            if snapshot:
                await self._snapshot(shard)
        return applied

    def assigned_partitions(self) -> list[int]:
        """The input partitions this worker holds now, sorted."""
        return [] if self.consumer is None else sorted(self.consumer.assigned)

    # -- reading --------------------------------------------------------------

    def current_size(self) -> int:
        return sum(s.buffer.stats().current_buffer_size for s in self.shards.values())

    def stats(self) -> dict[str, Any]:
        """The roadmap's buffer stats, summed over the shards this worker holds."""
        per = [s.buffer.stats() for s in self.shards.values()]
        times = [s.last_flush_time for s in per if s.last_flush_time]
        return {
            "vectors_buffered": sum(s.vectors_buffered for s in per),
            "vectors_flushed": sum(s.vectors_flushed for s in per),
            "flush_count": sum(s.flush_count for s in per),
            "current_buffer_size": sum(s.current_buffer_size for s in per),
            "current_buffer_memory": sum(s.current_buffer_memory for s in per),
            "compression_type": "none",
            "last_flush_time": max(times) if times else None,
        }

    def search(
        self, vector: np.ndarray, k: int, ef: int | None = None, where: dict[str, Any] | None = None
    ) -> list[SearchHit]:
        """k-NN over every shard held; ``where`` keeps hits whose metadata has those values."""
        t0 = time.perf_counter()

        def keep(pk: str, metadata: dict[str, Any]) -> bool:
            return all(metadata.get(key) == value for key, value in (where or {}).items())

        hits = merge_hits(
            [
                shard.index.search(vector, k, ef=ef, filter=keep if where else None)
                for shard in list(self.shards.values())
            ],
            k,
        )
        self.metrics.vec_search_latency.observe(time.perf_counter() - t0)
        return hits
