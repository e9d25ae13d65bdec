"""The Faust app of the pipeline.

``faust -A pipeline.app worker`` and ``themis worker`` both run it. Settings are read
when the app is first asked for (module attribute ``app``), never at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline.config import Settings, load_settings
from pipeline.kafka.broker import require_broker
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics

_LOG = logging.getLogger(__name__)

AppComponent = Callable[[faust.App, Settings], None]
"""Installs agents, timers and pages on an app; each pipeline path provides one."""


def default_components() -> list[AppComponent]:
    """The pipeline paths a worker runs, in order."""
    from pipeline.ts.agent import install_ts_path
    from pipeline.vectors.agent import install_vector_path

    return [install_ts_path, install_vector_path]


def _install_metrics_page(app: faust.App, metrics: PipelineMetrics) -> None:
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            # aiohttp wants the charset apart from the media type.
            return self.bytes(metrics.exposition(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    app.page("/metrics")(MetricsView)


def create_app(
    settings: Settings | None = None,
    *,
    bootstrap_servers: str | None = None,
    components: list[AppComponent] | None = None,
) -> faust.App:
    """Build a configured Faust app.

    ``bootstrap_servers`` defaults to the broker found by the one order of preference
    (settings / environment, then a running local cluster).
    """
    settings = settings or load_settings()
    bootstrap = bootstrap_servers or require_broker(settings).bootstrap_servers
    data_dir = settings.worker.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
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
    metrics = PipelineMetrics()
    app.themis_settings = settings  # type: ignore[attr-defined]
    app.themis_metrics = metrics  # type: ignore[attr-defined]
    app.themis_producer = AsyncProducer(bootstrap)  # type: ignore[attr-defined]
    app.themis_bootstrap = bootstrap  # type: ignore[attr-defined]
    _install_metrics_page(app, metrics)
    for install in components if components is not None else default_components():
        install(app, settings)
    return app


_app: faust.App | None = None


def __getattr__(name: str) -> faust.App:
    """Module attribute ``app``: created on first access so importing reads no settings."""
    global _app  # noqa: PLW0603 - the one lazily created app of `faust -A pipeline.app`
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = create_app()
    return _app
