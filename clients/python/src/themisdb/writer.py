"""The batching writer behind every ``*_buffered`` call.

Items are queued in the caller's thread (thread-safe, never blocking) and sent by one
flusher task on the client's event loop. Time-series points are kept in columns (a
series table, then 20 bytes per point), cut into batches as they arrive: a batch closes
at ``auto_flush_rows`` points or when its estimated size reaches ``auto_flush_bytes``
(never above the transport's ``max_batch_bytes``), and is sent when closed, when the
oldest queued item is ``auto_flush_interval_ms`` old, or on :meth:`flush`. Batches go
one at a time, in order, each retried on retriable errors with exponential back-off and
full jitter (a server's ``Retry-After`` is honoured) up to ``max_retries`` and
``retry_timeout_ms``. What finally fails goes to the error callback (run in a worker
thread, so it can never block the writer) and to the next :meth:`flush`'s
:class:`~themisdb.errors.WriteError`.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from themisdb.checks import checked_timestamp, checked_value, vector_bytes
from themisdb.config import ClientConfig
from themisdb.errors import BufferOverflowError, NotFoundError, ThemisError, ValidationError
from themisdb.transport import Transport

__all__ = [
    "BatchingWriter",
    "Counters",
    "ErrorCallback",
    "checked_timestamp",
    "checked_value",
    "vector_bytes",
]

ErrorCallback = Callable[[list[dict[str, Any]], BaseException], None]
"""``callback(items, error)``: the items finally not written and the last error."""

_LOG = logging.getLogger("themisdb")
_MAX_POINTS_PER_BATCH: Final = 100_000
_POINT_BYTES: Final = 26
_SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass
class Counters:
    """What the writer did: items queued, acknowledged (sent), re-sent, finally failed."""

    queued: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0


@dataclass
class _Chunk:
    """One batch of points in columns, its first sequence number and its size estimate."""

    first_seq: int
    created: float
    sids: array.array[int] = field(default_factory=lambda: array.array("I"))
    ts: array.array[int] = field(default_factory=lambda: array.array("q"))
    values: array.array[float] = field(default_factory=lambda: array.array("d"))
    nbytes: int = 8
    rows: int = 0
    """Points at which the chunk is a whole batch."""
    limit: int = 0
    """Estimated bytes at which the chunk is a whole batch."""


@dataclass
class _VectorItem:
    seq: int
    op: str  # add | update | remove
    pk: str
    vector: bytes
    metadata: dict[str, Any] | None
    created: float
    nbytes: int


def _tags_key(tags: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    if not tags:
        return ()
    for name, value in tags.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValidationError("field 'tags' must map strings to strings", field="tags")
    return tuple(tags.items())


class BatchingWriter:
    """Queues, batches and sends; see the module docstring."""

    def __init__(
        self,
        transport: Transport,
        config: ClientConfig,
        loop: asyncio.AbstractEventLoop,
        *,
        on_error: ErrorCallback | None = None,
        dimension: Callable[[], int] | None = None,
    ) -> None:
        self.transport = transport
        self.config = config
        self.loop = loop
        self.on_error = on_error
        self.counters = Counters()
        self._lock = threading.Lock()
        self._series: dict[_SeriesKey, int] = {}
        self._series_list: list[_SeriesKey] = []
        self._series_bytes: list[int] = []
        self._chunks: deque[_Chunk] = deque()
        self._open: _Chunk | None = None  # the chunk points go to, until taken or whole
        self._vectors: deque[_VectorItem] = deque()
        self._seq = 0  # items ever queued; each has its sequence number
        self._inflight: set[int] = set()  # first sequence numbers of batches being sent
        self._queued_rows = 0
        self._queued_bytes = 0
        self._failures: list[tuple[int, dict[str, Any], BaseException]] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._dimension = dimension

    # -- queueing (any thread) ------------------------------------------------

    def _room(self, nbytes: int) -> None:
        if self._closed:
            raise ThemisError("the client is closed")
        if self._queued_rows + 1 > self.config.max_buffer_rows:
            raise BufferOverflowError(
                f"the client's queue holds {self._queued_rows} items (max_buffer_rows); "
                "the item was not queued",
                buffer_size=self.config.max_buffer_rows,
            )
        if self._queued_bytes + nbytes > self.config.max_buffer_bytes:
            raise BufferOverflowError(
                f"the client's queue holds {self._queued_bytes} bytes (max_buffer_bytes); "
                "the item was not queued",
                buffer_size=self.config.max_buffer_bytes,
            )

    def _batch_bytes(self) -> int:
        return min(self.config.auto_flush_bytes, int(self.transport.max_batch_bytes * 0.9))

    def put(
        self, metric: str, entity: str, ts: int, value: float, tags: dict[str, str] | None
    ) -> None:
        """Queue one point; ``ts`` and ``value`` already checked (:func:`checked_timestamp`,
        :func:`checked_value`). The series is checked the first time it is seen: an invalid
        one raises and nothing is queued. This is the per-point hot path."""
        key = (metric, entity, tuple(tags.items()) if tags else ())
        with self._lock:
            sid = self._series.get(key)
            if sid is None:
                sid = self._new_series(key)
            nbytes = _POINT_BYTES + self._series_bytes[sid]
            if (
                self._queued_rows >= self.config.max_buffer_rows
                or self._queued_bytes + nbytes > self.config.max_buffer_bytes
                or self._closed
            ):
                self._room(nbytes)
            chunk = self._open
            if chunk is None or len(chunk.ts) >= chunk.rows or chunk.nbytes + nbytes > chunk.limit:
                chunk = self._open = self._new_chunk()
            chunk.sids.append(sid)
            chunk.ts.append(ts)
            chunk.values.append(value)
            chunk.nbytes += nbytes
            self._seq += 1
            self._queued_rows += 1
            self._queued_bytes += nbytes
            self.counters.queued += 1
            full = len(chunk.ts) >= chunk.rows
        if full and self.config.auto_flush:
            self._nudge()

    def _new_chunk(self) -> _Chunk:
        chunk = _Chunk(self._seq, time.monotonic())
        chunk.rows = min(self.config.auto_flush_rows, _MAX_POINTS_PER_BATCH)
        chunk.limit = self._batch_bytes()
        self._chunks.append(chunk)
        return chunk

    def _complete(self, chunk: _Chunk) -> bool:
        """Whether ``chunk`` is a whole batch."""
        return len(chunk.ts) >= chunk.rows or chunk.nbytes >= chunk.limit

    def _new_series(self, key: _SeriesKey) -> int:
        metric, entity, tags = key
        _tags_key(dict(tags))
        for name, text in (("metric", metric), ("entity", entity)):
            if not isinstance(text, str) or not text:
                raise ValidationError(f"field {name!r} must be a non-empty string", field=name)
        sid = len(self._series_list)
        self._series[key] = sid
        self._series_list.append(key)
        size = (
            len(metric.encode())
            + len(entity.encode())
            + sum(8 + len(n.encode()) + len(v.encode()) for n, v in tags)
        )
        self._series_bytes.append(size)
        return sid

    def vector(self, op: str, pk: str, vector: bytes, metadata: dict[str, Any] | None) -> None:
        """Queue one vector operation (``add``, ``update`` or ``remove``)."""
        nbytes = 16 + len(pk.encode()) + len(vector) + (64 if metadata else 0)
        with self._lock:
            self._room(nbytes)
            item = _VectorItem(self._seq, op, pk, vector, metadata, time.monotonic(), nbytes)
            self._vectors.append(item)
            self._seq += 1
            self._queued_rows += 1
            self._queued_bytes += nbytes
            self.counters.queued += 1
            full = len(self._vectors) >= self.config.auto_flush_rows
        if full and self.config.auto_flush:
            self._nudge()

    def _nudge(self) -> None:
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
            self.loop.call_soon_threadsafe(self._wake.set)

    # -- sending (the loop) -------------------------------------------------------

    def start(self) -> None:
        self._task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        interval = self.config.auto_flush_interval_ms / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            forced = self._forced_through
            await self._send_ready(forced)
            if self._closed and self._resolved_through() >= self._seq:
                return

    _forced_through = 0

    def _due(self, oldest: float, forced: int, first_seq: int, complete: bool) -> bool:
        if first_seq < forced or self._closed:
            return True
        if not self.config.auto_flush:
            return False
        return complete or time.monotonic() - oldest >= self.config.auto_flush_interval_ms / 1000

    async def _send_ready(self, forced: int) -> None:
        while True:
            with self._lock:
                chunk = self._chunks[0] if self._chunks else None
                vec = self._vectors[0] if self._vectors else None
                if chunk is not None and not self._due(
                    chunk.created,
                    forced,
                    chunk.first_seq,
                    len(self._chunks) > 1 or self._complete(chunk),
                ):
                    chunk = None
                if vec is not None and not self._due(
                    vec.created, forced, vec.seq, len(self._vectors) >= self.config.auto_flush_rows
                ):
                    vec = None
                if chunk is not None:
                    self._chunks.popleft()  # the open chunk too: taking it closes it
                    if chunk is self._open:
                        self._open = None
                    self._inflight.add(chunk.first_seq)
                vectors: list[_VectorItem] = []
                if vec is not None:
                    vectors = self._take_vectors()
                    self._inflight.add(vectors[0].seq)
            if chunk is None and not vectors:
                return
            if chunk is not None:
                await self._deliver_points(chunk)
            if vectors:
                await self._deliver_vectors(vectors)

    def _take_vectors(self) -> list[_VectorItem]:
        first = self._vectors.popleft()
        taken, nbytes = [first], first.nbytes
        if first.op == "remove":
            return taken
        while (
            self._vectors
            and self._vectors[0].op == first.op
            and len(taken) < self.config.auto_flush_rows
            and nbytes + self._vectors[0].nbytes <= self._batch_bytes()
        ):
            item = self._vectors.popleft()
            taken.append(item)
            nbytes += item.nbytes
        return taken

    async def _deliver_points(self, chunk: _Chunk) -> None:
        series = self._series_list

        async def send() -> int:
            return await self.transport.ts_columns(series, chunk.sids, chunk.ts, chunk.values)

        count = len(chunk.ts)
        error = await self._with_retries(count, send)
        items = [
            {"metric": series[s][0], "entity": series[s][1], "timestamp_ms": t, "value": v,
             "tags": dict(series[s][2])}
            for s, t, v in zip(chunk.sids, chunk.ts, chunk.values, strict=True)
        ] if error else []  # fmt: skip
        self._resolve(list(range(chunk.first_seq, chunk.first_seq + count)), items, error,
                      chunk.nbytes)  # fmt: skip

    async def _deliver_vectors(self, items: list[_VectorItem]) -> None:
        first = items[0]
        if first.op == "remove":

            async def send() -> int:
                return await self.transport.vector_remove(first.pk)

        else:
            dimension = len(first.vector) // 4

            async def send() -> int:
                batch = [(i.pk, i.vector, i.metadata) for i in items]
                return await self.transport.vector_batch(first.op, batch, dimension)

        error = await self._with_retries(len(items), send, remove=first.op == "remove")
        described = [_describe_vector(i) for i in items] if error else []
        self._resolve([i.seq for i in items], described, error, sum(i.nbytes for i in items))

    async def _with_retries(
        self, count: int, send: Callable[[], Any], *, remove: bool = False
    ) -> BaseException | None:
        """``None`` once ``send`` succeeded, else the error that finally stopped it."""
        cfg = self.config
        started = time.monotonic()
        for attempt in range(cfg.max_retries + 1):
            try:
                await send()
                return None
            except ThemisError as exc:
                # a remove right after its add may reach the facade before the worker has
                # the pk: NOT_FOUND is worth retrying within the same budget
                retriable = exc.retriable or (remove and isinstance(exc, NotFoundError))
                if not retriable or attempt == cfg.max_retries:
                    return exc
                backoff = min(
                    cfg.retry_max_backoff_ms / 1000,
                    cfg.retry_initial_backoff_ms / 1000 * 2**attempt,
                )
                delay = random.uniform(0, backoff)
                advised = getattr(exc, "retry_after", None)
                if advised:
                    delay = max(delay, float(advised))
                if time.monotonic() + delay - started > cfg.retry_timeout_ms / 1000:
                    return exc
                self.counters.retried += count
                await asyncio.sleep(delay)
            except Exception as exc:
                return exc
        return None  # pragma: no cover - the loop always returns

    def _resolve(
        self,
        seqs: list[int],
        failed: list[dict[str, Any]],
        error: BaseException | None,
        nbytes: int,
    ) -> None:
        with self._lock:
            self._queued_rows -= len(seqs)
            self._queued_bytes -= nbytes
            if error is None:
                self.counters.sent += len(seqs)
            else:
                self.counters.failed += len(seqs)
                self._failures.extend(zip(seqs, failed, [error] * len(seqs), strict=True))
            self._inflight.discard(seqs[0])
        if error is not None and self.on_error is not None:
            callback = self.on_error
            future = self.loop.run_in_executor(None, callback, list(failed), error)
            future.add_done_callback(_log_callback_failure)
        self.loop.create_task(self._notify())

    def _lowest_unresolved(self) -> int:
        heads = list(self._inflight)
        if self._chunks:
            heads.append(self._chunks[0].first_seq)
        if self._vectors:
            heads.append(self._vectors[0].seq)
        return min(heads, default=self._seq)

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    # -- flush and close ------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything queued so far; return once it is acknowledged, or raise
        :class:`WriteError` with what finally failed (since the last flush)."""
        from themisdb.errors import WriteError

        with self._lock:
            target = self._seq
        self._forced_through = max(self._forced_through, target)
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._progress:
            while self._resolved_through() < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"flush: not all acknowledged within {timeout} s")
                try:
                    await asyncio.wait_for(self._progress.wait(), timeout=min(remaining or 1, 1))
                except TimeoutError:
                    self._wake.set()
        with self._lock:
            mine = [f for f in self._failures if f[0] < target]
            self._failures = [f for f in self._failures if f[0] >= target]
        if mine:
            raise WriteError([item for _, item, _ in mine], mine[-1][2])

    def _resolved_through(self) -> int:
        with self._lock:
            return self._lowest_unresolved()

    async def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the flusher; the writer takes nothing more."""
        try:
            await self.flush(timeout)
        finally:
            self._closed = True
            self._wake.set()
            if self._task is not None:
                await asyncio.gather(self._task, return_exceptions=True)

    @property
    def pending(self) -> int:
        """Items queued and not yet resolved."""
        with self._lock:
            return self._queued_rows


def _describe_vector(item: _VectorItem) -> dict[str, Any]:
    if item.op == "remove":
        return {"op": "remove", "pk": item.pk}
    values = array.array("f")
    values.frombytes(item.vector)
    return {"op": item.op, "pk": item.pk, "vector": values.tolist(), "metadata": item.metadata}


def _log_callback_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        _LOG.warning("themisdb: the error callback raised %r", future.exception())
