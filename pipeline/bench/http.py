"""``themis bench http``: what the HTTP facade answers per second, against a bare server.

Run ``themis bench http [--quick] [--json]`` or ``python -m pipeline.bench.http [...]``.
The broker is the one of ``KAFKA_BOOTSTRAP_SERVERS``, else one started for the run by
:func:`pipeline.kafka.broker.provide_broker` and stopped at the end. The topics live
under a namespace of their own, ``bench-<pid>-<random>.http`` (deleted at the end on a
given broker). No worker runs: a buffered write is answered by the facade once the
broker acknowledged it (``acked``) or once it is queued (``queued``), whether or not a
worker consumes it, so the worker is not on the measured path.

Three child processes, all on loopback:

* the facade, ``python -m pipeline.facade.cli facade`` with its settings in the
  environment (:func:`pipeline.config.child_env`);
* a bare aiohttp server (``python -m pipeline.bench.http --bare-server``): one handler
  that reads the body and answers the same-sized JSON as the facade, no middleware;
* the load generator (``python -m pipeline.bench.http --load``): an asyncio
  ``aiohttp.ClientSession`` with a ``TCPConnector(limit=connections)`` (keep-alive) and
  ``concurrency`` tasks, each sending its next request as soon as the last one was
  answered, until ``max_requests`` were sent or ``max_seconds`` passed.

The result (one JSON object with ``--json``; :data:`DEFINITIONS` is copied into it) has
the rates, the facade's own p99 for ``POST /ts/put/buffered`` (from its
``facade_request_duration_seconds`` histogram, scraped before and after the run), the
load settings, where the broker came from and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.bench.harness import (
    delete_topics_under,
    machine_info,
    progress,
    rounded,
    run_bench_main,
    wait_for,
)
from pipeline.config import Settings, child_env, load_settings
from pipeline.errors import BenchmarkFailed
from pipeline.kafka.broker import BrokerHandle, provide_broker
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.worker.process import themis_command

__all__ = ["DEFINITIONS", "FULL", "QUICK", "LoadPlan", "main", "render_table", "run_http_bench"]

API_KEY = "bench-http-key"
"""The writer key the benchmark's facade is configured with."""
PUT_PATH = "/ts/put/buffered"
BATCH_PATH = "/ts/put/buffered/batch"
_HISTOGRAM = "facade_request_duration_seconds"
_ENTITIES = 64
"""Series the generated points are spread over (one metric, this many entities)."""
_BASE_TS_MS = 1_702_645_200_000
_STARTUP_TIMEOUT_S = 60.0
_BARE_ANSWER = b'{"success":true,"buffered":true,"buffer_size":0}'
"""What the bare server answers: the facade's buffered answer, same fields, same size class."""

DEFINITIONS: Mapping[str, str] = {
    "put_buffered_req_per_s": "POST /ts/put/buffered (one valid JSON point each, writer key, "
    "response mode acked: answered after the broker acknowledged with acks=all) answered "
    "2xx per second, measured by the load generator process from its first request to its "
    "last answer; no worker running",
    "put_buffered_queued_req_per_s": "the same with X-Themis-Response-Mode: queued (answered "
    "once the record is in the facade's producer queue)",
    "bare_framework_req_per_s": "the same load generator and bodies against a bare aiohttp "
    "server (one handler: read the body, answer the facade's buffered JSON), same run",
    "put_vs_bare": "put_buffered_req_per_s / bare_framework_req_per_s",
    "put_queued_vs_bare": "put_buffered_queued_req_per_s / bare_framework_req_per_s",
    "server_p50_ms": "median of the facade's own time per POST /ts/put/buffered (acked, "
    "status 200), from the facade_request_duration_seconds histogram: bucket counts scraped "
    "from /metrics before and after the acked run, differenced, the quantile linearly "
    "interpolated inside its bucket (as Prometheus histogram_quantile does)",
    "server_p99_ms": "the 99th percentile, computed the same way; its resolution is the "
    "bucket it falls in (server_p99_bucket_ms)",
    "client_p99_ms": "99th percentile of the load generator's request-to-answer time in the "
    "acked run (includes queueing for one of the keep-alive connections)",
    "batch_points_per_s": "points per second through POST /ts/put/buffered/batch with "
    "NDJSON bodies of batch_points points (acked), answered 2xx",
    "batch_req_per_s": "those batch requests per second",
}


@dataclass(frozen=True)
class LoadPlan:
    """One load generator run: where, what, how many at once, and for how long."""

    url: str
    kind: str
    """``point`` (one JSON point per request) or ``batch`` (NDJSON of ``batch_points``)."""
    connections: int
    """Keep-alive connections at most (``TCPConnector(limit=...)``)."""
    concurrency: int
    """Tasks, each with one request outstanding."""
    max_requests: int
    max_seconds: float
    batch_points: int = 1000
    response_mode: str = "acked"

    def argv(self) -> list[str]:
        """The ``--load`` command line that runs this plan in a child process."""
        return [
            sys.executable,
            "-m",
            "pipeline.bench.http",
            "--load",
            "--url",
            self.url,
            "--kind",
            self.kind,
            "--connections",
            str(self.connections),
            "--concurrency",
            str(self.concurrency),
            "--max-requests",
            str(self.max_requests),
            "--max-seconds",
            str(self.max_seconds),
            "--batch-points",
            str(self.batch_points),
            "--response-mode",
            self.response_mode,
        ]


@dataclass(frozen=True)
class Sizes:
    """Load settings of one benchmark size."""

    connections: int
    concurrency: int
    max_requests: int
    max_seconds: float
    warmup_requests: int
    batch_points: int
    batch_concurrency: int
    batch_max_requests: int
    batch_max_seconds: float


QUICK = Sizes(
    connections=32,
    concurrency=64,
    max_requests=60_000,
    max_seconds=6.0,
    warmup_requests=500,
    batch_points=1000,
    batch_concurrency=8,
    batch_max_requests=400,
    batch_max_seconds=5.0,
)
FULL = Sizes(
    connections=32,
    concurrency=64,
    max_requests=300_000,
    max_seconds=20.0,
    warmup_requests=2000,
    batch_points=1000,
    batch_concurrency=8,
    batch_max_requests=4000,
    batch_max_seconds=15.0,
)


# -- the load generator (child process) ---------------------------------------------


def _point_body(n: int) -> bytes:
    """The ``n``-th point: 64 series, one millisecond apart within a series."""
    return b'{"metric":"bench_http","entity":"e%d","timestamp_ms":%d,"value":%d.25}' % (
        n % _ENTITIES,
        _BASE_TS_MS + n // _ENTITIES,
        n % 1000,
    )


def _batch_body(points: int) -> bytes:
    """NDJSON of ``points`` points (every request sends the same points: last write wins)."""
    return b"\n".join(_point_body(n) for n in range(points)) + b"\n"


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def generate_load(plan: LoadPlan) -> dict[str, Any]:
    """Run ``plan``; returns requests, 2xx answers, statuses, seconds and client latencies (ms).

    The clock starts before the first request and stops after the last answer.
    """
    import aiohttp

    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "X-Themis-Response-Mode": plan.response_mode,
        "Content-Type": "application/json" if plan.kind == "point" else "application/x-ndjson",
    }
    batch = _batch_body(plan.batch_points) if plan.kind == "batch" else b""
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    issued = 0
    connector = aiohttp.TCPConnector(limit=plan.connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as session:
        deadline = time.perf_counter() + plan.max_seconds

        async def sender() -> None:
            nonlocal issued
            while issued < plan.max_requests and time.perf_counter() < deadline:
                body = batch if plan.kind == "batch" else _point_body(issued)
                issued += 1
                t0 = time.perf_counter()
                try:
                    async with session.post(plan.url, data=body) as response:
                        await response.read()
                        statuses[str(response.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        begun = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(plan.concurrency)))
        seconds = time.perf_counter() - begun
    latencies.sort()
    ok = sum(count for status, count in statuses.items() if status.startswith("2"))
    return {
        "requests": issued,
        "ok": ok,
        "statuses": dict(statuses),
        "seconds": seconds,
        "client_p50_ms": 1000 * _percentile(latencies, 0.50),
        "client_p99_ms": 1000 * _percentile(latencies, 0.99),
    }


def _load_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.http --load")
    parser.add_argument("--load", action="store_true", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--kind", choices=("point", "batch"), default="point")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-requests", type=int, default=10_000)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--batch-points", type=int, default=1000)
    parser.add_argument("--response-mode", choices=("acked", "queued"), default="acked")
    args = parser.parse_args(argv)
    plan = LoadPlan(
        url=args.url,
        kind=args.kind,
        connections=args.connections,
        concurrency=args.concurrency,
        max_requests=args.max_requests,
        max_seconds=args.max_seconds,
        batch_points=args.batch_points,
        response_mode=args.response_mode,
    )
    print(json.dumps(asyncio.run(generate_load(plan))), flush=True)
    return 0


# -- the bare server (child process) ------------------------------------------------


def _bare_main(argv: Sequence[str]) -> int:
    from aiohttp import web

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.http --bare-server")
    parser.add_argument("--bare-server", action="store_true", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=_BARE_ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post(PUT_PATH, answer)
    app.router.add_post(BATCH_PATH, answer)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


# -- the parent: servers, runs, histogram ------------------------------------------


class _ServerProcess:
    """A server child process in its own session; output to ``log_path``."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_listening(self, port: int, what: str) -> None:
        def answers() -> bool | None:
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise BenchmarkFailed(
                    f"{what} exited with code {self._proc.returncode}; log:\n{tail}"
                )
            return True if _get(port, "/metrics") is not None else None

        wait_for(answers, timeout_s=_STARTUP_TIMEOUT_S, interval_s=0.2, what=what)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (the facade delivers what it accepted), SIGKILL after ``timeout_s``."""
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)


def _get(port: int, path: str) -> tuple[int, bytes] | None:
    """``(status, body)`` of a GET on loopback, ``None`` while nothing listens."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _run_load(plan: LoadPlan) -> dict[str, Any]:
    """Run ``plan`` in a load generator child; its JSON result."""
    done = subprocess.run(
        plan.argv(),
        capture_output=True,
        text=True,
        timeout=plan.max_seconds + 120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchmarkFailed(f"the load generator failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    bad = {s: n for s, n in result["statuses"].items() if not s.startswith("2")}
    if bad or not result["ok"]:
        raise BenchmarkFailed(f"{plan.url} answered {result['statuses']}; expected only 2xx")
    return result


_BUCKET_LINE = re.compile(r"^" + _HISTOGRAM + r"_bucket\{(?P<labels>[^}]*)\} (?P<count>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def histogram_buckets(
    metrics_text: str, route: str, method: str, status: str
) -> dict[float, float]:
    """Cumulative counts by upper bound (seconds; ``inf`` last) of one label set."""
    buckets: dict[float, float] = {}
    for line in metrics_text.splitlines():
        match = _BUCKET_LINE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if (labels.get("route"), labels.get("method"), labels.get("status")) == (
            route,
            method,
            status,
        ):
            buckets[float(labels["le"])] = float(match["count"])
    return dict(sorted(buckets.items()))


def bucket_quantile(
    before: Mapping[float, float], after: Mapping[float, float], q: float
) -> tuple[float, float, float]:
    """The ``q`` quantile (seconds) of the observations between two scrapes.

    Linear interpolation inside the bucket holding it, as Prometheus'
    ``histogram_quantile`` does (the first bucket starts at 0; a quantile in the
    ``+Inf`` bucket is the highest finite bound). Returns ``(value, lower, upper)``
    with the bounds of that bucket.
    """
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        raise BenchmarkFailed("the facade's histogram recorded no requests in the run")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower, lower, bound
            inside = cumulative - below
            share = (rank - below) / inside if inside else 1.0
            return lower + (bound - lower) * share, lower, bound
        lower, below = bound, cumulative
    return lower, lower, float("inf")


def _scrape(port: int) -> str:
    answer = _get(port, "/metrics")
    if answer is None or answer[0] != 200:
        raise BenchmarkFailed(f"GET /metrics on port {port} answered {answer}")
    return answer[1].decode()


def _facade_settings(base: Settings, bootstrap: str, run_id: str, work_dir: Path) -> Settings:
    """The facade's settings: own namespace, one writer key, limits out of the way."""
    return replace(
        base,
        kafka=replace(base.kafka, bootstrap_servers=bootstrap, topic_namespace=f"{run_id}.http"),
        worker=replace(base.worker, app_id=f"{run_id}-http", data_dir=work_dir / "data"),
        facade=replace(
            base.facade,
            host="127.0.0.1",
            port=free_port(),
            auth_enabled=True,
            api_keys=f"{API_KEY}:writer",
            api_keys_file="",
            # Nothing listens there: no worker is part of this benchmark.
            worker_urls=f"http://127.0.0.1:{free_port()}",
            rate_ts_put_per_min=1_000_000_000,
            rate_vectors_add_per_min=1_000_000_000,
        ),
    )


def _summary(run: Mapping[str, Any], plan: LoadPlan) -> dict[str, Any]:
    return {
        "requests": run["requests"],
        "ok": run["ok"],
        "seconds": round(run["seconds"], 3),
        "req_per_s": rounded(run["ok"] / run["seconds"]),
        "client_p50_ms": round(run["client_p50_ms"], 3),
        "client_p99_ms": round(run["client_p99_ms"], 3),
        "response_mode": plan.response_mode,
        "connections": plan.connections,
        "concurrency": plan.concurrency,
    }


def _measure(
    settings: Settings, broker: BrokerHandle, sizes: Sizes, run_id: str, work_dir: Path
) -> dict[str, Any]:
    bootstrap = broker.bootstrap_servers
    config = _facade_settings(settings, bootstrap, run_id, work_dir)
    wanted = {"ts.points", "vectors.ops", "ts.blocks", "wal"}
    apply_topics(bootstrap, config, [s for s in load_specs() if s.name in wanted])
    facade_port = config.facade.port
    bare_port = free_port()
    progress(f"facade on 127.0.0.1:{facade_port}, bare aiohttp server on 127.0.0.1:{bare_port}")
    facade = _ServerProcess(
        [*themis_command(), "facade", "--response-mode", "acked"],
        child_env(config),
        work_dir / "facade.log",
    )
    bare = _ServerProcess(
        [sys.executable, "-m", "pipeline.bench.http", "--bare-server", "--port", str(bare_port)],
        os.environ,
        work_dir / "bare.log",
    )
    try:
        facade.wait_listening(facade_port, "the facade")
        bare.wait_listening(bare_port, "the bare aiohttp server")

        def plan(port: int, path: str, **changes: Any) -> LoadPlan:
            default = LoadPlan(
                url=f"http://127.0.0.1:{port}{path}",
                kind="point",
                connections=sizes.connections,
                concurrency=sizes.concurrency,
                max_requests=sizes.max_requests,
                max_seconds=sizes.max_seconds,
            )
            return replace(default, **changes)

        warm = {"max_requests": sizes.warmup_requests}
        progress("warm-up: both servers (connections, producer, broker metadata)")
        _run_load(plan(bare_port, PUT_PATH, **warm))
        _run_load(plan(facade_port, PUT_PATH, **warm))

        bare_plan = plan(bare_port, PUT_PATH)
        progress(f"bare server: {bare_plan.concurrency} tasks over {bare_plan.connections} conns")
        bare_run = _run_load(bare_plan)

        acked_plan = plan(facade_port, PUT_PATH)
        progress("facade: POST /ts/put/buffered, acked")
        before = histogram_buckets(_scrape(facade_port), PUT_PATH, "POST", "200")
        acked_run = _run_load(acked_plan)
        after_text = _scrape(facade_port)
        after = histogram_buckets(after_text, PUT_PATH, "POST", "200")
        p99, p99_lower, p99_upper = bucket_quantile(before, after, 0.99)
        p50, _, _ = bucket_quantile(before, after, 0.50)

        queued_plan = plan(facade_port, PUT_PATH, response_mode="queued")
        progress("facade: POST /ts/put/buffered, queued")
        queued_run = _run_load(queued_plan)

        batch_plan = plan(
            facade_port,
            BATCH_PATH,
            kind="batch",
            batch_points=sizes.batch_points,
            concurrency=sizes.batch_concurrency,
            connections=sizes.batch_concurrency,
            max_requests=sizes.batch_max_requests,
            max_seconds=sizes.batch_max_seconds,
        )
        progress(f"facade: POST /ts/put/buffered/batch, {sizes.batch_points}-point NDJSON")
        batch_run = _run_load(batch_plan)
    finally:
        facade.stop()
        bare.stop()

    put_rate = acked_run["ok"] / acked_run["seconds"]
    queued_rate = queued_run["ok"] / queued_run["seconds"]
    bare_rate = bare_run["ok"] / bare_run["seconds"]
    batch_rate = batch_run["ok"] / batch_run["seconds"]
    progress(
        f"bare {bare_rate:,.0f} req/s, acked {put_rate:,.0f} req/s, queued {queued_rate:,.0f} "
        f"req/s, batch {batch_rate * sizes.batch_points:,.0f} points/s"
    )
    finite_bounds = [b for b in after if b != float("inf")]
    return {
        "put_buffered_req_per_s": rounded(put_rate),
        "put_buffered_queued_req_per_s": rounded(queued_rate),
        "bare_framework_req_per_s": rounded(bare_rate),
        "put_vs_bare": rounded(put_rate / bare_rate),
        "put_queued_vs_bare": rounded(queued_rate / bare_rate),
        "server_p50_ms": rounded(1000 * p50),
        "server_p99_ms": rounded(1000 * p99),
        "server_p99_bucket_ms": [1000 * p99_lower, 1000 * p99_upper],
        "client_p99_ms": rounded(acked_run["client_p99_ms"]),
        "batch_points_per_s": rounded(batch_rate * sizes.batch_points),
        "batch_req_per_s": rounded(batch_rate),
        "response_mode": "acked",
        "response_modes_measured": ["acked", "queued"],
        "runs": {
            "bare": _summary(bare_run, bare_plan),
            "put_acked": _summary(acked_run, acked_plan)
            | {"server_observations": after[float("inf")] - before.get(float("inf"), 0.0)},
            "put_queued": _summary(queued_run, queued_plan),
            "batch": _summary(batch_run, batch_plan) | {"points_per_request": sizes.batch_points},
        },
        "settings": {
            "load_generator": "python -m pipeline.bench.http --load: one asyncio process, "
            "aiohttp ClientSession, TCPConnector(limit=connections), keep-alive, loopback",
            "connections": sizes.connections,
            "concurrency": sizes.concurrency,
            "max_requests": sizes.max_requests,
            "max_seconds": sizes.max_seconds,
            "warmup_requests": sizes.warmup_requests,
            "batch_points": sizes.batch_points,
            "batch_concurrency": sizes.batch_concurrency,
            "series": _ENTITIES,
            "facade": "python -m pipeline.facade.cli facade (one process, one event loop), "
            "auth on (writer key), rate limits raised out of the way",
            "facade_histogram_buckets_ms": [1000 * b for b in finite_bounds],
            "producer": "the facade's AsyncProducer: acks=all, idempotent",
        },
        "worker": {
            "ran": False,
            "why": "a buffered write is answered before any worker consumes it; the points "
            "stay in the topic",
        },
    }


def run_http_bench(quick: bool, *, settings: Settings | None = None) -> dict[str, object]:
    """Run every measurement and return the result described in the module docstring.

    ``quick`` picks :data:`QUICK` (about a minute) over :data:`FULL`. ``settings``
    defaults to :func:`~pipeline.config.load_settings`; its ``kafka.bootstrap_servers``
    (``KAFKA_BOOTSTRAP_SERVERS``) chooses a given broker. Raises
    :class:`~pipeline.errors.BenchmarkFailed` (or another ``ThemisError``) when a step fails.
    """
    settings = settings if settings is not None else load_settings()
    sizes = QUICK if quick else FULL
    begun = time.monotonic()
    run_id = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with contextlib.redirect_stdout(sys.stderr):
        progress("finding a broker (KAFKA_BOOTSTRAP_SERVERS, else Docker, else a local JVM)")
        with (
            provide_broker(settings, local_name=f"bench-{os.getpid()}") as broker,
            tempfile.TemporaryDirectory(prefix="themis-bench-http-") as work_dir,
        ):
            progress(f"broker at {broker.bootstrap_servers} ({broker.source}); topics {run_id}.*")
            try:
                measured = _measure(settings, broker, sizes, run_id, Path(work_dir))
            finally:
                if broker.source == "environment":
                    left = delete_topics_under(broker.bootstrap_servers, f"{run_id}.")
                    if left:
                        progress(f"could not delete topics {', '.join(left)}")
    return {
        "benchmark": "http",
        "quick": quick,
        **measured,
        "topic_prefix": f"{run_id}.",
        "broker": {
            "source": broker.source,
            "bootstrap_servers": broker.bootstrap_servers,
            "startup_seconds": broker.startup_seconds,
        },
        "machine": machine_info(),
        "seconds_total": round(time.monotonic() - begun, 1),
        "definitions": dict(DEFINITIONS),
    }


# -- output and command line ----------------------------------------------------------


def render_table(result: Mapping[str, object]) -> str:
    """A short human-readable table of ``result``."""
    rows: list[tuple[str, Callable[[object], str]]] = [
        ("bare_framework_req_per_s", lambda v: f"{v:,} req/s"),
        ("put_buffered_req_per_s", lambda v: f"{v:,} req/s (acked)"),
        ("put_buffered_queued_req_per_s", lambda v: f"{v:,} req/s (queued)"),
        ("put_vs_bare", str),
        ("server_p50_ms", lambda v: f"{v} ms"),
        ("server_p99_ms", lambda v: f"{v} ms (bucket {result.get('server_p99_bucket_ms')})"),
        ("client_p99_ms", lambda v: f"{v} ms"),
        ("batch_points_per_s", lambda v: f"{v:,} points/s"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {show(result[name])}" for name, show in rows if name in result]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.bench.http [--quick] [--json]``; also the ``--load`` and
    ``--bare-server`` children. Returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if "--load" in args_list:
        return _load_main(args_list)
    if "--bare-server" in args_list:
        return _bare_main(args_list)
    return run_bench_main(
        "http",
        "Requests per second of the HTTP facade against a bare aiohttp server.",
        run_http_bench,
        render_table,
        args_list,
    )


if __name__ == "__main__":
    sys.exit(main())
