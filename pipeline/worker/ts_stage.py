"""The worker's time-series stage: points topic -> TSAutoBuffer -> Gorilla blocks.

The stage gets whole batches of records from its
:class:`~pipeline.ingest.batch_consumer.BatchConsumer`. A batch of plain JSON points is
scanned into columns in one compiled call (:func:`~pipeline.ts.json_columns.scan_columns`);
any other batch (TSF1 frames, line protocol, JSON of another shape, bad records) is
decoded record by record (:class:`~pipeline.ts.json_batch.JsonPointDecoder`). It groups the
batch's points by series, in record order, and adds each group to the buffer with the
batch's token for that partition. When the buffer returns batches (size or memory
trigger, the flush timer, a revoke, a manual flush) the
:class:`~pipeline.ts.writer.BlockWriter` encodes them into blocks and produces them with
their WAL entries (``acks=all``), and **only then** are the tokens released, so the
committed offset never passes a point that is only in memory.

Blocks are keyed by a deterministic id: a range replayed after a crash produces the
same blocks (or blocks holding the same points), and queries keep one value per
timestamp. A block goes to the blocks-topic partition of its series, the partition its
points came from; the stage keeps those partitions' blocks in :class:`OwnedBlocks`
(``<data_dir>/ts-blocks``), so it answers queries for its own series
(:meth:`TSStage.series_points`): blocks, then what is being written, then what is
buffered, the last write winning. Malformed records go to the dead-letter topic first;
the batch's offsets can only be committed once those dead letters are durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, cast

import orjson
from confluent_kafka import Message

from pipeline.config import Settings
from pipeline.errors import BufferOverflow, InvalidArgument, InvalidRecord
from pipeline.ingest.batch_consumer import BatchConsumer
from pipeline.ingest.buffer_core import FlushReason
from pipeline.ingest.deadletter import DeadLetter, DeadLetterWriter
from pipeline.ingest.offsets import OffsetTracker
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics
from pipeline.ts.block import encode_blocks
from pipeline.ts.buffer import PointRun, SeriesBatch, TSAutoBuffer
from pipeline.ts.json_batch import DecodedPoint, JsonPointDecoder
from pipeline.ts.json_columns import scan_columns
from pipeline.ts.line_protocol import is_line_protocol, parse_series
from pipeline.ts.owned_blocks import OwnedBlocks, Readiness, same_partition_count
from pipeline.ts.point import FRAME_MAGIC, SeriesArrays, decode_frame
from pipeline.ts.store import Points, merge_last_wins
from pipeline.ts.writer import BlockWrite, BlockWriter, block_partition
from pipeline.wal.writer import WalWriter, topic_partition_count

__all__ = ["MAX_WRITES_IN_FLIGHT", "TSStage"]

_LOG = logging.getLogger(__name__)

MAX_WRITES_IN_FLIGHT: Final = 16
"""Flushes whose blocks may be awaiting the broker's acknowledgement at once."""


class TSStage:
    """State of the time-series stage in one worker."""

    def __init__(
        self,
        settings: Settings,
        metrics: PipelineMetrics,
        producer: AsyncProducer,
        bootstrap: str | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.topic = settings.topic("ts.points")
        self.blocks_topic = settings.topic("ts.blocks")
        self.bootstrap = bootstrap or settings.kafka.bootstrap_servers or ""
        self.store = OwnedBlocks(
            self.bootstrap, self.blocks_topic, settings.worker.data_dir / "ts-blocks"
        )
        """The blocks of the partitions this worker owns: what its queries read."""
        self._partitions = 0
        self.buffer = TSAutoBuffer(settings.ts_auto_buffer)
        self.offsets = OffsetTracker()
        self.dead_letters = DeadLetterWriter(producer, settings.topic("deadletter"), metrics)
        # Every labelled series exists at 0 from the start, so rate() and increase()
        # answer 0 (not "no data") on the dashboards and alerts before the first event.
        metrics.dead_letters.labels(source_topic=self.topic)
        for reason in FlushReason:
            metrics.ts_flush_count.labels(reason=reason.value)
        wal_topic = settings.topic("wal")
        wal = WalWriter(
            producer,
            wal_topic,
            partitions=topic_partition_count(self.bootstrap, wal_topic) if self.bootstrap else None,
        )  # a series' blocks go to the WAL partition of its points partition (mod the count)
        self.writer = BlockWriter(producer, self.blocks_topic, wal, self.partition_count)
        self._decoder = JsonPointDecoder()
        self._partition_of: dict[str, int] = {}
        self._flush_lock = asyncio.Lock()
        self._flushes_seen: dict[str, int] = {}
        # Writes behind the hot path: at most this many flushes in flight at once.
        self._slots = asyncio.Semaphore(MAX_WRITES_IN_FLIGHT)
        self._inflight: set[asyncio.Task[None]] = set()
        self._sending: dict[int, list[SeriesBatch]] = {}
        """Flushed batches whose blocks are not acknowledged yet (queries see them)."""
        self._failure: BaseException | None = None
        self.blocks_written = 0
        """Blocks this worker wrote that the broker acknowledged."""
        self.consumer: BatchConsumer | None = None
        """The batch consumer feeding this stage (set when the worker wires it)."""

    # -- consuming ------------------------------------------------------------

    async def on_batch(self, messages: list[Message]) -> None:
        """Buffer the points of one batch of records (dead-lettering the bad ones)."""
        if self._failure is not None:
            raise self._failure  # a write failed: stop; its records were never committed
        columns = scan_columns(messages, self._decoder.keys)
        if columns is not None:  # every record a plain JSON point: no per-record Python
            parts, ends, units = columns.grouped()
        else:
            parts, ends, units, rejected = self._group(messages)
            await self.dead_letters.write_all(rejected)
        batches: list[SeriesBatch] = []
        for partition, (end, records) in ends.items():
            groups = parts.get(partition, {})
            token = self.offsets.hold(partition, end, units.get(partition, 0), records=records)
            for key in groups:
                self._partition_of[key] = partition
            batches += await self._add(groups, token)
        await self._write_behind(batches)
        self.metrics.ts_points_buffered.inc(sum(units.values()))

    def _decode_all(
        self, messages: list[Message]
    ) -> list[DecodedPoint | InvalidRecord | list[SeriesArrays]]:
        """Each record as a point, a frame's series, or the error that rejects it.

        A batch of JSON points is decoded in one call when it can be
        (:meth:`~pipeline.ts.json_batch.JsonPointDecoder.decode_lines`), else record by
        record.
        """
        values = [message.value() for message in messages]
        if all(value is not None for value in values):
            fast = self._decoder.decode_lines(cast(list[bytes], values))
            if fast is not None:
                return cast(list[DecodedPoint | InvalidRecord | list[SeriesArrays]], fast)
        out: list[DecodedPoint | InvalidRecord | list[SeriesArrays]] = []
        decode = self._decoder.decode
        for value in values:
            try:
                if value is None:
                    raise InvalidRecord("record has no value")
                if value.startswith(FRAME_MAGIC):
                    out.append(decode_frame(value))
                elif is_line_protocol(value):
                    out.append(self._line_protocol(value))
                else:
                    out.append(decode(value))
            except InvalidRecord as exc:
                out.append(exc)
        return out

    def _line_protocol(self, value: bytes) -> list[SeriesArrays]:
        config = self.settings.ts_auto_buffer
        return parse_series(value, precision=config.line_protocol_precision,
                            entity_tag=config.line_protocol_entity_tag,
                            now_ms=time.time_ns() // 1_000_000)  # fmt: skip

    def _group(
        self, messages: list[Message]
    ) -> tuple[
        dict[int, dict[str, list[PointRun]]],
        dict[int, tuple[int, int]],
        dict[int, int],
        list[tuple[Message, Exception]],
    ]:
        """Points by partition and series, in record order; each partition's next offset
        and record count, and its point count; the records to dead-letter.

        The hot loop of the worker: one pass over the decoded batch, no call per record.
        """
        parts: dict[int, dict[str, list[PointRun]]] = {}
        ends: dict[int, tuple[int, int]] = {}
        units: dict[int, int] = {}
        rejected: list[tuple[Message, Exception]] = []
        current = -1
        groups: dict[str, list[PointRun]] = {}
        points = records = 0
        last: Message | None = None
        for message, item in zip(messages, self._decode_all(messages), strict=True):
            partition = message.partition()
            if partition != current:
                if last is not None:
                    _close_run(ends, units, current, last, records=records, points=points)
                current = cast(int, partition)  # consumed records always have one
                groups = parts.setdefault(current, {})
                points = records = 0
            last = message
            records += 1
            if type(item) is tuple:
                key, timestamp_ms, point_value = item
                points += 1
                runs = groups.get(key)
                if runs is None:
                    groups[key] = [([timestamp_ms], [point_value])]
                    continue
                run_ts, run_vs = runs[-1]
                if type(run_ts) is list and type(run_vs) is list:
                    run_ts.append(timestamp_ms)
                    run_vs.append(point_value)
                else:
                    runs.append(([timestamp_ms], [point_value]))
            elif isinstance(item, InvalidRecord):
                rejected.append((message, item))
            else:
                for key, ts, vs in cast(list[SeriesArrays], item):
                    groups.setdefault(key, []).append((ts, vs))
                    points += int(ts.size)
        if last is not None:
            _close_run(ends, units, current, last, records=records, points=points)
        return parts, ends, units, rejected

    async def on_assigned(self, partitions: set[int]) -> None:
        """Open the block stores of ``partitions`` (they catch up in the background); the
        buffer starts empty and fills from the committed offset."""
        await asyncio.to_thread(self.partition_count)
        await asyncio.to_thread(self.store.assign, partitions)

    async def on_revoked(self, partitions: set[int]) -> None:
        """Make the series of ``partitions`` durable before the partitions move on.

        Their stores go first: a query from now on is sent on to the new owner (which
        reads what this flush writes), never answered here without the flushed points.
        """
        self.store.revoke(partitions)
        await self.flush(FlushReason.REVOKE, self._series_of(partitions))

    async def on_lost(self, partitions: set[int]) -> None:
        """Drop the series of ``partitions`` unwritten: their new owner replays them."""
        self.store.revoke(partitions)
        async with self._flush_lock:
            await self.drain()
            dropped = self.buffer.flush(self._series_of(partitions), reason=FlushReason.REVOKE)
        _LOG.warning(
            "partitions %s lost: dropped %d buffered points; they are replayed by their owner",
            sorted(partitions),
            sum(int(b.timestamps.size) for b in dropped),
        )

    def _series_of(self, partitions: set[int]) -> list[str]:
        keys = [key for key, p in self._partition_of.items() if p in partitions]
        for key in keys:
            del self._partition_of[key]
        return keys

    def assigned_partitions(self) -> list[int]:
        """The input partitions this worker holds now, sorted."""
        return [] if self.consumer is None else sorted(self.consumer.assigned)

    def partition_count(self) -> int:
        """The blocks (and points) topics' partition count, asked of the broker once."""
        if not self._partitions:
            self._partitions = same_partition_count(self.bootstrap, self.topic, self.blocks_topic)
        return self._partitions

    # -- reading ----------------------------------------------------------------

    async def series_points(
        self, keys: Sequence[str], start_ms: int, end_ms: int, *, buffered: bool, wait_s: float
    ) -> dict[str, Points | Readiness]:
        """Each series' points with ``start_ms <= t <= end_ms``, sorted, the last write
        winning: stored blocks, blocks being written, then (``buffered``) the buffer.
        :attr:`Readiness.NOT_OWNED` for a series whose partition is not this worker's,
        :attr:`Readiness.BEHIND` when its store did not catch up within ``wait_s`` s."""
        count = await asyncio.to_thread(self.partition_count)
        partition = {key: block_partition(key, count) for key in keys}
        # Buffer and flushes in flight first, then the store up to the partition's end
        # read after them: a point is in one or the other however a flush goes meanwhile.
        parts = {key: [self._sent_points(key)] for key in keys}
        for key in keys if buffered else ():
            parts[key].append(self.buffer.buffered_points(key, start_ms, end_ms))
        ready = {
            p: await asyncio.to_thread(self.store.wait_current, p, wait_s)
            for p in sorted(set(partition.values()))
        }

        def read() -> dict[str, Points | Readiness]:
            out: dict[str, Points | Readiness] = {}
            for key in keys:
                p = partition[key]
                current = ready[p] is Readiness.CURRENT
                stored = self.store.points(p, key, start_ms, end_ms) if current else None
                if stored is None:
                    out[key] = Readiness.NOT_OWNED if current else ready[p]
                    continue
                ts, vs = merge_last_wins([stored, *parts[key]])
                keep = (ts >= start_ms) & (ts <= end_ms)
                out[key] = ts[keep], vs[keep]
            return out

        return await asyncio.to_thread(read)

    def _sent_points(self, series_key: str) -> Points:
        """The points of ``series_key`` in flushes not acknowledged yet, oldest first."""
        sent = [b for batches in self._sending.values() for b in batches]
        return merge_last_wins(
            [(b.timestamps, b.values) for b in sent if b.series_key == series_key]
        )

    def close(self) -> None:
        self.store.close()  # the files stay for the next start

    # -- writing --------------------------------------------------------------

    async def _add(
        self, groups: Mapping[str, Sequence[PointRun]], token: object
    ) -> list[SeriesBatch]:
        """Buffer ``groups``; at the hard cap, flush everything and retry (back-pressure).

        A batch holding more points than the cap itself (``max_total_points``) goes in
        pieces of at most the cap, each series' points in order: no flush could make
        room for all of it at once, and retrying the whole would never end.
        """
        batches: list[SeriesBatch] = []
        for piece in _pieces(groups, self.settings.ts_auto_buffer.max_total_points):
            while True:
                try:
                    batches += self.buffer.add_grouped(piece, token)
                    break
                except BufferOverflow:
                    await self.flush(FlushReason.MEMORY)
        return batches

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
        """Make batches durable as blocks, then release the tokens they hold."""
        completion = self._send(batches)
        if completion is not None:
            await completion

    def _send(self, batches: list[SeriesBatch]) -> Coroutine[Any, Any, None] | None:
        """Encode and produce blocks and WAL entries now; the coroutine awaits durability."""
        if not batches:
            return None
        t0 = time.perf_counter()
        try:
            write = self.writer.send((b.series_key, b.timestamps, b.values) for b in batches)
        except InvalidArgument:
            return self._send_apart(batches, t0)
        self._sending[id(write)] = batches
        return self._complete(write, batches, t0)

    async def _send_apart(self, batches: list[SeriesBatch], t0: float) -> None:
        """A flush holding a series no block can carry: dead-letter that series' points
        and write the rest, so that no data wedges the worker.

        The door's checks (:mod:`pipeline.limits`) refuse such series first; this is the
        net behind them. Blocks the failed send produced are produced again with the
        same ids, which readers take once.
        """
        good: list[SeriesBatch] = []
        letters: list[asyncio.Future[Message]] = []
        for batch in batches:
            try:
                for block in encode_blocks(batch.series_key, batch.timestamps, batch.values):
                    block.to_bytes()
            except InvalidArgument as exc:
                _LOG.error("dead-lettering a series no block can carry: %s", exc)
                letters.append(self.dead_letters.send_letter(self._series_letter(batch, exc)))
                continue
            good.append(batch)
        await asyncio.gather(*letters)
        for batch in batches:
            if batch not in good:
                self.offsets.release_all(batch.tokens)
        if good:
            write = self.writer.send((b.series_key, b.timestamps, b.values) for b in good)
            self._sending[id(write)] = good
            await self._complete(write, good, t0)

    def _series_letter(self, batch: SeriesBatch, exc: Exception) -> DeadLetter:
        """The buffered points of ``batch`` as one dead letter (their records are gone)."""
        key = batch.series_key.encode("utf-8", "surrogatepass")
        points = {"timestamps_ms": batch.timestamps.tolist(), "values": batch.values.tolist()}
        return DeadLetter(
            key=key,
            value=orjson.dumps(points, option=orjson.OPT_SERIALIZE_NUMPY),
            reason=str(exc),
            error_type=type(exc).__name__,
            source_topic=self.topic,
            source_partition=self._partition_of.get(batch.series_key, -1),
            source_offset=-1,
        )

    async def _complete(self, write: BlockWrite, batches: list[SeriesBatch], t0: float) -> None:
        # The blocks and their WAL entries are durable before any offset moves past them.
        try:
            await write.durable()
        finally:
            self._sending.pop(id(write), None)
        self.blocks_written += write.blocks
        self.buffer.record_durable(write.points, write.block_bytes)
        for batch in batches:
            self.offsets.release_all(batch.tokens)
        stats = self.buffer.stats()
        self.metrics.ts_points_flushed.inc(write.points)
        self._sync_flush_counts()
        self.metrics.ts_compression_ratio.set(stats.avg_compression_ratio)
        self.metrics.ts_current_size.set(stats.current_buffer_size)
        self.metrics.ts_flush_duration.observe(time.perf_counter() - t0)

    async def flush(self, reason: FlushReason, series_keys: Iterable[str] | None = None) -> None:
        """Drain every series (or ``series_keys``) now and wait until they are durable."""
        async with self._flush_lock:
            await self.drain()
            batches = self.buffer.flush(series_keys, reason=reason)
            await self.write(batches)

    async def flush_due(self) -> None:
        """Timer: write the series whose flush interval has passed."""
        await self._write_behind(self.buffer.due())
        self.metrics.ts_current_size.set(self.buffer.stats().current_buffer_size)


def _close_run(
    ends: dict[int, tuple[int, int]],
    units: dict[int, int],
    partition: int,
    last: Message,
    *,
    records: int,
    points: int,
) -> None:
    """Add a run of one partition's records to the batch's totals for that partition."""
    end = cast(int, last.offset()) + 1
    _, earlier = ends.get(partition, (0, 0))
    ends[partition] = (end, earlier + records)
    units[partition] = units.get(partition, 0) + points


def _pieces(
    groups: Mapping[str, Sequence[PointRun]], cap: int
) -> Iterator[Mapping[str, Sequence[PointRun]]]:
    """``groups`` whole when it holds at most ``cap`` points, else cut into pieces of at
    most ``cap`` points, keeping each series' runs (and their points) in order."""
    if sum(len(ts) for runs in groups.values() for ts, _ in runs) <= cap:
        yield groups
        return
    piece: dict[str, list[PointRun]] = {}
    room = cap
    for key, runs in groups.items():
        for ts, vs in runs:
            at = 0
            while at < len(ts):
                take = min(room, len(ts) - at)
                piece.setdefault(key, []).append((ts[at : at + take], vs[at : at + take]))
                at += take
                room -= take
                if room == 0:
                    yield piece
                    piece, room = {}, cap
    if piece:
        yield piece
