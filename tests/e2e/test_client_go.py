"""The Go SDK (``clients/go``): ``go vet``, ``go test -race``, the example and the smoke
benchmark, all against the session's live stack (``THEMIS_STACK``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.support import REPO

pytestmark = pytest.mark.e2e

GO_CLIENT = REPO / "clients" / "go"
FIGURES = ("points_per_s_binary", "points_per_s_http", "raw_protocol_points_per_s")


def _go(
    args: list[str], stack: Path, timeout_s: float, **env: str
) -> subprocess.CompletedProcess[str]:
    go = shutil.which("go")
    if go is None:
        pytest.fail("the Go toolchain (go) is not on PATH; the Go SDK needs it")
    merged = {**os.environ, "THEMIS_STACK": str(stack), **env}
    return subprocess.run([go, *args], cwd=GO_CLIENT, env=merged, capture_output=True, text=True,
                          timeout=timeout_s, check=False)  # fmt: skip


def _output(done: subprocess.CompletedProcess[str]) -> str:
    out, err = done.stdout[-6000:], done.stderr[-4000:]
    return f"exit {done.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"


def _stack(path: Path) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(path.read_text())
    return body


def test_go_vet_finds_nothing(live_stack: Path) -> None:
    done = _go(["vet", "./..."], live_stack, 300)
    assert done.returncode == 0, _output(done)


def test_go_test_race_passes_against_the_live_stack(live_stack: Path) -> None:
    done = _go(["test", "-race", "-count=1", "-timeout", "400s", "./..."], live_stack, 480)
    assert done.returncode == 0, _output(done)
    assert "FAIL" not in done.stdout, _output(done)


def test_the_quickstart_example_stores_what_it_says(live_stack: Path) -> None:
    stack = _stack(live_stack)
    done = _go(["run", "./examples/quickstart"], live_stack, 180,
               THEMIS_CLIENT_CONF=stack["conf"]["themis"], THEMIS_HTTP_ADDR=stack["http_addr"],
               THEMIS_VECTOR_DIMENSION=str(stack["vector_dimension"]))  # fmt: skip
    assert done.returncode == 0, _output(done)
    assert "stored 100 points" in done.stdout, _output(done)
    assert "found vector" in done.stdout, _output(done)
    assert "sent 100, retried 0, failed 0" in done.stdout, _output(done)


def test_the_smoke_benchmark_prints_one_object_of_positive_figures(live_stack: Path) -> None:
    done = _go(["run", "./cmd/themis-sdk-bench", "--stack", str(live_stack), "--size", "smoke"],
               live_stack, 180)  # fmt: skip
    assert done.returncode == 0, _output(done)
    report = json.loads(done.stdout)
    assert (report["benchmark"], report["lang"], report["size"]) == ("sdk", "go", "smoke")
    assert report["points"] > 0
    for name in FIGURES:
        assert report[name] > 0, name
        assert name in report["definitions"], name
    assert report["goals"]["binary_vs_raw"]["at_least"] == 0.8
    assert report["binary_vs_raw"] == pytest.approx(
        report["points_per_s_binary"] / report["raw_protocol_points_per_s"]
    )
    assert 0 <= report["allocs_per_point"] < 1


def test_staticcheck_finds_nothing() -> None:
    """``make test`` builds staticcheck first (scripts/ensure-staticcheck.sh)."""
    found = subprocess.run([str(REPO / "scripts" / "ensure-staticcheck.sh")], capture_output=True,
                           text=True, timeout=600, check=False)  # fmt: skip
    assert found.returncode == 0, found.stderr
    done = subprocess.run([found.stdout.strip(), "./..."], cwd=GO_CLIENT, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, _output(done)
