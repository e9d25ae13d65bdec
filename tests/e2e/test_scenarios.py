"""The roadmap's end-to-end scenarios, run as a user runs them: the examples in
``examples/python`` against the session's live stack, then what they wrote read back
independently.

- RAG ingestion (``rag_pipeline.py``): documents -> chunks -> embeddings -> buffered
  vector writes -> search, with an edit and a delete.
- Time-series streaming (``ts_streaming.py``): a producer streams, a dashboard query
  reads, here through a second, empty Prometheus remote-reading the facade.

Geo-replication is in ``test_scenario_geo_replication.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from themisdb import ThemisClient

from pipeline.rag import HashingEmbedder, chunk_document
from tests.fixtures.prometheus import PrometheusProcess, prometheus_binary
from tests.fixtures.stack import stack_of
from tests.fixtures.support import REPO, wait_until

pytestmark = pytest.mark.e2e

EXAMPLES = REPO / "examples" / "python"


def run_example(name: str, conf: str, *args: str) -> list[dict[str, Any]]:
    """``python examples/python/NAME ARGS`` with ``THEMIS_CLIENT_CONF``; its JSON lines."""
    env = {**os.environ, "THEMIS_CLIENT_CONF": conf}
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=180, env=env, check=False, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, f"{name}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def load_example(name: str) -> Any:
    """The example's module, for its documents (not run: ``__main__`` is not its name)."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stack(live_stack: Path) -> dict[str, Any]:
    return stack_of(live_stack)


def test_rag_scenario_finds_the_edited_chunks_new_text_and_forgets_the_deleted_document(
    stack: dict[str, Any],
) -> None:
    example = load_example("rag_pipeline.py")
    dimension = int(stack["vector_dimension"])
    steps = run_example("rag_pipeline.py", stack["conf"]["themis"], str(dimension))
    run = steps[0]["source"].split("/")[0]
    indexed = [s["chunks"] for s in steps if s["step"] == "indexed"]
    sources = {f"{run}/{name}" for name in example.DOCUMENTS}
    assert {pk.split("#")[0] for pk in indexed[0]} == sources
    edited = chunk_document(example.EDITED[1], f"{run}/kafka.md")
    assert next(s for s in steps if s["step"] == "edit") == {
        "step": "edit", "source": f"{run}/kafka.md", "upserted": 1, "removed": 1,
    }  # fmt: skip
    expected = {pk for pk in indexed[0] if not pk.startswith(f"{run}/baking.md")}
    expected -= {f"{run}/kafka.md#2"}
    assert set(indexed[1]) == expected == {c.pk for c in edited} | {f"{run}/hnsw.md#0"}

    embedder = HashingEmbedder(dimension)
    with ThemisClient(conf=stack["conf"]["http"]) as reader:

        def search(text: str, k: int) -> list[dict[str, Any]]:
            vector = embedder.embed([text])[0]
            return reader.vectors.search(vector, k=k, filter={"run": run})

        changed = edited[1]
        assert "cooperative rebalance" in changed.text
        hit = search(changed.embedding_text, 1)[0]
        assert (hit["pk"], hit["metadata"]["text"]) == (changed.pk, changed.text)
        assert hit["distance"] == pytest.approx(0.0, abs=1e-5)
        hits = search("sourdough starter flour water", 10)
        assert {h["pk"] for h in hits} == expected  # every chunk left, none of baking.md
        for chunk in chunk_document(example.DOCUMENTS["baking.md"], f"{run}/baking.md"):
            assert all(h["pk"] != chunk.pk for h in search(chunk.embedding_text, 10))


def remote_read(stack: dict[str, Any]) -> dict[str, Any]:
    """A ``remote_read`` block pointed at the stack's facade (docs/api/ECOSYSTEM.md)."""
    read = {
        "url": f"http://{stack['http_addr']}/api/v1/read",
        "authorization": {"credentials": stack["keys"]["writer"]},
        "read_recent": True,
    }
    return {"remote_read": [read]}


def _ready(prometheus: PrometheusProcess) -> bool:
    try:
        prometheus.api("status/buildinfo")
    except OSError:
        return False
    return True


def test_ts_streaming_scenario_reads_every_point_back_through_a_dashboard_query(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    points = 120
    [report] = run_example("ts_streaming.py", stack["conf"]["themis"], str(points))
    assert (report["sent"], report["read"], report["equal"]) == (points, points, True)
    start_ms, step_ms = report["start_ms"], report["step_ms"]
    expected = [[(start_ms + i * step_ms) / 1000, 20.0 + (i % 40) * 0.25] for i in range(points)]

    with ThemisClient(conf=stack["conf"]["http"]) as reader:
        read = reader.timeseries.query(report["metric"], report["entity"], report["tags"])
    assert [[p["timestamp_ms"] / 1000, p["value"]] for p in read] == expected

    prometheus = PrometheusProcess(prometheus_binary(), {}, tmp_path, remote_read(stack))
    try:
        wait_until(lambda: _ready(prometheus), timeout_s=60, what="the dashboard's Prometheus")
        end = start_ms + (points - 1) * step_ms
        result = prometheus.api(
            "query_range", query=report["promql"], start=f"{start_ms / 1000:.3f}",
            end=f"{end / 1000:.3f}", step=f"{step_ms / 1000:g}s",
        )["result"]  # fmt: skip
        assert len(result) == 1, result
        assert result[0]["metric"] == {
            "__name__": "room_temperature", "instance": report["entity"], "site": "lab",
        }  # fmt: skip
        assert [[t, float(v)] for t, v in result[0]["values"]] == expected
        peak = prometheus.api(
            "query", query=f"max_over_time({report['promql']}[5m])", time=f"{end / 1000:.3f}"
        )["result"]
        assert float(peak[0]["value"][1]) == 20.0 + 39 * 0.25
    except BaseException:
        print(prometheus.log_tail())
        raise
    finally:
        prometheus.stop()
