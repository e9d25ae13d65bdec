"""Appends applied mutations to the WAL topic (partition 0, in the order applied)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pipeline.kafka.producer import RecordProducer
from pipeline.wal.entry import EntryType, encode_entry_record


class WalWriter:
    """The pipeline's one way to write the WAL; callers await the entry's durability."""

    def __init__(self, producer: RecordProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.entries_written = 0

    def append(
        self, entry_type: EntryType, payload: bytes, *, partition: int = 0
    ) -> asyncio.Future[Any]:
        """Queue one entry; the future resolves when the broker acknowledged it.

        ``partition`` is the input partition the mutation came from (still written to
        WAL partition 0 for now).
        """
        del partition
        value = encode_entry_record(entry_type, int(time.time() * 1000), payload)
        self.entries_written += 1
        return self.producer.produce(
            self.topic, value, key=entry_type.name.lower().encode(), partition=0
        )
