"""What every benchmark shares: the protocol, the one runner and its envelope, and the waits.

A benchmark (:class:`Benchmark`) has a name, a help line, its definitions, a
``run(size, settings)`` that returns its figures and a ``render(result)`` that
turns the whole result into a table. :func:`run_benchmark` runs one and wraps
its figures in the envelope every benchmark's JSON shares::

    {"benchmark": NAME, "size": "smoke"|"quick"|"full", "quick": BOOL (size != "full"),
     ...the benchmark's figures, ending with where its broker came from...,
     "machine": {"nproc", "python", "implementation", "platform"},
     "seconds_total": SECONDS, "definitions": {FIGURE: WHAT IT MEASURES}}

The benchmarks on one broker end their figures with :meth:`BenchBroker.fields`
(``topic_prefix`` and ``broker``: ``source``, ``bootstrap_servers``,
``startup_seconds``).

Every wait polls with a deadline and fails with :class:`~pipeline.errors.BenchmarkFailed`
naming what it waited for; nothing sleeps in the hope that something happened.
Progress goes to stderr, so stdout holds only the result (one JSON object with
``--json``). This module imports none of the benchmarks; ``pipeline.bench.cli``
lists them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pipeline.config import Settings, child_env
from pipeline.errors import BenchmarkFailed
from pipeline.kafka.broker import BrokerHandle, provide_broker
from pipeline.kafka.clients import AdminClient
from pipeline.worker.client import run_with_client
from pipeline.worker.process import ChildProcess, WorkerProcess, themis_command

__all__ = [
    "BenchBroker",
    "BenchSize",
    "Benchmark",
    "WorkerTiming",
    "bench_broker",
    "best_rate",
    "delete_topics_under",
    "exited",
    "goal",
    "goal_below",
    "goal_row",
    "goal_verdict",
    "machine_info",
    "print_result",
    "progress",
    "rounded",
    "run_benchmark",
    "time_worker",
    "wait_for",
    "worker_page",
    "worker_running",
]

_T = TypeVar("_T")
BenchSize = Literal["smoke", "quick", "full"]
"""How big a run is: ``full`` (the figures to quote), ``quick`` (about a minute; still
meaningful ratios) or ``smoke`` (the smallest loads that run every step: for the test
suite, whose figures prove the steps ran and say nothing about speed)."""
Page = dict[str, Any]
"""One JSON page of a worker."""


class Benchmark(Protocol):
    """One ``themis bench NAME``."""

    @property
    def name(self) -> str:
        """The sub-command, also the result's ``benchmark``."""
        ...

    @property
    def help(self) -> str:
        """One line for ``themis bench --help``."""
        ...

    @property
    def definitions(self) -> Mapping[str, str]:
        """What each headline figure measures; copied into the result."""
        ...

    def run(self, size: BenchSize, settings: Settings) -> dict[str, object]:
        """Measure at ``size`` and return the figures."""
        ...

    def render(self, result: Mapping[str, object]) -> str:
        """The result (envelope included) as a readable table."""
        ...


def run_benchmark(benchmark: Benchmark, size: BenchSize, settings: Settings) -> dict[str, object]:
    """Run ``benchmark`` and return its figures in the envelope of the module docstring.

    Nothing but the result may reach stdout (a broker started for the run prints
    there), so the run's stdout goes to stderr. Raises
    :class:`~pipeline.errors.BenchmarkFailed` (or another ``ThemisError``) when a
    step fails.
    """
    begun = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):
        figures = benchmark.run(size, settings)
    return {
        "benchmark": benchmark.name,
        "size": size,
        "quick": size != "full",
        **figures,
        "machine": machine_info(),
        "seconds_total": round(time.monotonic() - begun, 1),
        "definitions": dict(benchmark.definitions),
    }


def print_result(result: Mapping[str, object], benchmark: Benchmark, *, as_json: bool) -> None:
    """Print ``result`` on stdout: one JSON object, or the benchmark's table."""
    print(json.dumps(result, indent=2) if as_json else benchmark.render(result), flush=True)


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


def goal(value: float, at_least: float) -> dict[str, object]:
    """A figure against its goal, as results report it: ``{"value", "at_least", "met"}``
    (both numbers to four significant digits; ``met`` compares them unrounded)."""
    return {"value": rounded(value, 4), "at_least": rounded(at_least, 4), "met": value >= at_least}


def goal_below(value: float, below: float) -> dict[str, object]:
    """A figure against a ceiling, as :func:`goal` reports a floor:
    ``{"value", "below", "met"}``."""
    return {"value": rounded(value, 4), "below": rounded(below, 4), "met": value < below}


def goal_verdict(checked: Mapping[str, Any]) -> str:
    """``goal >= X: met`` (or ``< X``, ``NOT met``) of a :func:`goal` or :func:`goal_below`."""
    bound = f">= {checked['at_least']}" if "at_least" in checked else f"< {checked['below']}"
    return f"goal {bound}: {'met' if checked['met'] else 'NOT met'}"


def goal_row(name: str, checked: Mapping[str, Any], note: str = "") -> tuple[str, str, str]:
    """A table row ``(name, value, verdict[; note])`` for a :func:`goal` of a result."""
    verdict = goal_verdict(checked)
    return name, f"{checked['value']}", f"{verdict}; {note}" if note else verdict


# -- a broker for the run -----------------------------------------------------------


@dataclass(frozen=True)
class BenchBroker:
    """The broker of one run, the root of its topic namespaces and a scratch directory."""

    handle: BrokerHandle
    run_id: str
    """``bench-<pid>-<random>``; every topic of the run is under ``<run_id>.``."""
    work_dir: Path

    @property
    def bootstrap(self) -> str:
        return self.handle.bootstrap_servers

    def fields(self) -> dict[str, object]:
        """``topic_prefix`` and ``broker``, as the result reports them."""
        return {
            "topic_prefix": f"{self.run_id}.",
            "broker": {
                "source": self.handle.source,
                "bootstrap_servers": self.handle.bootstrap_servers,
                "startup_seconds": self.handle.startup_seconds,
            },
        }


@contextlib.contextmanager
def bench_broker(settings: Settings, name: str) -> Iterator[BenchBroker]:
    """A broker (:func:`~pipeline.kafka.broker.provide_broker`) and a scratch directory.

    ``KAFKA_BOOTSTRAP_SERVERS`` (``settings.kafka.bootstrap_servers``) chooses a given
    broker, else one is started for the block (Docker, else a local JVM named
    ``bench-<pid>``) and stopped after it. On a given broker the run's topics are
    deleted at the end; a broker started here goes away whole.
    """
    run_id = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    progress("finding a broker (KAFKA_BOOTSTRAP_SERVERS, else Docker, else a local JVM)")
    with (
        provide_broker(settings, local_name=f"bench-{os.getpid()}") as handle,
        tempfile.TemporaryDirectory(prefix=f"themis-bench-{name}-") as work_dir,
    ):
        progress(
            f"broker at {handle.bootstrap_servers} ({handle.source}, "
            f"started in {handle.startup_seconds} s); topics under {run_id}.*"
        )
        try:
            yield BenchBroker(handle, run_id, Path(work_dir))
        finally:
            if handle.source == "environment":
                left = delete_topics_under(handle.bootstrap_servers, f"{run_id}.")
                if left:
                    progress(f"could not delete topics {', '.join(left)}")


@contextlib.contextmanager
def live_stack(settings: Settings, name: str) -> Iterator[tuple[Path, BenchBroker]]:
    """``themis stack up`` on the run's broker (:func:`bench_broker`) for the block: the
    path of its ``stack.json`` and the broker. The stack is stopped after the block."""
    with bench_broker(settings, name) as broker:
        root = broker.work_dir / "stack"
        env = child_env(settings) | {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
        stack = ChildProcess(
            [*themis_command(), "stack", "up", "--dir", str(root)], env, root / "stack.log"
        )
        try:
            described = root / "stack.json"
            progress("starting a stack (themis stack up)")

            def ready() -> bool | None:
                stack.check_alive()
                return True if described.exists() else None

            wait_for(ready, timeout_s=180, interval_s=0.25, what="themis stack up")
            yield described, broker
        finally:
            stack.stop(timeout_s=90)


def delete_topics_under(bootstrap: str, prefix: str, timeout_s: float = 30.0) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; returns the ones still there.

    Best effort: a topic that cannot be deleted is reported, not raised.
    """
    with AdminClient({"bootstrap.servers": bootstrap}) as admin:
        topics = admin.list_topics(timeout=timeout_s).topics
        names = sorted(t for t in topics if t.startswith(prefix))
        if not names:
            return []
        failed = []
        for topic, future in admin.delete_topics(names, operation_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
            except Exception:  # reported to the caller; a left-over topic is harmless
                failed.append(topic)
    return failed


# -- a worker child process -----------------------------------------------------------


def exited(child: ChildProcess, what: str) -> None:
    """Raise :class:`BenchmarkFailed` naming ``what``, with ``child``'s log tail, if it has
    exited."""
    if child.returncode is not None:
        raise BenchmarkFailed(
            f"{what} exited with code {child.returncode}; log {child.log_path}:\n{child.log_tail()}"
        )


@contextlib.contextmanager
def worker_running(settings: Settings, log_path: Path) -> Iterator[WorkerProcess]:
    """``themis worker`` with ``settings`` for the block, stopped at its end (SIGTERM: it
    flushes and commits; ``worker.stop()`` afterwards returns its exit code). A
    :class:`BenchmarkFailed` leaving the block carries the worker's log tail."""
    worker = WorkerProcess(settings, log_path)
    try:
        yield worker
    except BenchmarkFailed as exc:
        raise BenchmarkFailed(f"{exc}\nworker log tail:\n{worker.log_tail()}") from None
    finally:
        worker.stop()


def worker_page(worker: WorkerProcess, path: str) -> Page | None:
    """The JSON of one of ``worker``'s pages (``pipeline.worker.pages``) through
    :class:`~pipeline.worker.client.WorkerClient`; ``None`` while it does not answer.

    Raises :class:`BenchmarkFailed` if the worker has exited (:func:`worker_running`
    adds its log tail).
    """
    if worker.returncode is not None:
        raise BenchmarkFailed(f"the worker exited with code {worker.returncode}")
    return run_with_client([worker.url], lambda c: c.page(worker.url, "GET", path), timeout_s=5.0)


@dataclass(frozen=True)
class WorkerTiming:
    """A worker's pages when it first consumed input and when all of it was done."""

    first: Page
    final: Page
    ready_seconds: float
    """From launching the worker to the first page showing consumed input."""
    seconds: float
    """From that page to the page showing everything done."""


def time_worker(
    worker: WorkerProcess,
    path: str,
    *,
    launched: float,
    consumed: Callable[[Page], bool],
    done: Callable[[Page], bool],
    startup_timeout_s: float,
    done_timeout_s: float,
    done_interval_s: float,
    what: str,
    done_what: str,
) -> WorkerTiming:
    """Poll ``path`` until ``consumed`` (the clock starts), then until ``done`` (it stops).

    ``launched`` is the ``time.monotonic()`` of the worker's launch. Start-up (JVM,
    Faust, group join) is not timed. A failed wait names ``what`` (the input) or
    ``done_what`` (the end state); :func:`worker_running` adds the worker's log tail.
    """

    def probe(test: Callable[[Page], bool]) -> Callable[[], Page | None]:
        def poll() -> Page | None:
            page = worker_page(worker, path)
            return page if page is not None and test(page) else None

        return poll

    first = wait_for(
        probe(consumed),
        timeout_s=startup_timeout_s,
        interval_s=0.02,
        what=f"the {what} worker to consume its first input",
    )
    started = time.monotonic()
    final = wait_for(
        probe(done), timeout_s=done_timeout_s, interval_s=done_interval_s, what=done_what
    )
    return WorkerTiming(first, final, started - launched, time.monotonic() - started)
