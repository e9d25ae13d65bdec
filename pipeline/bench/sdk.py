"""``themis bench sdk --lang python|typescript|go [--quick|--smoke] [--json]``: an SDK's
batching writer against the raw protocol, on a live stack.

It starts ``themis stack up`` (on the broker of :func:`~pipeline.bench.harness.bench_broker`),
runs the language's own benchmark program against the stack's ``stack.json`` and reports
its figures with the goals: ``points_per_s_binary`` (the SDK's buffered puts on the binary
transport, until flushed), ``points_per_s_http`` and ``raw_protocol_points_per_s`` (the
same points pre-encoded as TS_PUT_BUFFERED_BATCH frames, pipelined on one connection),
measured side by side in the same run by the same program. Goal: binary at least 0.8 x
raw; Python also reports ``memory_mb_per_1m_queued`` (goal: at most 64).

The programs live beside each SDK (``clients/<lang>/...``), so this runs from a source
checkout, with each SDK's dependencies installed (``make setup`` does).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pipeline
from pipeline.bench.harness import (
    BenchSize,
    goal,
    goal_below,
    goal_row,
    live_stack,
    progress,
)
from pipeline.config import Settings
from pipeline.errors import BenchmarkFailed

__all__ = ["DEFINITIONS", "LANGS", "SdkBenchmark", "command_for"]

REPO: Final = Path(pipeline.__file__).resolve().parents[1]
LANGS: Final = ("python", "typescript", "go")
_STACK_TIMEOUT_S: Final = 180.0
_RUN_TIMEOUT_S: Final = {"smoke": 300.0, "quick": 900.0, "full": 3600.0}

DEFINITIONS: Final = {
    "points_per_s_binary": "points/s through the SDK's put_buffered on the binary transport, "
    "from the first call until flush() returned (every point acknowledged)",
    "points_per_s_http": "the same on the HTTP transport (NDJSON batches)",
    "raw_protocol_points_per_s": "the same points pre-encoded as TS_PUT_BUFFERED_BATCH frames "
    "of the SDK's batch size, pipelined on one connection, every WriteAck awaited (same run)",
    "binary_vs_raw": "points_per_s_binary / raw_protocol_points_per_s (goal >= 0.8)",
    "memory_mb_per_1m_queued": "Python: MB the queue holds per million points queued and not "
    "sent (tracemalloc; goal <= 64)",
}


def command_for(lang: str, stack: Path, size: BenchSize) -> tuple[list[str], Path]:
    """The language's benchmark program and the folder it runs in."""
    if lang == "python":
        script = REPO / "clients" / "python" / "bench" / "sdk_bench.py"
        return [sys.executable, str(script), "--stack", str(stack), "--size", size], REPO
    if lang == "typescript":
        folder = REPO / "clients" / "typescript"
        script = folder / "dist" / "bench" / "sdk_bench.js"
        return ["node", str(script), "--stack", str(stack), "--size", size], folder
    folder = REPO / "clients" / "go"
    args = ["go", "run", "./cmd/themis-sdk-bench", "--stack", str(stack), "--size", size]
    return args, folder


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            found: dict[str, Any] = json.loads(line)
            return found
    raise BenchmarkFailed(f"the SDK benchmark printed no JSON object:\n{text[-2000:]}")


class SdkBenchmark:
    """The module-like object :mod:`pipeline.bench.cli` lists for one ``--lang``."""

    DEFINITIONS: Mapping[str, str] = DEFINITIONS

    def __init__(self, lang: str, stack: Path | None = None) -> None:
        self.lang = lang
        self.stack = stack
        """A running stack's ``stack.json`` to measure on (``--stack``); none: start one."""

    def run(self, size: BenchSize, settings: Settings) -> dict[str, object]:
        if self.stack is not None:
            figures = self._measure(self.stack, size)
            return {"lang": self.lang, **figures, "goals": self.goals(figures),
                    "stack": str(self.stack)}  # fmt: skip
        with live_stack(settings, "sdk") as (described, broker):
            figures = self._measure(described, size)
        return {"lang": self.lang, **figures, "goals": self.goals(figures), **broker.fields()}

    def _measure(self, described: Path, size: BenchSize) -> dict[str, Any]:
        args, cwd = command_for(self.lang, described, size)
        progress(f"running {' '.join(args[:2])} ({size})")
        done = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, check=False,
            timeout=_RUN_TIMEOUT_S[size],
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchmarkFailed(
                f"{' '.join(args[:2])} exited with {done.returncode}:\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        return _last_json(done.stdout)

    @staticmethod
    def goals(figures: Mapping[str, Any]) -> dict[str, object]:
        checked: dict[str, object] = {
            "binary_vs_raw": goal(
                float(figures["points_per_s_binary"]) / float(figures["raw_protocol_points_per_s"]),
                0.8,
            )
        }
        if "memory_mb_per_1m_queued" in figures:
            checked["memory_mb_per_1m_queued"] = goal_below(
                float(figures["memory_mb_per_1m_queued"]), 64.0001
            )
        return checked

    def render(self, result: Mapping[str, object]) -> str:
        goals: Mapping[str, Any] = result["goals"]  # type: ignore[assignment]
        rows = [(name, str(result.get(name)), "") for name in (
            "points_per_s_binary", "points_per_s_http", "raw_protocol_points_per_s")]  # fmt: skip
        rows += [goal_row(name, checked) for name, checked in goals.items()]
        width = max(len(r[0]) for r in rows)
        lines = [f"themis bench sdk --lang {result.get('lang')} ({result.get('size')})"]
        lines += [f"  {name:<{width}}  {value:>12}  {note}" for name, value, note in rows]
        return "\n".join(lines)
