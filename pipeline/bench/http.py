"""``themis bench http [--quick|--smoke] [--json]``: the facade's requests/s against a bare server.

This module holds the benchmark's definitions, sizes, the order of its runs and its
table; the child processes it drives are in :mod:`pipeline.bench.http_load`, the
reading of the facade's latency histogram in :mod:`pipeline.bench.http_metrics`.

The broker comes from :func:`pipeline.bench.harness.bench_broker`
(``KAFKA_BOOTSTRAP_SERVERS``, else Docker, else a local JVM started for the run).
The topics live under a namespace of their own, ``bench-<pid>-<random>.http``
(deleted at the end on a given broker). No worker runs: a buffered write is
answered by the facade once the broker acknowledged it (``acked``) or once it is
queued (``queued``), whether or not a worker consumes it, so the worker is not on
the measured path.

Three kinds of child process, all on loopback, all ``themis`` (started with
:func:`~pipeline.worker.process.themis_command`):

* the facade, ``themis facade`` with its settings in the environment
  (:func:`pipeline.config.child_env`);
* the bare aiohttp server, ``themis bench http-bare-server``;
* the load generator, ``themis bench http-load``, once per run.

The result (:data:`DEFINITIONS` is copied into it) has the rates, the facade's own
p99 for ``POST /ts/put/buffered`` (from its ``facade_request_duration_seconds``
histogram, scraped before and after the run), its handler time under a steady light
load (:data:`LIGHT_FRACTION` of the bare server's rate, queued mode, from the same
histogram; the bucket each quantile fell in is reported beside it, since the
histogram's buckets are its resolution), the load settings, then the shared envelope
(:mod:`pipeline.bench.harness`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from pipeline.bench import http_formats
from pipeline.bench.harness import (
    BenchBroker,
    BenchSize,
    bench_broker,
    exited,
    progress,
    rounded,
    wait_for,
)
from pipeline.bench.http_load import API_KEY, BATCH_PATH, ENTITIES, PUT_PATH, LoadPlan, run_load
from pipeline.bench.http_metrics import (
    bucket_quantile,
    gauge_value,
    histogram_buckets,
    loopback_get,
    scrape,
)
from pipeline.config import Settings, child_env, with_overrides
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.worker.process import ChildProcess, themis_command

__all__ = [
    "DEFINITIONS",
    "FULL",
    "QUICK",
    "SIZES",
    "SMOKE",
    "Sizes",
    "acknowledged",
    "facade_settings",
    "render",
    "run",
    "wait_listening",
]

_STARTUP_TIMEOUT_S: Final = 60.0
LIGHT_FRACTION: Final = 0.1
"""The light load's rate as a fraction of the bare server's measured requests/s."""

DEFINITIONS: Mapping[str, str] = {
    "put_buffered_req_per_s": "POST /ts/put/buffered (one valid JSON point each, writer key, "
    "response mode acked: answered after the broker acknowledged with acks=all) answered "
    "2xx per second, measured by the load generator process from its first request to its "
    "last answer; no worker running",
    "put_buffered_queued_req_per_s": "the same with X-Themis-Response-Mode: queued (answered "
    "once the record is in the facade's producer queue)",
    "bare_framework_req_per_s": "the same load generator and bodies against a bare aiohttp "
    "server on the facade's event loop, uvloop (one handler: read the body, answer the "
    "facade's buffered JSON), same run",
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
    "light_handler_p50_us": "median of the facade's own time per POST /ts/put/buffered "
    "(queued mode, status 200) under a steady light load: an open-loop load generator "
    "starting requests at 10 % of bare_framework_req_per_s (same run), after the facade's "
    "producer acknowledged everything earlier (facade_unacked_points 0); from the "
    "facade_request_duration_seconds histogram scraped before and after that run, "
    "interpolated inside its bucket (light_handler_bucket_us); microseconds",
    "light_handler_p99_us": "the 99th percentile of the same observations, computed the "
    "same way; microseconds",
    "batch_points_per_s": "points per second through POST /ts/put/buffered/batch with "
    "NDJSON bodies of batch_points points (acked), answered 2xx",
    "batch_req_per_s": "those batch requests per second",
    **http_formats.DEFINITIONS,
}


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
    light_seconds: float
    """Duration of the light-load run (seconds)."""


QUICK: Final = Sizes(
    connections=32,
    concurrency=64,
    max_requests=60_000,
    max_seconds=6.0,
    warmup_requests=500,
    batch_points=1000,
    batch_concurrency=8,
    batch_max_requests=400,
    batch_max_seconds=5.0,
    light_seconds=5.0,
)
FULL: Final = Sizes(
    connections=32,
    concurrency=64,
    max_requests=300_000,
    max_seconds=20.0,
    warmup_requests=2000,
    batch_points=1000,
    batch_concurrency=8,
    batch_max_requests=4000,
    batch_max_seconds=15.0,
    light_seconds=15.0,
)
SMOKE: Final = Sizes(
    connections=8,
    concurrency=16,
    max_requests=5_000,
    max_seconds=2.0,
    warmup_requests=100,
    batch_points=1000,
    batch_concurrency=4,
    batch_max_requests=50,
    batch_max_seconds=2.0,
    light_seconds=2.0,
)
SIZES: Final[Mapping[BenchSize, Sizes]] = {"smoke": SMOKE, "quick": QUICK, "full": FULL}


# -- the servers --------------------------------------------------------------------


def facade_settings(base: Settings, broker: BenchBroker, name: str = "http") -> Settings:
    """The facade's settings: own namespace (``<run_id>.<name>``), one writer key, limits
    out of the way (``themis bench binary`` starts its facade with them too)."""
    return with_overrides(
        base,
        {
            "kafka": {
                "bootstrap_servers": broker.bootstrap,
                "topic_namespace": f"{broker.run_id}.{name}",
            },
            "worker": {"app_id": f"{broker.run_id}-{name}", "data_dir": broker.work_dir / "data"},
            "facade": {
                "host": "127.0.0.1",
                "port": free_port(),
                "auth_enabled": True,
                "api_keys": f"{API_KEY}:writer",
                "api_keys_file": "",
                # Nothing listens there: no worker is part of this benchmark.
                "worker_urls": f"http://127.0.0.1:{free_port()}",
                "rate_ts_put_per_min": 1_000_000_000,
                "rate_vectors_add_per_min": 1_000_000_000,
            },
        },
    )


def wait_listening(child: ChildProcess, port: int, what: str) -> None:
    """Poll ``port`` until an HTTP server answers there; fail if ``child`` exits first."""

    def answers() -> bool | None:
        exited(child, what)
        return True if loopback_get(port, "/metrics") is not None else None

    wait_for(answers, timeout_s=_STARTUP_TIMEOUT_S, interval_s=0.2, what=what)


# -- the runs -----------------------------------------------------------------------


def _plans(sizes: Sizes, facade_port: int, bare_port: int) -> dict[str, LoadPlan]:
    """The measured runs: the bare server, the facade acked and queued, and batches."""
    bare = LoadPlan(
        url=f"http://127.0.0.1:{bare_port}{PUT_PATH}",
        kind="point",
        connections=sizes.connections,
        concurrency=sizes.concurrency,
        max_requests=sizes.max_requests,
        max_seconds=sizes.max_seconds,
    )
    acked = replace(bare, url=f"http://127.0.0.1:{facade_port}{PUT_PATH}")
    runs = {
        "bare": bare,
        "put_acked": acked,
        "put_queued": replace(acked, response_mode="queued"),
        "batch": replace(
            acked,
            url=f"http://127.0.0.1:{facade_port}{BATCH_PATH}",
            kind="batch",
            batch_points=sizes.batch_points,
            concurrency=sizes.batch_concurrency,
            connections=sizes.batch_concurrency,
            max_requests=sizes.batch_max_requests,
            max_seconds=sizes.batch_max_seconds,
        ),
    }
    return runs | http_formats.plans(runs["batch"], facade_port)


@dataclass(frozen=True)
class _Scrapes:
    """The facade's histogram for one label set, before and after one run."""

    before: dict[float, float]
    after: dict[float, float]

    def quantile(self, q: float) -> tuple[float, float, float]:
        """``(value, bucket lower, bucket upper)`` in seconds (:func:`bucket_quantile`)."""
        return bucket_quantile(self.before, self.after, q)

    @property
    def observations(self) -> float:
        inf = float("inf")
        return self.after[inf] - self.before.get(inf, 0.0)


@dataclass(frozen=True)
class _Runs:
    """Each plan's load generator result, and the facade's histogram around the acked
    and the light runs."""

    results: dict[str, dict[str, Any]]
    acked: _Scrapes
    light: _Scrapes
    light_plan: LoadPlan


def acknowledged(facade_port: int) -> bool | None:
    """``True`` once the facade holds no unacknowledged points (or does not say)."""
    unacked = gauge_value(scrape(facade_port), "facade_unacked_points")
    return True if unacked is None or unacked == 0 else None


def _scraped(facade_port: int, plan: LoadPlan) -> tuple[dict[str, Any], _Scrapes]:
    """Run ``plan`` between two scrapes of the facade's histogram for its 200s."""
    before = histogram_buckets(scrape(facade_port), PUT_PATH, "POST", "200")
    result = run_load(plan)
    after = histogram_buckets(scrape(facade_port), PUT_PATH, "POST", "200")
    return result, _Scrapes(before, after)


def _load_runs(plans: Mapping[str, LoadPlan], sizes: Sizes, facade_port: int) -> _Runs:
    warm = sizes.warmup_requests
    progress("warm-up: both servers (connections, producer, broker metadata)")
    run_load(replace(plans["bare"], max_requests=warm))
    run_load(replace(plans["put_acked"], max_requests=warm))
    bare = plans["bare"]
    progress(f"bare server: {bare.concurrency} tasks over {bare.connections} conns")
    results = {"bare": run_load(bare)}
    progress("facade: POST /ts/put/buffered, acked")
    results["put_acked"], acked = _scraped(facade_port, plans["put_acked"])
    progress("facade: POST /ts/put/buffered, queued")
    results["put_queued"] = run_load(plans["put_queued"])
    rate = LIGHT_FRACTION * results["bare"]["ok"] / results["bare"]["seconds"]
    light_plan = replace(
        plans["put_queued"],
        rate_per_s=rate,
        max_requests=int(rate * sizes.light_seconds) + 1,
        max_seconds=sizes.light_seconds,
    )
    wait_for(
        lambda: acknowledged(facade_port),
        timeout_s=60,
        interval_s=0.1,
        what="the facade's producer to acknowledge the queued run",
    )
    progress(f"facade: steady light load, {rate:,.0f} req/s queued for {sizes.light_seconds} s")
    results["light_queued"], light = _scraped(facade_port, light_plan)
    progress(f"facade: POST /ts/put/buffered/batch, {sizes.batch_points}-point NDJSON")
    results["batch"] = run_load(plans["batch"])
    for kind in http_formats.PATHS:
        progress(f"facade: {http_formats.PATHS[kind]}, {sizes.batch_points}-sample {kind} bodies")
        results[kind] = run_load(plans[kind])
    return _Runs(results, acked, light, light_plan)


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


def _figures(runs: _Runs, plans: Mapping[str, LoadPlan], sizes: Sizes) -> dict[str, Any]:
    """The figures of the runs, in the result's order and shape."""
    rate = {name: r["ok"] / r["seconds"] for name, r in runs.results.items()}
    put, queued, bare, batch = (rate[n] for n in ("put_acked", "put_queued", "bare", "batch"))
    progress(
        f"bare {bare:,.0f} req/s, acked {put:,.0f} req/s, queued {queued:,.0f} "
        f"req/s, batch {batch * sizes.batch_points:,.0f} points/s"
    )
    p99, p99_lower, p99_upper = runs.acked.quantile(0.99)
    p50, _, _ = runs.acked.quantile(0.50)
    light = {q: runs.light.quantile(q) for q in (0.50, 0.99)}
    all_plans = {**plans, "light_queued": runs.light_plan}
    summaries = {name: _summary(runs.results[name], plan) for name, plan in all_plans.items()}
    summaries["put_acked"]["server_observations"] = runs.acked.observations
    summaries["light_queued"] |= {
        "server_observations": runs.light.observations,
        "target_req_per_s": rounded(runs.light_plan.rate_per_s),
    }
    summaries["batch"]["points_per_request"] = sizes.batch_points
    return {
        "put_buffered_req_per_s": rounded(put),
        "put_buffered_queued_req_per_s": rounded(queued),
        "bare_framework_req_per_s": rounded(bare),
        "put_vs_bare": rounded(put / bare),
        "put_queued_vs_bare": rounded(queued / bare),
        "server_p50_ms": rounded(1000 * p50),
        "server_p99_ms": rounded(1000 * p99),
        "server_p99_bucket_ms": [round(1000 * p99_lower, 6), round(1000 * p99_upper, 6)],
        "client_p99_ms": rounded(runs.results["put_acked"]["client_p99_ms"]),
        "light_handler_p50_us": rounded(1e6 * light[0.50][0]),
        "light_handler_p99_us": rounded(1e6 * light[0.99][0]),
        "light_handler_bucket_us": {
            "p50": [round(1e6 * light[0.50][1], 1), round(1e6 * light[0.50][2], 1)],
            "p99": [round(1e6 * light[0.99][1], 1), round(1e6 * light[0.99][2], 1)],
        },
        "light_load_req_per_s": summaries["light_queued"]["req_per_s"],
        "batch_points_per_s": rounded(batch * sizes.batch_points),
        "batch_req_per_s": rounded(batch),
        **http_formats.figures(runs.results, batch * sizes.batch_points, sizes.batch_points),
        "response_mode": "acked",
        "response_modes_measured": ["acked", "queued"],
        "runs": summaries,
        "settings": {
            "load_generator": "themis bench http-load: one asyncio process, "
            "aiohttp ClientSession, TCPConnector(limit=connections), keep-alive, loopback",
            "connections": sizes.connections,
            "concurrency": sizes.concurrency,
            "max_requests": sizes.max_requests,
            "max_seconds": sizes.max_seconds,
            "warmup_requests": sizes.warmup_requests,
            "batch_points": sizes.batch_points,
            "batch_concurrency": sizes.batch_concurrency,
            "series": ENTITIES,
            "facade": "themis facade (one process, one event loop), "
            "auth on (writer key), rate limits raised out of the way",
            "facade_histogram_buckets_ms": [
                round(1000 * b, 6) for b in runs.acked.after if math.isfinite(b)
            ],
            "light_fraction_of_bare": LIGHT_FRACTION,
            "light_seconds": sizes.light_seconds,
            "producer": "the facade's AsyncProducer: acks=all, idempotent",
        },
        "worker": {
            "ran": False,
            "why": "a buffered write is answered before any worker consumes it; the points "
            "stay in the topic",
        },
    }


def _measure(settings: Settings, broker: BenchBroker, sizes: Sizes) -> dict[str, Any]:
    config = facade_settings(settings, broker)
    wanted = {"ts.points", "vectors.ops", "ts.blocks", "wal"}
    apply_topics(broker.bootstrap, config, [s for s in load_specs() if s.name in wanted])
    facade_port, bare_port = config.facade.port, free_port()
    progress(f"facade on 127.0.0.1:{facade_port}, bare aiohttp server on 127.0.0.1:{bare_port}")
    work_dir = broker.work_dir
    facade = ChildProcess(
        [*themis_command(), "facade", "--response-mode", "acked"],
        child_env(config),
        work_dir / "facade.log",
    )
    bare = ChildProcess(
        [*themis_command(), "bench", "http-bare-server", "--port", str(bare_port)],
        os.environ,
        work_dir / "bare.log",
    )
    plans = _plans(sizes, facade_port, bare_port)
    try:
        wait_listening(facade, facade_port, "the facade")
        wait_listening(bare, bare_port, "the bare aiohttp server")
        runs = _load_runs(plans, sizes, facade_port)
    finally:
        facade.stop()
        bare.stop()
    return _figures(runs, plans, sizes)


def run(size: BenchSize, settings: Settings) -> dict[str, object]:
    """Measure everything; the figures described in the module docstring.

    ``size`` picks :data:`FULL`, :data:`QUICK` (about a minute) or :data:`SMOKE`
    (seconds; the test suite's). ``settings``
    are the ones ``themis`` loaded; ``kafka.bootstrap_servers``
    (``KAFKA_BOOTSTRAP_SERVERS``) chooses a given broker. Raises
    :class:`~pipeline.errors.BenchmarkFailed` (or another ``ThemisError``) when a step fails.
    """
    sizes = SIZES[size]
    with bench_broker(settings, "http") as broker:
        figures = _measure(settings, broker, sizes)
    return {**figures, **broker.fields()}


# -- output ---------------------------------------------------------------------------


def _bucket(result: Mapping[str, object], quantile: str) -> object:
    buckets = result.get("light_handler_bucket_us")
    return buckets.get(quantile) if isinstance(buckets, dict) else None


def render(result: Mapping[str, object]) -> str:
    """A short human-readable table of ``result``."""
    rows: list[tuple[str, Callable[[object], str]]] = [
        ("bare_framework_req_per_s", lambda v: f"{v:,} req/s"),
        ("put_buffered_req_per_s", lambda v: f"{v:,} req/s (acked)"),
        ("put_buffered_queued_req_per_s", lambda v: f"{v:,} req/s (queued)"),
        ("put_vs_bare", str),
        ("server_p50_ms", lambda v: f"{v} ms"),
        ("server_p99_ms", lambda v: f"{v} ms (bucket {result.get('server_p99_bucket_ms')})"),
        ("client_p99_ms", lambda v: f"{v} ms"),
        (
            "light_handler_p50_us",
            lambda v: f"{v} µs (bucket {_bucket(result, 'p50')}, queued, light load)",
        ),
        ("light_handler_p99_us", lambda v: f"{v} µs (bucket {_bucket(result, 'p99')})"),
        ("batch_points_per_s", lambda v: f"{v:,} points/s"),
        ("remote_write_samples_per_s", lambda v: f"{v:,} samples/s"),
        ("line_protocol_points_per_s", lambda v: f"{v:,} points/s"),
        ("remote_write_vs_batch", str),
        ("line_protocol_vs_batch", str),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {show(result[name])}" for name, show in rows if name in result]
    return "\n".join(lines)
