"""``AsyncThemisClient``: the asyncio client; :mod:`themisdb.client` wraps it for threads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from themisdb.config import ClientConfig, parse_conf
from themisdb.errors import ValidationError
from themisdb.transport import Transport, open_transport
from themisdb.writer import (
    BatchingWriter,
    Counters,
    ErrorCallback,
    checked_timestamp,
    checked_value,
    vector_bytes,
)

__all__ = [
    "AsyncThemisClient",
    "AsyncThemisReplicationClient",
    "AsyncThemisTimeSeriesClient",
    "AsyncThemisVectorClient",
]

PointLike = Mapping[str, Any] | Sequence[Any]


def _point_args(point: PointLike) -> tuple[str, str, int | None, Any, dict[str, str] | None]:
    if isinstance(point, Mapping):
        return (point.get("metric", ""), point.get("entity", ""), point.get("timestamp_ms"),
                point.get("value"), point.get("tags"))  # fmt: skip
    metric, entity, ts, value, *rest = point
    return metric, entity, ts, value, rest[0] if rest else None


class AsyncThemisTimeSeriesClient:
    """Time series: buffered and direct writes, stats, flush, queries."""

    def __init__(self, owner: AsyncThemisClient) -> None:
        self._owner = owner

    async def put_buffered(
        self,
        metric: str,
        entity: str,
        timestamp_ms: int | None = None,
        value: float | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Queue one point (``timestamp_ms`` defaults to now); it is written when its batch
        is acknowledged. A full queue raises :class:`BufferOverflowError` (not queued)."""
        self._owner.writer.put(
            metric, entity, checked_timestamp(timestamp_ms), checked_value(value), tags
        )

    async def put_many(self, points: Iterable[PointLike]) -> int:
        """Queue many points (dicts with the point's fields, or ``(metric, entity,
        timestamp_ms, value[, tags])``); returns how many were queued. Stops at the first
        invalid point or a full queue, raising; the points before it stay queued."""
        count = 0
        put = self._owner.writer.put
        for point in points:
            metric, entity, ts, value, tags = _point_args(point)
            put(metric, entity, checked_timestamp(ts), checked_value(value), tags)
            count += 1
        return count

    async def put_arrays(
        self,
        metric: str,
        entity: str,
        timestamps: Sequence[int],
        values: Sequence[float],
        tags: dict[str, str] | None = None,
    ) -> int:
        """Queue one series' points from two equal-length sequences."""
        if len(timestamps) != len(values):
            raise ValidationError("timestamps and values differ in length", field="values")
        put = self._owner.writer.put
        for ts, value in zip(timestamps, values, strict=True):
            put(metric, entity, checked_timestamp(int(ts)), checked_value(value), tags)
        return len(values)

    async def put(
        self,
        metric: str,
        entity: str,
        timestamp_ms: int | None = None,
        value: float | None = None,
        tags: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Write one point directly; returns once the server says it is durable."""
        body = {"metric": metric, "entity": entity, "timestamp_ms": checked_timestamp(timestamp_ms),
                "value": checked_value(value), "tags": tags or {}}  # fmt: skip
        return await self._owner.transport.request("POST", "/ts/put", body)

    async def get_buffer_stats(self) -> dict[str, Any]:
        """The server's TS buffer statistics (``points_buffered``, ``points_flushed``, ...)."""
        return await self._owner.transport.json_call("ts_stats")

    async def flush_buffer(self) -> dict[str, Any]:
        """Send what this client queued, then have the workers flush their buffers (admin)."""
        await self._owner.flush()
        return await self._owner.transport.json_call("ts_flush")

    async def query(
        self,
        metric: str,
        entity: str,
        tags: dict[str, str] | None = None,
        start: int | None = None,
        end: int | None = None,
    ) -> list[dict[str, Any]]:
        """Points with ``start <= timestamp_ms <= end``: ``[{"timestamp_ms", "value"}]``."""
        body: dict[str, Any] = {"metric": metric, "entity": entity, "tags": tags or {}}
        if start is not None:
            body["start"] = start
        if end is not None:
            body["end"] = end
        answer = await self._owner.transport.request("POST", "/ts/query", body)
        points: list[dict[str, Any]] = answer.get("points", [])
        return points


class AsyncThemisVectorClient:
    """Vectors: buffered and direct writes, stats, flush, search."""

    def __init__(self, owner: AsyncThemisClient) -> None:
        self._owner = owner

    async def add_buffered(
        self, pk: str, vector: Any, metadata: dict[str, Any] | None = None
    ) -> None:
        """Queue an ADD (an upsert of ``pk``)."""
        self._owner.writer.vector("add", _pk(pk), vector_bytes(vector), metadata)

    async def update_buffered(
        self, pk: str, vector: Any, metadata: dict[str, Any] | None = None
    ) -> None:
        """Queue an UPDATE of ``pk``."""
        self._owner.writer.vector("update", _pk(pk), vector_bytes(vector), metadata)

    async def remove_buffered(self, pk: str) -> None:
        """Queue a REMOVE of ``pk``."""
        self._owner.writer.vector("remove", _pk(pk), b"", None)

    async def add_many(self, items: Iterable[Mapping[str, Any]]) -> int:
        """Queue ADDs of ``{"pk", "vector", "metadata"?}`` items; returns how many."""
        count = 0
        for item in items:
            await self.add_buffered(item.get("pk", ""), item.get("vector"), item.get("metadata"))
            count += 1
        return count

    async def add(
        self, pk: str, vector: Any, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Write one vector directly; returns once it is durable on the server."""
        import array

        values = array.array("f")
        values.frombytes(vector_bytes(vector))
        body: dict[str, Any] = {"pk": _pk(pk), "vector": values.tolist()}
        if metadata is not None:
            body["metadata"] = metadata
        return await self._owner.transport.request("POST", "/vectors/add", body)

    async def get_buffer_stats(self) -> dict[str, Any]:
        return await self._owner.transport.json_call("vector_stats")

    async def flush_buffer(self) -> dict[str, Any]:
        """Send what this client queued, then have the workers flush (admin)."""
        await self._owner.flush()
        return await self._owner.transport.json_call("vector_flush")

    async def search(
        self, vector: Any, k: int = 10, ef: int | None = None, filter: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The ``k`` nearest vectors: ``[{"pk", "distance", "metadata"}]``, closest first."""
        import array

        values = array.array("f")
        values.frombytes(vector_bytes(vector))
        body: dict[str, Any] = {"vector": values.tolist(), "k": k}
        if ef is not None:
            body["ef"] = ef
        if filter:
            body["filter"] = filter
        answer = await self._owner.transport.request("POST", "/vectors/search", body)
        results: list[dict[str, Any]] = answer.get("results", [])
        return results


class AsyncThemisReplicationClient:
    """WAL shipping: replicas, their stats, the batches' compression (admin for changes)."""

    def __init__(self, owner: AsyncThemisClient) -> None:
        self._owner = owner

    async def add_replica(self, replica_id: str, endpoint: str) -> dict[str, Any]:
        body = {"replica_id": replica_id, "endpoint": endpoint}
        return await self._owner.transport.request("POST", "/api/v1/replication/replicas", body)

    async def remove_replica(self, replica_id: str) -> dict[str, Any]:
        body = {"replica_id": replica_id}
        return await self._owner.transport.request("DELETE", "/api/v1/replication/replicas", body)

    async def get_replication_stats(self) -> dict[str, Any]:
        return await self._owner.transport.json_call("replication_stats")

    async def configure_compression(self, compression_type: str, level: int = 3) -> dict[str, Any]:
        body = {"compression_type": compression_type, "compression_level": level}
        return await self._owner.transport.json_call("replication_config", body)


def _pk(pk: str) -> str:
    if not isinstance(pk, str) or not pk:
        raise ValidationError("field 'pk' must be a non-empty string", field="pk")
    return pk


class AsyncThemisClient:
    """The asyncio client. ``url`` is ``host:port`` or ``http(s)://``/``themis(+tls)://`` URL;
    or give a connection string as ``conf`` (default ``$THEMIS_CLIENT_CONF``). Use
    ``async with`` or ``await close()``: closing flushes."""

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
        self.config = _config(url, api_key, transport, conf, options)
        self.on_error = on_error
        self.transport: Transport = open_transport(self.config)
        self._writer: BatchingWriter | None = None
        self.timeseries = AsyncThemisTimeSeriesClient(self)
        self.vectors = AsyncThemisVectorClient(self)
        self.replication = AsyncThemisReplicationClient(self)

    @property
    def writer(self) -> BatchingWriter:
        if self._writer is None:
            loop = asyncio.get_running_loop()
            self._writer = BatchingWriter(self.transport, self.config, loop, on_error=self.on_error)
            self._writer.start()
        return self._writer

    @property
    def counters(self) -> Counters:
        """``queued``, ``sent``, ``retried``, ``failed`` items of this client."""
        return self._writer.counters if self._writer is not None else Counters()

    async def connect(self) -> AsyncThemisClient:
        """Open the connection now (otherwise the first call does)."""
        await self.transport.start()
        _ = self.writer
        return self

    async def flush(self, timeout: float | None = None) -> None:
        """Return once everything queued is acknowledged; raise ``WriteError`` with what was not."""
        if self._writer is not None:
            await self._writer.flush(timeout)

    async def close(self, timeout: float | None = None) -> None:
        """Flush, then close the connections (a second close does nothing)."""
        try:
            if self._writer is not None:
                await self._writer.close(timeout)
        finally:
            await self.transport.aclose()

    async def __aenter__(self) -> AsyncThemisClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _config(
    url: str | None,
    api_key: str | None,
    transport: str | None,
    conf: str | None,
    options: dict[str, Any],
) -> ClientConfig:
    """The one way both clients read their arguments (see docs/clients/CONFIGURATION.md)."""
    schema: str | None = None
    addr: str | None = None
    if url:
        scheme, sep, rest = url.partition("://")
        if sep:
            schema, addr = scheme.lower(), rest.rstrip("/")
        else:
            addr = url
    if transport is not None:
        if transport not in ("http", "binary"):
            from themisdb.errors import ConfigurationError

            raise ConfigurationError("transport must be 'http' or 'binary'", key="transport")
        secure = (schema or "").endswith("s") or (schema or "").endswith("+tls")
        schema = ("themis+tls" if secure else "themis") if transport == "binary" else (
            "https" if secure else "http")  # fmt: skip
    return parse_conf(conf, schema=schema, addr=addr, api_key=api_key, **options)
