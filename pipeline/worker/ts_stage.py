"""The worker's time-series stage: points topic -> TSAutoBuffer -> Gorilla blocks.

For each record of the points topic (a JSON point or a binary batch frame) the stage
adds its points to the buffer. When the buffer returns batches (size or memory
trigger, the flush timer, a revoke, a manual flush) the
:class:`~pipeline.ts.writer.BlockWriter` encodes them into blocks and produces them
with their WAL entries (``acks=all``), and **only then** are the input records whose
points they carried acked. A record is acked once all of its points are durable, so
the committed offset never passes a point that is only in memory.

Blocks are keyed by a deterministic id: a range replayed after a crash produces the
same blocks (or blocks holding the same points), and queries keep one value per
timestamp. Malformed records go to the dead-letter topic, and are acked only once
the dead letter is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, Final

from faust.types import EventT, StreamT

from pipeline.config import Settings
from pipeline.errors import BufferOverflow, InvalidRecord
from pipeline.ingest.acks import AckTracker
from pipeline.ingest.buffer_core import FlushReason
from pipeline.ingest.deadletter import DeadLetterWriter
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics
from pipeline.ts.buffer import SeriesBatch, TSAutoBuffer
from pipeline.ts.point import decode_frame, decode_point_json, is_frame
from pipeline.ts.writer import BlockWrite, BlockWriter
from pipeline.wal.writer import WalWriter

__all__ = ["MAX_WRITES_IN_FLIGHT", "TSStage"]

_LOG = logging.getLogger(__name__)

MAX_WRITES_IN_FLIGHT: Final = 16
"""Flushes whose blocks may be awaiting the broker's acknowledgement at once."""


class TSStage:
    """State of the time-series stage in one worker."""

    def __init__(
        self, settings: Settings, metrics: PipelineMetrics, producer: AsyncProducer
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.buffer = TSAutoBuffer(settings.ts_auto_buffer)
        self.acks = AckTracker()
        self.dead_letters = DeadLetterWriter(producer, settings.topic("deadletter"), metrics)
        self.points_topic = settings.topic("ts.points")
        self.writer = BlockWriter(
            producer, settings.topic("ts.blocks"), WalWriter(producer, settings.topic("wal"))
        )
        self._flush_lock = asyncio.Lock()
        self._flushes_seen: dict[str, int] = {}
        # Writes behind the hot path: at most this many flushes in flight at once.
        self._slots = asyncio.Semaphore(MAX_WRITES_IN_FLIGHT)
        self._inflight: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self.blocks_written = 0
        """Blocks this worker wrote that the broker acknowledged."""

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
        write = self.writer.send((b.series_key, b.timestamps, b.values) for b in batches)
        return self._complete(write, batches, t0)

    async def _complete(self, write: BlockWrite, batches: list[SeriesBatch], t0: float) -> None:
        # The blocks and their WAL entries are durable before any input record is acked.
        await write.durable()
        self.blocks_written += write.blocks
        self.buffer.record_durable(write.points, write.block_bytes)
        for batch in batches:
            await self.acks.release_all(batch.tokens)
        stats = self.buffer.stats()
        self.metrics.ts_points_flushed.inc(write.points)
        self._sync_flush_counts()
        self.metrics.ts_compression_ratio.set(stats.avg_compression_ratio)
        self.metrics.ts_current_size.set(stats.current_buffer_size)
        self.metrics.ts_flush_duration.observe(time.perf_counter() - t0)

    async def flush(self, reason: FlushReason) -> None:
        """Drain every series now and wait until what it held is durable."""
        async with self._flush_lock:
            await self.drain()
            batches = self.buffer.flush(reason=reason)
            await self.write(batches)

    async def flush_due(self) -> None:
        """Timer: write the series whose flush interval has passed."""
        await self._write_behind(self.buffer.due())
        self.metrics.ts_current_size.set(self.buffer.stats().current_buffer_size)
