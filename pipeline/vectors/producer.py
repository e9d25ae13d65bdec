"""``VectorProducer``: ADD / UPDATE / REMOVE operations to the operations topic."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy.typing as npt

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.kafka.producer import TopicProducer, key_partition
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame, encode_op_json, validate_vector

MAX_FRAME_OPS = 2_000
"""Operations per frame at most (768-dim float32: about 6 MB)."""


class VectorProducer(TopicProducer):
    """Writes vector operations; ``flush`` waits until the broker has them.

    Single operations go as JSON keyed by pk; ``send_many`` packs operations into
    binary frames, one per partition, so that every operation on a pk still lands in
    that pk's partition in order. Frames are keyed ``frame:<uuid>`` (the topic is
    compacted, which needs a key).
    """

    def __init__(self, settings: Settings, *, bootstrap: str | None = None, **extra: Any) -> None:
        bootstrap = bootstrap or settings.kafka.bootstrap_servers
        if not bootstrap:
            raise ConfigError(
                "VectorProducer needs a bootstrap address: set KAFKA_BOOTSTRAP_SERVERS or pass it"
            )
        super().__init__(bootstrap, settings.topic("vectors.ops"), **extra)
        self.dimension = settings.vector_auto_buffer.dimension
        self.ops_sent = 0

    def _op(
        self, op: OpType, pk: str, vector: npt.ArrayLike | None, metadata: Mapping[str, Any] | None
    ) -> VectorOp:
        values = None if vector is None else validate_vector(vector, self.dimension)
        return VectorOp(op, pk, values, dict(metadata or {}))

    def send_op(self, op: VectorOp) -> None:
        self.send(encode_op_json(op), key=op.pk.encode())
        self.ops_sent += 1

    def add(
        self, pk: str, vector: npt.ArrayLike, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self.send_op(self._op(OpType.ADD, pk, vector, metadata))

    def update(
        self, pk: str, vector: npt.ArrayLike, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self.send_op(self._op(OpType.UPDATE, pk, vector, metadata))

    def remove(self, pk: str) -> None:
        self.send_op(self._op(OpType.REMOVE, pk, None, None))

    def send_many(self, ops: Iterable[VectorOp]) -> int:
        """Send operations in frames grouped by partition, order kept per pk; returns the count."""
        by_partition: dict[int, list[VectorOp]] = defaultdict(list)
        sent = 0
        for op in ops:
            p = key_partition(op.pk.encode(), self.partitions)
            by_partition[p].append(op)
            sent += 1
            if len(by_partition[p]) >= MAX_FRAME_OPS:
                self._send_frame(p, by_partition.pop(p))
        for p, group in by_partition.items():
            self._send_frame(p, group)
        self.ops_sent += sent
        return sent

    def _send_frame(self, partition: int, ops: list[VectorOp]) -> None:
        frame = encode_op_frame(ops, self.dimension)
        self.send(frame, key=f"frame:{uuid.uuid4().hex}".encode(), partition=partition)

    def add_many(self, items: Iterable[tuple[str, npt.ArrayLike, Mapping[str, Any] | None]]) -> int:
        """Send ``(pk, vector, metadata)`` ADDs in frames; returns the count."""
        return self.send_many(self._op(OpType.ADD, pk, v, m) for pk, v, m in items)
