"""A confluent-kafka producer, a Faust agent, and commits that survive a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.kafka.clients import Producer
from tests.fixtures.support import (
    committed_total,
    settings_as_env,
    start_faust_worker,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, values: range) -> None:
    with Producer({"bootstrap.servers": bootstrap, "acks": "all"}) as producer:
        for i in values:
            producer.produce(topic, value=f"v{i}".encode(), key=f"k{i}".encode())
        assert producer.flush(30) == 0


def _seen(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_agent_consumes_exactly_n_and_restart_gets_no_redelivery(
    topics: Settings, tmp_path: Path
) -> None:
    bootstrap = topics.kafka.bootstrap_servers
    assert bootstrap is not None
    topic = topics.topic("ts.points")
    seen_file = topics.worker.data_dir / "seen.txt"
    env = settings_as_env(topics)
    n = 500
    _produce(bootstrap, topic, range(n))

    first = start_faust_worker("tests.apps.smoke_app", env, tmp_path / "worker1.log")
    try:
        wait_until(lambda: len(_seen(seen_file)) >= n, timeout_s=90, what=f"{n} records seen")
        wait_until(
            lambda: committed_total(bootstrap, topics.worker.app_id, topic, 2) == n,
            timeout_s=30,
            what="offsets committed",
        )
    finally:
        assert stop_process(first) == 0, (tmp_path / "worker1.log").read_text()[-3000:]
    assert sorted(_seen(seen_file)) == sorted(f"v{i}" for i in range(n))

    # A second run in the same group sees only what was produced after the commit.
    _produce(bootstrap, topic, range(n, n + 50))
    second = start_faust_worker("tests.apps.smoke_app", env, tmp_path / "worker2.log")
    try:
        wait_until(lambda: len(_seen(seen_file)) >= n + 50, timeout_s=90, what="50 new records")
        wait_until(
            lambda: committed_total(bootstrap, topics.worker.app_id, topic, 2) == n + 50,
            timeout_s=30,
            what="offsets committed",
        )
    finally:
        assert stop_process(second) == 0, (tmp_path / "worker2.log").read_text()[-3000:]
    seen = _seen(seen_file)
    assert len(seen) == n + 50, "a record was delivered twice"
    assert sorted(seen) == sorted(f"v{i}" for i in range(n + 50))
