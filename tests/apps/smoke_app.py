"""A Faust app for the smoke test: one agent that records each value it consumes.

It consumes ``<namespace>.ts.points`` with explicit acks and appends every value to
``<data_dir>/seen.txt`` before acking it.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import load_settings
from pipeline.worker.app import create_app
from pipeline.worker.context import WorkerApp, WorkerContext


def _install_recorder(app: WorkerApp, context: WorkerContext) -> None:
    settings = context.settings
    topic = app.topic(settings.topic("ts.points"), value_serializer="raw", key_serializer="raw")
    seen = settings.worker.data_dir / "seen.txt"

    async def record(stream: Any) -> None:
        async for event in stream.noack().events():
            with seen.open("ab") as out:
                out.write(event.value + b"\n")
            await stream.ack(event)

    app.agent(topic, name="smoke-recorder")(record)


# The Faust entry point of this test app reads the settings, as pipeline.app does.
app = create_app(load_settings(), stages=[_install_recorder], faust_streams=True)
