"""Per-series buffers of time-series points that drain on size, age or memory.

:class:`TSAutoBuffer` collects ``(timestamp_ms, value)`` points per series key and
hands them back as :class:`SeriesBatch` objects when a series should be written:

- **size**: a series holds ``max_points_per_buffer`` points -> ``add``/``add_many``
  return that series;
- **memory**: all buffers together hold more than ``max_memory_bytes`` ->
  ``add``/``add_many`` return every series;
- **time**: :meth:`TSAutoBuffer.due` returns every series whose oldest buffered
  point was added ``flush_interval_ms`` or longer ago (by the injected clock);
- **manual** / **revoke**: :meth:`TSAutoBuffer.flush`.

The buffer never writes anything: the caller encodes and stores the batches it is
given, then reports them with :meth:`TSAutoBuffer.record_durable`. Above
``max_total_points`` buffered points, ``add``/``add_many`` raise
:class:`~pipeline.errors.BufferOverflow` and accept nothing from that call.

Memory accounting is the logical payload, not the Python heap::

    bytes = 16 * buffered points + sum over buffered series (128 + UTF-8 length of the key)

(8 bytes of timestamp and 8 of value per point; 128 bytes per series for its
bookkeeping). A series that has been drained is forgotten until its next point.

``enabled`` in the settings is for the caller to read; this class always buffers.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from pipeline.config import TSAutoBufferSettings
from pipeline.errors import InvalidArgument
from pipeline.ingest.buffer_core import BufferCore, FlushReason

__all__ = ["POINT_BYTES", "SERIES_OVERHEAD_BYTES", "SeriesBatch", "TSAutoBuffer", "TSBufferStats"]

POINT_BYTES: Final = 16
"""Bytes counted per buffered point: an int64 timestamp and a float64 value."""
SERIES_OVERHEAD_BYTES: Final = 128
"""Bytes counted per buffered series on top of its key's UTF-8 length."""

_Int64s = npt.NDArray[np.int64]
_Float64s = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SeriesBatch:
    """The points of one series drained from the buffer.

    ``timestamps`` (int64 milliseconds since the epoch) are sorted ascending and
    unique; when one timestamp was written more than once the value written LAST
    is kept. ``values`` (float64) line up with them. ``tokens`` lists, in append
    order, ``(token, n)`` for each ``add``/``add_many`` call with a token that
    contributed ``n`` input points to this batch (calls without a token are left
    out), so the ``n`` count input points, duplicates included.
    """

    series_key: str
    timestamps: _Int64s
    values: _Float64s
    tokens: list[tuple[object, int]]


@dataclass(frozen=True, slots=True)
class TSBufferStats:
    """A consistent snapshot of :class:`TSAutoBuffer` counters.

    A flush is one series drained; a call that drains nothing counts nothing.
    """

    points_buffered: int
    """Points accepted since the buffer was created."""
    points_flushed: int
    """Points reported durable through :meth:`TSAutoBuffer.record_durable`."""
    flush_count: int
    """Series drained for any reason."""
    auto_flush_count: int
    """Series drained for size, time or memory."""
    manual_flush_count: int
    """Series drained by a manual :meth:`TSAutoBuffer.flush`."""
    current_buffer_size: int
    """Points buffered now."""
    current_buffer_memory: int
    """Bytes buffered now, by the formula in the module docstring."""
    avg_compression_ratio: float
    """Raw bytes (16 per point) over block bytes, over all durable blocks; 0.0 before any."""
    last_flush_time: str | None
    """ISO-8601 UTC time of the last flush (``"2025-12-15T12:30:00Z"``), ``None`` before."""

    def to_dict(self) -> dict[str, object]:
        """The fields by name, in declaration order."""
        return asdict(self)


PointRun = tuple[list[int] | npt.NDArray[np.int64], list[float] | npt.NDArray[np.float64]]
"""A run of one series' points: timestamps (ms) and values, as lists or arrays."""


class _Series:
    """One series' pending points.

    Scalar ``add`` calls append to ``ts``/``vals`` (cheap Python lists);
    ``add_many`` first seals those lists into ``chunks`` and then appends its own
    arrays there, so ``chunks`` followed by ``ts``/``vals`` is append order, which
    "last write wins" needs.
    """

    __slots__ = ("chunks", "count", "first_added", "memory", "tokens", "ts", "vals")

    def __init__(self, first_added: float, memory: int) -> None:
        self.ts: list[int] = []
        self.vals: list[float] = []
        self.chunks: list[tuple[_Int64s | list[int], _Float64s | list[float]]] = []
        self.tokens: list[tuple[object, int]] = []
        self.count = 0
        self.first_added = first_added
        self.memory = memory

    def seal(self) -> None:
        if self.ts:
            self.chunks.append((self.ts, self.vals))
            self.ts = []
            self.vals = []

    def parts(self) -> tuple[list[_Int64s], list[_Float64s]]:
        """Arrays of every pending chunk in append order (lists become new arrays)."""
        ts_parts = [np.asarray(t, dtype=np.int64) for t, _ in self.chunks]
        val_parts = [np.asarray(v, dtype=np.float64) for _, v in self.chunks]
        if self.ts:
            ts_parts.append(np.array(self.ts, dtype=np.int64))
            val_parts.append(np.array(self.vals, dtype=np.float64))
        return ts_parts, val_parts


def sorted_last_wins(
    ts_parts: list[_Int64s], val_parts: list[_Float64s]
) -> tuple[_Int64s, _Float64s]:
    """Concatenate, sort by timestamp (stable) and keep the last value of each timestamp."""
    if not ts_parts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    ts = ts_parts[0] if len(ts_parts) == 1 else np.concatenate(ts_parts)
    vals = val_parts[0] if len(val_parts) == 1 else np.concatenate(val_parts)
    if ts.size > 1 and not bool((ts[1:] > ts[:-1]).all()):
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        vals = vals[order]
        # After a stable sort the last of equal timestamps is the last written.
        keep = np.empty(ts.size, dtype=bool)
        keep[-1] = True
        np.not_equal(ts[1:], ts[:-1], out=keep[:-1])
        if not bool(keep.all()):
            ts = ts[keep]
            vals = vals[keep]
    return ts, vals


class TSAutoBuffer:
    """Thread-safe per-series point buffers; see the module docstring.

    ``clock`` is a monotonic clock in seconds used for the time trigger; tests
    inject a fake one. Every public method may be called from any thread.
    """

    def __init__(
        self, settings: TSAutoBufferSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._core = BufferCore(
            what="time-series buffer",
            unit="points",
            max_total=settings.max_total_points,
            cap_setting="features.ts_auto_buffer.max_total_points",
            clock=clock,
        )
        self._lock = self._core.lock
        self._clock = clock
        self._max_points = settings.max_points_per_buffer
        self._max_memory = settings.max_memory_bytes
        self._interval_s = settings.flush_interval_ms / 1000.0
        # Insertion order is creation order, which is oldest-first-point order
        # because a drained series is removed: due() stops at the first young one.
        self._series: dict[str, _Series] = {}
        self._total = 0
        self._memory = 0
        self._accepted = 0
        self._durable_points = 0
        self._durable_raw_bytes = 0
        self._durable_block_bytes = 0

    # -- adding -------------------------------------------------------------

    def add(
        self, series_key: str, timestamp_ms: int, value: float, token: object | None = None
    ) -> list[SeriesBatch]:
        """Buffer one point (``timestamp_ms`` in milliseconds since the epoch).

        Returns the batches that became due because of it: this series alone when
        it reached ``max_points_per_buffer`` (reason size), every series when the
        buffers passed ``max_memory_bytes`` (reason memory), else ``[]``. Raises
        :class:`~pipeline.errors.BufferOverflow` and keeps nothing when the buffer
        already holds ``max_total_points``.
        """
        timestamp_ms = operator.index(timestamp_ms)
        value = float(value)
        with self._lock:
            self._core.check_capacity(self._total, 1)
            series = self._series.get(series_key)
            if series is None:
                series = self._new_series(series_key)
            series.ts.append(timestamp_ms)
            series.vals.append(value)
            series.count += 1
            if token is not None:
                series.tokens.append((token, 1))
            self._total += 1
            self._accepted += 1
            self._memory += POINT_BYTES
            if self._memory > self._max_memory:
                drained = self._detach_all(FlushReason.MEMORY)
            elif series.count >= self._max_points:
                drained = [self._detach(series_key, FlushReason.SIZE)]
            else:
                return []
        return [_to_batch(key, s) for key, s in drained]

    def add_many(
        self,
        series_key: str,
        timestamps: npt.ArrayLike,
        values: npt.ArrayLike,
        token: object | None = None,
    ) -> list[SeriesBatch]:
        """Buffer many points of one series: int64 milliseconds and float64 values.

        The arrays are copied, in any order. Returns what became due like
        :meth:`add`; a series that holds more than ``max_points_per_buffer``
        afterwards is drained whole (the caller splits it into blocks). Raises
        ``ValueError`` when the arrays are not one-dimensional of equal length, and
        :class:`~pipeline.errors.BufferOverflow` (keeping nothing) when accepting
        them would pass ``max_total_points``.
        """
        ts = np.array(timestamps, dtype=np.int64)
        vals = np.array(values, dtype=np.float64)
        if ts.ndim != 1 or ts.shape != vals.shape:
            raise InvalidArgument(
                f"add_many({series_key!r}): timestamps {ts.shape} and values {vals.shape} "
                "must be one-dimensional arrays of equal length"
            )
        n = int(ts.size)
        if n == 0:
            return []
        with self._lock:
            self._core.check_capacity(self._total, n)
            series = self._series.get(series_key)
            if series is None:
                series = self._new_series(series_key)
            else:
                series.seal()
            series.chunks.append((ts, vals))
            series.count += n
            if token is not None:
                series.tokens.append((token, n))
            self._total += n
            self._accepted += n
            self._memory += POINT_BYTES * n
            if self._memory > self._max_memory:
                drained = self._detach_all(FlushReason.MEMORY)
            elif series.count >= self._max_points:
                drained = [self._detach(series_key, FlushReason.SIZE)]
            else:
                return []
        return [_to_batch(key, s) for key, s in drained]

    def add_grouped(
        self, groups: Mapping[str, Sequence[PointRun]], token: object | None = None
    ) -> list[SeriesBatch]:
        """Buffer the points of many series at once, in the order given per series.

        ``groups`` maps a series key to its runs of points: ``(timestamps, values)``
        as Python lists (int milliseconds, floats, taken as they are) or as int64 /
        float64 arrays (kept as chunks). The same as one :meth:`add` or :meth:`add_many`
        per run, with one lock, one capacity check and one trigger check for all;
        ``token`` is recorded once per series with its point count. Raises
        :class:`~pipeline.errors.BufferOverflow` and keeps nothing when accepting the
        points would pass ``max_total_points``.
        """
        total = sum(len(ts) for runs in groups.values() for ts, _ in runs)
        if total == 0:
            return []
        with self._lock:
            self._core.check_capacity(self._total, total)
            full: list[str] = []
            for key, runs in groups.items():
                series = self._series.get(key)
                if series is None:
                    series = self._new_series(key)
                n = 0
                for ts, vals in runs:
                    if type(ts) is list:
                        series.ts.extend(ts)
                        series.vals.extend(vals)
                    else:
                        series.seal()
                        series.chunks.append((ts, vals))
                    n += len(ts)
                series.count += n
                if token is not None:
                    series.tokens.append((token, n))
                if series.count >= self._max_points:
                    full.append(key)
            self._total += total
            self._accepted += total
            self._memory += POINT_BYTES * total
            if self._memory > self._max_memory:
                drained = self._detach_all(FlushReason.MEMORY)
            elif full:
                drained = [self._detach(key, FlushReason.SIZE) for key in full]
            else:
                return []
        return [_to_batch(key, s) for key, s in drained]

    # -- draining -----------------------------------------------------------

    def due(self) -> list[SeriesBatch]:
        """Drain every series whose oldest buffered point is ``flush_interval_ms`` old.

        Age is measured with the injected clock (seconds). Reason: time.
        """
        with self._lock:
            now = self._clock()
            keys: list[str] = []
            for key, series in self._series.items():
                if now - series.first_added < self._interval_s:
                    break
                keys.append(key)
            drained = [self._detach(key, FlushReason.TIME) for key in keys]
        return [_to_batch(key, s) for key, s in drained]

    def flush(
        self, series_keys: Iterable[str] | None = None, *, reason: FlushReason = FlushReason.MANUAL
    ) -> list[SeriesBatch]:
        """Drain every series, or only ``series_keys`` (keys with nothing buffered are skipped).

        ``reason`` is counted for each series drained: manual by default, revoke
        when partitions are taken away.
        """
        with self._lock:
            if series_keys is None:
                drained = self._detach_all(reason)
            else:
                wanted = [key for key in dict.fromkeys(series_keys) if key in self._series]
                drained = [self._detach(key, reason) for key in wanted]
        return [_to_batch(key, s) for key, s in drained]

    # -- reading ------------------------------------------------------------

    def buffered_points(
        self, series_key: str, start_ms: int, end_ms: int
    ) -> tuple[_Int64s, _Float64s]:
        """Points of ``series_key`` buffered now with ``start_ms <= t <= end_ms``.

        Sorted by timestamp, one value per timestamp (the last written), like a
        drained batch. Points handed out in batches are no longer here.
        """
        with self._lock:
            series = self._series.get(series_key)
            if series is None:
                chunks: list[tuple[_Int64s | list[int], _Float64s | list[float]]] = []
            else:
                # Sealed chunks are never changed again; the open lists are copied.
                chunks = [*series.chunks, (list(series.ts), list(series.vals))]
        ts_parts = [np.asarray(t, dtype=np.int64) for t, _ in chunks]
        val_parts = [np.asarray(v, dtype=np.float64) for _, v in chunks]
        ts, vals = sorted_last_wins(ts_parts, val_parts)
        lo = int(np.searchsorted(ts, start_ms, side="left"))
        hi = int(np.searchsorted(ts, end_ms, side="right"))
        return ts[lo:hi].copy(), vals[lo:hi].copy()

    def buffered_series(self) -> list[str]:
        """The keys of every series with points buffered now, sorted."""
        with self._lock:
            return sorted(key for key, series in self._series.items() if series.count)

    def record_durable(self, raw_points: int, block_bytes: int) -> None:
        """Account blocks written durably: ``raw_points`` points in ``block_bytes`` bytes.

        Adds to ``points_flushed``; the compression ratio is ``16 * raw_points``
        over ``block_bytes``, summed over every call.
        """
        if raw_points < 0 or block_bytes <= 0:
            raise InvalidArgument(
                f"record_durable: raw_points must be >= 0 and block_bytes > 0, "
                f"got {raw_points} and {block_bytes}"
            )
        with self._lock:
            self._durable_points += raw_points
            self._durable_raw_bytes += POINT_BYTES * raw_points
            self._durable_block_bytes += block_bytes

    def stats(self) -> TSBufferStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            core = self._core
            ratio = (
                self._durable_raw_bytes / self._durable_block_bytes
                if self._durable_block_bytes
                else 0.0
            )
            return TSBufferStats(
                points_buffered=self._accepted,
                points_flushed=self._durable_points,
                flush_count=core.flush_count,
                auto_flush_count=core.auto_flush_count,
                manual_flush_count=core.manual_flush_count,
                current_buffer_size=self._total,
                current_buffer_memory=self._memory,
                avg_compression_ratio=ratio,
                last_flush_time=core.last_flush_time,
            )

    def flush_reason_counts(self) -> dict[str, int]:
        """Series drained per reason (``"size"``, ``"time"``, ...), every reason present."""
        with self._lock:
            return self._core.reason_counts()

    def series_keys(self) -> list[str]:
        """Keys of the series with points buffered now, oldest first point first."""
        with self._lock:
            return list(self._series)

    # -- internals (caller holds the lock) ------------------------------------

    def _new_series(self, series_key: str) -> _Series:
        memory = SERIES_OVERHEAD_BYTES + len(series_key.encode("utf-8"))
        series = _Series(self._clock(), memory)
        self._series[series_key] = series
        self._memory += memory
        return series

    def _detach(self, series_key: str, reason: FlushReason) -> tuple[str, _Series]:
        series = self._series.pop(series_key)
        self._total -= series.count
        self._memory -= series.memory + POINT_BYTES * series.count
        self._core.record_flushes(reason, 1)
        return series_key, series

    def _detach_all(self, reason: FlushReason) -> list[tuple[str, _Series]]:
        drained = list(self._series.items())
        self._series = {}
        self._total = 0
        self._memory = 0
        self._core.record_flushes(reason, len(drained))
        return drained


def _to_batch(series_key: str, series: _Series) -> SeriesBatch:
    """Build the batch of a detached series (outside the lock: it is no longer shared)."""
    ts, vals = sorted_last_wins(*series.parts())
    return SeriesBatch(series_key, ts, vals, series.tokens)
