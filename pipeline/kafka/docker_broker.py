"""Kafka in a container through testcontainers, where a Docker-API engine answers.

The image is ``apache/kafka`` (``kafka.container_image``), or any image started the
same way: its ``/etc/kafka/docker/run`` reads each ``KAFKA_<NAME>`` variable as the
server property ``<name>`` and formats the storage with ``CLUSTER_ID``
(``deploy/container/kafka/`` builds such an image from the local broker's jars, for
engines that reach no registry). testcontainers' own ``KafkaContainer`` is not used: it
drives Confluent's images only.

The broker must advertise the host port the engine mapped, which is known only once
the container runs; so the container waits for a start script, written into it after
``start()`` (what testcontainers' Kafka modules do too), and the broker is ready when it
answers a metadata request.

testcontainers is an optional dependency (the ``test`` extra); without it, or without
an engine (``DOCKER_HOST``, else the default socket), :func:`docker_engine_answers` is
False and callers fall back to the local JVM broker.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import tarfile
import time
from collections.abc import Iterator
from typing import Any

from pipeline.errors import BrokerStartError
from pipeline.kafka.local_broker import SINGLE_NODE_PROPERTIES, metadata_answers

KAFKA_IMAGE = "apache/kafka:4.1.1"
"""The default of ``kafka.container_image``: the same Kafka as the local broker's jars."""

_CLIENT_PORT = 9092
_START_SCRIPT = "/tmp/themis-start.sh"  # noqa: S108 (a path inside the container)


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


def container_environment() -> dict[str, str]:
    """The ``KAFKA_*`` variables of a one-node KRaft broker and controller.

    ``PLAINTEXT`` (9092) is for clients on the host, ``BROKER`` (9093) between the
    broker and itself, ``CONTROLLER`` (9094) for KRaft; the start script adds
    ``KAFKA_ADVERTISED_LISTENERS``.
    """
    properties = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "listeners": f"PLAINTEXT://0.0.0.0:{_CLIENT_PORT},BROKER://0.0.0.0:9093,"
        "CONTROLLER://0.0.0.0:9094",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,"
        "CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "BROKER",
        "controller.listener.names": "CONTROLLER",
        "controller.quorum.voters": "1@localhost:9094",
        **SINGLE_NODE_PROPERTIES,
    }
    # The image's reading of the names: '.' is '_' (no property here has '_' or '-').
    return {"KAFKA_" + name.upper().replace(".", "_"): value for name, value in properties.items()}


@contextlib.contextmanager
def docker_kafka(image: str = KAFKA_IMAGE, *, timeout_s: float = 90.0) -> Iterator[str]:
    """A Kafka container of ``image`` for the duration of the block; yields its bootstrap.

    Raises :class:`~pipeline.errors.BrokerStartError` (with the container's log tail)
    when the broker does not answer within ``timeout_s`` seconds.
    """
    from testcontainers.core.container import DockerContainer

    container: Any = DockerContainer(image).with_exposed_ports(_CLIENT_PORT)
    for name, value in container_environment().items():
        container.with_env(name, value)
    container.with_env("CLUSTER_ID", "dGhlbWlzLXBpcGVsaW5lMQ")
    container.with_command(
        f'sh -c "while [ ! -f {_START_SCRIPT} ]; do sleep 0.1; done; exec sh {_START_SCRIPT}"'
    )
    container.start()
    try:
        host = container.get_container_host_ip()
        # "localhost" may resolve to ::1 first, where the engine may publish nothing.
        host = "127.0.0.1" if host == "localhost" else host
        bootstrap = f"{host}:{container.get_exposed_port(_CLIENT_PORT)}"
        script = (
            f"export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://{bootstrap},BROKER://localhost:9093\n"
            "exec /etc/kafka/docker/run\n"
        )
        _put_file(container.get_wrapped_container(), _START_SCRIPT, script.encode())
        deadline = time.monotonic() + timeout_s
        while not metadata_answers(bootstrap, timeout_s=1.0):
            container.get_wrapped_container().reload()
            state = container.get_wrapped_container().status
            if state != "running" or time.monotonic() > deadline:
                logs = b"".join(container.get_logs()).decode(errors="replace")
                raise BrokerStartError(
                    f"the Kafka container of {image} ({state}) did not answer at {bootstrap} "
                    f"within {timeout_s:.0f} s. Its log tail:\n"
                    + "\n".join(logs.splitlines()[-40:])
                )
            time.sleep(0.2)
        yield bootstrap
    finally:
        container.stop()


def _put_file(container: Any, path: str, content: bytes) -> None:
    """Write ``content`` to ``path`` inside ``container`` (the engine's archive upload)."""
    directory, _, name = path.rpartition("/")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mtime = int(time.time())
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(content))
    container.put_archive(directory or "/", archive.getvalue())
