"""The README's first command, `themis demo`, end to end against the session broker."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.kafka.broker import BrokerHandle
from pipeline.kafka.local_broker import LocalKafka
from pipeline.replication import ReplicaState
from pipeline.ts.point import series_key
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
    assert "facade stopped (exit 0)" in out
    assert "worker stopped (exit 0)" in out
    _assert_the_replica_holds_what_the_demo_sent(env, tmp_path / "data" / "replica-replica")


def _assert_the_replica_holds_what_the_demo_sent(env: dict[str, str], replica_dir: Path) -> None:
    """Read the replica the demo applied, and compare it with the demo's inputs, computed
    here (``pipeline/demo.py``: the JSON points of server03, 2000 ADDs, 50 UPDATEs of
    doc_00000-doc_00049, REMOVEs of doc_01900-doc_01999)."""
    settings = load_settings(path=REPO / env.get("THEMIS_CONFIG", "config/features.yaml"), env=env)
    state = ReplicaState(replica_dir, settings)
    try:
        key = series_key("cpu_usage", "server03", {"datacenter": "eu-west-1"})
        ts, vs = state.query_ts(key, -(2**62), 2**62)
        sent = [i for i in range(1000) if i % 10 == 3]
        assert ts.tolist() == [1_702_645_200_000 + 10_000 * (i // 10) for i in sent]
        assert vs.tolist() == [round(40 + (i % 37) * 1.5, 1) for i in sent]
        categories = ["technology", "science", "sports", "finance"]
        assert state.vector_dump() == {
            f"doc_{i:05d}": (
                {"title": f"Document {i} v2", "category": "updated"}
                if i < 50
                else {"title": f"Document {i}", "category": categories[i % 4]}
            )
            for i in range(1900)
        }
    finally:
        state.close()
