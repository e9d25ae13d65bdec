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

from dataclasses import dataclass
from typing import Any

from faust.types import EventT

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
    """Writes undecodable records to the dead-letter topic and counts them."""

    def __init__(self, producer: AsyncProducer, topic: str, metrics: PipelineMetrics) -> None:
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self.count = 0

    async def write(self, event: EventT[Any], exc: Exception) -> None:
        """Make the dead letter durable; the caller acks the record afterwards."""
        message = event.message
        value = event.value if isinstance(event.value, bytes | bytearray) else b""
        letter = DeadLetter(
            key=message.key if isinstance(message.key, bytes | bytearray) else None,
            value=bytes(value),
            reason=str(exc),
            error_type=type(exc).__name__,
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
        )
        await self.producer.produce(
            self.topic, letter.value, key=letter.key, headers=letter.headers()
        )
        self.count += 1
        self.metrics.dead_letters.labels(source_topic=message.topic).inc()
