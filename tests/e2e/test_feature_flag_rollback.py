"""The roadmap's rollback path, as docs/operations.md "Rolling back with the feature flags"
describes it: points and vectors sit in a worker's buffers; the operator switches
``features.ts_auto_buffer.enabled`` and ``features.vector_auto_buffer.enabled`` off and
restarts the worker and the facade. The worker's SIGTERM flushes what it buffered, the
buffered endpoints refuse with 503 naming the direct one, and the direct endpoints work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import ADMIN, DIM, WRITER, FacadeThread, facade_settings
from tests.fixtures.support import (
    settings_as_env,
    start_themis_worker,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.e2e

T0 = 1_702_645_200_000
POINTS = 40
VECTORS = 6


class Deployment:
    """A worker process and the facade (in a thread) under one set of settings."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.worker = start_themis_worker(settings_as_env(settings), log)
        self.facade = FacadeThread(settings)
        self.log = log
        wait_until(
            lambda: self.call("GET", "/vectors/buffer/stats")[0] == 200,
            timeout_s=90,
            what="the worker behind the facade",
        )

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] = WRITER
    ) -> tuple[int, Any]:
        status, answer, _ = self.facade.call(method, path, body, headers)
        return status, answer

    def stop(self) -> int:
        """Stop the facade, then SIGTERM the worker (it flushes, commits, leaves); its exit code."""
        self.facade.close()
        return stop_process(self.worker, timeout_s=60)


@pytest.fixture
def flags_on(make_settings: MakeSettings) -> Settings:
    """Both buffers on, with flush intervals far beyond the test: only a flush empties them."""
    settings = facade_settings(make_settings)
    return dataclasses.replace(
        settings,
        vector_auto_buffer=dataclasses.replace(
            settings.vector_auto_buffer, flush_interval_ms=600_000
        ),
    )


@pytest.fixture
def deployments(tmp_path: Path) -> Iterator[list[Deployment]]:
    started: list[Deployment] = []
    yield started
    for deployment in started:
        if deployment.worker.poll() is None:
            deployment.stop()


def _vectors() -> dict[str, list[float]]:
    rng = np.random.default_rng(11)
    return {f"doc{i}": rng.normal(0, 1, DIM).round(4).tolist() for i in range(VECTORS)}


def test_flags_off_refuse_buffered_writes_keep_direct_ones_and_the_restart_flushes_the_buffers(
    flags_on: Settings, deployments: list[Deployment], tmp_path: Path
) -> None:
    before = Deployment(flags_on, tmp_path / "worker-on.log")
    deployments.append(before)
    points = [
        {"metric": "cpu", "entity": "rollback", "timestamp_ms": T0 + i, "value": i * 0.25}
        for i in range(POINTS)
    ]
    for point in points:
        assert before.call("POST", "/ts/put/buffered", point)[0] == 200
    vectors = _vectors()
    for pk, vector in vectors.items():
        body = {"pk": pk, "vector": vector, "metadata": {"n": pk}}
        assert before.call("POST", "/vectors/add/buffered", body)[0] == 200

    def buffered() -> tuple[int, int]:
        ts = before.call("GET", "/ts/buffer/stats")[1]
        vec = before.call("GET", "/vectors/buffer/stats")[1]
        return ts["current_buffer_size"], vec["current_buffer_size"]

    wait_until(
        lambda: buffered() == (POINTS, VECTORS), timeout_s=60, what="everything in the buffers"
    )

    # the rollback: both flags off, the worker and the facade restarted
    off = dataclasses.replace(
        flags_on,
        ts_auto_buffer=dataclasses.replace(flags_on.ts_auto_buffer, enabled=False),
        vector_auto_buffer=dataclasses.replace(flags_on.vector_auto_buffer, enabled=False),
    )
    assert before.stop() == 0, before.log.read_text()[-3000:]
    after = Deployment(off, tmp_path / "worker-off.log")
    deployments.append(after)

    refusals: dict[str, tuple[Any, str]] = {
        "/ts/put/buffered": (points[0], "/ts/put"),
        "/ts/put/buffered/batch": (points[:2], "/ts/put"),
        "/vectors/add/buffered": ({"pk": "x", "vector": [0.0] * DIM}, "/vectors/add"),
        "/vectors/update/buffered": ({"pk": "doc0", "vector": [0.0] * DIM}, "/vectors/add"),
    }
    for path, (body, direct) in refusals.items():
        status, answer = after.call("POST", path, body)
        assert status == 503, (path, status, answer)
        assert answer["success"] is False
        assert f"use the direct endpoint {direct}" in answer["error"], answer
    status, answer = after.call("DELETE", "/vectors/remove/buffered", {"pk": "doc0"})
    assert (status, answer["success"]) == (503, False), answer

    direct_point = {"metric": "cpu", "entity": "rollback", "timestamp_ms": T0 + POINTS,
                    "value": 99.5}  # fmt: skip
    assert after.call("POST", "/ts/put", direct_point) == (
        200,
        {"success": True, "durable": True},
    )
    direct_vector = [1.0] + [0.0] * (DIM - 1)
    status, answer = after.call(
        "POST", "/vectors/add", {"pk": "direct", "vector": direct_vector, "metadata": {}}
    )
    assert (status, answer["success"], answer["durable"]) == (200, True, True), answer

    # what the old worker buffered was flushed at its SIGTERM: the new one holds nothing
    # buffered, and every point and vector reads back
    ts_stats = after.call("GET", "/ts/buffer/stats")[1]
    assert ts_stats["current_buffer_size"] == 0, ts_stats
    query = "/ts/query?metric=cpu&entity=rollback"
    status, answer = after.call("GET", query)
    assert status == 200, answer
    assert answer["points"] == [
        {"timestamp_ms": p["timestamp_ms"], "value": p["value"]} for p in [*points, direct_point]
    ]

    def found(vector: list[float]) -> str:
        status, answer = after.call("POST", "/vectors/search", {"vector": vector, "k": 1})
        assert status == 200, answer
        return str(answer["results"][0]["pk"]) if answer["results"] else ""

    for pk, vector in vectors.items():
        assert found(vector) == pk
    wait_until(lambda: found(direct_vector) == "direct", timeout_s=30, what="the direct add")
    assert after.call("POST", "/ts/buffer/flush", headers=ADMIN)[0] == 200  # still allowed
