"""``themis bench sdk --lang python`` and ``themis bench remote-read``, at ``--smoke``, on
the session's live stack."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.bench.remote_read import RemoteReadBenchmark
from pipeline.bench.sdk import SdkBenchmark
from tests.fixtures.support import REPO, THEMIS, settings_env

pytestmark = pytest.mark.e2e


def test_the_python_sdk_benchmark_reports_every_figure_and_its_goals(live_stack: Path) -> None:
    env = settings_env({"THEMIS_CONFIG": os.devnull})
    args = [*THEMIS, "bench", "sdk", "--lang", "python", "--stack", str(live_stack), "--smoke",
            "--json"]  # fmt: skip
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert (report["benchmark"], report["lang"], report["size"]) == ("sdk", "python", "smoke")
    for name in ("points_per_s_binary", "points_per_s_http", "raw_protocol_points_per_s"):
        assert report[name] > 0, name
        assert name in report["definitions"]
    assert report["goals"]["binary_vs_raw"]["at_least"] == 0.8
    assert 0 < report["memory_mb_per_1m_queued"] < 200
    assert report["goals"]["memory_mb_per_1m_queued"]["met"] is True
    table = SdkBenchmark("python").render(report)
    assert "points_per_s_binary" in table
    assert "binary_vs_raw" in table


def test_the_remote_read_benchmark_reads_back_every_sample(live_stack: Path) -> None:
    env = settings_env({"THEMIS_CONFIG": os.devnull})
    args = [*THEMIS, "bench", "remote-read", "--stack", str(live_stack), "--smoke", "--json"]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert (report["benchmark"], report["samples"]) == ("remote-read", 20_000)
    assert 0 < report["read_best_s"] <= report["read_first_s"] + 1
    assert report["goals"]["read_best_s"]["below"] == 1.0
    assert "read_best_s" in RemoteReadBenchmark().render(report)
