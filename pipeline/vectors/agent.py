"""The vector path of the worker: operations topic -> VectorAutoBuffer -> HNSW shards.

Design
    One index **shard per partition** of the operations topic (operations are keyed by
    pk, so a pk lives in exactly one shard). A worker holds the shards of the
    partitions assigned to it and a search fans out over them.

Durability
    A flushed batch is applied to its shard at once (searchable), but the input
    records it came from are acked only after a **snapshot** of the shard covers them
    (index file, pk map, metadata and the next input offset, written atomically; at
    most every ``snapshot_interval_ms``). So the committed offset never passes an
    operation that a restart could not recover.

Recovery and rebalance
    The operations topic is compacted by pk and never expires: it holds the state.
    When a partition is assigned, its shard is loaded from the local snapshot (if
    any) and caught up by reading the partition from the snapshot's offset (or the
    beginning) to the group's committed offset; the agent then continues from there.
    Operations replayed on top of a snapshot that already holds them change nothing
    (each is a whole upsert or a remove; last one wins), so every acknowledged
    operation is reflected exactly once. A revoked partition's shard is flushed,
    snapshotted and acked, then dropped; its new owner rebuilds it the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from faust import Stream
from faust.types import EventT, StreamT
from faust.web import Request, Response, View

from pipeline.buffering import FlushReason
from pipeline.config import Settings, VectorAutoBufferSettings
from pipeline.errors import BufferOverflow, InvalidRecord
from pipeline.ingest import AckTracker, DeadLetterWriter
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics
from pipeline.vectors.buffer import VectorAutoBuffer, VectorBatch
from pipeline.vectors.index import SearchHit, VectorIndex
from pipeline.vectors.ops import (
    OpType,
    VectorOp,
    decode_op_frame,
    decode_op_json,
    encode_op_frame,
    is_op_frame,
)
from pipeline.wal.entry import EntryType
from pipeline.wal.writer import WalWriter

_LOG = logging.getLogger(__name__)


def decode_ops(value: bytes, settings: VectorAutoBufferSettings) -> list[VectorOp]:
    """The operations of one record (JSON or frame); ``InvalidRecord`` when malformed."""
    if is_op_frame(value):
        return decode_op_frame(
            value, dimension=settings.dimension, max_metadata_bytes=settings.max_metadata_bytes
        )
    return [
        decode_op_json(
            value, dimension=settings.dimension, max_metadata_bytes=settings.max_metadata_bytes
        )
    ]


def batch_payload(batch: VectorBatch, settings: VectorAutoBufferSettings) -> bytes:
    """A coalesced batch as an op frame: upserts as ADD, then removes (the WAL payload)."""
    ops = [VectorOp(OpType.ADD, op.pk, op.vector, op.metadata) for op in batch.upserts]
    ops += [VectorOp(OpType.REMOVE, pk, None, {}) for pk in batch.removes]
    return encode_op_frame(ops, settings.dimension)


def new_index(settings: VectorAutoBufferSettings) -> VectorIndex:
    return VectorIndex(
        dimension=settings.dimension,
        space=settings.space,
        m=settings.m,
        ef_construction=settings.ef_construction,
        ef_search=settings.ef_search,
    )


@dataclass
class VectorShard:
    """The index, buffer and progress of one partition."""

    partition: int
    index: VectorIndex
    buffer: VectorAutoBuffer
    directory: Path
    next_offset: int = 0
    """The input offset after the last operation buffered or applied."""
    snapshot_offset: int = 0
    """The input offset the latest snapshot covers (exclusive)."""
    applied_offset: int = 0
    """The input offset the index covers (exclusive)."""
    unsnapshotted: list[tuple[object, int]] = field(default_factory=list)
    last_snapshot: float = field(default_factory=time.monotonic)


def merge_hits(per_shard: list[list[SearchHit]], k: int) -> list[SearchHit]:
    """The ``k`` closest hits over all shards."""
    hits = [hit for shard in per_shard for hit in shard]
    hits.sort(key=lambda hit: hit.distance)
    return hits[:k]


class VectorPath:
    """State of the vector path in one worker."""

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
        self.bootstrap = bootstrap
        self.topic = settings.topic("vectors.ops")
        self.group = settings.worker.app_id
        self.root = settings.worker.data_dir / "vectors"
        self.shards: dict[int, VectorShard] = {}
        self.acks = AckTracker()
        self.wal = WalWriter(producer, settings.topic("wal"))
        self.dead_letters = DeadLetterWriter(producer, settings.topic("deadletter"), metrics)
        self._lock = asyncio.Lock()

    # -- shards ---------------------------------------------------------------

    def _committed(self, partition: int) -> int:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            (tp,) = consumer.committed([TopicPartition(self.topic, partition)], timeout=10)
            return max(int(tp.offset), 0)
        finally:
            consumer.close()

    def open_shard(self, partition: int) -> VectorShard:
        """Load the partition's snapshot (if any) and catch up to the committed offset."""
        directory = self.root / f"p{partition}"
        if VectorIndex.has_snapshot(directory):
            index, extra = VectorIndex.load(
                directory,
                dimension=self.config.dimension,
                space=self.config.space,
                ef_search=self.config.ef_search,
            )
            start = int(extra.get("next_offset", 0))
        else:
            index, start = new_index(self.config), 0
        shard = VectorShard(partition, index, VectorAutoBuffer(self.config), directory)
        committed = self._committed(partition)
        if start < committed:
            self._replay(shard, start, committed)
        shard.next_offset = shard.applied_offset = shard.snapshot_offset = max(start, committed)
        return shard

    def _replay(self, shard: VectorShard, start: int, end: int) -> None:
        """Apply the partition's operations in ``[start, end)`` to the shard's index."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"{self.group}-replay",
                "enable.auto.commit": False,
            }
        )
        offset = start if start > 0 else OFFSET_BEGINNING
        consumer.assign([TopicPartition(self.topic, shard.partition, offset)])
        replay = VectorAutoBuffer(self.config)
        position = start
        deadline = time.monotonic() + 300
        try:
            while position < end and time.monotonic() < deadline:
                for msg in consumer.consume(5000, timeout=0.5):
                    msg_offset = msg.offset()
                    if msg.error() or msg_offset is None or msg_offset >= end:
                        continue
                    position = msg_offset + 1
                    value = msg.value()
                    try:
                        ops = decode_ops(bytes(value or b""), self.config)
                    except InvalidRecord:
                        continue  # dead-lettered when it was first consumed
                    while True:
                        try:
                            batch = replay.add_many(ops)
                            break
                        except BufferOverflow:
                            self._apply_sync(shard, replay.flush())
                    self._apply_sync(shard, batch)
            self._apply_sync(shard, replay.flush())
        finally:
            consumer.close()
        shard.applied_offset = end
        _LOG.info("shard %s rebuilt from offsets %s..%s", shard.partition, start, end)

    @staticmethod
    def _apply_sync(shard: VectorShard, batch: VectorBatch | None) -> None:
        if batch is not None and batch.vectors:
            shard.index.apply(batch)

    async def on_assigned(self, partitions: set[int]) -> None:
        async with self._lock:
            for p in sorted(partitions - self.shards.keys()):
                self.shards[p] = await asyncio.to_thread(self.open_shard, p)

    async def on_revoked(self, partitions: set[int]) -> None:
        async with self._lock:
            for p in sorted(partitions & self.shards.keys()):
                shard = self.shards[p]
                await self._apply(shard, shard.buffer.flush(reason=FlushReason.REVOKE))
                await self._snapshot(shard)
                del self.shards[p]

    # -- ingest ---------------------------------------------------------------

    async def on_event(self, event: EventT[Any], stream: StreamT[Any]) -> None:
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
        offset = shard.applied_offset
        t0 = time.perf_counter()
        extra = {"topic": self.topic, "partition": shard.partition, "next_offset": offset}
        await asyncio.to_thread(shard.index.save, shard.directory, extra=extra)
        self.metrics.vec_snapshot_duration.observe(time.perf_counter() - t0)
        shard.snapshot_offset = offset
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


def install_vector_path(app: faust.App, settings: Settings) -> None:
    """Install the vector agent, its timer and its web pages on ``app``."""
    metrics: PipelineMetrics = app.themis_metrics  # type: ignore[attr-defined]
    producer: AsyncProducer = app.themis_producer  # type: ignore[attr-defined]
    bootstrap: str = app.themis_bootstrap  # type: ignore[attr-defined]
    path = VectorPath(settings, metrics, producer, bootstrap)
    app.themis_vectors = path  # type: ignore[attr-defined]
    topic = app.topic(path.topic, key_serializer="raw", value_serializer="raw")

    async def ingest(stream: StreamT[Any]) -> None:
        assert isinstance(stream, Stream)
        async for event in stream.noack().events():
            await path.on_event(event, stream)

    app.agent(topic, name="vector-ops")(ingest)
    app.timer(0.1, name="vector-tick")(path.tick)

    def ours(tps: Any) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == path.topic}

    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = kwargs.get("assigned", args[0] if args else set())
        await path.on_assigned(ours(assigned))

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = kwargs.get("revoked", args[0] if args else set())
        await path.on_revoked(ours(revoked))

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)

    class StatsView(View):
        async def get(self, request: Request) -> Response:
            body = path.stats() | {
                "live_vectors": sum(s.index.live_count() for s in path.shards.values()),
                "shards": sorted(path.shards),
                "pending_records": len(path.acks.pending),
                "dead_letters": path.dead_letters.count,
            }
            return self.json(body)

    class FlushView(View):
        async def post(self, request: Request) -> Response:
            applied = await path.flush()
            return self.json({"success": True, "vectors_flushed": applied})

    class SearchView(View):
        async def post(self, request: Request) -> Response:
            body = await request.json()
            try:
                vector = np.asarray(body["vector"], dtype=np.float32)
                k = int(body.get("k", 10))
                ef = body.get("ef")
                hits = await asyncio.to_thread(
                    path.search, vector, k, None if ef is None else int(ef), body.get("filter")
                )
            except (KeyError, TypeError, ValueError, InvalidRecord) as exc:
                return self.json({"success": False, "error": str(exc)}, status=400)
            return self.json(
                {
                    "success": True,
                    "results": [
                        {"pk": h.pk, "distance": h.distance, "metadata": h.metadata} for h in hits
                    ],
                }
            )

    class DumpView(View):
        async def get(self, request: Request) -> Response:
            """Every live pk with its metadata (for checks and small indexes)."""
            out: dict[str, Any] = {}
            for shard in list(path.shards.values()):
                for pk in shard.index.pks():
                    got = shard.index.get(pk)
                    if got is not None:
                        out[pk] = got[1]
            return self.json(out)

    class GetView(View):
        async def get(self, request: Request) -> Response:
            """One pk: ``{"pk", "present", "pending", "metadata"}`` (pending: buffered op)."""
            pk = request.query.get("pk", "")
            for shard in list(path.shards.values()):
                pending = shard.buffer.pending(pk)
                got = shard.index.get(pk)
                if pending is not None or got is not None:
                    present = got is not None if pending is None else pending.op != "remove"
                    return self.json(
                        {
                            "pk": pk,
                            "present": present,
                            "pending": None if pending is None else str(pending.op),
                            "metadata": None if got is None else got[1],
                        }
                    )
            return self.json({"pk": pk, "present": False, "pending": None, "metadata": None})

    app.page("/vectors/get")(GetView)
    app.page("/vectors/dump")(DumpView)
    app.page("/vectors/buffer/stats")(StatsView)
    app.page("/vectors/buffer/flush")(FlushView)
    app.page("/vectors/search")(SearchView)
