"""The HTTP facade in tests: in a thread or as a process, alone or in front of a worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from pipeline.config import Settings
from pipeline.facade import create_facade
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics
from tests.conftest import MakeSettings
from tests.support import (
    settings_as_env,
    start_process,
    start_themis_worker,
    stop_process,
    wait_until,
)

DIM = 16
WRITER = {"Authorization": "Bearer writer-key"}
ADMIN = {"X-API-Key": "admin-key"}
KEYS = "writer-key:writer,admin-key:admin"


class FacadeThread:
    """The facade on its own event loop in a thread, on a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.settings = dataclasses.replace(
            settings, facade=dataclasses.replace(settings.facade, port=self.port)
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        app = create_facade(self.settings, settings.kafka.bootstrap_servers)
        self.runner = web.AppRunner(app)
        self._run(self.runner.setup())
        self._run(web.TCPSite(self.runner, "127.0.0.1", self.port).start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self._run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        return http_call(self.port, method, path, body, headers)


def http_call(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    """``(status, decoded JSON, headers)``; ``body`` bytes go as they are, else as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    try:
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None, dict(resp.getheaders())
    finally:
        conn.close()


def facade_settings(make_settings: MakeSettings, **facade: object) -> Settings:
    settings = make_settings(
        facade={"api_keys": KEYS} | facade,
        ts_auto_buffer={"flush_interval_ms": 60_000},
        vector_auto_buffer={
            "dimension": DIM,
            "snapshot_interval_ms": 300,
            "flush_interval_ms": 200,
        },
    )
    assert settings.kafka.bootstrap_servers
    apply_topics(settings.kafka.bootstrap_servers, settings, partitions_override=2)
    return settings


@contextlib.contextmanager
def facade_behind_worker(
    settings: Settings, log_dir: Path, headers: dict[str, str]
) -> Iterator[FacadeThread]:
    """A worker process and the facade in a thread, once the facade reaches the worker."""
    worker = start_themis_worker(settings_as_env(settings), log_dir / "worker.log")
    facade = FacadeThread(settings)
    try:
        wait_until(
            lambda: facade.call("GET", "/vectors/buffer/stats", headers=headers)[0] == 200,
            timeout_s=90,
            what="the worker's web server behind the facade",
        )
        yield facade
    finally:
        facade.close()
        stop_process(worker)


def start_facade_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``themis facade`` as a child process on ``settings.facade.port``, once it answers."""
    proc = start_process(
        [sys.executable, "-m", "pipeline.facade.cli", "facade"], settings_as_env(settings), log
    )

    def answers() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", settings.facade.port, timeout=2)
            conn.request("GET", "/metrics")
            return conn.getresponse().status == 200
        except OSError:
            return False

    try:
        wait_until(answers, timeout_s=60, what="the facade subprocess to listen")
    except AssertionError:
        stop_process(proc)
        raise
    return proc
