"""Helpers shared by integration tests: polling with deadlines, worker processes, offsets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from pipeline.config import Settings, settings_to_env

REPO = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def settings_env(env: Mapping[str, str]) -> dict[str, str]:
    """The current environment plus ``env``, with the repo importable."""
    merged = dict(os.environ)
    merged.update(env)
    merged["PYTHONPATH"] = str(REPO) + os.pathsep + merged.get("PYTHONPATH", "")
    return merged


def start_process(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a child process in its own session, output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            cwd=REPO,
            env=settings_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def start_themis_worker(env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``themis worker`` as a child process."""
    return start_process([sys.executable, "-m", "pipeline.cli", "worker", "-l", "info"], env, log)


def start_faust_worker(module: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``faust -A module worker`` as a child process."""
    return start_process(
        [sys.executable, "-m", "faust", "-A", module, "worker", "-l", "info"], env, log
    )


def stop_process(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout_s: float = 30.0
) -> int:
    """Send ``sig`` to the process group and wait; SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Sum of the group's committed offsets over the topic's partitions (0 where none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        consumer.close()


def settings_as_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings."""
    return settings_to_env(settings)


def run_quick_bench(module: str, bootstrap: str, timeout_s: float) -> dict[str, object]:
    """``python -m pipeline.bench.MODULE --quick --json`` against ``bootstrap``; its report."""
    env = settings_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "THEMIS_CONFIG": os.devnull})
    done = subprocess.run(
        [sys.executable, "-m", f"pipeline.bench.{module}", "--quick", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict[str, object] = json.loads(done.stdout)
    return report


class FakeClock:
    """A monotonic clock in seconds that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
