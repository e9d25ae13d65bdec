"""Appends applied mutations to the WAL topic (partition 0, in the order applied)."""

from __future__ import annotations

import asyncio
import time

from confluent_kafka import Message

from pipeline.kafka.producer import AsyncProducer
from pipeline.wal.entry import EntryType, encode_entry_record


class WalWriter:
    """The pipeline's one way to write the WAL; callers await the entry's durability."""

    def __init__(self, producer: AsyncProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.entries_written = 0

    def append(self, entry_type: EntryType, payload: bytes) -> asyncio.Future[Message]:
        """Queue one entry; the future resolves when the broker acknowledged it."""
        value = encode_entry_record(entry_type, int(time.time() * 1000), payload)
        self.entries_written += 1
        return self.producer.produce(
            self.topic, value, key=entry_type.name.lower().encode(), partition=0
        )
