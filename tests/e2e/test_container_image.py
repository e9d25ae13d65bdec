"""The pipeline's OCI image (deploy/container/Containerfile), built and run with podman.

A worker container and a facade container run against the session's broker on the
host's network (the broker listens on loopback); points go in through the facade and are
queried back, from the workers' buffers and again once flushed to the worker's block
store in its volume. The image is built once per session by ``scripts/build-image.sh``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from pipeline.config import Settings, settings_to_env
from pipeline.kafka.local_broker import free_port
from tests.fixtures.broker import MakeSettings
from tests.fixtures.containers import RUN_FLAGS, container_log, podman
from tests.fixtures.facade import ADMIN, DIM, WRITER, facade_settings, http_call

pytestmark = pytest.mark.e2e

DATA_VOLUME = "/var/lib/themis"
NON_ROOT_UID = "10001"


@contextlib.contextmanager
def container(
    image: str, name: str, env: Mapping[str, str], args: list[str], *, volume: str | None = None
) -> Iterator[str]:
    """``podman run -d`` on the host's network; removed (with its log printed) at the end."""
    env_args = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    mount = ["--volume", f"{volume}:{DATA_VOLUME}"] if volume else []
    podman("run", "--detach", "--name", name, "--network", "host", *RUN_FLAGS, *mount,
           *env_args, image, *args)  # fmt: skip
    try:
        yield name
    finally:
        print(f"--- {name} log tail ---\n{container_log(name)}")
        podman("rm", "--force", "--volumes", "--time", "5", name, check=False)


def container_env(settings: Settings, facade_port: int) -> dict[str, str]:
    """``settings`` for a process in the image: data in its volume, the facade's port."""
    env = settings_to_env(settings)
    env["THEMIS_WORKER_DATA_DIR"] = f"{DATA_VOLUME}/data"
    env["THEMIS_FACADE_PORT"] = str(facade_port)
    return env


def wait_for(what: str, predicate: Any, *, timeout_s: float, containers: list[str]) -> None:
    """Poll ``predicate``; fail with ``what`` and a log when a container exits or time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            if predicate():
                return
        for name in containers:
            state = podman("inspect", "--format", "{{.State.Status}}", name)
            assert state == "running", f"{name} is {state} while waiting for {what}:\n" + (
                container_log(name)
            )
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.2)


def query(port: int, metric: str, entity: str) -> list[dict[str, Any]]:
    status, body, _ = http_call(
        port, "GET", f"/ts/query?metric={metric}&entity={entity}", headers=WRITER
    )
    assert status == 200, body
    points: list[dict[str, Any]] = body["points"]
    return points


def test_image_runs_worker_and_facade_as_non_root_and_answers_the_points_put_through_it(
    pipeline_image: str, make_settings: MakeSettings
) -> None:
    settings = facade_settings(make_settings)
    facade_port = free_port()
    env = container_env(settings, facade_port)
    tag = uuid.uuid4().hex[:8]
    volume = podman("volume", "create", f"themis-test-{tag}")
    try:
        with (
            container(
                pipeline_image, f"themis-worker-{tag}", env, ["worker"], volume=volume
            ) as worker,
            container(pipeline_image, f"themis-facade-{tag}", env, ["facade"]) as facade,
        ):
            wait_for(
                "the facade to reach the worker",
                lambda: http_call(facade_port, "GET", "/ts/buffer/stats", headers=WRITER)[0] == 200,
                timeout_s=120,
                containers=[worker, facade],
            )

            # Both run as the image's user, not root, and the worker's data is its volume.
            for name in (worker, facade):
                assert podman("exec", name, "id", "-u") == NON_ROOT_UID
                assert podman("top", name, "user").splitlines()[1:] == ["themis"]
            mounts = json.loads(podman("inspect", "--format", "{{json .Mounts}}", worker))
            assert [(m["Name"], m["Destination"]) for m in mounts] == [(volume, DATA_VOLUME)]

            metric, entity = f"cpu_{tag}", "container-host"
            points = [
                {"metric": metric, "entity": entity, "timestamp_ms": 1_700_000_000_000 + i,
                 "value": i * 0.25}
                for i in range(200)
            ]  # fmt: skip
            status, body, _ = http_call(
                facade_port, "POST", "/ts/put/buffered/batch", points[:-1], WRITER
            )
            assert (status, body["points"]) == (200, 199), body
            status, body, _ = http_call(facade_port, "POST", "/ts/put/buffered", points[-1], WRITER)
            assert status == 200, body
            expected = [{"timestamp_ms": p["timestamp_ms"], "value": p["value"]} for p in points]

            # From the worker's buffer, once it consumed them ...
            wait_for(
                "the buffered points in a query",
                lambda: query(facade_port, metric, entity) == expected,
                timeout_s=60,
                containers=[worker, facade],
            )
            # ... and from its block store, after a flush.
            status, flushed, _ = http_call(facade_port, "POST", "/ts/buffer/flush", None, ADMIN)
            assert (status, flushed["success"]) == (200, True), flushed
            assert flushed["points_flushed"] >= len(points)
            assert query(facade_port, metric, entity) == expected
            status, stats, _ = http_call(facade_port, "GET", "/ts/buffer/stats", headers=WRITER)
            assert stats["blocks_written"] >= 1
            assert stats["current_buffer_size"] == 0

            # A vector, searchable once flushed, and snapshotted into the worker's volume.
            vector = [float(i % 5) - 2.0 for i in range(DIM)]
            body = {"pk": f"doc-{tag}", "vector": vector, "metadata": {"from": "container"}}
            status, added, _ = http_call(facade_port, "POST", "/vectors/add/buffered", body, WRITER)
            assert status == 200, added
            status, flushed, _ = http_call(
                facade_port, "POST", "/vectors/buffer/flush", None, ADMIN
            )
            assert status == 200, flushed

            def search() -> list[tuple[str, object]]:
                query = {"vector": vector, "k": 1}
                status, found, _ = http_call(facade_port, "POST", "/vectors/search", query, WRITER)
                assert status == 200, found
                return [(r["pk"], r["metadata"]) for r in found["results"]]

            # The worker applies it at its next flush once it has consumed the record.
            wait_for(
                "the vector in a search",
                lambda: search() == [(f"doc-{tag}", {"from": "container"})],
                timeout_s=30,
                containers=[worker, facade],
            )
            wait_for(
                "a vector snapshot in the worker's volume",
                lambda: podman(
                    "exec", worker, "find", f"{DATA_VOLUME}/data/vectors", "-type", "f", check=False
                ),
                timeout_s=30,
                containers=[worker],
            )

            # `themis` is PID 1: SIGTERM (podman stop) must end it cleanly, not time out.
            for name in (facade, worker):
                t0 = time.monotonic()
                podman("stop", "--time", "30", name, timeout_s=60)
                code = podman("inspect", "--format", "{{.State.ExitCode}}", name)
                assert (code, time.monotonic() - t0 < 25) == ("0", True), name
    finally:
        podman("volume", "rm", "--force", volume, check=False)
