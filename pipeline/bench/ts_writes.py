"""The auto buffer against one durable write per point, in process, on the blocks topic.

Both sides write Gorilla blocks (:func:`~pipeline.ts.block.encode_blocks`, keyed by
their content id) through one :class:`AckedProducer` (``acks=all``, idempotent) and
wait for the broker's acknowledgement before going on: :func:`measure_buffered`
after every batch ``TSAutoBuffer.add`` returns, :func:`measure_direct` after every
point. The WAL is not written: what is compared is batching, not the WAL's cost.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Any, Self

import numpy as np
from confluent_kafka import KafkaError, Message

from pipeline.bench.ts_codec import Series, interleaved
from pipeline.config import TSAutoBufferSettings
from pipeline.errors import BenchmarkFailed
from pipeline.kafka.clients import Producer
from pipeline.kafka.producer import durable_producer_config
from pipeline.ts.block import encode_blocks
from pipeline.ts.buffer import SeriesBatch, TSAutoBuffer
from pipeline.ts.point import SeriesArrays

__all__ = ["AckedProducer", "measure_buffered", "measure_direct"]


class AckedProducer:
    """A durable producer (``acks=all``, idempotent) whose flush fails on any failed record.

    ``extra`` are more librdkafka settings (``partitioner="consistent"`` to place keyed
    records as :class:`~pipeline.ts.producer.TSProducer` does).
    """

    def __init__(self, bootstrap: str, topic: str, **extra: Any) -> None:
        self.topic = topic
        self._producer = Producer(durable_producer_config(bootstrap, **extra))
        self._failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(err.str())

    def produce(self, key: bytes, value: bytes, *, partition: int | None = None) -> None:
        """Queue one record (to ``partition``, else where the partitioner puts its key)."""
        while True:
            try:
                if partition is None:
                    self._producer.produce(
                        self.topic, value, key=key, on_delivery=self._on_delivery
                    )
                else:
                    self._producer.produce(
                        self.topic, value, key, partition, on_delivery=self._on_delivery
                    )
                return
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)

    def flush_acked(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker acknowledged every record produced so far."""
        remaining = self._producer.flush(timeout_s)
        if remaining or self._failures:
            raise BenchmarkFailed(
                f"{remaining} records to {self.topic} unacknowledged after {timeout_s} s, "
                f"{len(self._failures)} failed: {self._failures[:1]}"
            )

    def close(self) -> None:
        """Release the producer (records not acknowledged within 30 s are dropped)."""
        self._producer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _produce_blocks(producer: AckedProducer, series: Iterable[SeriesArrays]) -> tuple[int, int]:
    """Produce every series as blocks, as the worker writes them; ``(points, block bytes)``."""
    points = block_bytes = 0
    for key, ts, vs in series:
        points += int(ts.size)
        for block in encode_blocks(key, ts, vs):
            value = block.to_bytes()
            producer.produce(block.block_id.encode(), value)
            block_bytes += len(value)
    return points, block_bytes


def measure_buffered(
    producer: AckedProducer, series: list[Series], config: TSAutoBufferSettings
) -> tuple[int, float]:
    """``(points, seconds)`` through TSAutoBuffer with a durable write per returned batch."""
    buffer = TSAutoBuffer(config)

    def write(batches: list[SeriesBatch]) -> None:
        points, block_bytes = _produce_blocks(
            producer, ((b.series_key, b.timestamps, b.values) for b in batches)
        )
        producer.flush_acked()
        buffer.record_durable(points, block_bytes)

    points = 0
    t0 = time.perf_counter()
    for key, t, v in interleaved(series):
        batches = buffer.add(key, t, v)
        points += 1
        if batches:
            write(batches)
    rest = buffer.flush()
    if rest:
        write(rest)
    seconds = time.perf_counter() - t0
    durable = buffer.stats().points_flushed
    if durable != points:
        raise BenchmarkFailed(f"buffered side: {durable:,} of {points:,} points became durable")
    return points, seconds


def measure_direct(producer: AckedProducer, series: list[Series], count: int) -> tuple[int, float]:
    """``(points, seconds)`` writing one acknowledged one-point block per point."""
    points = 0
    t0 = time.perf_counter()
    for key, t, v in itertools.islice(interleaved(series), count):
        _produce_blocks(
            producer, [(key, np.array([t], dtype=np.int64), np.array([v], dtype=np.float64))]
        )
        producer.flush_acked()
        points += 1
    return points, time.perf_counter() - t0
