"""The worker's Faust app: the ingest stages, their timers and the web pages.

``faust -A pipeline.app worker`` and ``themis worker`` both run the app that
:func:`create_app` builds; settings are passed in, never read here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from faust import Stream
from faust.types import StreamT

from pipeline.config import Settings
from pipeline.ingest.buffer_core import FlushReason
from pipeline.kafka.broker import require_broker
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics
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

Stage = Callable[[WorkerApp, WorkerContext], None]
"""Installs agents, timers and hooks on an app; each ingest path has one."""


def install_ts_stage(app: WorkerApp, context: WorkerContext) -> None:
    """Install the time-series agent, its flush timer and its revoke hook on ``app``."""
    stage = TSStage(context.settings, context.metrics, context.producer)
    context.ts = stage
    topic = app.topic(stage.points_topic, key_serializer="raw", value_serializer="raw")

    async def ingest(stream: StreamT[Any]) -> None:
        assert isinstance(stream, Stream)
        async for event in stream.noack().events():
            await stage.on_event(event, stream)

    app.agent(topic, name="ts-points")(ingest)

    interval = max(0.05, min(1.0, context.settings.ts_auto_buffer.flush_interval_ms / 4000))
    app.timer(interval, name="ts-flush-due")(stage.flush_due)

    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> Awaitable[None]:
        # Everything buffered becomes durable before the partitions move on.
        return stage.flush(FlushReason.REVOKE)

    app.on_partitions_revoked.connect(on_revoked)


def install_vector_stage(app: WorkerApp, context: WorkerContext) -> None:
    """Install the vector agent, its timer and its rebalance hooks on ``app``."""
    stage = VectorStage(context.settings, context.metrics, context.producer, context.bootstrap)
    context.vectors = stage
    topic = app.topic(stage.topic, key_serializer="raw", value_serializer="raw")

    async def ingest(stream: StreamT[Any]) -> None:
        assert isinstance(stream, Stream)
        async for event in stream.noack().events():
            await stage.on_event(event, stream)

    app.agent(topic, name="vector-ops")(ingest)
    app.timer(0.1, name="vector-tick")(stage.tick)

    def ours(tps: Any) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == stage.topic}

    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = kwargs.get("assigned", args[0] if args else set())
        await stage.on_assigned(ours(assigned))

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = kwargs.get("revoked", args[0] if args else set())
        await stage.on_revoked(ours(revoked))

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)


DEFAULT_STAGES: tuple[Stage, ...] = (install_ts_stage, install_vector_stage)
"""The ingest stages a worker runs, in order."""


def create_app(
    settings: Settings,
    *,
    bootstrap_servers: str | None = None,
    stages: Sequence[Stage] = DEFAULT_STAGES,
) -> WorkerApp:
    """Build a configured worker app.

    ``bootstrap_servers`` defaults to the broker found by the one order of preference
    (settings / environment, then a running local cluster).
    """
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
    app.context = WorkerContext(
        settings=settings,
        bootstrap=bootstrap,
        metrics=PipelineMetrics(),
        producer=AsyncProducer(bootstrap),
    )
    for install in stages:
        install(app, app.context)
    install_pages(app)
    return app
