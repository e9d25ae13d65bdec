"""The worker: the Faust app that runs the ingest stages, its web pages and their client.

``app`` (:func:`create_app`), ``context`` (:class:`WorkerContext`, what the stages and
pages share), ``ts_stage`` and ``vector_stage`` (the two ingest stages), ``pages``
(the web pages), ``client`` (:class:`WorkerClient`, the one client of the pages),
``query`` (series reads and searches over the workers), ``process`` (``themis``
child processes), ``cli`` (``themis worker``, ``ts query``, ``vectors search``).
"""

from pipeline.worker.app import create_app
from pipeline.worker.client import Hit, WorkerClient, run_with_client, worker_urls
from pipeline.worker.context import WorkerApp, WorkerContext
from pipeline.worker.process import ChildProcess, WorkerProcess, themis_command
from pipeline.worker.query import query, query_series, search

__all__ = [
    "ChildProcess",
    "Hit",
    "WorkerApp",
    "WorkerClient",
    "WorkerContext",
    "WorkerProcess",
    "create_app",
    "query",
    "query_series",
    "run_with_client",
    "search",
    "themis_command",
    "worker_urls",
]
