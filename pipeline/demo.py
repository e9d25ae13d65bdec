"""``themis demo``: the main job end to end on a local broker.

Brings up the broker (the one order of preference), applies the topic specs,
starts a worker, sends a sample load through the pipeline and prints what the
pipeline did. Each pipeline path adds its step here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.config import Settings, load_settings
from pipeline.kafka.broker import running_broker
from pipeline.kafka.local_broker import LocalKafka
from pipeline.kafka.topics import apply_topics


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def start_worker_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """``themis worker`` as a child process with the same settings."""
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap_servers or ""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker", "-l", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM the worker, wait for a clean exit (it flushes and commits), SIGKILL late."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def run_demo() -> int:
    """Run the demo; returns the process exit code."""
    t0 = time.monotonic()
    settings = load_settings()
    handle = running_broker(settings)
    if handle is None:
        _say(f"starting local Kafka cluster {settings.kafka.cluster!r}")
        record = LocalKafka(settings.kafka.cluster).up()
        print(f"    broker at {record.bootstrap_servers}, started in {record.startup_seconds} s")
        bootstrap = record.bootstrap_servers
    else:
        bootstrap = handle.bootstrap_servers
        _say(f"using broker at {bootstrap} ({handle.source})")
    settings = load_settings(overrides={"kafka": {"bootstrap_servers": bootstrap}})
    _say("applying topic specs (topics/*.yaml)")
    for report in apply_topics(bootstrap, settings):
        print(f"    {report.topic}: {report.action}")
    log_path = settings.worker.data_dir / "demo-worker.log"
    _say(f"starting worker (log: {log_path})")
    worker = start_worker_process(settings, log_path)
    try:
        time.sleep(0)  # the pipeline paths' demo steps run here
    finally:
        code = stop_worker_process(worker)
        _say(f"worker stopped (exit {code})")
    _say(f"demo finished in {time.monotonic() - t0:.1f} s; the broker keeps running")
    print(f"    stop it with: themis kafka down --name {settings.kafka.cluster}")
    return 0
