"""The time-series path of the worker: points topic -> TSAutoBuffer -> Gorilla blocks.

For each record of the points topic (a JSON point or a binary batch frame) the agent
adds its points to the buffer. When the buffer returns batches (size or memory
trigger, the flush timer, a revoke, a manual flush) they are encoded into blocks,
produced to the blocks topic with ``acks=all``, and **only then** are the input
records whose points they carried acked. A record is acked once all of its points
are durable, so the committed offset never passes a point that is only in memory.

Blocks are keyed by a deterministic id: a range replayed after a crash produces the
same blocks (or blocks holding the same points), and queries keep one value per
timestamp. Malformed records go to the dead-letter topic, and are acked only once
the dead letter is durable.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

import faust
import numpy as np
from faust import Stream
from faust.types import EventT, StreamT
from faust.web import Request, Response, View

from pipeline.buffering import FlushReason
from pipeline.config import Settings
from pipeline.errors import BufferOverflow, InvalidRecord
from pipeline.ingest import AckTracker, DeadLetterWriter
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics
from pipeline.ts.block import CODEC_VERSION, GorillaBlock
from pipeline.ts.buffer import SeriesBatch, TSAutoBuffer
from pipeline.ts.gorilla import MAX_POINTS, encode_chunk
from pipeline.ts.point import decode_frame, decode_point_json, is_frame
from pipeline.wal.entry import EntryType
from pipeline.wal.writer import WalWriter

_LOG = logging.getLogger(__name__)

MAX_WRITES_IN_FLIGHT = 16
"""Flushes whose blocks may be awaiting the broker's acknowledgement at once."""


class TSPath:
    """State of the time-series path in one worker."""

    def __init__(self, settings: Settings, metrics: PipelineMetrics, producer: AsyncProducer):
        self.settings = settings
        self.metrics = metrics
        self.producer = producer
        self.buffer = TSAutoBuffer(settings.ts_auto_buffer)
        self.acks = AckTracker()
        self.wal = WalWriter(producer, settings.topic("wal"))
        self.dead_letters = DeadLetterWriter(producer, settings.topic("deadletter"), metrics)
        self.points_topic = settings.topic("ts.points")
        self.blocks_topic = settings.topic("ts.blocks")
        self._flush_lock = asyncio.Lock()
        self._flushes_seen: dict[str, int] = {}
        self.blocks_written = 0
        # Writes behind the hot path: at most this many flushes in flight at once.
        self._slots = asyncio.Semaphore(MAX_WRITES_IN_FLIGHT)
        self._inflight: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def on_event(self, event: EventT[Any], stream: StreamT[Any]) -> None:
        """Buffer the points of one input record (or dead-letter it)."""
        if self._failure is not None:
            raise self._failure  # a write failed: stop; its records were never acked
        value = event.value if isinstance(event.value, bytes | bytearray) else None
        try:
            if value is None:
                raise InvalidRecord("record has no value")
            value = bytes(value)
            if is_frame(value):
                series = decode_frame(value)
                total = sum(int(ts.size) for _, ts, _ in series)
                if total == 0:
                    await stream.ack(event)
                    return
                token = self.acks.hold(event, stream, total)
                batches: list[SeriesBatch] = []
                for key, ts, vs in series:
                    batches += await self._add(partial(self.buffer.add_many, key, ts, vs, token))
                await self._write_behind(batches)
                self.metrics.ts_points_buffered.inc(total)
            else:
                point = decode_point_json(value)
                token = self.acks.hold(event, stream, 1)
                add = partial(
                    self.buffer.add, point.series_key(), point.timestamp_ms, point.value, token
                )
                await self._write_behind(await self._add(add))
                self.metrics.ts_points_buffered.inc()
        except InvalidRecord as exc:
            self.acks.forget(event)
            await self.dead_letters.write(event, exc)
            await stream.ack(event)

    async def _add(self, add: Callable[[], list[SeriesBatch]]) -> list[SeriesBatch]:
        """Run one buffer add; at the hard cap, flush everything and retry (back-pressure)."""
        while True:
            try:
                return add()
            except BufferOverflow:
                await self.flush(FlushReason.MEMORY)

    async def _write_behind(self, batches: list[SeriesBatch]) -> None:
        """Send batches now (in order) and finish them in the background, bounded."""
        completion = self._send(batches)
        if completion is None:
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._finish(completion))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _finish(self, completion: Coroutine[Any, Any, None]) -> None:
        try:
            await completion
        except Exception as exc:
            _LOG.critical("writing blocks failed; the worker stops consuming: %s", exc)
            self._failure = exc
        finally:
            self._slots.release()

    async def drain(self) -> None:
        """Wait for every write in flight."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight))

    def _sync_flush_counts(self) -> None:
        """Mirror the buffer's per-trigger flush counts into the labelled counter."""
        for reason, count in self.buffer.flush_reason_counts().items():
            delta = count - self._flushes_seen.get(reason, 0)
            if delta > 0:
                self.metrics.ts_flush_count.labels(reason=reason).inc(delta)
                self._flushes_seen[reason] = count

    async def write(self, batches: list[SeriesBatch]) -> None:
        """Make batches durable as blocks, then release the acks they hold."""
        completion = self._send(batches)
        if completion is not None:
            await completion

    def _send(self, batches: list[SeriesBatch]) -> Coroutine[Any, Any, None] | None:
        """Encode and produce blocks and WAL entries now; the coroutine awaits durability."""
        if not batches:
            return None
        t0 = time.perf_counter()
        futures = []
        raw_points = 0
        block_bytes = 0
        for batch in batches:
            n = int(batch.timestamps.size)
            raw_points += n
            for start in range(0, n, MAX_POINTS):
                ts = batch.timestamps[start : start + MAX_POINTS]
                vs = batch.values[start : start + MAX_POINTS]
                chunk = encode_chunk(ts, vs)
                block = GorillaBlock(
                    batch.series_key, int(ts.size), int(ts[0]), int(ts[-1]), CODEC_VERSION, chunk
                )
                data = block.to_bytes()
                block_bytes += len(data)
                futures.append(
                    self.producer.produce(self.blocks_topic, data, key=block.block_id.encode())
                )
                futures.append(self.wal.append(EntryType.TS_BLOCK, data))
        return self._complete(futures, batches, raw_points, block_bytes, t0)

    async def _complete(
        self,
        futures: list[asyncio.Future[Any]],
        batches: list[SeriesBatch],
        raw_points: int,
        block_bytes: int,
        t0: float,
    ) -> None:
        # The blocks and their WAL entries are durable before any input record is acked.
        await asyncio.gather(*futures)
        self.blocks_written += len(futures) // 2
        self.buffer.record_durable(raw_points, block_bytes)
        for batch in batches:
            await self.acks.release_all(batch.tokens)
        stats = self.buffer.stats()
        self.metrics.ts_points_flushed.inc(raw_points)
        self._sync_flush_counts()
        self.metrics.ts_compression_ratio.set(stats.avg_compression_ratio)
        self.metrics.ts_current_size.set(stats.current_buffer_size)
        self.metrics.ts_flush_duration.observe(time.perf_counter() - t0)

    async def flush(self, reason: FlushReason) -> None:
        """Drain every series now; returns the number of points made durable."""
        async with self._flush_lock:
            await self.drain()
            batches = self.buffer.flush(reason=reason)
            await self.write(batches)

    async def flush_due(self) -> None:
        await self._write_behind(self.buffer.due())
        self.metrics.ts_current_size.set(self.buffer.stats().current_buffer_size)


def install_ts_path(app: faust.App, settings: Settings) -> None:
    """Install the time-series agent, its flush timer and its web pages on ``app``."""
    metrics: PipelineMetrics = app.themis_metrics  # type: ignore[attr-defined]
    producer: AsyncProducer = app.themis_producer  # type: ignore[attr-defined]
    path = TSPath(settings, metrics, producer)
    app.themis_ts = path  # type: ignore[attr-defined]
    topic_name = path.points_topic
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

    async def ingest(stream: StreamT[Any]) -> None:
        assert isinstance(stream, Stream)
        async for event in stream.noack().events():
            await path.on_event(event, stream)

    app.agent(topic, name="ts-points")(ingest)

    interval = max(0.05, min(1.0, settings.ts_auto_buffer.flush_interval_ms / 4000))
    app.timer(interval, name="ts-flush-due")(path.flush_due)

    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> Awaitable[None]:
        # Everything buffered becomes durable before the partitions move on.
        return path.flush(FlushReason.REVOKE)

    app.on_partitions_revoked.connect(on_revoked)

    class BufferStatsView(View):
        async def get(self, request: Request) -> Response:
            body = path.buffer.stats().to_dict() | {
                "flush_reasons": path.buffer.flush_reason_counts(),
                "blocks_written": path.blocks_written,
                "dead_letters": path.dead_letters.count,
                "pending_records": len(path.acks.pending),
                "assigned_partitions": sorted(
                    tp.partition for tp in app.consumer.assignment() if tp.topic == topic_name
                ),
            }
            return self.json(body)

    class FlushView(View):
        async def post(self, request: Request) -> Response:
            before = path.buffer.stats().points_flushed
            await path.flush(FlushReason.MANUAL)
            flushed = path.buffer.stats().points_flushed - before
            return self.json({"success": True, "points_flushed": flushed})

    class BufferedPointsView(View):
        async def get(self, request: Request) -> Response:
            key = request.query["series"]
            start, end = int(request.query["start"]), int(request.query["end"])
            ts, vs = path.buffer.buffered_points(key, start, end)
            return self.json(
                {
                    "timestamps": base64.b64encode(
                        np.ascontiguousarray(ts, "<i8").tobytes()
                    ).decode(),
                    "values": base64.b64encode(np.ascontiguousarray(vs, "<f8").tobytes()).decode(),
                }
            )

    app.page("/ts/buffer/stats")(BufferStatsView)
    app.page("/ts/buffer/flush")(FlushView)
    app.page("/ts/buffered")(BufferedPointsView)
