"""The broker's order of preference with a real container engine: podman's Docker API.

``provide_broker`` takes ``KAFKA_BOOTSTRAP_SERVERS`` when given, else a Kafka container
where an engine answers, else the local JVM (the suite's own broker is the last, or the
first, never the container: ``DOCKER_HOST`` is only given to the processes here). The
container runs Kafka from the local broker's jars (deploy/container/kafka/), started the
way the apache/kafka image is, because no registry serves apache/kafka here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.config import load_settings
from pipeline.kafka.broker import BrokerHandle, provide_broker
from pipeline.kafka.docker_broker import docker_engine_answers
from tests.fixtures.support import REPO

pytestmark = pytest.mark.e2e

# A user's process: the settings from the environment, a broker by the order of
# preference, one record produced to a new topic and consumed back through it.
PROVIDE_AND_ROUND_TRIP = """
import json, sys, uuid
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pipeline.config import load_settings
from pipeline.kafka.broker import provide_broker

with provide_broker(load_settings(), local_name="container-path-test") as handle:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": handle.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": handle.bootstrap_servers, "acks": "all"})
    producer.produce(topic, key=b"k", value=b"through the container")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": handle.bootstrap_servers,
                         "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    record = None
    for _ in range(60):
        record = consumer.poll(1.0)
        if record is not None and record.error() is None:
            break
    consumer.close()
    json.dump({"source": handle.source, "bootstrap": handle.bootstrap_servers,
               "startup_seconds": handle.startup_seconds,
               "record": [record.key().decode(), record.value().decode()]}, sys.stdout)
"""


def user_env(docker_host: str, **extra: str) -> dict[str, str]:
    """This environment without Themis or broker settings, with an engine at ``docker_host``.

    Ryuk (testcontainers' reaper) is off: its image comes from a registry too; the
    container is stopped by ``provide_broker`` itself. The engine's ports are on this
    host (``docker_host`` mode): testcontainers would otherwise take a ``/.dockerenv``
    here for Docker-in-Docker and ask for the container's gateway, which podman's
    container list does not give.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("THEMIS_", "KAFKA_", "DOCKER_", "TESTCONTAINERS_"))
    }
    env.update(
        DOCKER_HOST=docker_host,
        TESTCONTAINERS_RYUK_DISABLED="true",
        TESTCONTAINERS_CONNECTION_MODE="docker_host",
        THEMIS_CONFIG=os.devnull,
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


def test_provider_runs_kafka_in_the_container_engine_when_no_bootstrap_address_is_given(
    kafka_image: str, docker_api_socket: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROVIDE_AND_ROUND_TRIP],
        env=user_env(docker_api_socket, THEMIS_KAFKA_CONTAINER_IMAGE=kafka_image),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    print(f"container broker at {result['bootstrap']} in {result['startup_seconds']} s")
    assert result["source"] == "docker"
    assert result["record"] == ["k", "through the container"]


def test_bootstrap_servers_win_over_a_container_engine_that_answers(
    kafka_broker: BrokerHandle, docker_api_socket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_api_socket)
    assert docker_engine_answers()
    settings = load_settings(
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers, "THEMIS_CONFIG": os.devnull}
    )
    with provide_broker(settings, local_name="never-started") as handle:
        assert (handle.source, handle.bootstrap_servers) == (
            "environment",
            kafka_broker.bootstrap_servers,
        )
