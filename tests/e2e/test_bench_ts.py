"""``themis bench ts --smoke --json`` end to end against the session broker."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.bench.ts import SMOKE, render
from pipeline.kafka.broker import BrokerHandle
from tests.fixtures.support import run_smoke_bench, wait_until_no_topics_under

pytestmark = pytest.mark.e2e

RATES = (
    "bytes_per_point",
    "compression_ratio",
    "encode_points_per_s",
    "decode_points_per_s",
    "pipeline_points_per_s_json",
    "pipeline_points_per_s_json_tagged",
    "pipeline_points_per_s_frames",
    "bare_consume_msgs_per_s",
    "bare_consume_msgs_per_s_tagged",
    "json_vs_bare_consume",
    "json_tagged_vs_bare_consume",
    "buffered_points_per_s",
    "direct_points_per_s",
    "buffered_vs_direct",
)
COUNTS = (
    "codec",
    "pipeline_json",
    "pipeline_json_tagged",
    "pipeline_frames",
    "bare_consume",
    "bare_consume_tagged",
    "buffered",
    "direct",
)


@pytest.fixture(scope="module")
def smoke_report(kafka_broker: BrokerHandle) -> dict[str, object]:
    # The smoke sizes run every step in seconds; `--quick` and full runs are for figures.
    return run_smoke_bench("ts", kafka_broker.bootstrap_servers, timeout_s=420)


def test_smoke_run_reports_every_rate_positive(smoke_report: dict[str, object]) -> None:
    for name in RATES:
        value = smoke_report[name]
        assert isinstance(value, int | float), name
        assert value > 0, name


def test_smoke_run_compresses_devops_data_more_than_twofold(
    smoke_report: dict[str, object],
) -> None:
    ratio = smoke_report["compression_ratio"]
    bytes_per_point = smoke_report["bytes_per_point"]
    assert isinstance(ratio, float)
    assert isinstance(bytes_per_point, float)
    assert ratio > 2
    assert ratio == pytest.approx(16 / bytes_per_point, rel=1e-2)


def test_smoke_run_compares_each_json_run_with_a_bare_drain_of_its_own_large_topic(
    smoke_report: dict[str, object],
) -> None:
    report: Any = smoke_report
    pipeline = report["pipeline"]
    for run, bare, ratio in (
        ("json", "bare_consume", "json_vs_bare_consume"),
        ("json_tagged", "bare_consume_tagged", "json_tagged_vs_bare_consume"),
    ):
        assert pipeline[run]["messages"] == SMOKE.json_series * SMOKE.json_points_per_series, run
        assert pipeline[bare]["messages"] == pipeline[run]["messages"], bare
        assert pipeline[bare]["repetitions"] == 3
        assert pipeline[run]["worker_exit_code"] == 0, run
        assert 0 < report[ratio] < 2, ratio
    # Tags make every message larger: the tagged topic gets a bare figure of its own.
    assert pipeline["bare_consume_tagged"]["bytes_per_message"] > (
        pipeline["bare_consume"]["bytes_per_message"] + 20
    )
    assert pipeline["json_tagged"]["tags_per_series"] == "2-4"
    bare_settings = report["settings"]["bare_consumer"]
    assert bare_settings["max.partition.fetch.bytes"] == 8 * 1024 * 1024
    assert "partition.assignment.strategy" not in bare_settings
    goals = report["goals"]
    assert goals["json_vs_bare_consume"]["at_least"] == 0.5
    assert goals["json_tagged_vs_bare_consume"]["at_least"] == 0.4
    assert all(isinstance(checked["met"], bool) for checked in goals.values())


def test_smoke_run_times_one_series_queries_from_its_owner_and_the_store_catch_ups(
    smoke_report: dict[str, object],
) -> None:
    report: Any = smoke_report
    assert report["query_store_points"] == SMOKE.query_series * SMOKE.query_points_per_series
    assert 0 < report["query_ms_p50"] <= report["query_ms_p99"]
    assert report["store_catch_up_ms"] > 0
    assert report["store_move_catch_up_ms"] > 0
    query = report["pipeline"]["query"]
    assert query["queries"] == SMOKE.queries
    assert query["points_per_series"] == 10_000
    assert query["partitions"] == 6
    assert 0 < len(query["moved_partitions"]) < 6  # a second worker took some over
    assert query["catch_up_blocks"] == query["store_blocks"]
    assert report["goals"]["query_ms_p99"]["below"] == 50
    assert {"query_ms_p99", "store_catch_up_ms"} <= set(report["definitions"])
    assert "one-series query" in render(smoke_report)


def test_smoke_run_states_its_counts_broker_machine_and_definitions(
    smoke_report: dict[str, object], kafka_broker: BrokerHandle
) -> None:
    points = smoke_report["points"]
    assert isinstance(points, dict)
    assert all(points[name] > 0 for name in COUNTS), points
    dataset = smoke_report["dataset"]
    assert isinstance(dataset, dict)
    assert dataset["series"] > 0
    assert dataset["points_per_series"] > 0
    assert "seed" in dataset
    assert smoke_report["broker"] == {
        "source": "environment",
        "bootstrap_servers": kafka_broker.bootstrap_servers,
        "startup_seconds": 0.0,
    }
    machine = smoke_report["machine"]
    assert isinstance(machine, dict)
    assert machine["nproc"] > 0
    assert machine["python"]
    settings = smoke_report["settings"]
    assert isinstance(settings, dict)
    assert settings["flush_interval_ms"] == 200
    definitions = smoke_report["definitions"]
    assert isinstance(definitions, dict)
    assert set(RATES) <= set(definitions)


def test_smoke_run_leaves_no_topics_on_a_given_broker(
    smoke_report: dict[str, object], kafka_broker: BrokerHandle
) -> None:
    prefix = smoke_report["topic_prefix"]
    assert isinstance(prefix, str)
    assert prefix.startswith("bench-")
    wait_until_no_topics_under(kafka_broker.bootstrap_servers, prefix)


def test_the_table_shows_the_report_figures(smoke_report: dict[str, object]) -> None:
    table = render(smoke_report)
    assert "pipeline, tagged JSON" in table
    assert f"ratio {smoke_report['compression_ratio']}" in table
    assert len(table.splitlines()) >= 5
