"""Vector shards: one HNSW index per partition of the operations topic, and their store.

A pk is the key of its operations, so it lives in exactly one partition and so in
exactly one shard. :class:`ShardStore` is the one way a shard is opened, rebuilt and
snapshotted (by the worker's vector stage; the replica keeps its own index):

open
    Load the partition's snapshot from ``<root>/p<partition>`` if there is one (its
    ``extra`` holds the next input offset it covers), else start empty.
replay
    Read the partition from there up to the consumer group's committed offset and
    apply it in batches (the operations topic is compacted and never expires, so it
    holds the state). Replaying operations a snapshot already holds changes nothing:
    each is a whole upsert or a remove, the last one wins.
snapshot
    Write index, pk map, metadata and the input offset covered, atomically
    (:meth:`~pipeline.vectors.index.VectorIndex.save`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from pipeline.config import VectorAutoBufferSettings
from pipeline.errors import BufferOverflow, InvalidRecord
from pipeline.kafka.consumer import committed_offset, open_consumer
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

__all__ = [
    "ShardStore",
    "VectorShard",
    "batch_payload",
    "decode_ops",
    "merge_hits",
    "new_index",
]

_LOG = logging.getLogger(__name__)

REPLAY_TIMEOUT_S: Final = 300.0
"""A shard rebuild gives up reading the partition after this many seconds."""


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


def new_index(
    settings: VectorAutoBufferSettings, *, initial_capacity: int | None = None
) -> VectorIndex:
    """An empty index with the configured space and HNSW parameters."""
    extra = {} if initial_capacity is None else {"initial_capacity": initial_capacity}
    return VectorIndex(
        dimension=settings.dimension,
        space=settings.space,
        m=settings.m,
        ef_construction=settings.ef_construction,
        ef_search=settings.ef_search,
        **extra,
    )


def merge_hits(per_shard: list[list[SearchHit]], k: int) -> list[SearchHit]:
    """The ``k`` closest hits over all shards."""
    hits = [hit for shard in per_shard for hit in shard]
    hits.sort(key=lambda hit: hit.distance)
    return hits[:k]


@dataclass
class VectorShard:
    """The index, buffer and progress of one partition (offsets are input offsets)."""

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
    """Offset tokens of operations applied but not yet covered by a snapshot."""
    wal_pending: list[Awaitable[Any]] = field(default_factory=list)
    """WAL appends of applied batches, awaited before their offsets are released."""
    last_snapshot: float = field(default_factory=time.monotonic)


class ShardStore:
    """Opens, rebuilds and snapshots the shards of ``topic`` under ``root``.

    ``group`` is the consumer group whose committed offsets say how far a shard
    must be rebuilt.
    """

    def __init__(
        self,
        settings: VectorAutoBufferSettings,
        *,
        bootstrap: str,
        topic: str,
        group: str,
        root: Path,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = group
        self.root = root

    def directory(self, partition: int) -> Path:
        return self.root / f"p{partition}"

    def committed(self, partition: int) -> int:
        """The group's committed offset of ``partition`` (0 when none)."""
        with open_consumer(self.bootstrap, self.group) as consumer:
            return max(committed_offset(consumer, TopicPartition(self.topic, partition)), 0)

    def open(self, partition: int) -> VectorShard:
        """Load the partition's snapshot (if any) and catch up to the committed offset."""
        directory = self.directory(partition)
        if VectorIndex.has_snapshot(directory):
            index, extra = VectorIndex.load(
                directory,
                dimension=self.settings.dimension,
                space=self.settings.space,
                ef_search=self.settings.ef_search,
            )
            start = int(extra.get("next_offset", 0))
        else:
            index, start = new_index(self.settings), 0
        shard = VectorShard(partition, index, VectorAutoBuffer(self.settings), directory)
        committed = self.committed(partition)
        if start < committed:
            self.replay(shard, start, committed)
        shard.next_offset = shard.applied_offset = shard.snapshot_offset = max(start, committed)
        return shard

    def replay(self, shard: VectorShard, start: int, end: int) -> None:
        """Apply the partition's operations in ``[start, end)`` to the shard's index."""
        replay = VectorAutoBuffer(self.settings)
        position = start
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        with open_consumer(self.bootstrap, f"{self.group}-replay") as consumer:
            offset = start if start > 0 else OFFSET_BEGINNING
            consumer.assign([TopicPartition(self.topic, shard.partition, offset)])
            while position < end and time.monotonic() < deadline:
                for msg in consumer.consume(5000, timeout=0.5):
                    msg_offset = msg.offset()
                    if msg.error() or msg_offset is None or msg_offset >= end:
                        continue
                    position = msg_offset + 1
                    try:
                        ops = decode_ops(bytes(msg.value() or b""), self.settings)
                    except InvalidRecord:
                        continue  # dead-lettered when it was first consumed
                    _buffer_all(shard, replay, ops, self.settings.max_total_vectors)
            _apply(shard, replay.flush())
        shard.applied_offset = end
        _LOG.info("shard %s rebuilt from offsets %s..%s", shard.partition, start, end)

    def snapshot(self, shard: VectorShard, offset: int) -> None:
        """Write the shard's snapshot, covering input offsets below ``offset``."""
        extra = {"topic": self.topic, "partition": shard.partition, "next_offset": offset}
        shard.index.save(shard.directory, extra=extra)
        shard.snapshot_offset = offset


def _buffer_all(
    shard: VectorShard, buffer: VectorAutoBuffer, ops: list[VectorOp], cap: int
) -> None:
    """Buffer ``ops`` in chunks of at most ``cap`` pks, applying whatever the buffer drains.

    One record may carry more distinct pks than ``max_total_vectors``; given whole it
    would overflow even the empty buffer, forever (the vector stage chunks the same way).
    """
    step = max(1, cap)
    for at in range(0, len(ops), step):
        chunk = ops[at : at + step]
        while True:
            try:
                batch = buffer.add_many(chunk)
                break
            except BufferOverflow:
                _apply(shard, buffer.flush())
        _apply(shard, batch)


def _apply(shard: VectorShard, batch: VectorBatch | None) -> None:
    if batch is not None and batch.vectors:
        shard.index.apply(batch)
