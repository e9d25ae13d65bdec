"""``themis bench wal --smoke --json`` end to end: the shipped bytes, the codec speeds and
the replication lag of a real primary and replica cluster, idle and under load."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.bench.wal import render
from pipeline.kafka.broker import BrokerHandle
from tests.fixtures.support import run_smoke_bench

pytestmark = pytest.mark.e2e


def test_smoke_run_ships_the_wal_compressed_and_reports_the_lag_of_every_entry(
    kafka_broker: BrokerHandle,
) -> None:
    report: Any = run_smoke_bench("wal", kafka_broker.bootstrap_servers, timeout_s=300)
    json_points = report["json_points"]
    uncompressed = json_points["bytes_uncompressed"]
    ours = json_points["bytes_shipped_batch_zstd"]
    assert 0 < ours < json_points["bytes_shipped_none"]
    assert report["bandwidth_reduction"] == pytest.approx(1 - ours / uncompressed, abs=1e-4)
    assert 0.5 < float(report["bandwidth_reduction"]) < 1
    assert 0 < float(report["bandwidth_reduction_mixed"]) < 1
    mixed = report["mixed"]
    assert report["bytes_shipped_batch_zstd_mixed"] == mixed["bytes_shipped_batch_zstd"]
    assert report["bytes_shipped_kafka_zstd_mixed"] == mixed["bytes_shipped_kafka_zstd"]
    assert report["batch_vs_kafka_zstd_mixed"] == pytest.approx(
        mixed["bytes_shipped_batch_zstd"] / mixed["bytes_shipped_kafka_zstd"], rel=1e-3
    )
    # TWB2 against TWB1, same entries and level: the shuffled vectors and columnar index.
    assert mixed["bytes_shipped_batch_zstd"] < mixed["bytes_shipped_twb1_zstd"]
    assert ours < json_points["bytes_shipped_twb1_zstd"]
    assert float(report["compress_mb_per_s_twb1"]) > 0
    for rate in ("compress_mb_per_s", "decompress_mb_per_s", "lag_load_entries_per_s"):
        assert float(report[rate]) > 0, rate
    lag = report["lag"]
    assert lag["entries"] > 0
    assert lag["shipper"]["failed_ships"] == 0
    assert lag["shipper"]["total_entries_shipped"] >= lag["entries"]
    assert 0 <= lag["max_ms"] < 10_000
    assert set(report["definitions"]) >= {"bandwidth_reduction", "compress_mb_per_s"}
    # The load phase: a worker at half its measured maximum, shipped to themis wal serve.
    p50, p99 = report["lag_under_load_ms_p50"], report["lag_under_load_ms_p99"]
    assert 0 <= p50 <= p99 <= report["lag_under_load_ms_max"] < 30_000
    load = report["load"]
    assert report["load_points_per_s"] == pytest.approx(load["points"] / load["seconds"], rel=1e-2)
    assert load["load_share_of_max"] >= 0.4  # the generator kept up with its target of 0.5
    assert float(report["load_vectors_per_s"]) > 0
    # Six WAL partitions by default (topics/wal.yaml), each one's shipping figures listed.
    assert report["wal_partitions"] == 6
    rows = load["shipping_partitions"]
    assert [row["partition"] for row in rows] == list(range(6))
    shipped = sum(row["entries_shipped"] for row in rows)
    assert shipped == load["shipper"]["total_entries_shipped"]
    # Apply throughput, one partition against six, same entries, same run.
    assert report["apply"]["partitions"] == 6
    assert float(report["apply_entries_per_s_1_partition"]) > 0
    assert report["apply_speedup_partitioned"] == pytest.approx(
        report["apply_entries_per_s_partitioned"] / report["apply_entries_per_s_1_partition"],
        rel=1e-2,
    )
    assert load["shipper"]["failed_ships"] == 0
    # Every WAL entry was timed, and the replica applied exactly the entries shipped.
    assert load["wal_entries_timed"] == load["shipper"]["total_entries_shipped"]
    assert load["replica"]["status"]["entries_applied_total"] == load["wal_entries_timed"]
    assert {"lag_under_load_ms_p50", "wal_partitions"} <= set(report["definitions"])
    table = render(report)
    assert f"{report['bytes_shipped_batch_zstd']:,} B" in table
    assert f"p99 {report['replication_lag_ms_p99']} ms" in table
    assert f"p99 {p99} ms" in table
