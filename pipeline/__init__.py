"""Themis Pipeline: a Kafka-fed ingestion pipeline for ThemisDB time series and vectors.

Folders follow the data, lowest layer first (docs/architecture.md has the map):
``kafka/`` (transport) -> ``ingest/`` (acks, dead letters, buffer core) -> ``wal/``
(the log of applied mutations) -> ``ts/`` and ``vectors/`` (codecs, buffers, writers,
stores) -> ``replication/`` (shipping the WAL, applying it on replicas) -> ``worker/``
(the Faust worker, its pages and their client) -> ``facade/`` (the HTTP front door)
and ``rag/`` (the ingestion job) -> ``bench/`` and ``demo.py`` -> ``cli.py``
(``themis``) and ``app.py`` (``faust -A pipeline.app worker``). ``errors.py``,
``config.py`` and ``metrics.py`` sit below everything.
"""

from pipeline.config import Settings, load_settings
from pipeline.errors import (
    BrokerError,
    BrokerStartError,
    BrokerUnavailable,
    BufferOverflow,
    ConfigError,
    CorruptBlock,
    EnvironmentProblem,
    InvalidRecord,
    ThemisError,
    TopicError,
)

__all__ = [
    "BrokerError",
    "BrokerStartError",
    "BrokerUnavailable",
    "BufferOverflow",
    "ConfigError",
    "CorruptBlock",
    "EnvironmentProblem",
    "InvalidRecord",
    "Settings",
    "ThemisError",
    "TopicError",
    "load_settings",
]
