"""The HTTP ingest facade: :func:`create_facade` wires it, :class:`Facade` holds its state.

The facade holds no buffer of its own. A buffered write is validated, produced to the
points or operations topic (``acks=all``, idempotent) and answered; the workers hold
the auto buffers and flush them. Single points are sent together with the others
accepted close in time (:class:`~pipeline.facade.deliveries.PointFramer`). Stats,
flushes, buffered-point reads and searches are asked of the workers' web pages through
one :class:`~pipeline.worker.client.WorkerClient` (``facade.worker_urls``).

What a 200 means (``facade.response_mode``, per request ``X-Themis-Response-Mode``)
    ``acked``: the broker acknowledged the record (``acks=all``): it survives a crash
    of the facade and of the worker; no acknowledgement within ``facade.write_deadline_s``
    is a 503 with ``Retry-After`` (as for direct and batch writes). ``queued``: the
    record is in this process's producer queue (a single point first waits up to 20 ms
    for others to share its record); a clean shutdown (SIGTERM) still delivers it, a
    crash may lose it.

``buffer_size`` (in buffered answers)
    Points (or vector operations) this facade accepted that the broker has not yet
    acknowledged, plus the workers' ``current_buffer_size`` as last reported. The
    workers are polled in the background every :data:`WORKER_REFRESH_S` seconds, so
    that part may be up to that old.

The routes live in :mod:`~pipeline.facade.ts_routes`, :mod:`~pipeline.facade.vector_routes`
and :mod:`~pipeline.facade.replication_routes`; every one passes through
:class:`~pipeline.facade.middleware.RequestGuard` (auth, limits, metrics, errors).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.config import Settings
from pipeline.errors import (
    BufferOverflow,
    ConfigError,
    InvalidRequest,
    ServiceUnavailable,
    ThemisError,
)
from pipeline.facade.binary_server import BinaryServer
from pipeline.facade.connections import handler_args
from pipeline.facade.deliveries import InFlight, PointFramer
from pipeline.facade.line_protocol_routes import LineProtocolRoutes
from pipeline.facade.middleware import FacadeMetrics, RequestGuard, RouteSpec
from pipeline.facade.prometheus_routes import PrometheusRoutes
from pipeline.facade.ts_routes import TimeSeriesRoutes
from pipeline.facade.vector_routes import VectorRoutes
from pipeline.kafka.clients import AdminClient
from pipeline.kafka.producer import AsyncProducer, RecordProducer, key_partition
from pipeline.ts.writer import BlockWriter
from pipeline.wal.writer import WalWriter
from pipeline.worker.client import WorkerClient

__all__ = [
    "BINARY_SERVER",
    "FACADE_STATE",
    "PRODUCER_COMPRESSION",
    "PRODUCER_LINGER_MS",
    "RESPONSE_MODE_HEADER",
    "WORKER_REFRESH_S",
    "WORKER_TIMEOUT_S",
    "Facade",
    "create_facade",
    "mount_routes",
]

_LOG = logging.getLogger(__name__)

WORKER_REFRESH_S: Final = 0.5
"""How often the workers' buffer sizes are polled for ``buffer_size`` and overflow checks."""
WORKER_TIMEOUT_S: Final = 10.0
"""Timeout of one request to a worker (seconds); flushes may take this long."""
RESPONSE_MODE_HEADER: Final = "X-Themis-Response-Mode"
PRODUCER_LINGER_MS: Final = 0
"""The facade producer's ``linger.ms``. Single points are batched before they reach the
producer (:class:`~pipeline.facade.deliveries.PointFramer`), and an ``acked`` answer
waits for any linger: on this project's machines a 6-partition flush took 1.3 ms to be
acknowledged with 0, 4.3 ms with 1 and 8.3 ms with 5 (the workers' producers keep 5)."""
PRODUCER_COMPRESSION: Final = "none"
"""The facade producer's ``compression.type`` (the workers' producers keep lz4). Its
records are TSF1 frames and JSON points on the loopback or a LAN; compressing them cost
librdkafka's broker thread 167-233 µs of a 1,000-point batch request against 100 µs
without, and the broker decompresses each batch again to check it."""


class Facade:
    """State and lifecycle of one facade process: producer, worker client, what is in flight.

    ``bootstrap`` is the Kafka address; an injected ``producer`` and ``partitions``
    (partition count per topic) replace the real ones, as tests do.
    """

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
        self.metrics = FacadeMetrics()
        self.guard = RequestGuard(self.config, self.metrics)
        self.workers = WorkerClient.from_settings(settings, timeout_s=WORKER_TIMEOUT_S)
        self.points_topic = settings.topic("ts.points")
        self.ops_topic = settings.topic("vectors.ops")
        self.blocks_topic = settings.topic("ts.blocks")
        self._producer = producer
        self._owns_producer = producer is None
        self._block_writer: BlockWriter | None = None
        self._partitions = dict(partitions or {})
        self._refresher: asyncio.Task[None] | None = None
        self.in_flight = InFlight()
        """Points, operations and requests accepted that the broker has not acknowledged."""
        self.metrics.count_unacked(lambda: self.in_flight.points)
        self.points = PointFramer(
            lambda: self.producer,
            self.points_topic,
            lambda: self.partitions(self.points_topic),
            self.in_flight,
        )
        """Where single buffered points go: framed per turn of the event loop."""
        self.worker_ts_sizes: dict[str, int] = {}
        """Per worker URL: its TS ``current_buffer_size`` as last polled."""
        self.worker_vec_sizes: dict[str, int] = {}
        """Per worker URL: its vector ``current_buffer_size`` as last polled."""
        # Their sums and largest, worked out once a poll rather than once a request.
        self.worker_ts_total = self.worker_ts_peak = 0
        self.worker_vec_total = self.worker_vec_peak = 0
        self.extra_registries: list[CollectorRegistry] = []
        """More registries served at ``/metrics`` (the WAL shipper's, when one runs)."""

    # -- lifecycle ------------------------------------------------------------

    @property
    def producer(self) -> RecordProducer:
        """The producer all records go through (``acks=all``); 503 before :meth:`start`."""
        if self._producer is None:
            raise ServiceUnavailable("the facade is not started")
        return self._producer

    @property
    def block_writer(self) -> BlockWriter:
        """Writes blocks plus their WAL entries (``POST /ts/put``)."""
        if self._block_writer is None:
            producer = self.producer
            wal_topic = self.settings.topic("wal")
            wal = WalWriter(producer, wal_topic, partitions=self._partitions.get(wal_topic))
            self._block_writer = BlockWriter(
                producer, self.blocks_topic, wal, lambda: self.partitions(self.blocks_topic)
            )
        return self._block_writer

    async def start(self, app: web.Application) -> None:
        """Create the producer, learn partition counts, start polling the workers."""
        if self._producer is None and not self.bootstrap:
            raise ConfigError("the facade needs a Kafka bootstrap address")
        missing = [t for t in (self.points_topic, self.ops_topic) if t not in self._partitions]
        if self.bootstrap:  # direct writes: blocks and their WAL entries
            missing += [
                t
                for t in (self.blocks_topic, self.settings.topic("wal"))
                if t not in self._partitions
            ]
        if missing:  # before the producer exists: a start refused here leaves nothing open
            self._partitions.update(await asyncio.to_thread(self._topic_partitions, missing))
        if self._producer is None:
            assert self.bootstrap
            self._producer = AsyncProducer(
                self.bootstrap,
                **{"linger.ms": PRODUCER_LINGER_MS, "compression.type": PRODUCER_COMPRESSION},
            )
        self._refresher = asyncio.create_task(self._refresh_worker_sizes())

    def _topic_partitions(self, topics: list[str]) -> dict[str, int]:
        assert self.bootstrap
        with AdminClient({"bootstrap.servers": self.bootstrap}) as admin:
            metadata = admin.list_topics(timeout=10)
        found: dict[str, int] = {}
        for topic in topics:
            described = metadata.topics.get(topic)
            if described is None or not described.partitions:
                if topic == self.settings.topic("wal"):
                    continue  # WalWriter's default: partition 0, created when first written
                raise ConfigError(f"topic {topic} does not exist; run `themis topics apply`")
            found[topic] = len(described.partitions)
        return found

    async def stop(self, app: web.Application) -> None:
        """Stop polling workers, deliver everything accepted, close the producer."""
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        await self.workers.close()
        if self._producer is not None:
            self.points.flush()
            await asyncio.to_thread(self._producer.flush, 60.0)
            await self.in_flight.drain(10.0)
            if self._owns_producer:
                await asyncio.to_thread(self._producer.close)

    async def _refresh_worker_sizes(self) -> None:
        while True:
            for url, (ts, vec) in (await self.workers.buffer_sizes()).items():
                if ts is not None:
                    self.worker_ts_sizes[url] = ts
                if vec is not None:
                    self.worker_vec_sizes[url] = vec
            ts_sizes, vec_sizes = self.worker_ts_sizes.values(), self.worker_vec_sizes.values()
            self.worker_ts_total, self.worker_ts_peak = sum(ts_sizes), max(ts_sizes, default=0)
            self.worker_vec_total, self.worker_vec_peak = sum(vec_sizes), max(vec_sizes, default=0)
            await asyncio.sleep(WORKER_REFRESH_S)

    # -- producing ------------------------------------------------------------

    def partitions(self, topic: str) -> int:
        """The partition count of ``topic`` (the points, operations or blocks topic; the
        blocks topic has the points topic's count where it was not asked for)."""
        if topic == self.blocks_topic and topic not in self._partitions:
            topic = self.points_topic
        return self._partitions[topic]

    def produce_keyed(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        """One record to the partition of ``key`` (as the consistent partitioner puts it)."""
        partition = key_partition(key, self.partitions(topic))
        return self.producer.produce(topic, value, key=key, partition=partition)

    @property
    def unacked_points(self) -> int:
        """Points and vector operations accepted that the broker has not acknowledged."""
        return self.in_flight.points

    def track(self, futures: Sequence[asyncio.Future[Any]], points: int) -> asyncio.Future[None]:
        """Count ``points`` as unacknowledged until every future resolved; their union."""
        return self.in_flight.deliver(futures, points)

    def acked_mode(self, request: web.Request) -> bool:
        """Whether the request waits for the broker (``acked``) or not (``queued``)."""
        mode = request.headers.get(RESPONSE_MODE_HEADER, self.config.response_mode)
        if mode not in ("acked", "queued"):
            raise InvalidRequest(
                f"header {RESPONSE_MODE_HEADER}: {mode!r} is not allowed; use acked or queued"
            )
        return mode == "acked"

    async def durable(self, delivery: asyncio.Future[None]) -> None:
        """Wait for the broker's acknowledgement, at most ``facade.write_deadline_s``.

        A failed delivery, or none by the deadline, is a 503 with ``Retry-After``. After
        the deadline the records stay queued and may still be stored: a retry writes
        the same points or operations again, which stores nothing twice (the same
        timestamp of a series, the same pk, last write wins).
        """
        deadline_s = self.config.write_deadline_s
        if not delivery.done():
            # One waiter and one timer, not asyncio.timeout and shield: this is on the
            # path of every acked write. ``delivery`` (shared by a flush) is never cancelled.
            waiter = asyncio.get_running_loop().create_future()

            def wake(_: object = None) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            delivery.add_done_callback(wake)
            timer = asyncio.get_running_loop().call_later(deadline_s, wake)
            try:
                await waiter
            finally:
                timer.cancel()
                if not delivery.done():
                    delivery.remove_done_callback(wake)
        retry = {"Retry-After": str(max(1, math.ceil(deadline_s)))}
        if not delivery.done():
            raise ServiceUnavailable(
                f"the broker did not acknowledge the write within {deadline_s:g} s "
                "(facade.write_deadline_s); it may still be stored; retrying is safe",
                headers=retry,
            )
        exc = None if delivery.cancelled() else delivery.exception()
        if delivery.cancelled() or isinstance(exc, ThemisError):
            raise ServiceUnavailable(
                f"the broker did not acknowledge the write; retry: {exc or 'cancelled'}",
                headers=retry,
            )
        if exc is not None:
            raise exc

    async def drain_pending(self) -> None:
        """Wait until the broker acknowledged everything accepted so far (bounded)."""
        self.points.flush()
        await self.in_flight.drain(WORKER_TIMEOUT_S)

    # -- room and features ----------------------------------------------------

    def ts_buffer_size(self) -> int:
        """Points not yet acknowledged here plus the workers' TS buffers (points)."""
        return self.in_flight.points + self.worker_ts_total

    def vector_buffer_size(self) -> int:
        """Operations not yet acknowledged here plus the workers' vector buffers."""
        return self.in_flight.points + self.worker_vec_total

    def check_room(self, worker_peak: int, cap: int, size: Callable[[], int]) -> None:
        """429 when too much is in flight or a worker reports its hard buffer cap
        (``worker_peak``: the largest buffer a worker reported); ``size()`` is the
        ``buffer_size`` the answer carries."""
        if self.in_flight.requests >= self.config.max_in_flight or worker_peak >= cap:
            raise BufferOverflow("Buffer overflow", buffer_size=size())

    @staticmethod
    def require_feature(enabled: bool, name: str, direct: str) -> None:
        """503 on a buffered endpoint whose feature ``name`` is off; names the ``direct`` one."""
        if not enabled:
            raise ServiceUnavailable(
                f"{name} is disabled on this server (features.{name}.enabled = false); "
                f"use the direct endpoint {direct} instead"
            )

    # -- metrics --------------------------------------------------------------

    async def metrics_page(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the facade's registry and :attr:`extra_registries`."""
        body = b"".join(generate_latest(r) for r in [self.metrics.registry, *self.extra_registries])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


FACADE_STATE = web.AppKey("themis_facade", Facade)
"""Where the application keeps its :class:`Facade` (for handlers mounted from elsewhere)."""
BINARY_SERVER = web.AppKey("themis_binary_server", BinaryServer)
"""The application's binary protocol server, when ``facade.binary_port`` is set."""


def mount_routes(app: web.Application, specs: Iterable[RouteSpec]) -> None:
    """Add endpoints with the facade's auth, limits and metrics.

    Call before the application starts (the router is frozen then).
    """
    guard = app[FACADE_STATE].guard
    for spec in specs:
        guard.mount(app.router.add_route(spec.method, spec.path, spec.handler), spec)


def create_facade(
    settings: Settings,
    bootstrap: str | None,
    *,
    producer: RecordProducer | None = None,
    partitions: dict[str, int] | None = None,
    extra_routes: Sequence[RouteSpec] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> web.Application:
    """The facade as an aiohttp application.

    ``bootstrap`` is the Kafka address (``None`` only with an injected ``producer`` and
    ``partitions``, as tests do). ``extra_routes`` are endpoints built elsewhere
    (:func:`~pipeline.facade.replication_routes.replication_routes`). ``ssl_context``
    is the HTTP side's TLS, which the binary door serves too (client certificates
    included).
    """
    facade = Facade(settings, bootstrap, producer=producer, partitions=partitions)
    app = web.Application(
        client_max_size=settings.facade.max_body_bytes,
        middlewares=[facade.guard.middleware],
        handler_args=handler_args(settings.facade),
    )
    app[FACADE_STATE] = facade
    ts_routes = TimeSeriesRoutes(facade)
    mount_routes(app, ts_routes.routes())
    mount_routes(app, LineProtocolRoutes(ts_routes).routes())
    mount_routes(app, PrometheusRoutes(ts_routes).routes())
    mount_routes(app, VectorRoutes(facade).routes())
    mount_routes(app, [RouteSpec("GET", "/metrics", facade.metrics_page, None)])
    mount_routes(app, extra_routes)
    app.on_startup.append(facade.start)
    if settings.facade.binary_port:
        binary = BinaryServer(facade, ssl_context=ssl_context)
        app[BINARY_SERVER] = binary
        app.on_startup.append(binary.start)
        app.on_cleanup.append(binary.stop)  # GOAWAY, before the producer is flushed
    app.on_cleanup.append(facade.stop)  # after in-flight requests finished
    return app
