"""One order of preference for finding a broker, used by CLI, tests and benchmarks.

1. ``KAFKA_BOOTSTRAP_SERVERS`` (or ``kafka.bootstrap_servers`` in settings),
2. a Docker engine that answers (testcontainers' Kafka module),
3. the local JVM broker (:class:`pipeline.kafka.local_broker.LocalKafka`).

Long-lived commands (``themis worker``, ``themis topics apply``) also reuse a
local cluster that ``themis kafka up`` already started.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.config import Settings
from pipeline.errors import BrokerUnavailable
from pipeline.kafka.docker_broker import docker_engine_answers, docker_kafka
from pipeline.kafka.local_broker import LocalKafka, metadata_answers


@dataclass(frozen=True)
class BrokerHandle:
    """A broker to talk to and where it came from (environment, local, docker)."""

    bootstrap_servers: str
    source: str
    startup_seconds: float = 0.0


def running_broker(settings: Settings) -> BrokerHandle | None:
    """The broker given in settings, or the running local cluster; ``None`` if neither."""
    if settings.kafka.bootstrap_servers:
        return BrokerHandle(settings.kafka.bootstrap_servers, "environment")
    record = LocalKafka(settings.kafka.cluster).status()
    if record is not None:
        return BrokerHandle(record.bootstrap_servers, "local")
    return None


def require_broker(settings: Settings, *, wait_s: float = 10.0) -> BrokerHandle:
    """The broker a CLI command should use; raises with advice when there is none."""
    handle = running_broker(settings)
    if handle is None:
        raise BrokerUnavailable(
            f"no Kafka broker: run `themis kafka up --name {settings.kafka.cluster}` "
            "or set KAFKA_BOOTSTRAP_SERVERS=host:port"
        )
    deadline = time.monotonic() + wait_s
    while not metadata_answers(handle.bootstrap_servers):
        if time.monotonic() > deadline:
            raise BrokerUnavailable(
                f"the broker at {handle.bootstrap_servers} ({handle.source}) does not answer; "
                "check it is running (`themis kafka status`)"
            )
        time.sleep(0.2)
    return handle


@contextlib.contextmanager
def provide_broker(settings: Settings, *, local_name: str) -> Iterator[BrokerHandle]:
    """A broker for the duration of the block, by the one order of preference.

    A broker this function starts (container or local JVM named ``local_name``) is
    stopped when the block ends; a given one is left alone.
    """
    if settings.kafka.bootstrap_servers:
        yield require_broker(settings)
        return
    if docker_engine_answers():
        t0 = time.monotonic()
        with docker_kafka(settings.kafka.container_image) as bootstrap:
            yield BrokerHandle(bootstrap, "docker", round(time.monotonic() - t0, 3))
        return
    local = LocalKafka(local_name)
    try:
        record = local.up()
        yield BrokerHandle(record.bootstrap_servers, "local", record.startup_seconds)
    finally:
        local.down()
