"""The facade's replication endpoints against a real broker, shipping to itself."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from pipeline.config import with_overrides
from pipeline.kafka.local_broker import free_port
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import (
    ADMIN,
    KEYS,
    WRITER,
    facade_settings,
    http_call,
    start_facade_process,
)
from tests.fixtures.support import stop_process, wait_until

pytestmark = pytest.mark.integration

REPLICATOR_KEY = "replicator-key"


def test_replication_stats_config_and_replicas_and_wal_apply(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    port = free_port()
    settings = facade_settings(
        make_settings, port=port, api_keys=f"{KEYS},{REPLICATOR_KEY}:replicator"
    )
    settings = with_overrides(settings, {"compressed_wal_shipping": {"ship_key": REPLICATOR_KEY}})
    proc = start_facade_process(settings, tmp_path / "facade.log")
    try:
        status, body, _ = http_call(port, "GET", "/api/v1/replication/stats", None, WRITER)
        assert status == 200
        assert body["replicas"] == []
        assert list(body["stats"]) == [
            "total_entries_shipped",
            "total_bytes_shipped",
            "total_bytes_uncompressed",
            "avg_compression_ratio",
            "total_batches",
            "failed_ships",
            "wal_partitions",
        ]
        assert body["stats"]["wal_partitions"] == 0  # no shipper yet
        config = {"compression_type": "zstd", "compression_level": 5}
        assert http_call(port, "POST", "/api/v1/replication/config", config, WRITER)[0] == 403
        assert http_call(port, "POST", "/api/v1/replication/config", config, ADMIN)[0] == 200
        bad = {"compression_type": "zstd", "compression_level": 30}
        status, body, _ = http_call(port, "POST", "/api/v1/replication/config", bad, ADMIN)
        assert status == 400
        assert "compression_level" in body["error"]

        # Durable direct writes append WAL entries; the facade ships them to itself.
        for i in range(5):
            point = {"metric": "rep", "entity": "e", "timestamp_ms": 1000 + i, "value": i * 1.5}
            assert http_call(port, "POST", "/ts/put", point, WRITER)[0] == 200
        replica = {"replica_id": "self", "endpoint": f"http://127.0.0.1:{port}"}
        assert http_call(port, "POST", "/api/v1/replication/replicas", replica, ADMIN)[0] == 200

        def caught_up() -> bool:
            rows = http_call(port, "GET", "/api/v1/replication/stats", None, WRITER)[1]["replicas"]
            return (
                bool(rows)
                and rows[0]["lag_bytes"] == 0
                and rows[0]["last_confirmed_lsn"] >= "0000000000000005"
            )

        wait_until(caught_up, timeout_s=60, what="the replica to confirm the WAL's end")
        stats = http_call(port, "GET", "/api/v1/replication/stats", None, WRITER)[1]
        assert stats["stats"]["total_entries_shipped"] >= 5
        assert stats["stats"]["total_bytes_shipped"] > 0
        assert stats["replicas"][0]["is_healthy"] is True
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        exposition = conn.getresponse().read().decode()
        for name in (
            "wal_shipper_bytes_uncompressed_total",
            "wal_shipper_bytes_shipped_total",
            "wal_shipper_compression_ratio",
            "wal_shipper_batches_total",
            'wal_shipper_lag_bytes{replica="self"}',
        ):
            assert name in exposition

        garbage = b"\x28\xb5\x2f\xfd garbage"
        apply_headers = {"X-Primary-ID": "p1", "Content-Encoding": "zstd"}
        for who in ({}, WRITER, ADMIN):  # only the replicator role may apply
            status, body, _ = http_call(
                port, "POST", "/api/v1/wal/apply", garbage, apply_headers | who
            )
            assert (status, body["success"]) == (401, False)
        replicator = {"Authorization": f"Bearer {REPLICATOR_KEY}"}
        status, body, _ = http_call(
            port, "POST", "/api/v1/wal/apply", garbage, apply_headers | replicator
        )
        assert status == 400
        assert body["success"] is False

        gone = {"replica_id": "self"}
        assert http_call(port, "DELETE", "/api/v1/replication/replicas", gone, ADMIN)[0] == 200
        status, body, _ = http_call(port, "DELETE", "/api/v1/replication/replicas", gone, ADMIN)
        assert status == 404
        assert "replica_id" in body["error"]
    finally:
        code = stop_process(proc)
    assert code == 0, (tmp_path / "facade.log").read_text()[-2000:]
