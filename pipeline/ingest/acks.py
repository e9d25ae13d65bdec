"""Acks that follow durability: an input record is acked once every unit it carried is durable.

An agent reads records with explicit acks (``stream.noack()``). For each record it
asks :class:`AckTracker` for a token covering the units (points, operations) the
record carried, buffers the units with that token, and when a flush made units
durable it releases the tokens with the number of units each covered. A record is
acked when all its units are durable, so Faust's committed offset never passes a
unit that is only in memory. (Faust's ``take()`` acks a batch even when the loop
body raises; explicit acks avoid that.)

Records that cannot be decoded go to the dead-letter topic via
:class:`~pipeline.ingest.deadletter.DeadLetterWriter`, and are acked only once the
dead letter is durable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faust.types import EventT, StreamT

__all__ = ["AckTracker"]


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
