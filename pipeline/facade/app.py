"""The HTTP ingest facade: the roadmap's REST endpoints in front of Kafka and the workers.

The facade holds no buffer of its own. A buffered write is validated, produced to the
points or operations topic (``acks=all``, idempotent) and answered; the workers hold
the auto buffers and flush them. Stats, flushes, buffered-point reads and searches are
asked of the workers' web servers (``facade.worker_urls``).

What a 200 means (``facade.response_mode``, per request ``X-Themis-Response-Mode``)
    ``acked``: the broker acknowledged the record (``acks=all``): it survives a crash
    of the facade and of the worker. ``queued``: the record is in this process's
    producer queue; a clean shutdown (SIGTERM) still delivers it, a crash may lose it.

``buffer_size`` (in buffered answers)
    Points (or vector operations) this facade accepted that the broker has not yet
    acknowledged, plus the workers' ``current_buffer_size`` as last reported. The
    workers are polled in the background every :data:`WORKER_REFRESH_S` seconds, so
    that part may be up to that old.

Direct writes (``POST /ts/put``, ``POST /vectors/add``) answer only once durable:
    a TS point is written as a one-point Gorilla block to the blocks topic plus its WAL
    entry, both acknowledged; a vector ADD is acknowledged on the compacted operations
    topic (the vector state that shards are rebuilt from) and the workers are then
    asked to flush so it becomes searchable.

Extra routes (the replication endpoints ``/api/v1/wal/apply``,
``/api/v1/replication/stats``, ``/api/v1/replication/config``) are mounted through
``create_facade(..., extra_routes=[RouteSpec(...)])`` or :func:`mount_routes`; they get
the same auth, rate limits, body limit and metrics as the built-in ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import numpy as np
import orjson
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)

from pipeline.config import Settings
from pipeline.errors import ConfigError, InvalidRecord, ThemisError
from pipeline.facade.auth import ApiKeyring, Role, load_keyring, presented_key
from pipeline.facade.ratelimit import RateLimiter, RouteClass, limits_from_settings
from pipeline.kafka.producer import key_partition
from pipeline.ts.block import CODEC_VERSION, GorillaBlock
from pipeline.ts.gorilla import encode_chunk
from pipeline.ts.point import DataPoint, SeriesArrays, encode_frame, series_key, validate_point
from pipeline.ts.producer import MAX_FRAME_POINTS
from pipeline.vectors.ops import OpType, VectorOp, decode_op_json, encode_op_json, validate_vector
from pipeline.wal.entry import EntryType
from pipeline.wal.writer import WalWriter
from pipeline.worker.client import WorkerClient
from pipeline.worker.query import query_series

__all__ = [
    "FACADE_STATE",
    "Facade",
    "RecordProducer",
    "RequestRejected",
    "RouteSpec",
    "create_facade",
    "mount_routes",
]

_LOG = logging.getLogger(__name__)

WORKER_REFRESH_S = 0.5
"""How often the workers' buffer sizes are polled for ``buffer_size`` and overflow checks."""
WORKER_TIMEOUT_S = 10.0
"""Timeout of one request to a worker (seconds); flushes may take this long."""
MAX_SEARCH_K = 10_000
RESPONSE_MODE_HEADER = "X-Themis-Response-Mode"
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_TS_SUM_FIELDS = (
    "points_buffered",
    "points_flushed",
    "flush_count",
    "auto_flush_count",
    "manual_flush_count",
    "current_buffer_size",
    "current_buffer_memory",
)
_TS_EXTRA_SUM_FIELDS = ("blocks_written", "dead_letters", "pending_records")
_VEC_SUM_FIELDS = (
    "vectors_buffered",
    "vectors_flushed",
    "flush_count",
    "current_buffer_size",
    "current_buffer_memory",
)
_VEC_EXTRA_SUM_FIELDS = ("live_vectors", "pending_records", "dead_letters")


class RequestRejected(ThemisError):
    """A request the facade answers with a 4xx/5xx JSON error (``status``, ``extra`` fields)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra or {}
        self.headers = headers or {}
        self.retriable = status in (429, 503)


class RecordProducer(Protocol):
    """What the facade needs of a producer (:class:`pipeline.kafka.producer.AsyncProducer`)."""

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]: ...

    def flush(self, timeout_s: float = 30.0) -> int: ...

    def close(self) -> None: ...


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RouteSpec:
    """One endpoint: ``role`` ``None`` means no key is needed; ``rate_class`` picks a quota."""

    method: str
    path: str
    handler: Handler
    role: Role | None = Role.WRITER
    rate_class: RouteClass | None = None


class FacadeMetrics:
    """The facade's Prometheus metrics, on a registry of its own (durations in seconds)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_duration = Histogram(
            "facade_request_duration_seconds",
            "Time from receiving a request to answering it, by route, method and status.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "facade_requests_in_flight", "Requests being handled now.", registry=self.registry
        )
        self.unacked = Gauge(
            "facade_unacked_points",
            "Points and vector operations accepted but not yet acknowledged by the broker.",
            registry=self.registry,
        )


def _worker_urls(settings: Settings) -> list[str]:
    configured = [u.strip().rstrip("/") for u in settings.facade.worker_urls.split(",")]
    urls = [u for u in configured if u]
    return urls or [f"http://127.0.0.1:{settings.worker.web_port}"]


def _caller_id(key: str) -> str:
    # Buckets are keyed by a digest so the key itself is not kept in another table.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(
    status: int,
    message: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return _json({"success": False, "error": message} | (extra or {}), status, headers)


def _finite_or_text(value: float) -> float | str:
    """``value``, or for NaN and infinities (which JSON lacks) ``"NaN"``, ``"inf"``, ``"-inf"``."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def parse_json(body: bytes) -> Any:
    """Decoded JSON; NaN and Infinity literals are decoded (and then rejected by field)."""
    if not body.strip():
        raise RequestRejected(400, "the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        # The standard parser accepts NaN/Infinity, so the field holding one can be named.
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRejected(400, f"the body is not valid JSON: {exc}") from None


def point_from_json(raw: object, where: str = "") -> DataPoint:
    """A validated point; ``RequestRejected`` (400) names the field (and ``where``)."""
    try:
        point = validate_point(raw)
    except InvalidRecord as exc:
        raise RequestRejected(400, f"{where}{exc}") from None
    if not math.isfinite(point.value):
        raise RequestRejected(
            400, f"{where}field 'value' must be a finite number; NaN and Infinity are not accepted"
        )
    return point


def vector_op_from_json(
    raw: object, op: OpType, dimension: int, max_metadata_bytes: int
) -> VectorOp:
    """A validated vector operation from a request body; ``op`` comes from the path."""
    if not isinstance(raw, dict):
        raise RequestRejected(400, "the body must be a JSON object with field 'pk'")
    if "op" in raw:
        raise RequestRejected(400, "field 'op' is not accepted here: the path names the operation")
    values = raw.get("vector")
    if op is not OpType.REMOVE:
        if values is None:
            raise RequestRejected(400, f"field 'vector' is required for {op.value}")
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise RequestRejected(400, "field 'vector' must be an array of numbers")
        try:
            validate_vector(values, dimension)
        except InvalidRecord as exc:
            raise RequestRejected(400, str(exc)) from None
    elif set(raw) - {"pk"}:
        raise RequestRejected(400, "remove takes only field 'pk'")
    try:
        return decode_op_json(
            orjson.dumps(raw | {"op": op.value}),
            dimension=dimension,
            max_metadata_bytes=max_metadata_bytes,
        )
    except (InvalidRecord, TypeError) as exc:
        raise RequestRejected(400, str(exc)) from None


def aggregate_ts_stats(pages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The roadmap's TS buffer stats over workers: counts summed, latest flush time,
    and the compression ratio recomputed over all durable points (16 raw bytes each)."""
    out: dict[str, Any] = {name: sum(int(p.get(name, 0)) for p in pages) for name in _TS_SUM_FIELDS}
    raw_bytes = 0.0
    block_bytes = 0.0
    for page in pages:
        ratio = float(page.get("avg_compression_ratio", 0.0))
        flushed = int(page.get("points_flushed", 0))
        if ratio > 0 and flushed > 0:
            raw_bytes += 16.0 * flushed
            block_bytes += 16.0 * flushed / ratio
    out["avg_compression_ratio"] = raw_bytes / block_bytes if block_bytes else 0.0
    times = [p["last_flush_time"] for p in pages if p.get("last_flush_time")]
    out["last_flush_time"] = max(times) if times else None
    reasons: dict[str, int] = defaultdict(int)
    for page in pages:
        for reason, count in (page.get("flush_reasons") or {}).items():
            reasons[reason] += int(count)
    out["flush_reasons"] = dict(reasons)
    for name in _TS_EXTRA_SUM_FIELDS:
        out[name] = sum(int(p.get(name, 0)) for p in pages)
    return out


def aggregate_vector_stats(pages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The roadmap's vector buffer stats over workers (counts summed, latest flush time)."""
    out: dict[str, Any] = {
        name: sum(int(p.get(name, 0)) for p in pages) for name in _VEC_SUM_FIELDS
    }
    out["compression_type"] = "none"
    times = [p["last_flush_time"] for p in pages if p.get("last_flush_time")]
    out["last_flush_time"] = max(times) if times else None
    for name in _VEC_EXTRA_SUM_FIELDS:
        out[name] = sum(int(p.get(name, 0)) for p in pages)
    return out


class Facade:
    """State and handlers of one facade process."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str | None,
        *,
        producer: RecordProducer | None = None,
        partitions: dict[str, int] | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.facade
        self.bootstrap = bootstrap
        self.keyring: ApiKeyring = load_keyring(self.config)
        if self.config.auth_enabled and not len(self.keyring):
            raise ConfigError(
                "facade.auth_enabled is true but no API keys are configured: set "
                "THEMIS_FACADE_API_KEYS='key:admin,...' or THEMIS_FACADE_API_KEYS_FILE"
            )
        self.limiter = RateLimiter(limits_from_settings(self.config))
        self.metrics = FacadeMetrics()
        self.worker_urls = _worker_urls(settings)
        self.points_topic = settings.topic("ts.points")
        self.ops_topic = settings.topic("vectors.ops")
        self.blocks_topic = settings.topic("ts.blocks")
        self._producer = producer
        self._owns_producer = producer is None
        self._partitions = dict(partitions or {})
        self._session: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._query_lock = asyncio.Lock()
        self.unacked_points = 0
        self.unacked_requests = 0
        self.worker_ts_sizes: dict[str, int] = {}
        self.worker_vec_sizes: dict[str, int] = {}
        self.routes: dict[tuple[str, str], RouteSpec] = {}
        self.extra_registries: list[CollectorRegistry] = []
        """More registries served at ``/metrics`` (the WAL shipper's, when one runs)."""

    # -- lifecycle ------------------------------------------------------------

    @property
    def producer(self) -> RecordProducer:
        if self._producer is None:
            raise RequestRejected(503, "the facade is not started")
        return self._producer

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RequestRejected(503, "the facade is not started")
        return self._session

    async def start(self, app: web.Application) -> None:
        if self._producer is None:
            from pipeline.kafka.producer import AsyncProducer

            if not self.bootstrap:
                raise ConfigError("the facade needs a Kafka bootstrap address")
            self._producer = AsyncProducer(self.bootstrap)
        missing = [t for t in (self.points_topic, self.ops_topic) if t not in self._partitions]
        if missing:
            self._partitions.update(await asyncio.to_thread(self._topic_partitions, missing))
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WORKER_TIMEOUT_S))
        self.workers = WorkerClient(self.worker_urls, timeout_s=WORKER_TIMEOUT_S)
        self._refresher = asyncio.create_task(self._refresh_workers())

    def _topic_partitions(self, topics: list[str]) -> dict[str, int]:
        from confluent_kafka.admin import AdminClient

        assert self.bootstrap
        metadata = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=10)
        found: dict[str, int] = {}
        for topic in topics:
            described = metadata.topics.get(topic)
            if described is None or not described.partitions:
                raise ConfigError(f"topic {topic} does not exist; run `themis topics apply`")
            found[topic] = len(described.partitions)
        return found

    async def stop(self, app: web.Application) -> None:
        """Stop polling workers, deliver everything accepted, close the producer."""
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            await self.workers.close()
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, 60.0)
            if self._pending:
                await asyncio.wait(list(self._pending), timeout=10)
            if self._owns_producer:
                await asyncio.to_thread(self._producer.close)

    # -- workers --------------------------------------------------------------

    async def _worker_json(
        self,
        url: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: object = None,
    ) -> dict[str, Any] | None:
        """A worker page's JSON, or ``None`` if that worker does not answer."""
        data = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            async with self.session.request(
                method,
                url + path,
                params=params,
                data=data,
                headers={"Content-Type": "application/json"},
            ) as resp:
                if resp.status != 200:
                    _LOG.warning("worker %s answered %s to %s", url, resp.status, path)
                    return None
                loaded: dict[str, Any] = orjson.loads(await resp.read())
                return loaded
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            _LOG.info("worker %s does not answer %s: %s", url, path, exc)
            return None

    async def _all_workers(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: object = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Every worker's answer; raises 503 when none answers. Returns (pages, unreachable)."""
        answers = await asyncio.gather(
            *(
                self._worker_json(u, method, path, params=params, body=body)
                for u in self.worker_urls
            )
        )
        pages = [a for a in answers if a is not None]
        down = [u for u, a in zip(self.worker_urls, answers, strict=True) if a is None]
        if not pages:
            raise RequestRejected(
                503,
                f"no worker answers at {', '.join(self.worker_urls)}: start one with "
                "`themis worker` or set THEMIS_FACADE_WORKER_URLS",
            )
        return pages, down

    async def _refresh_workers(self) -> None:
        while True:
            for url in self.worker_urls:
                ts, vec = await asyncio.gather(
                    self._worker_json(url, "GET", "/ts/buffer/stats"),
                    self._worker_json(url, "GET", "/vectors/buffer/stats"),
                )
                if ts is not None:
                    self.worker_ts_sizes[url] = int(ts.get("current_buffer_size", 0))
                if vec is not None:
                    self.worker_vec_sizes[url] = int(vec.get("current_buffer_size", 0))
            await asyncio.sleep(WORKER_REFRESH_S)

    # -- producing ------------------------------------------------------------

    def _track(self, futures: list[asyncio.Future[Any]], points: int) -> asyncio.Future[Any]:
        """Count ``points`` as unacknowledged until every future resolved."""
        self.unacked_points += points
        self.unacked_requests += 1
        self.metrics.unacked.set(self.unacked_points)
        combined: asyncio.Future[Any] = asyncio.gather(*futures)
        self._pending.add(combined)

        def done(future: asyncio.Future[Any]) -> None:
            self._pending.discard(future)
            self.unacked_points -= points
            self.unacked_requests -= 1
            self.metrics.unacked.set(self.unacked_points)
            if not future.cancelled() and future.exception() is not None:
                _LOG.error("the broker did not acknowledge a write: %s", future.exception())

        combined.add_done_callback(done)
        return combined

    def _acked_mode(self, request: web.Request) -> bool:
        mode = request.headers.get(RESPONSE_MODE_HEADER, self.config.response_mode)
        if mode not in ("acked", "queued"):
            raise RequestRejected(
                400, f"header {RESPONSE_MODE_HEADER}: {mode!r} is not allowed; use acked or queued"
            )
        return mode == "acked"

    async def _settle(self, request: web.Request, delivery: asyncio.Future[Any]) -> None:
        """In ``acked`` mode, wait for the broker; a failed delivery becomes a 503."""
        if not self._acked_mode(request):
            return
        try:
            await asyncio.shield(delivery)
        except ThemisError as exc:
            raise RequestRejected(
                503, f"the broker did not acknowledge the write; retry: {exc}"
            ) from None

    def ts_buffer_size(self) -> int:
        return self.unacked_points + sum(self.worker_ts_sizes.values())

    def vector_buffer_size(self) -> int:
        return self.unacked_points + sum(self.worker_vec_sizes.values())

    def _check_room(self, size: int, worker_sizes: dict[str, int], cap: int) -> None:
        """429 when too much is in flight or a worker reports its hard buffer cap."""
        if self.unacked_requests >= self.config.max_in_flight or any(
            s >= cap for s in worker_sizes.values()
        ):
            raise RequestRejected(
                429, "Buffer overflow", extra={"buffer_size": size}, headers={"Retry-After": "1"}
            )

    def _require_feature(self, enabled: bool, name: str, direct: str) -> None:
        if not enabled:
            raise RequestRejected(
                503,
                f"{name} is disabled on this server (features.{name}.enabled = false); "
                f"use the direct endpoint {direct} instead",
            )

    # -- time series ----------------------------------------------------------

    async def ts_put_buffered(self, request: web.Request) -> web.Response:
        self._require_feature(self.settings.ts_auto_buffer.enabled, "ts_auto_buffer", "/ts/put")
        point = point_from_json(parse_json(await request.read()))
        self._check_room(self.ts_buffer_size(), self.worker_ts_sizes, self._ts_cap())
        key = point.series_key().encode()
        future = self.producer.produce(
            self.points_topic,
            point.to_json(),
            key=key,
            partition=key_partition(key, self._partitions[self.points_topic]),
        )
        await self._settle(request, self._track([future], 1))
        return _json({"success": True, "buffered": True, "buffer_size": self.ts_buffer_size()})

    def _ts_cap(self) -> int:
        return self.settings.ts_auto_buffer.max_total_points

    async def ts_put_buffered_batch(self, request: web.Request) -> web.Response:
        self._require_feature(self.settings.ts_auto_buffer.enabled, "ts_auto_buffer", "/ts/put")
        body = await request.read()
        points = self._batch_points(body, request.content_type)
        if not points:
            raise RequestRejected(400, "the batch holds no points")
        self._check_room(self.ts_buffer_size(), self.worker_ts_sizes, self._ts_cap())
        futures = self._send_frames(points)
        await self._settle(request, self._track(futures, len(points)))
        return _json(
            {
                "success": True,
                "buffered": True,
                "points": len(points),
                "buffer_size": self.ts_buffer_size(),
            }
        )

    def _batch_points(self, body: bytes, content_type: str) -> list[DataPoint]:
        """Every point of a JSON array or NDJSON body, all validated before any is sent."""
        stripped = body.lstrip()
        if stripped.startswith(b"[") and content_type != "application/x-ndjson":
            items = parse_json(body)
            if not isinstance(items, list):
                raise RequestRejected(400, "the body must be a JSON array of points or NDJSON")
            return [point_from_json(item, f"point {i}: ") for i, item in enumerate(items)]
        points = []
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = parse_json(line)
            except RequestRejected as exc:
                raise RequestRejected(400, f"line {number}: {exc}") from None
            points.append(point_from_json(raw, f"line {number}: "))
        return points

    def _send_frames(self, points: Iterable[DataPoint]) -> list[asyncio.Future[Any]]:
        """Binary frames grouped by series, one per partition (a series stays in its partition)."""
        grouped: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        for point in points:
            ts, vs = grouped[point.series_key()]
            ts.append(point.timestamp_ms)
            vs.append(point.value)
        partitions = self._partitions[self.points_topic]
        by_partition: dict[int, list[SeriesArrays]] = defaultdict(list)
        for key, (ts, vs) in grouped.items():
            p = key_partition(key.encode(), partitions)
            for start in range(0, len(ts), MAX_FRAME_POINTS):
                by_partition[p].append(
                    (
                        key,
                        np.array(ts[start : start + MAX_FRAME_POINTS], np.int64),
                        np.array(vs[start : start + MAX_FRAME_POINTS], np.float64),
                    )
                )
        futures = []
        for p, parts in by_partition.items():
            for start in range(0, len(parts), 64):
                frame = encode_frame(parts[start : start + 64])
                futures.append(self.producer.produce(self.points_topic, frame, partition=p))
        return futures

    async def ts_put_direct(self, request: web.Request) -> web.Response:
        """One point as a one-point Gorilla block + WAL entry; answers once both are acked."""
        point = point_from_json(parse_json(await request.read()))
        ts = np.array([point.timestamp_ms], np.int64)
        vs = np.array([point.value], np.float64)
        block = GorillaBlock(
            point.series_key(),
            1,
            point.timestamp_ms,
            point.timestamp_ms,
            CODEC_VERSION,
            encode_chunk(ts, vs),
        )
        data = block.to_bytes()
        wal = WalWriter(self.producer, self.settings.topic("wal"))  # type: ignore[arg-type]
        futures = [
            self.producer.produce(self.blocks_topic, data, key=block.block_id.encode()),
            wal.append(EntryType.TS_BLOCK, data),
        ]
        try:
            await asyncio.shield(self._track(futures, 0))
        except ThemisError as exc:
            raise RequestRejected(
                503, f"the broker did not acknowledge the write; retry: {exc}"
            ) from None
        return _json({"success": True, "durable": True})

    async def ts_buffer_stats(self, request: web.Request) -> web.Response:
        pages, down = await self._all_workers("GET", "/ts/buffer/stats")
        body = aggregate_ts_stats(pages) | {
            "workers": len(pages),
            "workers_unreachable": down,
            "facade_unacked_points": self.unacked_points,
        }
        return _json(body)

    async def ts_buffer_flush(self, request: web.Request) -> web.Response:
        await self._drain_pending()
        pages, down = await self._all_workers("POST", "/ts/buffer/flush", body={})
        flushed = sum(int(p.get("points_flushed", 0)) for p in pages)
        return _json(
            {
                "success": True,
                "points_flushed": flushed,
                "workers": len(pages),
                "workers_unreachable": down,
            }
        )

    async def _drain_pending(self) -> None:
        """Wait until the broker acknowledged everything accepted so far (bounded)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=WORKER_TIMEOUT_S)

    async def ts_query(self, request: web.Request) -> web.Response:
        q = request.query
        metric, entity = q.get("metric", ""), q.get("entity", "")
        for name, value in (("metric", metric), ("entity", entity)):
            if not value:
                raise RequestRejected(400, f"query parameter {name!r} is required (non-empty)")
        start = self._int_param(q.get("start"), "start", -(2**63))
        end = self._int_param(q.get("end"), "end", 2**63 - 1)
        tags: dict[str, str] = {}
        for tag in q.getall("tag", []):
            name, sep, value = tag.partition(":")
            if not sep or not name:
                raise RequestRejected(400, f"query parameter 'tag' must be key:value; got {tag!r}")
            tags[name] = value
        async with self._query_lock:
            result = await query_series(
                self.workers,
                self.settings,
                self.bootstrap or "",
                metric,
                entity,
                start,
                end,
                tags,
                store_path=self.settings.worker.data_dir / "facade-query-blocks.sqlite",
            )
        ts, vs = result.timestamps, result.values
        points = [
            {"timestamp_ms": t, "value": _finite_or_text(v)}
            for t, v in zip(ts.tolist(), vs.tolist(), strict=True)
        ]
        return _json(
            {"series": series_key(metric, entity, tags), "count": len(points), "points": points}
        )

    @staticmethod
    def _int_param(raw: str | None, name: str, default: int) -> int:
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise RequestRejected(
                400, f"query parameter {name!r} must be an integer (milliseconds)"
            ) from None
        if not -(2**63) <= value <= 2**63 - 1:
            raise RequestRejected(400, f"query parameter {name!r} is outside the int64 range")
        return value

    # -- vectors --------------------------------------------------------------

    def _vector_op(self, raw: object, op: OpType) -> VectorOp:
        config = self.settings.vector_auto_buffer
        return vector_op_from_json(raw, op, config.dimension, config.max_metadata_bytes)

    def _produce_op(self, op: VectorOp) -> asyncio.Future[Any]:
        key = op.pk.encode()
        return self.producer.produce(
            self.ops_topic,
            encode_op_json(op),
            key=key,
            partition=key_partition(key, self._partitions[self.ops_topic]),
        )

    async def _vector_buffered(self, request: web.Request, op_type: OpType) -> web.Response:
        self._require_feature(
            self.settings.vector_auto_buffer.enabled, "vector_auto_buffer", "/vectors/add"
        )
        op = self._vector_op(parse_json(await request.read()), op_type)
        cap = self.settings.vector_auto_buffer.max_total_vectors
        self._check_room(self.vector_buffer_size(), self.worker_vec_sizes, cap)
        if op_type is OpType.REMOVE:
            await self._require_pk(op.pk)
        await self._settle(request, self._track([self._produce_op(op)], 1))
        return _json({"success": True, "buffered": True, "buffer_size": self.vector_buffer_size()})

    async def vectors_add_buffered(self, request: web.Request) -> web.Response:
        return await self._vector_buffered(request, OpType.ADD)

    async def vectors_update_buffered(self, request: web.Request) -> web.Response:
        return await self._vector_buffered(request, OpType.UPDATE)

    async def vectors_remove_buffered(self, request: web.Request) -> web.Response:
        return await self._vector_buffered(request, OpType.REMOVE)

    async def _require_pk(self, pk: str) -> None:
        """404 unless some worker holds ``pk`` (in its index or as a buffered upsert)."""
        pages, _ = await self._all_workers("GET", "/vectors/get", params={"pk": pk})
        if not any(page.get("present") for page in pages):
            raise RequestRejected(
                404, f"field 'pk': {pk!r} not found; nothing to remove", extra={"pk": pk}
            )

    async def vectors_add_direct(self, request: web.Request) -> web.Response:
        """An ADD acknowledged on the compacted ops topic, then a worker flush."""
        op = self._vector_op(parse_json(await request.read()), OpType.ADD)
        try:
            await asyncio.shield(self._track([self._produce_op(op)], 0))
        except ThemisError as exc:
            raise RequestRejected(
                503, f"the broker did not acknowledge the write; retry: {exc}"
            ) from None
        pages = await asyncio.gather(
            *(
                self._worker_json(u, "POST", "/vectors/buffer/flush", body={})
                for u in self.worker_urls
            )
        )
        return _json(
            {"success": True, "durable": True, "flushed_workers": sum(p is not None for p in pages)}
        )

    async def vectors_buffer_stats(self, request: web.Request) -> web.Response:
        pages, down = await self._all_workers("GET", "/vectors/buffer/stats")
        body = aggregate_vector_stats(pages) | {
            "workers": len(pages),
            "workers_unreachable": down,
            "facade_unacked_points": self.unacked_points,
        }
        return _json(body)

    async def vectors_buffer_flush(self, request: web.Request) -> web.Response:
        await self._drain_pending()
        pages, down = await self._all_workers("POST", "/vectors/buffer/flush", body={})
        flushed = sum(int(p.get("vectors_flushed", 0)) for p in pages)
        return _json(
            {
                "success": True,
                "vectors_flushed": flushed,
                "workers": len(pages),
                "workers_unreachable": down,
            }
        )

    async def vectors_search(self, request: web.Request) -> web.Response:
        raw = parse_json(await request.read())
        if not isinstance(raw, dict):
            raise RequestRejected(400, "the body must be a JSON object with field 'vector'")
        unknown = set(raw) - {"vector", "k", "ef", "filter"}
        if unknown:
            raise RequestRejected(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        values = raw.get("vector")
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise RequestRejected(400, "field 'vector' must be an array of numbers")
        try:
            validate_vector(values, self.settings.vector_auto_buffer.dimension)
        except InvalidRecord as exc:
            raise RequestRejected(400, str(exc)) from None
        k = raw.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_SEARCH_K:
            raise RequestRejected(400, f"field 'k' must be an integer from 1 to {MAX_SEARCH_K}")
        ef = raw.get("ef")
        if ef is not None and (
            isinstance(ef, bool) or not isinstance(ef, int) or not 1 <= ef <= 100_000
        ):
            raise RequestRejected(400, "field 'ef' must be an integer from 1 to 100000")
        where = raw.get("filter")
        if where is not None and not isinstance(where, dict):
            raise RequestRejected(400, "field 'filter' must be an object of metadata values")
        body: dict[str, Any] = {"vector": values, "k": k}
        if ef is not None:
            body["ef"] = ef
        if where:
            body["filter"] = where
        pages, down = await self._all_workers("POST", "/vectors/search", body=body)
        hits = [hit for page in pages for hit in page.get("results", [])]
        hits.sort(key=lambda hit: float(hit["distance"]))
        return _json({"success": True, "results": hits[:k], "workers_unreachable": down})

    # -- metrics --------------------------------------------------------------

    async def metrics_page(self, request: web.Request) -> web.Response:
        body = b"".join(generate_latest(r) for r in [self.metrics.registry, *self.extra_registries])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def builtin_routes(self) -> list[RouteSpec]:
        ts, vec, flush = RouteClass.TS_PUT, RouteClass.VECTORS_ADD, RouteClass.FLUSH
        admin, writer = Role.ADMIN, Role.WRITER
        return [
            RouteSpec("POST", "/ts/put/buffered", self.ts_put_buffered, writer, ts),
            RouteSpec("POST", "/ts/put/buffered/batch", self.ts_put_buffered_batch, writer, ts),
            RouteSpec("POST", "/ts/put", self.ts_put_direct, writer, ts),
            RouteSpec("GET", "/ts/buffer/stats", self.ts_buffer_stats, writer),
            RouteSpec("POST", "/ts/buffer/flush", self.ts_buffer_flush, admin, flush),
            RouteSpec("GET", "/ts/query", self.ts_query, writer),
            RouteSpec("POST", "/vectors/add/buffered", self.vectors_add_buffered, writer, vec),
            RouteSpec(
                "POST", "/vectors/update/buffered", self.vectors_update_buffered, writer, vec
            ),
            RouteSpec(
                "DELETE", "/vectors/remove/buffered", self.vectors_remove_buffered, writer, vec
            ),
            RouteSpec("POST", "/vectors/add", self.vectors_add_direct, writer, vec),
            RouteSpec("GET", "/vectors/buffer/stats", self.vectors_buffer_stats, writer),
            RouteSpec("POST", "/vectors/buffer/flush", self.vectors_buffer_flush, admin, flush),
            RouteSpec("POST", "/vectors/search", self.vectors_search, writer),
            RouteSpec("GET", "/metrics", self.metrics_page, None),
        ]

    # -- the middleware -------------------------------------------------------

    def _authorize(self, request: web.Request, spec: RouteSpec) -> str:
        """The caller id for rate limits; 401 without a known key, 403 for too weak a role."""
        peer = request.remote or "unknown"
        if not self.config.auth_enabled or spec.role is None:
            return f"peer:{peer}"
        key = presented_key(request.headers)
        challenge = {"WWW-Authenticate": 'Bearer realm="themis"'}
        if key is None:
            raise RequestRejected(
                401,
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers=challenge,
            )
        role = self.keyring.role_of(key)
        if role is None:
            raise RequestRejected(401, "unknown API key", headers=challenge)
        if not role.allows(spec.role):
            raise RequestRejected(
                403, f"this endpoint needs role {spec.role.value}; the key has role {role.value}"
            )
        return _caller_id(key)

    def _rate_limit(self, caller: str, spec: RouteSpec) -> None:
        if spec.rate_class is None:
            return
        wait = self.limiter.retry_after(caller, spec.rate_class)
        if wait:
            per_min = limits_from_settings(self.config)[spec.rate_class]
            raise RequestRejected(
                429,
                f"rate limit of {per_min} requests per minute for {spec.rate_class.value} "
                f"reached; retry after {wait} s",
                extra={"retry_after_s": wait},
                headers={"Retry-After": str(wait)},
            )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        spec = self.routes.get((request.method, route))
        status = 500
        self.metrics.in_flight.inc()
        try:
            response = await self._guarded(request, handler, spec)
            status = response.status
            return response
        finally:
            self.metrics.in_flight.dec()
            self.metrics.request_duration.labels(route, request.method, str(status)).observe(
                time.perf_counter() - t0
            )

    async def _guarded(
        self, request: web.Request, handler: Handler, spec: RouteSpec | None
    ) -> web.StreamResponse:
        try:
            if spec is not None:
                caller = self._authorize(request, spec)
                length = request.content_length
                if length is not None and length > self.config.max_body_bytes:
                    raise RequestRejected(
                        413,
                        f"the body is {length} bytes; at most {self.config.max_body_bytes} "
                        "(facade.max_body_bytes)",
                    )
                self._rate_limit(caller, spec)
            return await handler(request)
        except RequestRejected as exc:
            return _error(exc.status, str(exc), exc.extra, exc.headers)
        except web.HTTPRequestEntityTooLarge:
            return _error(
                413,
                f"the body is larger than {self.config.max_body_bytes} bytes "
                "(facade.max_body_bytes)",
            )
        except web.HTTPException as exc:
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
            return _error(exc.status, exc.reason, headers=headers)
        except Exception:
            _LOG.exception("unexpected error on %s %s", request.method, request.path)
            return _error(500, "internal error; see the facade's log")


FACADE_STATE = web.AppKey("themis_facade", Facade)
"""Where the application keeps its :class:`Facade` (for handlers mounted from elsewhere)."""


def mount_routes(app: web.Application, specs: Iterable[RouteSpec]) -> None:
    """Add endpoints (e.g. the replication hook) with the facade's auth, limits and metrics.

    Call before the application starts (the router is frozen then).
    """
    facade = app[FACADE_STATE]
    for spec in specs:
        app.router.add_route(spec.method, spec.path, spec.handler)
        facade.routes[(spec.method, spec.path)] = spec


def create_facade(
    settings: Settings,
    bootstrap: str | None,
    *,
    producer: RecordProducer | None = None,
    partitions: dict[str, int] | None = None,
    extra_routes: Sequence[RouteSpec] = (),
) -> web.Application:
    """The facade as an aiohttp application.

    ``bootstrap`` is the Kafka address (``None`` only with an injected ``producer`` and
    ``partitions``, as tests do). ``extra_routes`` is the hook for endpoints built
    elsewhere, e.g. the replication endpoints of ``pipeline.wal``.
    """
    facade = Facade(settings, bootstrap, producer=producer, partitions=partitions)
    app = web.Application(
        client_max_size=settings.facade.max_body_bytes, middlewares=[facade.middleware]
    )
    app[FACADE_STATE] = facade
    mount_routes(app, facade.builtin_routes())
    # -- hook: replication endpoints (/api/v1/wal/apply, /api/v1/replication/stats,
    # -- /api/v1/replication/config; the latter with Role.ADMIN) are mounted here.
    mount_routes(app, extra_routes)
    app.on_startup.append(facade.start)
    app.on_cleanup.append(facade.stop)  # after in-flight requests finished
    return app
