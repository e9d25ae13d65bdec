"""Appends applied mutations to the WAL: input partition ``p`` to WAL partition ``p mod N``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pipeline.errors import InvalidArgument
from pipeline.kafka.consumer import make_consumer
from pipeline.kafka.producer import RecordProducer
from pipeline.wal.entry import EntryType, encode_entry_record

__all__ = ["WalWriter", "topic_partition_count"]


def topic_partition_count(bootstrap: str, topic: str, timeout_s: float = 10.0) -> int:
    """How many partitions ``topic`` has on ``bootstrap`` (1 if the topic is not listed)."""
    consumer = make_consumer(bootstrap, "themis-wal-metadata")
    try:
        listed = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    finally:
        consumer.close()
    if listed is None or listed.error is not None or not listed.partitions:
        return 1
    return len(listed.partitions)


class WalWriter:
    """The pipeline's one way to write the WAL; callers await the entry's durability.

    ``partitions`` is the WAL topic's partition count (:func:`topic_partition_count`);
    a mutation from input partition ``p`` goes to WAL partition ``p mod partitions``,
    so every series and pk keeps one WAL partition and its order. With the default 1
    everything goes to partition 0 (the single-partition WAL).
    """

    def __init__(self, producer: RecordProducer, topic: str, *, partitions: int = 1) -> None:
        if partitions < 1:
            raise InvalidArgument(f"a WAL has at least 1 partition; got {partitions}")
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self.entries_written = 0

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
