"""Themis Pipeline: a Kafka-fed ingestion pipeline for ThemisDB time series and vectors.

Folders follow the data: ``kafka/`` (broker, topics), ``ts/`` (points -> Gorilla
blocks), ``app.py`` and ``worker.py`` (the Faust worker), ``cli.py`` (``themis``).
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
