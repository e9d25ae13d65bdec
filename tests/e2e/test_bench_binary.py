"""``themis bench binary --smoke --json`` end to end against the session broker."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.bench.binary import render
from pipeline.kafka.broker import BrokerHandle
from tests.fixtures.support import run_smoke_bench, wait_until_no_topics_under

pytestmark = pytest.mark.e2e

FIGURES = (
    "ts_put_batch_points_per_s",
    "ts_put_batch_queued_points_per_s",
    "ts_put_single_req_per_s",
    "ts_put_single_queued_req_per_s",
    "vector_add_batch_vectors_per_s",
    "bare_framing_req_per_s",
    "http_batch_points_per_s",
    "single_vs_bare_framing",
    "batch_vs_http_batch",
    "light_handler_p50_us",
    "light_handler_p99_us",
    "light_client_p99_us",
)


@pytest.fixture(scope="module")
def smoke_report(kafka_broker: BrokerHandle) -> dict[str, object]:
    return run_smoke_bench("binary", kafka_broker.bootstrap_servers, timeout_s=300)


def test_smoke_run_reports_every_figure_positive_and_defined(
    smoke_report: dict[str, object],
) -> None:
    for name in FIGURES:
        value = smoke_report[name]
        assert isinstance(value, int | float), name
        assert value > 0, name
    definitions = smoke_report["definitions"]
    assert isinstance(definitions, dict)
    assert set(FIGURES) <= set(definitions)


def test_smoke_run_checks_each_goal_against_its_figure(smoke_report: dict[str, object]) -> None:
    report: Any = smoke_report
    goals = report["goals"]
    assert set(goals) == {
        "ts_put_batch_points_per_s",
        "single_vs_bare_framing",
        "batch_vs_http_batch",
        "light_handler_p99_us",
    }
    floors = {
        "ts_put_batch_points_per_s": 2_000_000,
        "single_vs_bare_framing": 0.5,
        "batch_vs_http_batch": 4,
    }
    for name, at_least in floors.items():
        checked = goals[name]
        assert checked["at_least"] == at_least
        assert checked["value"] == pytest.approx(report[name], rel=1e-2)
        assert checked["met"] is (checked["value"] >= at_least)
    ceiling = goals["light_handler_p99_us"]
    assert ceiling["below"] == 100
    assert ceiling["value"] == pytest.approx(report["light_handler_p99_us"], rel=1e-2)
    assert ceiling["met"] is (ceiling["value"] < 100)


def test_smoke_run_ratios_are_the_quotients_of_their_figures(
    smoke_report: dict[str, object],
) -> None:
    report: Any = smoke_report
    single = report["ts_put_single_req_per_s"] / report["bare_framing_req_per_s"]
    batch = report["ts_put_batch_points_per_s"] / report["http_batch_points_per_s"]
    assert report["single_vs_bare_framing"] == pytest.approx(single, rel=0.01)
    assert report["batch_vs_http_batch"] == pytest.approx(batch, rel=0.01)


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
    assert light["ack"] == "queued"
    assert light["target_req_per_s"] == pytest.approx(
        0.1 * report["bare_framing_req_per_s"], rel=0.02
    )
    assert 0.5 * light["target_req_per_s"] <= light["req_per_s"] <= 1.1 * light["target_req_per_s"]
    assert light["server_observations"] == light["ok"]


def test_smoke_run_states_batches_acks_worker_and_broker(
    smoke_report: dict[str, object], kafka_broker: BrokerHandle
) -> None:
    report: Any = smoke_report
    runs = report["runs"]
    assert runs["batch"]["items_per_request"] == 1000
    assert runs["http_batch"]["items_per_request"] == 1000
    assert (runs["single"]["ack"], runs["single_queued"]["ack"]) == ("acked", "queued")
    assert runs["vectors"]["items_per_request"] == report["settings"]["batch_vectors"]
    assert all(runs[name]["window"] > 0 for name in ("bare", "single", "batch", "vectors"))
    assert report["worker"]["ran"] is False
    assert report["broker"] == {
        "source": "environment",
        "bootstrap_servers": kafka_broker.bootstrap_servers,
        "startup_seconds": 0.0,
    }


def test_smoke_run_leaves_no_topics_on_a_given_broker(
    smoke_report: dict[str, object], kafka_broker: BrokerHandle
) -> None:
    prefix = smoke_report["topic_prefix"]
    assert isinstance(prefix, str)
    assert prefix.startswith("bench-")
    wait_until_no_topics_under(kafka_broker.bootstrap_servers, prefix)


def test_the_table_shows_the_report_figures_and_verdicts(smoke_report: dict[str, object]) -> None:
    table = render(smoke_report)
    assert f"{smoke_report['ts_put_batch_points_per_s']:,} points/s (acked)" in table
    assert "light_handler_p99_us" in table
    assert "goal >= 2000000.0" in table
    assert len(table.splitlines()) >= 8
