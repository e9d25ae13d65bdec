"""``themis rag ingest`` end to end: a corpus into Kafka, a worker, searches, a resumed run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.kafka.topics import apply_topics
from pipeline.rag import HashingEmbedder
from pipeline.rag.job import ingest
from pipeline.worker import search
from tests.fixtures.broker import MakeSettings
from tests.fixtures.support import (
    REPO,
    THEMIS,
    settings_as_env,
    settings_env,
    start_themis_worker,
    stop_process,
    wait_until,
)
from tests.fixtures.worker import vector_dump, worker_answers

pytestmark = pytest.mark.e2e

DIM = 256

CORPUS = {
    "kafka.md": """# Apache Kafka

Kafka is a distributed log. Producers append records to topics and consumers read them.

## Partitions

Each topic is split into partitions. A partition is an ordered, append-only log replicated
from the leader broker to follower brokers.

## Consumer groups

Consumers in a consumer group share the partitions of a topic and commit their offsets.
""",
    "baking.md": """# Sourdough baking

Sourdough bread rises with a starter of wild yeast and lactic bacteria instead of baker's yeast.

## Feeding the starter

Feed the sourdough starter with equal weights of flour and water every day and keep it warm.

## Baking the loaf

Knead the dough, let it rise overnight, score the loaf and bake the bread in a hot oven.
""",
    "astronomy.md": """# Amateur astronomy

A telescope gathers light from stars, planets and galaxies.

## Choosing a telescope

Refractor telescopes use lenses, reflector telescopes use mirrors; aperture decides how faint
the galaxies and nebulae you can observe.

## Observing planets

Jupiter's moons and Saturn's rings are visible through a small telescope on a clear night.
""",
    "gardening.md": """# Growing tomatoes

Tomato plants need sun, warm soil and steady watering.

## Planting

Plant tomato seedlings deep in compost-rich soil after the last frost and stake each plant.

## Pruning

Pinch out the side shoots of cordon tomatoes so the plant puts its energy into the fruit.
""",
    "chess.md": """# Chess openings

An opening is the first moves of a chess game: develop pieces, control the centre, castle.

## The Sicilian Defence

After 1.e4 c5 black fights for the centre from the side; the Najdorf is its sharpest line.

## The Queen's Gambit

White offers a pawn with 1.d4 d5 2.c4 to pull black's pawn away from the centre.
""",
    "cycling.md": """# Bicycle maintenance

A clean, lubricated chain shifts smoothly and lasts longer.

## Fixing a flat tyre

Remove the wheel, lever the tyre off the rim, patch or replace the inner tube and reinflate.

## Adjusting brakes

Align the brake pads with the rim and tighten the cable until the lever feels firm.
""",
}


@pytest.fixture
def rag_settings(make_settings: MakeSettings) -> Settings:
    settings = make_settings(
        vector_auto_buffer={
            "dimension": DIM,
            "flush_interval_ms": 200,
            "snapshot_interval_ms": 300,
        }
    )
    assert settings.kafka.bootstrap_servers
    apply_topics(settings.kafka.bootstrap_servers, settings, partitions_override=2)
    return settings


def _answers(settings: Settings) -> bool:
    return worker_answers(settings)


def _dump(settings: Settings) -> dict[str, Any]:
    return vector_dump(settings)


def _top_source(settings: Settings, query: str) -> str:
    vector = HashingEmbedder(DIM).embed([query])[0]
    hits = search(vector, 3, settings=settings)
    assert hits, "no hits"
    return str(hits[0].metadata["source"])


def _cli(settings: Settings, *args: str) -> Any:
    """``themis rag ARGS --json`` in a child process; its JSON output."""
    done = subprocess.run(
        [*THEMIS, "rag", *args, "--json"],
        cwd=REPO,
        env=settings_env(settings_as_env(settings)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if args[0] == "ingest":
        assert "] 5/5 files" in done.stderr  # the progress bar (\r read as a newline)
    return json.loads(done.stdout)


def test_ingest_makes_topics_searchable_and_a_rerun_applies_only_the_changes(
    rag_settings: Settings, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in CORPUS.items():
        (docs / name).write_text(text)

    first = ingest(docs, rag_settings, progress=False)
    assert (first.files_seen, first.files_ingested, first.files_skipped_unchanged) == (6, 6, 0)
    assert first.chunks_sent == 18  # three sections per file
    assert first.chunks_removed == 0

    worker = start_themis_worker(settings_as_env(rag_settings), tmp_path / "worker.log")
    try:
        wait_until(lambda: _answers(rag_settings), timeout_s=60, what="worker web server")
        expected = {f"{name}#{i}" for name in CORPUS for i in range(3)}
        wait_until(lambda: set(_dump(rag_settings)) == expected, timeout_s=60, what="all 18 chunks")
        assert _top_source(rag_settings, "how do I feed my sourdough starter") == "baking.md"
        assert _top_source(rag_settings, "which telescope shows Saturn's rings") == ("astronomy.md")
        assert _top_source(rag_settings, "consumer group offsets of a topic") == "kafka.md"
        assert _top_source(rag_settings, "patch the inner tube of a flat tyre") == "cycling.md"
        hit = search(
            HashingEmbedder(DIM).embed(["prune the side shoots of tomatoes"])[0],
            1,
            settings=rag_settings,
        )[0]
        assert hit.pk == "gardening.md#2"
        assert hit.metadata["heading"] == "Growing tomatoes > Pruning"
        assert "side shoots" in hit.metadata["text"]

        (docs / "chess.md").write_text(
            "# Chess endgames\n\nKing and pawn endings decide many chess games: "
            "opposition and the square of the pawn.\n"
        )
        (docs / "cycling.md").unlink()
        second = _cli(rag_settings, "ingest", str(docs))
        assert second["files_seen"] == 5
        assert second["files_skipped_unchanged"] == 4
        assert second["files_ingested"] == 1
        assert second["files_deleted"] == 1
        assert second["chunks_sent"] == 1
        assert second["chunks_removed"] == 2 + 3  # chess.md#1..#2, cycling.md#0..#2

        after = {pk for pk in expected if not pk.startswith(("cycling", "chess"))} | {"chess.md#0"}
        wait_until(
            lambda: set(_dump(rag_settings)) == after, timeout_s=60, what="the changes applied"
        )
        assert _top_source(rag_settings, "patch the inner tube of a flat tyre") != "cycling.md"
        sicilian = HashingEmbedder(DIM).embed(["the Sicilian Defence Najdorf"])[0]
        assert all(h.pk != "chess.md#1" for h in search(sicilian, 10, settings=rag_settings))
        endgame = search(
            HashingEmbedder(DIM).embed(["king and pawn endgame opposition"])[0],
            1,
            settings=rag_settings,
        )[0]
        assert endgame.pk == "chess.md#0"
        assert endgame.metadata["title"] == "Chess endgames"

        third = _cli(rag_settings, "ingest", str(docs))
        assert (third["files_skipped_unchanged"], third["chunks_sent"]) == (5, 0)
        assert third["chunks_removed"] == 0
        hits = _cli(rag_settings, "search", "knead the dough and bake the loaf", "-k", "2")
        assert [h["pk"] for h in hits][:1] == ["baking.md#2"]
    finally:
        assert stop_process(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
