"""The roadmap's geo-replication scenario: a primary and two replicas, one over Kafka and
one over HTTPS with client certificates, a replica SIGKILLed and restarted mid-stream,
and all three answering the same queries.

The primary is a worker and a facade on the session broker. ``themis wal ship`` ships
its WAL to both replicas: ``kafka://`` (a replica cluster's ``<namespace>.wal.replica``
topic, applied by ``themis wal apply``; here the replica cluster is the session broker,
a second JVM broker costing more than it shows) and ``https://`` (``themis wal serve
--tls-client-ca``, the scenario's other region). The stream runs in bounded rounds of
points and vectors; after round 2 the HTTPS replica is SIGKILLed, after round 5 it is
started again on its data. Then the same series query and the same k-NN searches are
asked of all three, polled with a deadline, until their answers are equal, and equal to
what was sent (points exactly, top-k pks as an exact search over the sent vectors).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.kafka.local_broker import free_port
from pipeline.replication import ReplicaState
from pipeline.ts.point import series_key
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import ADMIN, DIM, WRITER, FacadeThread, facade_settings
from tests.fixtures.support import (
    REPO,
    THEMIS,
    settings_as_env,
    settings_env,
    start_process,
    start_themis_worker,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.e2e

ROUNDS = 8
POINTS_PER_ROUND = 50
VECTORS_PER_ROUND = 5
KILL_AFTER, RESTART_AFTER = 2, 5
T0 = 1_702_645_200_000
K = 5


class HttpsReplica:
    """``themis wal serve --tls-client-ca`` on a fixed port and data directory, so it can
    be killed and started again where it was."""

    def __init__(self, settings: Settings, pki: Path, data: Path, log_dir: Path) -> None:
        self.port = free_port()
        self.env = settings_as_env(settings) | {"THEMIS_WORKER_DATA_DIR": str(data)}
        self.pki = pki
        self.log_dir = log_dir
        self.starts = 0
        self.context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        self.context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        args = [
            *THEMIS, "wal", "serve", "--replica", "geo-https", "--port", str(self.port),
            "--tls-cert", str(self.pki / "server.pem"), "--tls-key", str(self.pki / "server.key"),
            "--tls-client-ca", str(self.pki / "ca.pem"),
        ]  # fmt: skip
        self.proc = start_process(args, self.env, self.log_dir / f"replica-{self.starts}.log")
        wait_until(self.answers, timeout_s=60, what="the HTTPS replica")

    def answers(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, "the HTTPS replica exited"
        try:
            self.call("GET", "/api/v1/replica/status")
        except OSError:
            return False
        return True

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10, context=self.context) as resp:
            return json.loads(resp.read())

    def applied(self) -> int:
        return int(self.call("GET", "/api/v1/replica/status")["last_applied_lsn"], 16)

    def kill(self) -> None:
        assert self.proc is not None
        assert stop_process(self.proc, sig=signal.SIGKILL) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)


class KafkaReplica:
    """The replica cluster's applier, run to the topic's end each time it is read
    (``themis wal apply --once``), then read from its data directory."""

    def __init__(self, settings: Settings, data: Path, log_dir: Path) -> None:
        self.settings = settings
        self.data = data
        self.env = settings_as_env(settings) | {"THEMIS_WORKER_DATA_DIR": str(data)}
        self.log = log_dir / "kafka-replica.log"

    def catch_up(self) -> None:
        assert self.settings.kafka.bootstrap_servers
        args = [*THEMIS, "wal", "apply", "--replica", "geo-kafka", "--once",
                "--bootstrap", self.settings.kafka.bootstrap_servers]  # fmt: skip
        done = subprocess.run(args, env=settings_env(self.env), capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        with self.log.open("a") as log:
            log.write(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr[-3000:]

    def answers(self, key: str, probes: np.ndarray) -> tuple[list[list[float]], list[list[str]]]:
        state = ReplicaState(self.data / "replica-geo-kafka", self.settings)
        try:
            ts, vs = state.query_ts(key, -(2**62), 2**62)
            points = [[int(t), float(v)] for t, v in zip(ts, vs, strict=True)]
            return points, [[h.pk for h in state.search(p, K)] for p in probes]
        finally:
            state.close()


@pytest.fixture
def primary(make_settings: MakeSettings, tmp_path: Path) -> Iterator[FacadeThread]:
    settings = facade_settings(make_settings, rate_flush_per_min=100_000)
    worker = start_themis_worker(settings_as_env(settings), tmp_path / "worker.log")
    facade = FacadeThread(settings)
    try:
        wait_until(
            lambda: facade.call("GET", "/vectors/buffer/stats", headers=WRITER)[0] == 200,
            timeout_s=90,
            what="the primary's worker behind its facade",
        )
        yield facade
    finally:
        facade.close()
        stop_process(worker)


def buffered_so_far(primary: FacadeThread) -> tuple[int, int]:
    """Points and vector operations the primary's worker consumed since it started."""
    ts = primary.call("GET", "/ts/buffer/stats", headers=WRITER)[1]
    vec = primary.call("GET", "/vectors/buffer/stats", headers=WRITER)[1]
    return ts["points_buffered"], vec["vectors_buffered"]


def consumed_at_least(primary: FacadeThread, want: tuple[int, int]) -> bool:
    return all(got >= n for got, n in zip(buffered_so_far(primary), want, strict=True))


def run_check_example(primary: FacadeThread, https: HttpsReplica, pki: Path) -> Any:
    """``examples/python/geo_replication_check.py`` asking the primary and the HTTPS replica
    (the operator's check); its JSON report."""
    conf = f"http::addr=127.0.0.1:{primary.port};api_key={WRITER['Authorization'].split()[1]}"
    args = [
        sys.executable, str(REPO / "examples" / "python" / "geo_replication_check.py"),
        "--replica", https.url, "--ca", str(pki / "ca.pem"), "--cert", str(pki / "client.pem"),
        "--key", str(pki / "client.key"), "--metric", "cpu", "--entity", "geo",
        "--dimension", str(DIM), "--deadline", "30",
    ]  # fmt: skip
    done = subprocess.run(args, env={**os.environ, "THEMIS_CLIENT_CONF": conf},
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def _last_stats(log: Path) -> dict[str, Any]:
    """The last stats line ``themis wal ship`` printed (one a second)."""

    def lines() -> list[str]:
        return [line for line in log.read_text().splitlines() if line.startswith('{"replicas"')]

    wait_until(lambda: bool(lines()), timeout_s=10, what="the shipper's stats")
    last: dict[str, Any] = json.loads(lines()[-1])
    return last


def _exact_top_k(sent: dict[str, np.ndarray], probe: np.ndarray) -> list[str]:
    """The ``K`` pks nearest ``probe`` by cosine distance, computed over what was sent."""
    pks = list(sent)
    matrix = np.array([sent[pk] for pk in pks])
    cosine = matrix @ probe / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(probe))
    return [pks[i] for i in np.argsort(-cosine, kind="stable")[:K]]


def test_a_primary_and_two_replicas_answer_the_same_after_one_is_killed_mid_stream(
    primary: FacadeThread, pki: Path, tmp_path: Path
) -> None:
    settings = primary.settings
    https = HttpsReplica(settings, pki, tmp_path / "https-data", tmp_path)
    kafka = KafkaReplica(settings, tmp_path / "kafka-data", tmp_path)
    assert settings.kafka.bootstrap_servers
    ship = [
        *THEMIS, "wal", "ship", "--stats-interval", "1",
        "--replica", f"geo-kafka=kafka://{settings.kafka.bootstrap_servers}",
        "--replica", f"geo-https={https.url}", "--tls-ca", str(pki / "ca.pem"),
        "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key"),
    ]  # fmt: skip
    https.start()
    shipper = start_process(ship, settings_as_env(settings), tmp_path / "shipper.log")
    rng = np.random.default_rng(5)
    sent_vectors: dict[str, np.ndarray] = {}
    sent_points: list[list[float]] = []
    try:
        for n in range(ROUNDS):
            rows = [(T0 + n * 1000 + i, n + i / 4) for i in range(POINTS_PER_ROUND)]
            points = [
                {"metric": "cpu", "entity": "geo", "timestamp_ms": t, "value": v} for t, v in rows
            ]
            status, answer, _ = primary.call("POST", "/ts/put/buffered/batch", points, WRITER)
            assert status == 200, answer
            sent_points += [[t, v] for t, v in rows]
            for i in range(VECTORS_PER_ROUND):
                pk, vector = f"v{n}-{i}", rng.normal(0, 1, DIM).astype(np.float32)
                body = {"pk": pk, "vector": vector.tolist(), "metadata": {"round": n}}
                assert primary.call("POST", "/vectors/add/buffered", body, WRITER)[0] == 200
                sent_vectors[pk] = vector
            consumed = (len(sent_points), len(sent_vectors))
            wait_until(
                partial(consumed_at_least, primary, consumed),
                timeout_s=30,
                what=f"round {n} in the primary worker's buffers",
            )
            for flush in ("/ts/buffer/flush", "/vectors/buffer/flush"):
                assert primary.call("POST", flush, headers=ADMIN)[0] == 200
            if n + 1 == KILL_AFTER:
                wait_until(lambda: https.applied() > 0, timeout_s=30, what="a first batch applied")
                https.kill()
            if n + 1 == RESTART_AFTER:
                https.start()

        key = series_key("cpu", "geo", {})
        probes = rng.normal(0, 1, (3, DIM)).astype(np.float32)
        expected_top = [_exact_top_k(sent_vectors, p) for p in probes]

        def primary_answers() -> tuple[list[list[float]], list[list[str]]]:
            status, answer, _ = primary.call("GET", "/ts/query?metric=cpu&entity=geo", None, WRITER)
            assert status == 200, answer
            points = [[p["timestamp_ms"], p["value"]] for p in answer["points"]]
            return points, [
                [h["pk"] for h in primary.call(
                    "POST", "/vectors/search", {"vector": p.tolist(), "k": K}, WRITER
                )[1]["results"]]
                for p in probes
            ]  # fmt: skip

        def https_answers() -> tuple[list[list[float]], list[list[str]]]:
            answer = https.call("GET", "/ts/query?metric=cpu&entity=geo")
            points = [[p["timestamp_ms"], p["value"]] for p in answer["points"]]
            return points, [
                [h["pk"] for h in https.call(
                    "POST", "/vectors/search", {"vector": p.tolist(), "k": K}
                )["results"]]
                for p in probes
            ]  # fmt: skip

        expected = (sent_points, expected_top)
        wait_until(lambda: primary_answers() == expected, timeout_s=60, what="the primary")
        wait_until(lambda: https_answers() == expected, timeout_s=60, what="the HTTPS replica")

        def kafka_agrees() -> bool:
            kafka.catch_up()
            return kafka.answers(key, probes) == expected

        wait_until(kafka_agrees, timeout_s=60, what="the Kafka replica")
        report = run_check_example(primary, https, pki)
        assert report == {
            "agree": True, "points": len(sent_points), "seconds": report["seconds"],
            "replicas": {https.url: True},
        }  # fmt: skip
        assert primary_answers() == https_answers() == kafka.answers(key, probes) == expected
        assert https.starts == 2
        stats = _last_stats(tmp_path / "shipper.log")
        assert stats["stats"]["failed_ships"] >= 1  # the shipper felt the kill, and resumed
        assert {r["replica_id"] for r in stats["replicas"]} == {"geo-kafka", "geo-https"}
    finally:
        stop_process(shipper)
        https.stop()
