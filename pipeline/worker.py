"""``themis worker``: make sure the broker and topics are there, then run the Faust worker."""

from __future__ import annotations

from typing import NoReturn

from faust import Worker

from pipeline.app import create_app
from pipeline.config import load_settings
from pipeline.kafka.broker import require_broker
from pipeline.kafka.topics import apply_topics


def run_worker(*, loglevel: str = "warning") -> NoReturn:
    """Apply topic specs, then run the worker until SIGTERM / SIGINT, then exit."""
    settings = load_settings()
    broker = require_broker(settings)
    apply_topics(broker.bootstrap_servers, settings)
    app = create_app(settings, bootstrap_servers=broker.bootstrap_servers)
    worker = Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
