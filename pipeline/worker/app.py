"""The worker's Faust app: the ingest stages, their timers and the web pages.

``faust -A pipeline.app worker`` and ``themis worker`` both run the app that
:func:`create_app` builds; settings are passed in, never read here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, cast

from faust.app.base import BootStrategy
from mode import Service

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.ingest.batch_consumer import BatchConsumer
from pipeline.kafka.broker import require_broker
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics
from pipeline.throttle import FailureThrottle
from pipeline.worker.context import WorkerApp, WorkerContext
from pipeline.worker.pages import install_pages
from pipeline.worker.ts_stage import TSStage
from pipeline.worker.vector_stage import VectorStage

__all__ = [
    "DEFAULT_STAGES",
    "Stage",
    "create_app",
    "install_ts_stage",
    "install_vector_stage",
]

_LOG = logging.getLogger(__name__)

Stage = Callable[[WorkerApp, WorkerContext], None]
"""Installs agents, timers and hooks on an app; each ingest path has one."""


class _BatchIngest(Service):
    """Runs one stage's :class:`BatchConsumer` for as long as the worker runs."""

    def __init__(self, consumer: BatchConsumer) -> None:
        super().__init__()
        self.consumer = consumer
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            await self.consumer.run(self._stop)
        except Exception as exc:
            # Nothing past what is durable was committed: a restart resumes from there.
            _LOG.critical("consuming %s failed; the worker stops: %s", self.consumer.group, exc)
            await self.crash(exc)

    async def on_stop(self) -> None:
        # Flush, commit and leave the group before the worker's producer goes away.
        self._stop.set()
        if self._task is not None:
            await self._task


def _run_batch_consumer(app: WorkerApp, context: WorkerContext, consumer: BatchConsumer) -> None:
    app.service(cast(Any, _BatchIngest(consumer)))
    context.consumers.append(consumer)


def install_ts_stage(app: WorkerApp, context: WorkerContext) -> None:
    """The time-series stage, its batch consumer (group ``<app_id>-ts``) and flush timer."""
    stage = TSStage(context.settings, context.metrics, context.producer, context.bootstrap)
    context.ts = stage
    consumer = BatchConsumer(
        stage, bootstrap=context.bootstrap, group=f"{context.settings.worker.app_id}-ts"
    )
    stage.consumer = consumer
    _run_batch_consumer(app, context, consumer)
    interval = max(0.05, min(1.0, context.settings.ts_auto_buffer.flush_interval_ms / 4000))
    app.timer(interval, name="ts-flush-due")(stage.flush_due)


def install_vector_stage(app: WorkerApp, context: WorkerContext) -> None:
    """The vector stage, its batch consumer (group ``<app_id>-vectors``) and its timer."""
    stage = VectorStage(context.settings, context.metrics, context.producer, context.bootstrap)
    context.vectors = stage
    consumer = BatchConsumer(stage, bootstrap=context.bootstrap, group=stage.group)
    stage.consumer = consumer
    _run_batch_consumer(app, context, consumer)
    app.timer(0.1, name="vector-tick")(stage.tick)


DEFAULT_STAGES: tuple[Stage, ...] = (install_ts_stage, install_vector_stage)
"""The ingest stages a worker runs, in order."""


def _refuse_open_pages(settings: Settings) -> None:
    """The pages flush buffers and dump metadata: beyond loopback they need a key."""
    host = settings.worker.web_host
    loopback = host == "localhost" or host.startswith("127.") or host == "::1"
    if not loopback and not settings.worker.page_key:
        raise ConfigError(
            f"worker.web_host is {host!r}, so the worker's pages would answer beyond this "
            "host without a key: set THEMIS_WORKER_PAGE_KEY (and give the facade the same "
            "worker settings), or bind 127.0.0.1"
        )


def create_app(
    settings: Settings,
    *,
    bootstrap_servers: str | None = None,
    stages: Sequence[Stage] = DEFAULT_STAGES,
    faust_streams: bool = False,
) -> WorkerApp:
    """Build a configured worker app.

    ``bootstrap_servers`` defaults to the broker found by the one order of preference
    (settings / environment, then a running local cluster). The stages read Kafka
    through their own batch consumers; ``faust_streams`` also starts Faust's consumer
    and producer, for stages that install Faust agents.
    """
    _refuse_open_pages(settings)
    bootstrap = bootstrap_servers or require_broker(settings).bootstrap_servers
    data_dir = settings.worker.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
        settings.worker.app_id,
        broker=f"kafka://{bootstrap}",
        autodiscover=False,
        datadir=str(data_dir / "faust"),
        store="memory://",
        web_host=settings.worker.web_host,
        web_bind=settings.worker.web_host,
        web_port=settings.worker.web_port,
        producer_acks=-1,
        broker_commit_every=10_000,
        broker_commit_interval=timedelta(seconds=1.0),
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        stream_wait_empty=False,
    )
    if faust_streams:
        app.boot_strategy = BootStrategy(app, enable_kafka=True, enable_web=True)
    app.context = WorkerContext(
        settings=settings,
        bootstrap=bootstrap,
        metrics=PipelineMetrics(),
        producer=AsyncProducer(bootstrap),
        page_failures=FailureThrottle(settings.worker.page_auth_failures_per_min),
    )
    for install in stages:
        install(app, app.context)
    install_pages(app)
    return app
