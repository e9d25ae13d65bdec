"""``themis bench vectors --smoke --json`` end to end against the session broker."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.bench.vectors import render
from pipeline.kafka.broker import BrokerHandle
from tests.fixtures.support import run_smoke_bench

pytestmark = pytest.mark.e2e

RATES = (
    "indexed_vectors_per_s",
    "bare_hnswlib_vectors_per_s",
    "indexed_vs_bare",
    "buffered_vectors_per_s",
    "direct_vectors_per_s",
    "buffered_vs_direct",
    "bytes_per_vector",
)


@pytest.fixture(scope="module")
def smoke_report(kafka_broker: BrokerHandle) -> dict[str, object]:
    return run_smoke_bench("vectors", kafka_broker.bootstrap_servers, timeout_s=300)


def test_smoke_run_reports_every_rate_positive_and_defined(
    smoke_report: dict[str, object],
) -> None:
    definitions = smoke_report["definitions"]
    assert isinstance(definitions, dict)
    for name in RATES:
        value = smoke_report[name]
        assert isinstance(value, int | float), name
        assert value > 0, name
        assert name in definitions, name
    assert "recall_at_10" in definitions


def test_smoke_run_finds_nearly_every_exact_neighbour_at_the_configured_ef(
    smoke_report: dict[str, object],
) -> None:
    recall = smoke_report["recall_at_10"]
    assert isinstance(recall, float)
    assert 0.9 < recall <= 1.0
    assert smoke_report["ef_search"] == 64


def test_smoke_run_measures_recall_on_data_where_bare_hnswlib_misses_neighbours(
    smoke_report: dict[str, object],
) -> None:
    report: Any = smoke_report
    bare = report["bare_recall_at_10_hard"]
    ours = report["recall_at_10_hard"]
    assert 0.3 < bare < 0.99  # the random vectors discriminate at ef_search 64
    assert 0.3 < ours <= 1.0
    assert 0.3 < report["filtered_recall_at_10"] <= 1.0
    assert 0.3 < report["bare_filtered_recall_at_10"] <= 1.0
    hard = report["hard"]
    assert hard["vectors"] > 0
    assert hard["queries"] > 0
    assert hard["filter_parts"] == 10
    assert hard["worker_exit_code"] == 0
    assert report["dataset_hard"]["generator"].endswith("random_unit_vectors")
    definitions = report["definitions"]
    for name in (
        "recall_at_10_hard",
        "bare_recall_at_10_hard",
        "filtered_recall_at_10",
        "bare_filtered_recall_at_10",
    ):
        assert name in definitions, name
    goals = report["goals"]
    assert set(goals) == {"indexed_vs_bare", "recall_at_10_hard", "filtered_recall_at_10"}
    assert goals["recall_at_10_hard"]["at_least"] == pytest.approx(bare - 0.01, abs=1e-3)
    assert all(isinstance(checked["met"], bool) for checked in goals.values())


def test_smoke_run_buffering_beats_one_durable_searchable_write_at_a_time(
    smoke_report: dict[str, object],
) -> None:
    ratio = smoke_report["buffered_vs_direct"]
    assert isinstance(ratio, float)
    assert ratio > 10


def test_smoke_run_states_memory_counts_and_dataset(smoke_report: dict[str, object]) -> None:
    assert smoke_report["raw_bytes_per_vector"] == 4 * 768
    per_vector = smoke_report["bytes_per_vector"]
    assert isinstance(per_vector, float)
    assert per_vector > 4 * 768
    counts = smoke_report["vectors"]
    assert isinstance(counts, dict)
    assert counts["indexed"] > 0
    assert counts["live_at_end"] == (
        counts["live_after_mix"] + counts["buffered"] + counts["direct"]
    )
    dataset = smoke_report["dataset"]
    assert isinstance(dataset, dict)
    assert dataset["dimension"] == 768
    assert dataset["clusters"] > 1
    assert "seed" in dataset
    settings = smoke_report["settings"]
    assert isinstance(settings, dict)
    assert (settings["space"], settings["m"], settings["ef_construction"]) == ("cosine", 16, 200)


def test_the_table_shows_the_report_figures(smoke_report: dict[str, object]) -> None:
    table = render(smoke_report)
    assert "bare hnswlib add_items" in table
    assert str(smoke_report["recall_at_10"]) in table
    assert len(table.splitlines()) >= 5
