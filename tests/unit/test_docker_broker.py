from __future__ import annotations

import pytest

from pipeline.config import load_settings
from pipeline.kafka.docker_broker import KAFKA_IMAGE, container_environment, docker_engine_answers
from pipeline.kafka.local_broker import SINGLE_NODE_PROPERTIES

pytestmark = pytest.mark.unit


def test_engine_does_not_answer_where_no_engine_listens(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'nobody.sock'}")
    assert docker_engine_answers(timeout_s=1) is False


def test_container_environment_names_every_property_as_the_apache_image_reads_them() -> None:
    env = container_environment()
    # apache/kafka reads KAFKA_<NAME> as <name> with '_' as '.'.
    properties = {name[len("KAFKA_") :].lower().replace("_", "."): v for name, v in env.items()}
    assert properties["process.roles"] == "broker,controller"
    assert properties["inter.broker.listener.name"] == "BROKER"
    assert properties["listener.security.protocol.map"] == (
        "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT"
    )
    assert SINGLE_NODE_PROPERTIES.items() <= properties.items()
    assert "KAFKA_ADVERTISED_LISTENERS" not in env  # known once the port is mapped


def test_container_image_defaults_to_apache_kafka_and_reads_its_variable() -> None:
    assert load_settings(env={"THEMIS_CONFIG": "/dev/null"}).kafka.container_image == KAFKA_IMAGE
    custom = load_settings(
        env={"THEMIS_CONFIG": "/dev/null", "THEMIS_KAFKA_CONTAINER_IMAGE": "localhost/kafka:x"}
    )
    assert custom.kafka.container_image == "localhost/kafka:x"
