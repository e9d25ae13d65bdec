"""The worker's Faust app: the ingest stages, their timers and the web pages.

``faust -A pipeline.app worker`` and ``themis worker`` both run the app that
:func:`create_app` builds; settings are passed in, never read here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from pipeline.config import Settings
from pipeline.kafka.broker import require_broker
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics
from pipeline.worker.context import WorkerApp, WorkerContext
from pipeline.worker.pages import install_pages
from pipeline.worker.ts_stage import install_ts_stage
from pipeline.worker.vector_stage import install_vector_stage

__all__ = ["DEFAULT_STAGES", "Stage", "create_app"]

Stage = Callable[[WorkerApp, WorkerContext], None]
"""Installs agents, timers and hooks on an app; each ingest path provides one."""

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
