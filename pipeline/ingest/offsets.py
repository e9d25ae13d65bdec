"""``OffsetTracker``: which input offsets may be committed, because what they carried is durable.

A stage that consumes a batch holds one token per partition of the batch, covering
the units (points, operations) the batch's records in that partition carried. The
units travel with their token through the buffers; when a flush made some durable,
the stage releases the token with that many units. A partition's committable offset
is one past the last record of the longest run of batches, oldest first, whose tokens
are fully released, so a committed offset never passes a unit that is only in memory,
and offsets commit in order even when later batches become durable first.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

__all__ = ["BatchToken", "OffsetTracker"]


@dataclass(eq=False, slots=True)
class BatchToken:
    """The records of one batch in one partition, up to ``next_offset`` (exclusive)."""

    partition: int
    next_offset: int
    remaining: int
    records: int


class OffsetTracker:
    """Per partition, the batches held and the offset that may be committed.

    Thread-safe: the consumer thread holds, flushes on the event loop release.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, deque[BatchToken]] = {}
        self._committable: dict[int, int] = {}

    def hold(self, partition: int, next_offset: int, units: int, *, records: int = 1) -> BatchToken:
        """A token for ``units`` units of ``records`` records up to ``next_offset``.

        A token of 0 units is released at once (its records carried nothing to keep).
        """
        token = BatchToken(partition, next_offset, units, records)
        with self._lock:
            self._held.setdefault(partition, deque()).append(token)
            if units <= 0:
                self._advance(partition)
        return token

    def release(self, token: object, units: int) -> None:
        """``units`` of ``token`` are durable (a token of a dropped partition is ignored)."""
        assert isinstance(token, BatchToken)
        with self._lock:
            token.remaining -= units
            if token.remaining <= 0:
                self._advance(token.partition)

    def release_all(self, tokens: list[tuple[object, int]]) -> None:
        for token, units in tokens:
            self.release(token, units)

    def _advance(self, partition: int) -> None:
        queue = self._held.get(partition)
        while queue and queue[0].remaining <= 0:
            self._committable[partition] = queue.popleft().next_offset

    def committable(self) -> dict[int, int]:
        """Offsets that may be committed now, by partition (only those that moved)."""
        with self._lock:
            out, self._committable = self._committable, {}
        return out

    def pending_records(self) -> int:
        """Records whose offsets wait for durability, over all partitions."""
        with self._lock:
            return sum(t.records for queue in self._held.values() for t in queue)

    def drop(self, partitions: set[int]) -> None:
        """Forget ``partitions`` (revoked or lost): their tokens no longer move offsets."""
        with self._lock:
            for partition in partitions:
                self._held.pop(partition, None)
                self._committable.pop(partition, None)
