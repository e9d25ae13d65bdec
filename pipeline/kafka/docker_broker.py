"""Kafka in a Docker container through testcontainers, where a Docker engine answers.

testcontainers is an optional dependency (the ``test`` extra); without it, or
without an engine, :func:`docker_engine_answers` is False and callers fall back
to the local JVM broker.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

KAFKA_IMAGE = "apache/kafka:4.1.1"


def docker_engine_answers(timeout_s: float = 2.0) -> bool:
    """True when testcontainers is installed and a Docker engine answers a ping."""
    if importlib.util.find_spec("testcontainers") is None:
        return False
    try:
        import docker

        client: Any = docker.from_env(timeout=int(max(1, timeout_s)))
        client.ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def docker_kafka() -> Iterator[str]:
    """A Kafka container for the duration of the block; yields its bootstrap address."""
    from testcontainers.kafka import KafkaContainer

    container: Any = KafkaContainer(KAFKA_IMAGE).with_kraft()
    container.start()
    try:
        yield str(container.get_bootstrap_server())
    finally:
        container.stop()
