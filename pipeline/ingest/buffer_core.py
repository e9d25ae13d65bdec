"""The mechanism shared by the two auto buffers (time series and vectors): BufferCore.

A :class:`BufferCore` holds what every auto buffer needs besides its own storage:

- one lock, which the owning buffer takes around every change of its state;
- the clocks: a monotonic one (seconds) for flush ages, a wall one (seconds since
  the epoch) for :attr:`BufferCore.last_flush_time`, both injectable for tests;
- the hard cap check, which raises :class:`~pipeline.errors.BufferOverflow`;
- flush accounting: how many buffers were drained, and why (:class:`FlushReason`).

The owning buffer decides what one "flush" is and reports it through
:meth:`BufferCore.record_flushes`; the core never drains anything itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from pipeline.errors import BufferOverflow, InvalidArgument

__all__ = ["AUTO_FLUSH_REASONS", "BufferCore", "FlushReason", "format_utc"]


class FlushReason(StrEnum):
    """Why a buffer was drained."""

    SIZE = "size"
    """One key reached its per-buffer size limit."""
    TIME = "time"
    """The oldest entry of a buffer reached the flush interval."""
    MEMORY = "memory"
    """All buffers together passed the memory limit; everything is drained."""
    MANUAL = "manual"
    """A caller asked for a flush (shutdown, checkpoint, tests)."""
    REVOKE = "revoke"
    """The partitions feeding the buffer were revoked by a consumer rebalance."""


AUTO_FLUSH_REASONS: Final = frozenset({FlushReason.SIZE, FlushReason.TIME, FlushReason.MEMORY})
"""The reasons counted in :attr:`BufferCore.auto_flush_count`."""


def format_utc(epoch_seconds: float) -> str:
    """ISO-8601 UTC with whole seconds, e.g. ``"2025-12-15T12:30:00Z"``."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BufferCore:
    """Lock, clocks, hard cap and flush counters of one auto buffer.

    ``what`` names the buffer and ``unit`` its entries in error messages
    (``"time-series buffer"``, ``"points"``); ``max_total`` is the hard cap and
    ``cap_setting`` the setting that holds it, so an overflow says what to change.
    ``clock`` must be monotonic (seconds); ``wall_clock`` returns seconds since
    the epoch. Methods that read or change counters expect the caller to hold
    :attr:`lock`, except the read-only properties, which are single reads.
    """

    __slots__ = (
        "_last_flush_wall",
        "_reason_counts",
        "cap_setting",
        "clock",
        "lock",
        "max_total",
        "unit",
        "wall_clock",
        "what",
    )

    def __init__(
        self,
        *,
        what: str,
        unit: str,
        max_total: int,
        cap_setting: str,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_total < 1:
            raise InvalidArgument(f"{cap_setting} must be >= 1, got {max_total}")
        self.what = what
        self.unit = unit
        self.max_total = max_total
        self.cap_setting = cap_setting
        self.clock = clock
        self.wall_clock = wall_clock
        self.lock = threading.Lock()
        self._reason_counts: dict[FlushReason, int] = dict.fromkeys(FlushReason, 0)
        self._last_flush_wall: float | None = None

    def overflow(self, buffered: int, incoming: int) -> BufferOverflow:
        """The error for refusing ``incoming`` entries while ``buffered`` are held."""
        return BufferOverflow(
            f"{self.what} holds {buffered} {self.unit}; accepting {incoming} more would "
            f"exceed {self.cap_setting}={self.max_total}. Nothing of this call was accepted: "
            f"flush the buffer (or wait until pending flushes are written) and retry, "
            f"or raise {self.cap_setting}",
            buffer_size=buffered,
        )

    def check_capacity(self, buffered: int, incoming: int) -> None:
        """Raise :class:`~pipeline.errors.BufferOverflow` if ``buffered + incoming`` > cap."""
        if buffered + incoming > self.max_total:
            raise self.overflow(buffered, incoming)

    def record_flushes(self, reason: FlushReason, count: int) -> None:
        """Count ``count`` drained buffers for ``reason``; zero records nothing."""
        if count <= 0:
            return
        self._reason_counts[reason] += count
        self._last_flush_wall = self.wall_clock()

    @property
    def flush_count(self) -> int:
        """Buffers drained for any reason."""
        return sum(self._reason_counts.values())

    @property
    def auto_flush_count(self) -> int:
        """Buffers drained for size, time or memory."""
        return sum(self._reason_counts[r] for r in AUTO_FLUSH_REASONS)

    @property
    def manual_flush_count(self) -> int:
        """Buffers drained because a caller asked."""
        return self._reason_counts[FlushReason.MANUAL]

    @property
    def last_flush_time(self) -> str | None:
        """ISO-8601 UTC time of the last flush (``"2025-12-15T12:30:00Z"``), ``None`` before."""
        wall = self._last_flush_wall
        return None if wall is None else format_utc(wall)

    def reason_counts(self) -> dict[str, int]:
        """Drained buffers per reason, every reason present, keyed by its value."""
        return {reason.value: count for reason, count in self._reason_counts.items()}
