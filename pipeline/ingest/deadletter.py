"""Dead letters: bad records become data on the dead-letter topic, never a crash.

A dead letter is the original key and value, unchanged, with these headers:

=========================  ==================================================
header                     value
=========================  ==================================================
``themis.reason``          what was wrong, UTF-8
``themis.source.topic``    topic of the original record
``themis.source.partition`` its partition, decimal
``themis.source.offset``   its offset, decimal
``themis.error.type``      exception class name
=========================  ==================================================
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from confluent_kafka import Message

from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics

__all__ = [
    "ERROR_TYPE",
    "REASON",
    "SOURCE_OFFSET",
    "SOURCE_PARTITION",
    "SOURCE_TOPIC",
    "DeadLetter",
    "DeadLetterWriter",
]

REASON = "themis.reason"
SOURCE_TOPIC = "themis.source.topic"
SOURCE_PARTITION = "themis.source.partition"
SOURCE_OFFSET = "themis.source.offset"
ERROR_TYPE = "themis.error.type"


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be processed, and why."""

    key: bytes | None
    value: bytes
    reason: str
    error_type: str
    source_topic: str
    source_partition: int
    source_offset: int

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (REASON, self.reason.encode()),
            (SOURCE_TOPIC, self.source_topic.encode()),
            (SOURCE_PARTITION, str(self.source_partition).encode()),
            (SOURCE_OFFSET, str(self.source_offset).encode()),
            (ERROR_TYPE, self.error_type.encode()),
        ]


class DeadLetterWriter:
    """Writes records that cannot be processed to the dead-letter topic, and counts them."""

    def __init__(self, producer: AsyncProducer, topic: str, metrics: PipelineMetrics) -> None:
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self.count = 0

    def send(self, message: Message, exc: Exception) -> asyncio.Future[Message]:
        """Queue the dead letter of ``message``; the future resolves once it is durable.

        The caller lets the record's offset be committed only after that.
        """
        source_topic = message.topic() or ""
        letter = DeadLetter(
            key=message.key(),
            value=message.value() or b"",
            reason=str(exc),
            error_type=type(exc).__name__,
            source_topic=source_topic,
            source_partition=message.partition() or 0,
            source_offset=message.offset() or 0,
        )
        return self.send_letter(letter)

    def send_letter(self, letter: DeadLetter) -> asyncio.Future[Message]:
        """Queue ``letter`` (one not read from a record as such); resolves once durable."""
        self.count += 1
        self.metrics.dead_letters.labels(source_topic=letter.source_topic).inc()
        return self.producer.produce(
            self.topic, letter.value, key=letter.key, headers=letter.headers()
        )

    async def write_all(self, rejected: list[tuple[Message, Exception]]) -> None:
        """Make the dead letters of every ``(message, reason)`` durable."""
        if rejected:
            await asyncio.gather(*(self.send(message, exc) for message, exc in rejected))
