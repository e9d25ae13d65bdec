"""What benchmarks share: the ``themis bench`` command, polling, a worker process, output.

Every wait polls with a deadline and fails with :class:`BenchmarkFailed` naming what
it waited for; nothing sleeps in the hope that something happened. Progress goes to
stderr, so stdout holds only the result (one JSON object with ``--json``).

This module is imported when ``themis`` builds its parser, so it imports nothing
heavy; each benchmark module is imported only when its command runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka.admin import AdminClient

from pipeline.config import Settings, child_env
from pipeline.errors import BenchmarkFailed, ThemisError

_T = TypeVar("_T")

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def emit(
    result: Mapping[str, object], *, as_json: bool, render: Callable[[Mapping[str, object]], str]
) -> None:
    """Print ``result`` on stdout: one JSON object, or the table ``render`` makes."""
    if as_json:
        print(json.dumps(result, indent=2), flush=True)
    else:
        print(render(result), flush=True)


def run_bench_main(
    name: str,
    description: str,
    run: Callable[[bool], Mapping[str, object]],
    render: Callable[[Mapping[str, object]], str],
    argv: Sequence[str] | None,
) -> int:
    """``python -m pipeline.bench.NAME [--quick] [--json]``: parse, run, print; the exit code."""
    from pipeline.bench.cli import add_bench_arguments

    parser = add_bench_arguments(
        argparse.ArgumentParser(prog=f"themis bench {name}", description=description)
    )
    args = parser.parse_args(argv)
    try:
        emit(run(args.quick), as_json=args.json, render=render)
    except ThemisError as exc:
        print(f"themis bench {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def progress(message: str) -> None:
    """One line of progress on stderr."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- measuring --------------------------------------------------------------------


def machine_info() -> dict[str, object]:
    """CPUs this process may use (what ``nproc`` prints), Python and platform."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
    }


def best_rate(work: Callable[[], object], units: int, repetitions: int) -> float:
    """The best ``units`` per second over ``repetitions`` runs of ``work``."""
    best = float("inf")
    for _ in range(repetitions):
        t0 = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t0)
    return units / best


def wait_for(
    probe: Callable[[], _T | None], *, timeout_s: float, interval_s: float, what: str
) -> _T:
    """Call ``probe`` every ``interval_s`` seconds until it returns a value that is not None.

    Raises :class:`BenchmarkFailed` naming ``what`` when ``timeout_s`` seconds pass first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise BenchmarkFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def rounded(value: float, digits: int = 3) -> float:
    """``value`` with ``digits`` significant digits (rates are not precise beyond that)."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


# -- a worker child process -------------------------------------------------------


class WorkerProcess:
    """``themis worker`` as a child process in its own session, loading ``settings``.

    Output goes to ``log_path``. :meth:`stats` reads one of the worker's JSON web
    pages; :meth:`stop` ends it with SIGTERM (it flushes and commits), SIGKILL late.
    """

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.port = settings.worker.web_port
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "worker", "-l", "warning"],
                env=child_env(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log written)"

    def stats(self, page: str) -> dict[str, Any] | None:
        """The JSON of ``page`` (e.g. ``/ts/buffer/stats``); ``None`` while the web server is down.

        Raises :class:`BenchmarkFailed` with the log tail if the worker has exited.
        """
        if self._proc.poll() is not None:
            raise BenchmarkFailed(
                f"the worker exited with code {self._proc.returncode}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5.0)
        try:
            conn.request("GET", page)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                return None
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()
        loaded: dict[str, Any] = json.loads(body)
        return loaded

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM the worker's process group and wait; SIGKILL after ``timeout_s`` seconds."""
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        return self._proc.returncode


def delete_topics_under(bootstrap: str, prefix: str, timeout_s: float = 30.0) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; returns the ones still there.

    Best effort: a topic that cannot be deleted is reported, not raised.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = sorted(t for t in admin.list_topics(timeout=timeout_s).topics if t.startswith(prefix))
    if not names:
        return []
    failed = []
    for topic, future in admin.delete_topics(names, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except Exception:  # reported to the caller; a left-over topic is harmless
            failed.append(topic)
    return failed
