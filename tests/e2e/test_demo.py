"""The README's first command, `themis demo`, end to end against the session broker."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from pipeline.kafka.broker import BrokerHandle
from pipeline.kafka.local_broker import LocalKafka
from tests.fixtures.support import REPO, THEMIS, settings_env

pytestmark = pytest.mark.e2e


def test_demo_streams_points_and_vectors_and_prints_stats_and_results(
    kafka_broker: BrokerHandle, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    env = settings_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
            "THEMIS_KAFKA_TOPIC_NAMESPACE": f"demo{tag}",
            "THEMIS_WORKER_APP_ID": f"demo-{tag}",
            "THEMIS_WORKER_DATA_DIR": str(tmp_path / "data"),
            "THEMIS_HOME": str(tmp_path / "home"),
        }
    )
    try:
        result = subprocess.run(
            [*THEMIS, "demo"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:  # the demo leaves its replica cluster running, as a user would want
        LocalKafka("replica", home=tmp_path / "home").down()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "points_flushed: 101000" in out
    assert "current_buffer_size: 0" in out
    assert "100 points; first: [{'timestamp_ms': 1702645200000, 'value': 44.5}" in out
    assert "vectors_flushed: 2150" in out
    assert "doc_00042  distance=" in out
    assert "POST /ts/put/buffered -> 200 {'success': True, 'buffered': True, 'buffer_size':" in out
    assert "failed_ships: 0" in out
    assert "ts query on the replica equals the primary's: True (100 points)" in out
    assert "live vectors on the replica: 1900; top-3 search equals the primary's: True" in out
    assert "facade stopped (exit 0)" in out
    assert "worker stopped (exit 0)" in out
