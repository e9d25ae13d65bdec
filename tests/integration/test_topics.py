"""Topics as code against the real broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from pipeline.config import Settings
from pipeline.kafka.clients import AdminClient
from pipeline.kafka.topics import apply_topics, describe_topics, load_specs, wait_until_listed
from tests.fixtures.support import wait_until

pytestmark = pytest.mark.integration


def test_specs_cover_the_pipeline_topics_with_one_separator_style() -> None:
    names = {spec.name for spec in load_specs()}
    assert {"ts.points", "ts.blocks", "vectors.ops", "wal", "deadletter"} <= names
    assert all(name == name.lower() and "_" not in name and "-" not in name for name in names)


def test_apply_twice_changes_nothing_the_second_time(settings: Settings) -> None:
    bootstrap = settings.kafka.bootstrap_servers
    assert bootstrap is not None
    first = apply_topics(bootstrap, settings)
    assert {r.action for r in first} == {"created"}
    second = apply_topics(bootstrap, settings)
    assert {r.action for r in second} == {"unchanged"}
    rows = describe_topics(bootstrap, settings)
    for row in rows:
        assert row["exists"] is True
        configs = row["configs"]
        assert isinstance(configs, dict)
        assert all(pair["spec"] == pair["actual"] for pair in configs.values())


@pytest.fixture
def admin(settings: Settings) -> Iterator[AdminClient]:
    assert settings.kafka.bootstrap_servers is not None
    with AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers}) as client:
        yield client


def test_partition_drift_is_reported_not_fixed_and_configs_are_realigned(
    settings: Settings, admin: AdminClient
) -> None:
    bootstrap = settings.kafka.bootstrap_servers
    assert bootstrap is not None
    points = settings.topic("ts.points")
    admin.create_topics([NewTopic(points, 3, 1)])[points].result(timeout=30)
    wait_until_listed(admin, {points: 3}, 30.0)  # as apply_topics does after creating
    apply_topics(bootstrap, settings)
    wal = settings.topic("wal")
    entry = ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, wal, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)

    def wal_retention_ms() -> str:
        described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, wal)])
        return str(next(iter(described.values())).result(timeout=30)["retention.ms"].value)

    # A describe right after the alter may still answer the old value for a moment.
    wait_until(lambda: wal_retention_ms() == "1000", timeout_s=30, what="retention.ms altered")
    reports = {r.topic: r for r in apply_topics(bootstrap, settings)}
    assert reports[points].action == "drift"
    assert "spec 6, actual 3" in reports[points].details[0]
    assert len(admin.list_topics(points, timeout=10).topics[points].partitions) == 3
    assert reports[wal].action == "updated"
    assert reports[wal].details == ["retention.ms: 1000 -> 604800000"]
    assert apply_topics(bootstrap, settings)[-1].action == "unchanged"
