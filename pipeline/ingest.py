"""The mechanism every ingest path shares: hold input records until durable, then ack.

An agent reads records with explicit acks (``stream.noack()``). For each record it
asks :class:`AckTracker` for a token covering the units (points, operations) the
record carried, buffers the units with that token, and when a flush made units
durable it releases the tokens with the number of units each covered. A record is
acked when all its units are durable, so Faust's committed offset never passes a
unit that is only in memory. (Faust's ``take()`` acks a batch even when the loop
body raises; explicit acks avoid that.)

Records that cannot be decoded go to the dead-letter topic via
:class:`DeadLetterWriter`, and are acked only once the dead letter is durable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faust.types import EventT, StreamT

from pipeline.deadletter import DeadLetter
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics


@dataclass
class _Pending:
    event: EventT[Any]
    stream: StreamT[Any]
    remaining: int


@dataclass
class AckTracker:
    """Acks input records once every unit they carried is durable."""

    pending: dict[int, _Pending] = field(default_factory=dict)

    def hold(self, event: EventT[Any], stream: StreamT[Any], units: int) -> int:
        """A token for ``units`` units of ``event``; the record is acked when all are released."""
        token = id(event)
        self.pending[token] = _Pending(event, stream, units)
        return token

    def forget(self, event: EventT[Any]) -> None:
        self.pending.pop(id(event), None)

    async def release(self, token: object, units: int) -> None:
        """``units`` of the record behind ``token`` are durable."""
        assert isinstance(token, int)
        entry = self.pending.get(token)
        if entry is None:
            return
        entry.remaining -= units
        if entry.remaining <= 0:
            del self.pending[token]
            await entry.stream.ack(entry.event)

    async def release_all(self, tokens: list[tuple[object, int]]) -> None:
        for token, units in tokens:
            await self.release(token, units)


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
