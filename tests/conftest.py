"""Fixtures: one real broker per session, and per-test topics, groups and settings.

The broker follows the one order of preference: ``KAFKA_BOOTSTRAP_SERVERS``, else a
Docker engine (testcontainers), else a local JVM broker started for this session.
A test that needs the broker fails when none can be had; it never skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings
from pipeline.kafka.broker import BrokerHandle, provide_broker
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics

MakeSettings = Callable[..., Settings]


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[BrokerHandle]:
    """The session's broker; started here unless one is given."""
    settings = load_settings(env={k: v for k, v in os.environ.items() if k != "THEMIS_CONFIG"})
    with provide_broker(settings, local_name=f"pytest-{os.getpid()}") as handle:
        yield handle


@pytest.fixture
def make_settings(kafka_broker: BrokerHandle, tmp_path: Path) -> MakeSettings:
    """Settings with this test's own topic namespace, consumer group and data dir."""

    def make(**sections: dict[str, object]) -> Settings:
        tag = uuid.uuid4().hex[:10]
        overrides: dict[str, dict[str, object]] = {
            "kafka": {
                "bootstrap_servers": kafka_broker.bootstrap_servers,
                "topic_namespace": f"t{tag}",
            },
            "worker": {
                "app_id": f"themis-test-{tag}",
                "data_dir": str(tmp_path / "data"),
                "web_port": free_port(),
            },
        }
        for name, body in sections.items():
            overrides.setdefault(name, {}).update(body)
        return load_settings(path=Path(os.devnull), env={}, overrides=overrides)

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture
def topics(settings: Settings) -> Settings:
    """``settings`` with every spec'd topic created (2 partitions each, for speed)."""
    assert settings.kafka.bootstrap_servers is not None
    apply_topics(settings.kafka.bootstrap_servers, settings, partitions_override=2)
    return settings
