"""``themis bench http --smoke --json`` end to end against the session broker."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.bench.http import render
from pipeline.kafka.broker import BrokerHandle
from tests.fixtures.support import run_smoke_bench, wait_until_no_topics_under

pytestmark = pytest.mark.e2e

RATES = (
    "put_buffered_req_per_s",
    "put_buffered_queued_req_per_s",
    "bare_framework_req_per_s",
    "put_vs_bare",
    "server_p50_ms",
    "server_p99_ms",
    "client_p99_ms",
    "batch_points_per_s",
    "batch_req_per_s",
    "remote_write_samples_per_s",
    "line_protocol_points_per_s",
    "remote_write_vs_batch",
    "line_protocol_vs_batch",
    "light_handler_p50_us",
    "light_handler_p99_us",
)


@pytest.fixture(scope="module")
def smoke_report(kafka_broker: BrokerHandle) -> dict[str, object]:
    return run_smoke_bench("http", kafka_broker.bootstrap_servers, timeout_s=300)


def test_smoke_run_reports_every_rate_and_latency_positive(
    smoke_report: dict[str, object],
) -> None:
    for name in RATES:
        value = smoke_report[name]
        assert isinstance(value, int | float), name
        assert value > 0, name
    definitions = smoke_report["definitions"]
    assert isinstance(definitions, dict)
    assert {"put_buffered_req_per_s", "bare_framework_req_per_s", "server_p99_ms"} <= set(
        definitions
    )


def test_smoke_run_takes_p99_from_a_bucket_of_the_facade_histogram(
    smoke_report: dict[str, object],
) -> None:
    bucket = smoke_report["server_p99_bucket_ms"]
    assert isinstance(bucket, list)
    lower, upper = bucket
    p99 = smoke_report["server_p99_ms"]
    assert isinstance(p99, float)
    assert lower <= p99 <= upper
    settings = smoke_report["settings"]
    assert isinstance(settings, dict)
    assert upper in settings["facade_histogram_buckets_ms"]


def test_smoke_run_times_the_handler_under_a_steady_tenth_of_the_bare_rate(
    smoke_report: dict[str, object],
) -> None:
    report: Any = smoke_report
    p50, p99 = report["light_handler_p50_us"], report["light_handler_p99_us"]
    assert 0 < p50 <= p99
    for value, quantile in ((p50, "p50"), (p99, "p99")):
        lower, upper = report["light_handler_bucket_us"][quantile]
        assert lower <= value <= upper, quantile
    light = report["runs"]["light_queued"]
    assert light["response_mode"] == "queued"
    assert light["target_req_per_s"] == pytest.approx(
        0.1 * report["bare_framework_req_per_s"], rel=0.02
    )
    assert 0.5 * light["target_req_per_s"] <= light["req_per_s"] <= 1.1 * light["target_req_per_s"]
    assert light["server_observations"] == light["ok"]
    assert {"light_handler_p50_us", "light_handler_p99_us"} <= set(report["definitions"])


def test_smoke_run_states_modes_load_worker_broker_and_machine(
    smoke_report: dict[str, object], kafka_broker: BrokerHandle
) -> None:
    assert smoke_report["response_mode"] == "acked"
    assert smoke_report["response_modes_measured"] == ["acked", "queued"]
    settings = smoke_report["settings"]
    assert isinstance(settings, dict)
    assert settings["connections"] > 0
    assert settings["concurrency"] > 0
    assert settings["batch_points"] == 1000
    worker = smoke_report["worker"]
    assert isinstance(worker, dict)
    assert worker["ran"] is False
    assert smoke_report["broker"] == {
        "source": "environment",
        "bootstrap_servers": kafka_broker.bootstrap_servers,
        "startup_seconds": 0.0,
    }
    machine = smoke_report["machine"]
    assert isinstance(machine, dict)
    assert machine["nproc"] > 0


def test_smoke_run_leaves_no_topics_on_a_given_broker(
    smoke_report: dict[str, object], kafka_broker: BrokerHandle
) -> None:
    prefix = smoke_report["topic_prefix"]
    assert isinstance(prefix, str)
    assert prefix.startswith("bench-")
    wait_until_no_topics_under(kafka_broker.bootstrap_servers, prefix)


def test_the_table_shows_the_report_figures(smoke_report: dict[str, object]) -> None:
    table = render(smoke_report)
    assert f"{smoke_report['put_buffered_req_per_s']:,} req/s (acked)" in table
    assert "light_handler_p99_us" in table
    assert len(table.splitlines()) >= 5
