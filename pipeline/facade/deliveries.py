"""What the facade sent and the broker has not acknowledged yet, and how single points go out.

:class:`InFlight` counts the points (and vector operations) and requests accepted but
not yet acknowledged (``buffer_size``, the ``max_in_flight`` 429, ``/metrics``) and
turns the producer futures of one request into one future (:meth:`InFlight.deliver`),
without a task or ``gather`` per request.

:class:`PointFramer` sends the single points of ``POST /ts/put/buffered``. One record
per point cost the producer and the broker per record and per partition batch, which
at a few thousand requests a second was more of the facade's CPU time than the HTTP
handling itself. So points accepted close together go out together: as TSF1 frames
(:func:`~pipeline.ts.producer.frames_by_partition`), one per partition, each series in
its partition and in order. When they go:

* points whose requests wait for the broker (``acked``) are group-committed: sent when
  the turn of the event loop that accepted them ends, or, while an earlier flush of
  such points awaits the broker, the moment it is acknowledged (so under load one
  flush per broker round trip carries them all);
* points of ``queued`` requests alone after :data:`QUEUED_WINDOW_S` at most: their 200
  was sent already, and a flush every 20 ms instead of every few milliseconds costs
  the broker less than half as much per point (measured).

A flush of one point only (light load) sends it as the JSON point keyed by its series,
the record a client writes. The frames of a flush are packed from the points as they
are (:func:`small_flush_frames`), without numpy arrays per series: acked flushes come
one per broker round trip and are small, and their framing was a good part of what an
acked request cost. ``POST /ts/put/buffered/batch`` flushes the points queued
before it first, so a series' points reach its partition in the order accepted.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import sys
from array import array
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np

from pipeline.errors import DeliveryFailed
from pipeline.kafka.producer import RecordProducer, key_partition
from pipeline.limits import MAX_FRAME_BYTES, MAX_FRAME_POINTS
from pipeline.ts.point import FRAME_MAGIC, DataPoint, parse_series_key
from pipeline.ts.producer import frames_by_partition

__all__ = [
    "ACKED_FLUSHES_IN_FLIGHT",
    "QUEUED_WINDOW_S",
    "InFlight",
    "PointFramer",
    "small_flush_frames",
]

_LOG = logging.getLogger(__name__)

QUEUED_WINDOW_S: Final = 0.02
"""How long points of ``queued`` requests wait for more to share their flush (seconds)."""
ACKED_FLUSHES_IN_FLIGHT: Final = 1
"""Flushes holding points of ``acked`` requests that may await the broker at once."""
_CANCELLED = DeliveryFailed("the delivery was cancelled before the broker answered")


class InFlight:
    """Points and requests accepted that the broker has not acknowledged; their futures."""

    def __init__(self) -> None:
        self.points = 0
        """Points and vector operations accepted, not yet acknowledged."""
        self.requests = 0
        """Requests whose records are not all acknowledged yet."""
        self._pending: set[asyncio.Future[None]] = set()

    def accept(self, points: int, requests: int = 1) -> None:
        """Count ``points`` and ``requests`` as in flight."""
        self.points += points
        self.requests += requests

    def deliver(self, futures: Sequence[asyncio.Future[Any]], points: int) -> asyncio.Future[None]:
        """One future for a request's records: resolved once the broker acknowledged all
        of ``futures``, failed with the first failure. ``points`` and the request count as
        in flight until then."""
        self.accept(points)
        return self.settle_when(futures, points, 1)

    def settle_when(
        self, futures: Sequence[asyncio.Future[Any]], points: int, requests: int
    ) -> asyncio.Future[None]:
        """A future resolved once every one of ``futures`` is; releases the counts then."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.add(done)
        left = len(futures)
        failure: list[BaseException] = []

        def one_done(future: asyncio.Future[Any]) -> None:
            nonlocal left
            left -= 1
            exc = _CANCELLED if future.cancelled() else future.exception()
            if exc is not None and not failure:
                failure.append(exc)
            if left == 0:
                self._finish(done, points, requests, failure)

        if not futures:
            self._finish(done, points, requests, failure)
        for future in futures:
            future.add_done_callback(one_done)
        return done

    def _finish(
        self,
        done: asyncio.Future[None],
        points: int,
        requests: int,
        failure: list[BaseException],
    ) -> None:
        self.points -= points
        self.requests -= requests
        self._pending.discard(done)
        if done.done():
            return
        if failure:
            _LOG.error("the broker did not acknowledge a write: %s", failure[0])
            done.set_exception(failure[0])
            done.exception()  # logged above; a queued request never awaits it
        else:
            done.set_result(None)

    async def drain(self, timeout_s: float) -> None:
        """Wait until everything accepted so far is acknowledged (at most ``timeout_s``)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout_s)


class PointFramer:
    """Sends the single points accepted close together in time as one flush.

    Points of ``acked`` requests are group-committed: the first is sent when the turn
    of the event loop that accepted it ends; while that flush awaits the broker, the
    next ones gather and go together the moment it is acknowledged. So at light load a
    point goes at once, and under load the flushes grow instead of multiplying. Points
    of ``queued`` requests alone wait up to :data:`QUEUED_WINDOW_S`: their 200 was sent
    already, and fewer, larger records cost the producer and the broker less. A flush
    takes every point queued so far. ``producer`` is called at each flush (the
    facade's producer exists from start-up on); ``topic`` has ``partitions``
    partitions. Points are counted in ``in_flight`` from :meth:`add` until their
    records are acknowledged.
    """

    def __init__(
        self,
        producer: Callable[[], RecordProducer],
        topic: str,
        partitions: Callable[[], int],
        in_flight: InFlight,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions = partitions
        self._in_flight = in_flight
        self._points: list[tuple[str, int, float]] = []
        self._done: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False  # a flush is due at the end of this turn
        self._acked_waiting = False  # queued points include an acked request's
        self._acked_out = 0  # flushes holding acked points, not yet acknowledged

    def add(
        self, key: str, timestamp_ms: int, value: float, *, acked: bool
    ) -> asyncio.Future[None]:
        """Queue one point of series ``key`` (a :func:`~pipeline.ts.point.series_key`);
        the returned future resolves once the broker acknowledged it. It is shared by
        the points of one flush: shield it before awaiting. ``acked``: the caller
        waits for it."""
        done = self._done
        if done is None:
            done = self._done = asyncio.get_running_loop().create_future()
        if acked:
            self._acked_waiting = True
            if self._acked_out < ACKED_FLUSHES_IN_FLIGHT:
                self._flush_soon()
        elif self._timer is None and not self._soon:
            self._timer = asyncio.get_running_loop().call_later(QUEUED_WINDOW_S, self.flush)
        self._points.append((key, timestamp_ms, value))
        self._in_flight.accept(1)
        return done

    def flush(self) -> None:
        """Produce the points queued so far (when due, before a batch, at shutdown)."""
        done, points, acked = self._done, self._points, self._acked_waiting
        if self._timer is not None:
            self._timer.cancel()
        self._done, self._points, self._timer = None, [], None
        self._soon = self._acked_waiting = False
        if done is None:
            return
        try:
            futures = self._produce(points)
        except Exception as exc:  # the producer refused: nothing of the flush went out
            futures = [asyncio.get_running_loop().create_future()]
            futures[0].set_exception(exc)
        settled = self._in_flight.settle_when(futures, len(points), len(points))
        settled.add_done_callback(lambda f: _copy_outcome(f, done))
        if acked:
            self._acked_out += 1
            settled.add_done_callback(self._acked_flush_done)

    def _flush_soon(self) -> None:
        if not self._soon:
            self._soon = True
            asyncio.get_running_loop().call_soon(self.flush)

    def _acked_flush_done(self, _: asyncio.Future[None]) -> None:
        self._acked_out -= 1
        if self._acked_waiting and self._acked_out < ACKED_FLUSHES_IN_FLIGHT:
            self._flush_soon()

    def _produce(self, points: list[tuple[str, int, float]]) -> list[asyncio.Future[Any]]:
        producer = self._producer()
        if len(points) == 1:
            key, timestamp_ms, value = points[0]
            metric, entity, tags = parse_series_key(key)
            record = DataPoint(metric, entity, timestamp_ms, value, tags).to_json()
            partitions = self._partitions()
            return [_produce_keyed(producer, self._topic, record, key.encode(), partitions)]
        series: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        for key, timestamp_ms, value in points:
            ts, vs = series[key]
            ts.append(timestamp_ms)
            vs.append(value)
        frames = small_flush_frames(series, self._partitions())
        if frames is None:  # too large for one frame per partition: cut as batches are
            arrays = [
                (key, np.array(ts, np.int64), np.array(vs, np.float64))
                for key, (ts, vs) in series.items()
            ]
            cut = frames_by_partition(arrays, self._partitions(), check_keys=False)
            frames = [(frame.partition, frame.data) for frame in cut]
        return [producer.produce(self._topic, data, partition=p) for p, data in frames]


_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_SERIES_HEAD: Final = struct.Struct("<HI")  # key length, then (after the key) point count
_COUNT: Final = struct.Struct("<I")


def small_flush_frames(
    series: dict[str, tuple[list[int], list[float]]], partitions: int
) -> list[tuple[int, bytes]] | None:
    """``(partition, TSF1 frame)`` for each partition the series go to, byte for byte
    what :func:`~pipeline.ts.producer.frames_by_partition` makes of them, or ``None``
    when a frame would be over :data:`~pipeline.limits.MAX_FRAME_POINTS` or
    :data:`~pipeline.limits.MAX_FRAME_BYTES` (that one cuts them then).

    ``series``: series key -> (timestamps in ms, values), each in order, keys as
    :func:`~pipeline.ts.point.series_key` made them.
    """
    if not _LITTLE_ENDIAN:
        return None
    parts: dict[int, list[bytes]] = {}
    sizes: dict[int, int] = {}
    points: dict[int, int] = {}
    for key, (ts, vs) in series.items():
        encoded = key.encode()
        p = key_partition(encoded, partitions)
        head = _SERIES_HEAD.pack(len(encoded), len(ts))
        part = b"".join((head[:2], encoded, head[2:], array("q", ts), array("d", vs)))
        parts.setdefault(p, []).append(part)
        sizes[p] = sizes.get(p, 8) + len(part)
        points[p] = points.get(p, 0) + len(ts)
    if max(sizes.values()) > MAX_FRAME_BYTES or max(points.values()) > MAX_FRAME_POINTS:
        return None
    return [
        (p, b"".join((FRAME_MAGIC, _COUNT.pack(len(chunks)), *chunks)))
        for p, chunks in parts.items()
    ]


def _produce_keyed(
    producer: RecordProducer, topic: str, value: bytes, key: bytes, partitions: int
) -> asyncio.Future[Any]:
    return producer.produce(topic, value, key=key, partition=key_partition(key, partitions))


def _copy_outcome(source: asyncio.Future[None], target: asyncio.Future[None]) -> None:
    if target.done():
        return
    exc = source.exception()
    if exc is None:
        target.set_result(None)
    else:
        target.set_exception(exc)
        target.exception()  # logged by InFlight; queued requests never await it
