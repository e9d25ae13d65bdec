"""The TypeScript SDK (``clients/typescript``, ``@themisdb/client``) against the session's stack.

Runs the SDK's own commands, as its README gives them, with ``THEMIS_STACK`` pointing at
the session's ``stack.json``: the ``node --test`` suite (unit, golden frames, package
layout, type tests, live tests on both transports, the 100,000-point volume test and the
facade restart), the type test alone, the runnable example and the smoke benchmark.
Needs ``npm ci --prefix clients/typescript && npm run build --prefix clients/typescript``
first (``make test`` runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SDK = REPO / "clients" / "typescript"
EXAMPLE = REPO / "examples" / "typescript" / "quickstart.mjs"
BENCH_FIGURES = (
    "points_per_s_binary",
    "points_per_s_http",
    "raw_protocol_points_per_s",
    "binary_vs_raw",
)


def _run(
    args: list[str], stack: Path, timeout_s: float, extra: dict[str, str] | None = None
) -> str:
    """Run ``args`` in the SDK's directory; its output, asserting exit code 0 (output shown)."""
    env = {**os.environ, "THEMIS_STACK": str(stack), **(extra or {})}
    done = subprocess.run(
        args, cwd=SDK, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    output = (
        f"$ {' '.join(args)}\n--- stdout ---\n{done.stdout[-12000:]}"
        f"\n--- stderr ---\n{done.stderr[-6000:]}"
    )
    assert done.returncode == 0, output
    return done.stdout


@pytest.fixture(scope="module")
def built() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required (Node 20+)")
    if not (SDK / "node_modules" / ".bin" / "tsc").exists():
        pytest.fail("run `npm ci --prefix clients/typescript` first")


def test_npm_test_passes_against_the_live_stack(built: None, live_stack: Path) -> None:
    out = _run(["npm", "test"], live_stack, timeout_s=900)
    assert "# fail 0" in out


def test_type_tests_compile_with_their_expected_errors(built: None, live_stack: Path) -> None:
    _run(["npm", "run", "test:types"], live_stack, timeout_s=300)


def test_example_runs_and_finds_what_it_wrote(built: None, live_stack: Path) -> None:
    stack = json.loads(live_stack.read_text())
    out = _run(
        ["node", str(EXAMPLE)],
        live_stack,
        timeout_s=120,
        extra={
            "THEMIS_CLIENT_CONF": stack["conf"]["http"],
            "THEMIS_VECTOR_DIMENSION": str(stack["vector_dimension"]),
        },
    )
    assert "queried 100 points" in out
    assert "search found example_doc_" in out


def test_smoke_bench_prints_one_json_object_with_positive_figures(
    built: None, live_stack: Path
) -> None:
    out = _run(
        ["node", "dist/bench/sdk_bench.js", "--stack", str(live_stack), "--size", "smoke"],
        live_stack,
        timeout_s=120,
    )
    report = json.loads(out)
    assert report["size"] == "smoke"
    assert report["points"] > 0
    for name in BENCH_FIGURES:
        assert isinstance(report[name], int | float), name
        assert report[name] > 0, name
    ratio = report["points_per_s_binary"] / report["raw_protocol_points_per_s"]
    assert report["binary_vs_raw"] == pytest.approx(ratio, rel=0.01)
