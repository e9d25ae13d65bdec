"""Appends applied mutations to the WAL: input partition ``p`` to WAL partition ``p mod N``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pipeline.errors import InvalidArgument
from pipeline.kafka.consumer import partition_count
from pipeline.kafka.producer import RecordProducer
from pipeline.wal.entry import EntryType, encode_entry_record

__all__ = ["WalWriter", "topic_partition_count"]


_COUNTS_READ: dict[str, int] = {}
"""The partition count of each topic as :func:`topic_partition_count` last read it in
this process (topic names carry their namespace)."""


def topic_partition_count(bootstrap: str, topic: str, timeout_s: float = 10.0) -> int:
    """How many partitions ``topic`` has on ``bootstrap`` (1 if the topic is not listed)."""
    count = max(1, partition_count(bootstrap, topic, timeout_s))
    _COUNTS_READ[topic] = count
    return count


class WalWriter:
    """The pipeline's one way to write the WAL; callers await the entry's durability.

    ``partitions`` is the WAL topic's partition count (:func:`topic_partition_count`);
    a mutation from input partition ``p`` goes to WAL partition ``p mod partitions``,
    so every series and pk keeps one WAL partition and its order. Without it, the
    count :func:`topic_partition_count` read for ``topic`` in this process before the
    first entry (a worker's vector stage reads it at start), else 1: everything in
    partition 0, the single-partition WAL. The count is fixed from the first entry on,
    so a series or pk never changes WAL partition: restart writers after adding WAL
    partitions.
    """

    def __init__(
        self, producer: RecordProducer, topic: str, *, partitions: int | None = None
    ) -> None:
        if partitions is not None and partitions < 1:
            raise InvalidArgument(f"a WAL has at least 1 partition; got {partitions}")
        self.producer = producer
        self.topic = topic
        self._partitions = partitions
        self.entries_written = 0

    @property
    def partitions(self) -> int:
        """The WAL partition count the writer maps input partitions onto."""
        if self._partitions is None:  # fixed at the first entry: a series never moves
            self._partitions = _COUNTS_READ.get(self.topic, 1)
        return self._partitions

    def wal_partition(self, partition: int) -> int:
        """The WAL partition of a mutation from input partition ``partition``."""
        return partition % self.partitions

    def append(
        self, entry_type: EntryType, payload: bytes, *, partition: int = 0
    ) -> asyncio.Future[Any]:
        """Queue one entry; the future resolves when the broker acknowledged it.

        ``partition`` is the input partition the mutation came from.
        """
        value = encode_entry_record(entry_type, int(time.time() * 1000), payload)
        self.entries_written += 1
        return self.producer.produce(
            self.topic,
            value,
            key=entry_type.name.lower().encode(),
            partition=self.wal_partition(partition),
        )
