"""The Faust entry point: ``faust -A pipeline.app worker`` runs the worker's app.

The module attribute ``app`` is built on first access, from the settings of the
environment (this is the one place outside ``themis`` that reads them), so importing
this module reads nothing. ``themis worker`` builds the same app from the settings
it loaded (:mod:`pipeline.worker.cli`).
"""

from __future__ import annotations

from pipeline.config import load_settings
from pipeline.worker.app import create_app
from pipeline.worker.context import WorkerApp

__all__ = ["create_app"]

_app: WorkerApp | None = None


def __getattr__(name: str) -> WorkerApp:
    """Module attribute ``app``: created on first access so importing reads no settings."""
    global _app  # noqa: PLW0603 - the one lazily created app of `faust -A pipeline.app`
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = create_app(load_settings())
    return _app
