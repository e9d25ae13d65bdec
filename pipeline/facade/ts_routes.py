"""The time-series endpoints: buffered and direct puts, buffer stats and flush, queries.

``POST /ts/put/buffered``, ``POST /ts/put/buffered/batch`` (writer, ``ts_put`` quota)
    Points to the points topic as binary frames, one per partition
    (:func:`~pipeline.ts.producer.frames_by_partition`): a batch's at once, single
    points with the others accepted close in time
    (:class:`~pipeline.facade.deliveries.PointFramer`; one alone goes as a JSON point
    keyed by its series). A worker buffers them. Bodies are decoded by
    :mod:`~pipeline.facade.ts_bodies`; a large batch off the event loop.
``POST /ts/put`` (writer, ``ts_put`` quota)
    One point as a one-point Gorilla block plus its WAL entry
    (:class:`~pipeline.ts.writer.BlockWriter`), in its series' partition; answers once
    both are acknowledged. Queryable at once through the partition's owner.
``GET /ts/buffer/stats`` (writer), ``POST /ts/buffer/flush`` (admin, ``flush`` quota)
    The workers' buffers, aggregated (:func:`~pipeline.worker.client.aggregate_ts_stats`).
``GET /ts/query``, ``POST /ts/query`` (writer)
    One series' exact points: durable blocks plus what the workers still buffer, asked
    of the worker that owns the series' partition
    (:class:`~pipeline.worker.routing.SeriesRouter`; the facade keeps no blocks). The
    ``POST`` takes the query as a JSON body, for series keys too long for a URL.

The write and query bodies are JSON (batches also NDJSON): a request that declares
another ``Content-Type`` is answered 415, one that declares none is read as JSON.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from aiohttp import web

from pipeline.errors import InvalidRequest
from pipeline.facade.auth import Role
from pipeline.facade.middleware import (
    RouteSpec,
    json_bytes_response,
    json_response,
    with_workers,
)
from pipeline.facade.ratelimit import RouteClass
from pipeline.facade.ts_bodies import PointBodies
from pipeline.ts.point import SeriesArrays
from pipeline.ts.producer import Frame, frames_by_partition
from pipeline.ts.store import SeriesPoints, SeriesSelector
from pipeline.validation import (
    NDJSON,
    SeriesQuery,
    parse_json,
    point_from_json,
    query_answer,
    series_query,
    series_query_body,
)
from pipeline.worker.query import query_series, read_matching

if TYPE_CHECKING:
    from pipeline.facade.app import Facade

__all__ = ["THREAD_BODY_BYTES", "TimeSeriesRoutes"]

THREAD_BODY_BYTES: Final = 256 * 1024
"""Batch bodies larger than this (bytes) are decoded and framed off the event loop."""
_BUFFERED: Final = b'{"success":true,"buffered":true,"buffer_size":'
_BUFFERED_POINTS: Final = b'{"success":true,"buffered":true,"points":%d,"buffer_size":'
_JSON: Final = ("application/json",)
_JSON_OR_NDJSON: Final = ("application/json", NDJSON)


class TimeSeriesRoutes:
    """The handlers of the ``/ts/...`` endpoints of one facade."""

    def __init__(self, facade: Facade) -> None:
        self.facade = facade
        self.settings = facade.settings
        self._bodies = PointBodies()

    def routes(self) -> list[RouteSpec]:
        ts, flush, writer = RouteClass.TS_PUT, RouteClass.FLUSH, Role.WRITER
        batch = self.put_buffered_batch
        return [
            RouteSpec("POST", "/ts/put/buffered", self.put_buffered, writer, ts, _JSON),
            RouteSpec("POST", "/ts/put/buffered/batch", batch, writer, ts, _JSON_OR_NDJSON),
            RouteSpec("POST", "/ts/put", self.put_direct, writer, ts, _JSON),
            RouteSpec("GET", "/ts/buffer/stats", self.buffer_stats, writer),
            RouteSpec("POST", "/ts/buffer/flush", self.buffer_flush, Role.ADMIN, flush),
            RouteSpec("GET", "/ts/query", self.query, writer),
            RouteSpec("POST", "/ts/query", self.query_body, writer, body_types=_JSON),
        ]

    def _check_room(self) -> None:
        facade = self.facade
        cap = self.settings.ts_auto_buffer.max_total_points
        facade.check_room(facade.worker_ts_peak, cap, facade.ts_buffer_size)

    def _require_buffer(self) -> None:
        self.facade.require_feature(
            self.settings.ts_auto_buffer.enabled, "ts_auto_buffer", "/ts/put"
        )

    def _buffered_answer(self, points: int | None = None) -> web.Response:
        # Built from constant parts: this answer is on the path of every buffered write.
        size = b"%d}" % self.facade.ts_buffer_size()
        if points is None:
            return json_bytes_response(_BUFFERED + size)
        return json_bytes_response(_BUFFERED_POINTS % points + size)

    async def put_buffered(self, request: web.Request) -> web.Response:
        """One JSON point, sent with the other points of this turn of the event loop."""
        self._require_buffer()
        key, timestamp_ms, value = self._bodies.point(await request.read())
        await self.accept_point(key, timestamp_ms, value, acked=self.facade.acked_mode(request))
        return self._buffered_answer()

    async def accept_point(self, key: str, timestamp_ms: int, value: float, *, acked: bool) -> None:
        """Send one validated point (both doors: REST and binary); with ``acked``, return
        once the broker acknowledged it (at most ``facade.write_deadline_s``)."""
        self._require_buffer()
        self._check_room()
        delivery = self.facade.points.add(key, timestamp_ms, value, acked=acked)
        if acked:
            await self.facade.durable(delivery)

    async def put_buffered_batch(self, request: web.Request) -> web.Response:
        """A JSON array or NDJSON of points, all validated, then sent as binary frames.

        A body over :data:`THREAD_BODY_BYTES` is decoded and framed in a thread, so the
        event loop goes on answering other requests meanwhile.
        """
        facade = self.facade
        self._require_buffer()
        body = await request.read()
        acked = facade.acked_mode(request)
        partitions = facade.partitions(facade.points_topic)
        if len(body) > THREAD_BODY_BYTES:
            frames, points = await asyncio.to_thread(
                self._frames, body, request.content_type, partitions
            )
        else:
            frames, points = self._frames(body, request.content_type, partitions)
        await self.accept_frames(frames, points, acked=acked)
        return self._buffered_answer(points)

    async def accept_frames(self, frames: list[Frame], points: int, *, acked: bool) -> None:
        """Send a validated batch's frames (both doors); with ``acked``, return once the
        broker acknowledged them all (at most ``facade.write_deadline_s``)."""
        facade = self.facade
        self._require_buffer()
        self._check_room()
        facade.points.flush()  # single points accepted before this batch go first
        produce, topic = facade.producer.produce, facade.points_topic
        futures = [produce(topic, frame.data, partition=frame.partition) for frame in frames]
        delivery = facade.track(futures, points)
        if acked:
            await facade.durable(delivery)

    def series_frames(self, series: list[SeriesArrays]) -> list[Frame]:
        """The frames of validated series, one per partition of the points topic."""
        partitions = self.facade.partitions(self.facade.points_topic)
        return list(frames_by_partition(series, partitions, check_keys=False))

    def _frames(self, body: bytes, content_type: str, partitions: int) -> tuple[list[Frame], int]:
        series, points = self._bodies.batch(body, content_type)
        if not points:
            raise InvalidRequest("the batch holds no points")
        return list(frames_by_partition(series, partitions, check_keys=False)), points

    async def put_direct(self, request: web.Request) -> web.Response:
        """One point as a one-point block + WAL entry; answers once both are acknowledged."""
        point = point_from_json(parse_json(await request.read()))
        ts = np.array([point.timestamp_ms], np.int64)
        vs = np.array([point.value], np.float64)
        write = self.facade.block_writer.send([(point.series_key(), ts, vs)])
        await self.facade.durable(self.facade.track(write.futures, 0))
        return json_response({"success": True, "durable": True})

    async def buffer_stats(self, request: web.Request) -> web.Response:
        """The workers' TS buffer stats, aggregated."""
        return json_response(await self.stats())

    async def stats(self) -> dict[str, Any]:
        """The body of ``GET /ts/buffer/stats`` (and of the binary TS_BUFFER_STATS reply)."""
        stats, answers = await self.facade.workers.ts_stats()
        unacked = {"facade_unacked_points": self.facade.unacked_points}
        return with_workers(stats, answers) | unacked

    async def buffer_flush(self, request: web.Request) -> web.Response:
        """Deliver what this facade accepted, then flush every worker's TS buffer."""
        return json_response(await self.flush())

    async def flush(self) -> dict[str, Any]:
        """The body of ``POST /ts/buffer/flush`` (and of the binary TS_BUFFER_FLUSH reply)."""
        await self.facade.drain_pending()
        flushed, answers = await self.facade.workers.flush_ts()
        return with_workers({"success": True, "points_flushed": flushed}, answers)

    async def query(self, request: web.Request) -> web.Response:
        """``metric``, ``entity``, ``tag=k:v``, ``start``/``end`` (ms, inclusive) -> points."""
        return await self._points(series_query(request.query))

    async def query_body(self, request: web.Request) -> web.Response:
        """:meth:`query` with ``{"metric", "entity", "tags"?, "start"?, "end"?}`` as the body."""
        return await self._points(series_query_body(parse_json(await request.read())))

    async def read_series(
        self, selector: SeriesSelector, start_ms: int, end_ms: int
    ) -> list[SeriesPoints]:
        """Every series ``selector`` picks with its points in the range (remote-read)."""
        return await read_matching(
            self.facade.workers, self.settings, self.facade.bootstrap or "", selector,
            start_ms=start_ms, end_ms=end_ms,
        )  # fmt: skip

    async def _points(self, q: SeriesQuery) -> web.Response:
        result = await query_series(
            self.facade.workers,
            self.settings,
            self.facade.bootstrap or "",
            q.metric,
            q.entity,
            q.start_ms,
            q.end_ms,
            q.tags,
        )
        return json_response(query_answer(q, result.timestamps.tolist(), result.values.tolist()))
