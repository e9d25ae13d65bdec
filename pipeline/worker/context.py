"""What one worker process holds: settings, producer, metrics and its ingest stages.

The Faust app of a worker is a :class:`WorkerApp`; its :attr:`WorkerApp.context` is
the typed :class:`WorkerContext` that the stages and the web pages share.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.app.base import BootStrategy

from pipeline.config import Settings
from pipeline.ingest.batch_consumer import BatchConsumer
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics
from pipeline.throttle import FailureThrottle
from pipeline.worker.ts_stage import TSStage
from pipeline.worker.vector_stage import VectorStage

__all__ = ["WorkerApp", "WorkerContext", "context_of"]


@dataclass
class WorkerContext:
    """Shared state of one worker; each stage sets its own field when installed."""

    settings: Settings
    bootstrap: str
    metrics: PipelineMetrics
    producer: AsyncProducer
    page_failures: FailureThrottle
    """Wrong page keys per client address (``worker.page_auth_failures_per_min``)."""
    ts: TSStage | None = None
    vectors: VectorStage | None = None
    consumers: list[BatchConsumer] = field(default_factory=list)
    """The stages' batch consumers, started and stopped with the worker."""

    def require_ts(self) -> TSStage:
        """The time-series stage; a worker built without it has no such pages."""
        if self.ts is None:
            raise LookupError("this worker runs no time-series stage")
        return self.ts

    def require_vectors(self) -> VectorStage:
        """The vector stage; a worker built without it has no such pages."""
        if self.vectors is None:
            raise LookupError("this worker runs no vector stage")
        return self.vectors


class _Boot(BootStrategy):
    """Faust runs the web pages, timers and services; the stages' batch consumers read
    Kafka, so Faust's own consumer and producer stay off."""

    enable_kafka = False
    enable_web = True


class WorkerApp(faust.App):
    """A Faust app that carries the worker's :class:`WorkerContext`."""

    BootStrategy = _Boot
    context: WorkerContext

    async def on_shutdown(self) -> None:
        """Close the producer and the block stores, after the ingest services (children)
        flushed and stopped."""
        await super().on_shutdown()
        await asyncio.to_thread(self.context.producer.close)
        if self.context.ts is not None:
            await asyncio.to_thread(self.context.ts.close)


def context_of(app: Any) -> WorkerContext:
    """The context of the worker app ``app`` (a page's ``self.app``)."""
    assert isinstance(app, WorkerApp), "worker pages are served by a WorkerApp"
    return app.context
