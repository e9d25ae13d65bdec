"""``BlockWriter``: the one way the primary writes time series durably.

A write encodes each series into Gorilla blocks (:func:`~pipeline.ts.block.encode_blocks`,
at most 65,535 points a block), produces every block to the blocks topic keyed by its
deterministic id, to the partition of its series (:func:`block_partition`, the
partition its points came in on, so the worker that owns a points partition owns
its blocks too and can answer for its series), and appends each block to the WAL,
tagged with that partition. :meth:`BlockWriter.send` queues
all of it at once and returns a :class:`BlockWrite` whose :meth:`~BlockWrite.durable`
resolves when the broker acknowledged every block and WAL entry (``acks=all``); only
then may the caller ack the input the points came from.

Used by the worker's time-series stage (flushed buffers), the facade's direct
``POST /ts/put`` and the benchmarks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.kafka.producer import RecordProducer, key_partition
from pipeline.ts.block import encode_blocks
from pipeline.ts.point import SeriesArrays
from pipeline.wal.entry import EntryType
from pipeline.wal.writer import WalWriter

__all__ = ["BlockWrite", "BlockWriter", "block_partition"]


def block_partition(series_key: str, partitions: int) -> int:
    """The blocks-topic partition of a series: the points topic's partition of it
    (:func:`~pipeline.ts.producer.series_partition`), also for a key holding a lone
    surrogate (JSON can spell one), which is taken as its ``surrogatepass`` bytes."""
    return key_partition(series_key.encode("utf-8", "surrogatepass"), partitions)


@dataclass
class BlockWrite:
    """Blocks queued by one :meth:`BlockWriter.send`: counts, and the acks to await."""

    futures: list[asyncio.Future[Any]]
    blocks: int
    points: int
    block_bytes: int

    async def durable(self) -> None:
        """Return once every block and WAL entry of the write is acknowledged.

        Raises :class:`~pipeline.errors.DeliveryFailed` if the broker refused one.
        """
        await asyncio.gather(*self.futures)


class BlockWriter:
    """Writes series as blocks to ``blocks_topic`` plus their WAL entries.

    ``producer`` is shared with the caller; ``wal`` appends to the WAL topic;
    ``partitions`` gives the blocks topic's partition count (the points topic's too:
    :func:`~pipeline.worker.ts_stage.check_partition_counts`), asked at each send.
    """

    def __init__(
        self,
        producer: RecordProducer,
        blocks_topic: str,
        wal: WalWriter,
        partitions: Callable[[], int],
    ) -> None:
        self.producer = producer
        self.blocks_topic = blocks_topic
        self.wal = wal
        self.partitions = partitions

    def send(self, series: Iterable[SeriesArrays]) -> BlockWrite:
        """Encode and queue every series now (in order); await :meth:`BlockWrite.durable`.

        Must run on the event loop that awaits the result. Raises
        :class:`~pipeline.errors.InvalidArgument` for a series that cannot be encoded
        (nothing of that series is queued).
        """
        futures: list[asyncio.Future[Any]] = []
        points = blocks = block_bytes = 0
        count = self.partitions()
        for key, ts, vs in series:
            points += int(ts.size)
            partition = block_partition(key, count)
            for block in encode_blocks(key, ts, vs):
                data = block.to_bytes()
                block_bytes += len(data)
                blocks += 1
                futures.append(
                    self.producer.produce(
                        self.blocks_topic, data, key=block.block_id.encode(), partition=partition
                    )
                )
                futures.append(self.wal.append(EntryType.TS_BLOCK, data, partition=partition))
        return BlockWrite(futures, blocks, points, block_bytes)

    async def write(self, series: Iterable[SeriesArrays]) -> BlockWrite:
        """:meth:`send`, then wait until it is durable."""
        write = self.send(series)
        await write.durable()
        return write
