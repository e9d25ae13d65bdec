"""The worker's vector stage: operations topic -> VectorAutoBuffer -> HNSW shards.

Design
    One index **shard per partition** of the operations topic (operations are keyed by
    pk, so a pk lives in exactly one shard; :mod:`pipeline.vectors.shard`). A worker
    holds the shards of the partitions assigned to it and a search fans out over them.

Durability
    A flushed batch is applied to its shard at once (searchable) and appended to the
    WAL, but the input records it came from are acked only after a **snapshot** of the
    shard covers them (at most every ``snapshot_interval_ms``). So the committed
    offset never passes an operation that a restart could not recover.

Recovery and rebalance
    When a partition is assigned, :class:`~pipeline.vectors.shard.ShardStore` loads its
    snapshot and replays the partition up to the group's committed offset; the agent
    continues from there. A revoked partition's shard is flushed, snapshotted and
    acked, then dropped; its new owner rebuilds it the same way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from faust.types import EventT, StreamT

from pipeline.config import Settings
from pipeline.errors import BufferOverflow, InvalidRecord
from pipeline.ingest.acks import AckTracker
from pipeline.ingest.buffer_core import FlushReason
from pipeline.ingest.deadletter import DeadLetterWriter
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics
from pipeline.vectors.buffer import VectorBatch
from pipeline.vectors.index import SearchHit
from pipeline.vectors.shard import ShardStore, VectorShard, batch_payload, decode_ops, merge_hits
from pipeline.wal.entry import EntryType
from pipeline.wal.writer import WalWriter

__all__ = ["VectorStage"]


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
        self.store = ShardStore(
            self.config,
            bootstrap=bootstrap,
            topic=self.topic,
            group=settings.worker.app_id,
            root=settings.worker.data_dir / "vectors",
        )
        self.shards: dict[int, VectorShard] = {}
        self.acks = AckTracker()
        self.wal = WalWriter(producer, settings.topic("wal"))
        self.dead_letters = DeadLetterWriter(producer, settings.topic("deadletter"), metrics)
        self._lock = asyncio.Lock()

    # -- shards ---------------------------------------------------------------

    async def on_assigned(self, partitions: set[int]) -> None:
        async with self._lock:
            for p in sorted(partitions - self.shards.keys()):
                self.shards[p] = await asyncio.to_thread(self.store.open, p)

    async def on_revoked(self, partitions: set[int]) -> None:
        async with self._lock:
            for p in sorted(partitions & self.shards.keys()):
                shard = self.shards[p]
                await self._apply(shard, shard.buffer.flush(reason=FlushReason.REVOKE))
                await self._snapshot(shard)
                del self.shards[p]

    # -- ingest ---------------------------------------------------------------

    async def on_event(self, event: EventT[Any], stream: StreamT[Any]) -> None:
        """Buffer the operations of one input record (or dead-letter it)."""
        message = event.message
        try:
            if not isinstance(event.value, bytes | bytearray):
                raise InvalidRecord("record has no value")
            ops = decode_ops(bytes(event.value), self.config)
        except InvalidRecord as exc:
            await self.dead_letters.write(event, exc)
            await stream.ack(event)
            return
        if not ops:
            await stream.ack(event)
            return
        shard = self.shards.get(message.partition)
        if shard is None:
            await self.on_assigned({message.partition})
            shard = self.shards[message.partition]
        token = self.acks.hold(event, stream, len(ops))
        shard.next_offset = message.offset + 1
        while True:
            try:
                batch = shard.buffer.add_many(ops, token)
                break
            except BufferOverflow:
                await self._apply(shard, shard.buffer.flush(reason=FlushReason.MEMORY))
        self.metrics.vec_buffered.inc(len(ops))
        await self._apply(shard, batch)

    async def _apply(self, shard: VectorShard, batch: VectorBatch | None) -> None:
        """Apply a batch to the shard (searchable now); its records wait for a snapshot."""
        if batch is None:
            return
        t0 = time.perf_counter()
        if batch.vectors:
            await asyncio.to_thread(shard.index.apply, batch)
            # The WAL entry is durable before the snapshot that lets records be acked.
            await self.wal.append(EntryType.VECTOR_BATCH, batch_payload(batch, self.config))
        shard.buffer.record_durable(batch.vectors)
        shard.applied_offset = shard.next_offset
        shard.unsnapshotted.extend(batch.tokens)
        self.metrics.vec_flushed.inc(batch.vectors)
        self.metrics.vec_flush_duration.observe(time.perf_counter() - t0)
        self.metrics.vec_current_size.set(self.current_size())

    async def _snapshot(self, shard: VectorShard) -> None:
        """Write a snapshot covering everything applied, then ack what it covers."""
        shard.last_snapshot = time.monotonic()
        if shard.applied_offset <= shard.snapshot_offset and not shard.unsnapshotted:
            return
        tokens, shard.unsnapshotted = shard.unsnapshotted, []
        t0 = time.perf_counter()
        await asyncio.to_thread(self.store.snapshot, shard, shard.applied_offset)
        self.metrics.vec_snapshot_duration.observe(time.perf_counter() - t0)
        await self.acks.release_all(tokens)

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
