"""``ThemisClient``: the client for threads, the roadmap's API by name.

It runs an :class:`~themisdb.aio.AsyncThemisClient` on one event loop in one background
thread per client (which also runs the batching writer's one flusher). Buffered calls
queue in the caller's thread without touching that loop; the other calls wait for their
answer. ``close()``, the context manager and, failing those, an ``atexit`` hook flush.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import warnings
import weakref
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from themisdb.aio import AsyncThemisClient, PointLike
from themisdb.writer import (
    BatchingWriter,
    Counters,
    ErrorCallback,
    checked_timestamp,
    checked_value,
)

__all__ = [
    "ThemisClient",
    "ThemisReplicationClient",
    "ThemisTimeSeriesClient",
    "ThemisVectorClient",
]

T = TypeVar("T")


class _Loop:
    """One event loop in one daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="themisdb", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


class ThemisTimeSeriesClient:
    """``client.timeseries``: see :class:`~themisdb.aio.AsyncThemisTimeSeriesClient`."""

    def __init__(self, owner: ThemisClient) -> None:
        self._owner = owner
        self._aio = owner._aio.timeseries

    def put_buffered(
        self,
        metric: str,
        entity: str,
        timestamp_ms: int | None = None,
        value: float | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Queue one point (now, if no timestamp); raises ``BufferOverflowError`` when full."""
        self._owner.writer.put(
            metric, entity, checked_timestamp(timestamp_ms), checked_value(value), tags
        )

    def put_many(self, points: Iterable[PointLike]) -> int:
        return self._owner.queue(self._aio.put_many(points))

    def put_arrays(
        self,
        metric: str,
        entity: str,
        timestamps: Sequence[int],
        values: Sequence[float],
        tags: dict[str, str] | None = None,
    ) -> int:
        return self._owner.queue(self._aio.put_arrays(metric, entity, timestamps, values, tags))

    def put(
        self,
        metric: str,
        entity: str,
        timestamp_ms: int | None = None,
        value: float | None = None,
        tags: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Write one point directly (durable before return)."""
        return self._owner.call(self._aio.put(metric, entity, timestamp_ms, value, tags))

    def get_buffer_stats(self) -> dict[str, Any]:
        return self._owner.call(self._aio.get_buffer_stats())

    def flush_buffer(self) -> dict[str, Any]:
        return self._owner.call(self._aio.flush_buffer())

    def query(
        self,
        metric: str,
        entity: str,
        tags: dict[str, str] | None = None,
        start: int | None = None,
        end: int | None = None,
    ) -> list[dict[str, Any]]:
        return self._owner.call(self._aio.query(metric, entity, tags, start, end))


class ThemisVectorClient:
    """``client.vectors``: see :class:`~themisdb.aio.AsyncThemisVectorClient`."""

    def __init__(self, owner: ThemisClient) -> None:
        self._owner = owner
        self._aio = owner._aio.vectors

    def add_buffered(self, pk: str, vector: Any, metadata: dict[str, Any] | None = None) -> None:
        self._owner.queue(self._aio.add_buffered(pk, vector, metadata))

    def update_buffered(self, pk: str, vector: Any, metadata: dict[str, Any] | None = None) -> None:
        self._owner.queue(self._aio.update_buffered(pk, vector, metadata))

    def remove_buffered(self, pk: str) -> None:
        self._owner.queue(self._aio.remove_buffered(pk))

    def add_many(self, items: Iterable[Mapping[str, Any]]) -> int:
        return self._owner.queue(self._aio.add_many(items))

    def add(self, pk: str, vector: Any, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._owner.call(self._aio.add(pk, vector, metadata))

    def get_buffer_stats(self) -> dict[str, Any]:
        return self._owner.call(self._aio.get_buffer_stats())

    def flush_buffer(self) -> dict[str, Any]:
        return self._owner.call(self._aio.flush_buffer())

    def search(
        self, vector: Any, k: int = 10, ef: int | None = None, filter: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return self._owner.call(self._aio.search(vector, k, ef, filter))


class ThemisReplicationClient:
    """``client.replication``: see :class:`~themisdb.aio.AsyncThemisReplicationClient`."""

    def __init__(self, owner: ThemisClient) -> None:
        self._owner = owner
        self._aio = owner._aio.replication

    def add_replica(self, replica_id: str, endpoint: str) -> dict[str, Any]:
        return self._owner.call(self._aio.add_replica(replica_id, endpoint))

    def remove_replica(self, replica_id: str) -> dict[str, Any]:
        return self._owner.call(self._aio.remove_replica(replica_id))

    def get_replication_stats(self) -> dict[str, Any]:
        return self._owner.call(self._aio.get_replication_stats())

    def configure_compression(self, compression_type: str, level: int = 3) -> dict[str, Any]:
        return self._owner.call(self._aio.configure_compression(compression_type, level))


def _close_at_exit(ref: weakref.ref[ThemisClient]) -> None:
    client = ref()
    if client is None or client.closed:
        return
    try:
        client.close(timeout=10)
    except Exception as exc:
        warnings.warn(f"themisdb: points may be lost at exit: {exc}", RuntimeWarning, stacklevel=1)


class ThemisClient:
    """The client for threads: ``ThemisClient(url="localhost:8080", api_key=..., transport=
    "http"|"binary")``, or a connection string (``conf=`` / ``$THEMIS_CLIENT_CONF``).
    ``.timeseries``, ``.vectors``, ``.replication`` carry the roadmap's methods."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        transport: str | None = None,
        *,
        conf: str | None = None,
        on_error: ErrorCallback | None = None,
        **options: Any,
    ) -> None:
        self._aio = AsyncThemisClient(
            url, api_key, transport, conf=conf, on_error=on_error, **options
        )
        self.config = self._aio.config
        self._loop = _Loop()
        self.closed = False
        try:
            self._loop.run(self._aio.connect())
        except BaseException:
            self._loop.run(self._aio.transport.aclose())
            self._loop.stop()
            raise
        self.timeseries = ThemisTimeSeriesClient(self)
        self.vectors = ThemisVectorClient(self)
        self.replication = ThemisReplicationClient(self)
        atexit.register(_close_at_exit, weakref.ref(self))

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one call of the async client on the client's loop and wait for it."""
        return self._loop.run(coro)

    def queue(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a queueing call right here: it never awaits anything, so it needs no loop."""
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        coro.close()
        raise RuntimeError("a queueing call awaited")  # pragma: no cover

    @property
    def counters(self) -> Counters:
        return self._aio.counters

    @property
    def writer(self) -> BatchingWriter:
        """The batching writer (made on the client's loop when the client connected)."""
        writer = self._aio._writer
        assert writer is not None  # connect() made it
        return writer

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything queued is acknowledged; raise ``WriteError`` with what was not."""
        self.call(self._aio.flush(timeout))

    def close(self, timeout: float | None = None) -> None:
        """Flush, close the connections and stop the loop; a second close does nothing."""
        if self.closed:
            return
        self.closed = True
        try:
            self.call(self._aio.close(timeout))
        finally:
            self._loop.stop()

    def __enter__(self) -> ThemisClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
