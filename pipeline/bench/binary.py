"""``themis bench binary [--quick|--smoke] [--json]``: the binary door against bare framing.

This module holds the benchmark's definitions, sizes, the order of its runs and its
table; the child processes it drives are in :mod:`pipeline.bench.binary_load`. It runs
like ``themis bench http`` (:mod:`pipeline.bench.http`), whose facade settings, waits,
histogram reading and HTTP batch load it reuses.

The broker comes from :func:`pipeline.bench.harness.bench_broker`; the topics live under
``bench-<pid>-<random>.binary`` (deleted at the end on a given broker). No worker runs:
a buffered write is answered by the facade once the broker acknowledged it (the
default) or once it is queued (``ACK_QUEUED``), whether or not a worker consumes it.

Child processes, all on loopback, all ``themis``:

* the facade, ``themis facade`` with its binary door on (``facade.binary_port``);
* the bare framing server, ``themis bench binary-bare-server``;
* the binary load generator, ``themis bench binary-load``, once per run (one
  connection, pipelined); and ``themis bench http-load`` for the HTTP batch run.

The facade's handler time under a light load is read from its
``facade_binary_handler_seconds{opcode="TS_PUT_BUFFERED"}`` histogram, scraped before and
after that run, as ``bench http`` reads its HTTP histogram.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from pipeline.bench import http
from pipeline.bench.binary_load import BinaryLoadPlan, run_load
from pipeline.bench.harness import (
    BenchBroker,
    BenchSize,
    bench_broker,
    exited,
    goal,
    goal_below,
    goal_verdict,
    progress,
    rounded,
    wait_for,
)
from pipeline.bench.http_load import BATCH_PATH, ENTITIES, LoadPlan
from pipeline.bench.http_load import run_load as run_http_load
from pipeline.bench.http_metrics import bucket_quantile, labelled_buckets, scrape
from pipeline.config import Settings, child_env, with_overrides
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.worker.process import ChildProcess, themis_command

__all__ = ["DEFINITIONS", "FULL", "QUICK", "SIZES", "SMOKE", "Sizes", "render", "run"]

_STARTUP_TIMEOUT_S: Final = 60.0
HISTOGRAM: Final = "facade_binary_handler_seconds"
LIGHT_FRACTION: Final = http.LIGHT_FRACTION
"""The light load's rate as a fraction of the bare framing server's measured requests/s."""
BATCH_GOAL: Final = 2_000_000.0
"""ts_put_batch_points_per_s at least (points/s)."""
SINGLE_GOAL: Final = 0.5
"""single_vs_bare_framing at least."""
HTTP_BATCH_GOAL: Final = 4.0
"""batch_vs_http_batch at least."""
LIGHT_P99_GOAL_US: Final = 100.0
"""light_handler_p99_us below (microseconds)."""

DEFINITIONS: Mapping[str, str] = {
    "ts_put_batch_points_per_s": "points per second through TS_PUT_BUFFERED_BATCH (0x73) "
    "frames of batch_points points each (string table: 1 metric, 64 entities), pipelined "
    "on one connection (batch_window in flight), default ack level (answered after the "
    "broker acknowledged, acks=all), counted when answered WriteAck, measured by the load "
    "generator process from its first request to its last answer; no worker running",
    "ts_put_batch_queued_points_per_s": "the same with the ACK_QUEUED flag (answered once "
    "the records are in the facade's producer queue)",
    "ts_put_single_req_per_s": "TS_PUT_BUFFERED (0x70) single-point requests answered "
    "WriteAck per second, pipelined on one connection (window in flight), default ack level",
    "ts_put_single_queued_req_per_s": "the same with the ACK_QUEUED flag",
    "vector_add_batch_vectors_per_s": "vectors per second through VECTOR_ADD_BUFFERED_BATCH "
    "(0x85) frames of batch_vectors float32 vectors of the configured dimension (no "
    "metadata), pipelined on one connection (batch_window in flight), default ack level",
    "bare_framing_req_per_s": "the same load generator and single-put frames against a bare "
    "asyncio TCP server in its own process (read the 10-byte header, read the payload "
    "unparsed, write a fixed 8-byte WriteAck reply with the request's id), same run",
    "http_batch_points_per_s": "points per second through POST /ts/put/buffered/batch of "
    "the same facade, NDJSON bodies of batch_points points, acked, with themis bench "
    "http's load generator (http_batch_concurrency requests in flight), same run",
    "single_vs_bare_framing": "ts_put_single_req_per_s / bare_framing_req_per_s",
    "single_queued_vs_bare_framing": "ts_put_single_queued_req_per_s / bare_framing_req_per_s",
    "batch_vs_http_batch": "ts_put_batch_points_per_s / http_batch_points_per_s",
    "light_handler_p50_us": "median of the facade's own time per TS_PUT_BUFFERED (whole frame "
    "read to reply written; ACK_QUEUED) under a steady light load: an open-loop load "
    "generator writing requests at 10 % of bare_framing_req_per_s (same run) after the "
    "facade's producer acknowledged everything earlier; from the "
    "facade_binary_handler_seconds histogram scraped before and after that run, "
    "interpolated inside its bucket (light_handler_bucket_us); microseconds",
    "light_handler_p99_us": "the 99th percentile of the same observations, computed the "
    "same way; microseconds",
    "light_client_p99_us": "99th percentile of the load generator's request-to-reply time "
    "in the light run (loopback, both processes' event loops included); microseconds",
}


@dataclass(frozen=True)
class Sizes:
    """Load settings of one benchmark size."""

    window: int
    """Single puts in flight on the one connection."""
    max_requests: int
    max_seconds: float
    warmup_requests: int
    batch_points: int
    batch_window: int
    """Batch frames in flight on the one connection."""
    batch_max_requests: int
    batch_max_seconds: float
    batch_vectors: int
    vector_max_requests: int
    light_seconds: float
    """Duration of the light-load run (seconds)."""
    http_batch_concurrency: int
    """HTTP batch requests in flight (keep-alive connections as many); the HTTP batch run
    has the binary batch run's ``batch_max_requests`` and ``batch_max_seconds``."""


QUICK: Final = Sizes(
    window=512,
    max_requests=200_000,
    max_seconds=6.0,
    warmup_requests=2000,
    batch_points=1000,
    batch_window=8,
    batch_max_requests=4000,
    batch_max_seconds=5.0,
    batch_vectors=100,
    vector_max_requests=2000,
    light_seconds=5.0,
    http_batch_concurrency=http.QUICK.batch_concurrency,
)
FULL: Final = Sizes(
    window=512,
    max_requests=1_000_000,
    max_seconds=20.0,
    warmup_requests=5000,
    batch_points=1000,
    batch_window=8,
    batch_max_requests=20_000,
    batch_max_seconds=15.0,
    batch_vectors=100,
    vector_max_requests=10_000,
    light_seconds=15.0,
    http_batch_concurrency=http.FULL.batch_concurrency,
)
SMOKE: Final = Sizes(
    window=64,
    max_requests=5_000,
    max_seconds=2.0,
    warmup_requests=200,
    batch_points=1000,
    batch_window=4,
    batch_max_requests=50,
    batch_max_seconds=2.0,
    batch_vectors=20,
    vector_max_requests=50,
    light_seconds=2.0,
    http_batch_concurrency=http.SMOKE.batch_concurrency,
)
SIZES: Final[Mapping[BenchSize, Sizes]] = {"smoke": SMOKE, "quick": QUICK, "full": FULL}


# -- the servers --------------------------------------------------------------------


def _tcp_listening(child: ChildProcess, port: int, what: str) -> None:
    """Poll ``port`` until it accepts a connection; fail if ``child`` exits first."""

    def accepts() -> bool | None:
        exited(child, what)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        except OSError:
            return None
        return True

    wait_for(accepts, timeout_s=_STARTUP_TIMEOUT_S, interval_s=0.2, what=what)


# -- the runs -----------------------------------------------------------------------


def _plans(sizes: Sizes, binary_port: int, bare_port: int, dimension: int) -> dict[str, Any]:
    """The measured runs, by name: binary plans, and the HTTP batch run's LoadPlan."""
    bare = BinaryLoadPlan(
        port=bare_port,
        kind="point",
        window=sizes.window,
        max_requests=sizes.max_requests,
        max_seconds=sizes.max_seconds,
    )
    single = replace(bare, port=binary_port)
    batch = replace(
        single,
        kind="batch",
        window=sizes.batch_window,
        max_requests=sizes.batch_max_requests,
        max_seconds=sizes.batch_max_seconds,
        batch_points=sizes.batch_points,
    )
    return {
        "bare": bare,
        "single": single,
        "single_queued": replace(single, queued=True),
        "batch": batch,
        "batch_queued": replace(batch, queued=True),
        "vectors": replace(
            batch,
            kind="vectors",
            max_requests=sizes.vector_max_requests,
            batch_vectors=sizes.batch_vectors,
            dimension=dimension,
        ),
    }


def _http_batch_plan(sizes: Sizes, facade_port: int) -> LoadPlan:
    """``themis bench http``'s batch run against this run's facade, as long as the
    binary batch run."""
    return LoadPlan(
        url=f"http://127.0.0.1:{facade_port}{BATCH_PATH}",
        kind="batch",
        connections=sizes.http_batch_concurrency,
        concurrency=sizes.http_batch_concurrency,
        max_requests=sizes.batch_max_requests,
        max_seconds=sizes.batch_max_seconds,
        batch_points=sizes.batch_points,
    )


def _settled(facade_port: int, what: str) -> None:
    """Wait until the facade's producer acknowledged everything (after a queued run)."""
    wait_for(
        lambda: http.acknowledged(facade_port),
        timeout_s=60,
        interval_s=0.1,
        what=f"the facade's producer to acknowledge {what}",
    )


def _light_buckets(facade_port: int) -> dict[float, float]:
    return labelled_buckets(scrape(facade_port), HISTOGRAM, {"opcode": "TS_PUT_BUFFERED"})


@dataclass(frozen=True)
class _Runs:
    """Each run's load generator result, and the handler histogram around the light run."""

    results: dict[str, dict[str, Any]]
    light_before: dict[float, float]
    light_after: dict[float, float]
    light_plan: BinaryLoadPlan


def _load_runs(plans: Mapping[str, Any], sizes: Sizes, facade_port: int) -> _Runs:
    warm = sizes.warmup_requests
    progress("warm-up: both servers (connection, producer, broker metadata)")
    run_load(replace(plans["bare"], max_requests=warm))
    run_load(replace(plans["single"], max_requests=warm))
    results: dict[str, dict[str, Any]] = {}
    for name, what in (
        ("bare", "bare framing server: TS_PUT_BUFFERED frames"),
        ("single", "facade: TS_PUT_BUFFERED, acked"),
        ("single_queued", "facade: TS_PUT_BUFFERED, ACK_QUEUED"),
        ("batch", f"facade: TS_PUT_BUFFERED_BATCH of {sizes.batch_points} points, acked"),
        ("batch_queued", "facade: TS_PUT_BUFFERED_BATCH, ACK_QUEUED"),
        ("vectors", f"facade: VECTOR_ADD_BUFFERED_BATCH of {sizes.batch_vectors}, acked"),
    ):
        plan = plans[name]
        progress(f"{what}, {plan.window} in flight on one connection")
        results[name] = run_load(plan)
        if plan.queued:
            _settled(facade_port, f"the {name} run")
    rate = LIGHT_FRACTION * results["bare"]["ok"] / results["bare"]["seconds"]
    light_plan = replace(
        plans["single_queued"],
        rate_per_s=rate,
        max_requests=int(rate * sizes.light_seconds) + 1,
        max_seconds=sizes.light_seconds,
    )
    progress(f"facade: steady light load, {rate:,.0f} req/s ACK_QUEUED for {sizes.light_seconds} s")
    before = _light_buckets(facade_port)
    results["light_queued"] = run_load(light_plan)
    after = _light_buckets(facade_port)
    _settled(facade_port, "the light run")
    progress(f"facade: POST {BATCH_PATH}, {sizes.batch_points}-point NDJSON")
    results["http_batch"] = run_http_load(plans["http_batch"])
    return _Runs(results, before, after, light_plan)


def _summary(run: Mapping[str, Any], plan: BinaryLoadPlan) -> dict[str, Any]:
    return {
        "requests": run["requests"],
        "ok": run["ok"],
        "seconds": round(run["seconds"], 3),
        "req_per_s": rounded(run["ok"] / run["seconds"]),
        "items_per_request": plan.items_per_request,
        "payload_bytes": run["payload_bytes"],
        "client_p50_us": rounded(run["client_p50_us"]),
        "client_p99_us": rounded(run["client_p99_us"]),
        "ack": "queued" if plan.queued else "acked",
        "window": run["window"],
    }


def _figures(runs: _Runs, plans: Mapping[str, Any], sizes: Sizes) -> dict[str, Any]:
    """The figures of the runs, in the result's order and shape."""
    results = runs.results
    per_s = {name: r["ok"] / r["seconds"] for name, r in results.items()}
    points = sizes.batch_points
    batch, batch_queued = per_s["batch"] * points, per_s["batch_queued"] * points
    single, single_queued, bare = per_s["single"], per_s["single_queued"], per_s["bare"]
    vectors = per_s["vectors"] * sizes.batch_vectors
    http_batch = per_s["http_batch"] * points
    progress(
        f"bare {bare:,.0f} req/s, single {single:,.0f} req/s, batch {batch:,.0f} points/s, "
        f"vectors {vectors:,.0f}/s, HTTP batch {http_batch:,.0f} points/s"
    )
    light = {q: bucket_quantile(runs.light_before, runs.light_after, q) for q in (0.50, 0.99)}
    light_p99_us = 1e6 * light[0.99][0]
    binary_plans = {n: p for n, p in plans.items() if isinstance(p, BinaryLoadPlan)}
    summaries = {n: _summary(results[n], p) for n, p in binary_plans.items()}
    summaries["light_queued"] = _summary(results["light_queued"], runs.light_plan) | {
        "server_observations": runs.light_after[math.inf] - runs.light_before.get(math.inf, 0),
        "target_req_per_s": rounded(runs.light_plan.rate_per_s),
    }
    http_run = results["http_batch"]
    summaries["http_batch"] = {
        "requests": http_run["requests"],
        "ok": http_run["ok"],
        "seconds": round(http_run["seconds"], 3),
        "req_per_s": rounded(per_s["http_batch"]),
        "items_per_request": points,
        "client_p99_ms": round(http_run["client_p99_ms"], 3),
        "concurrency": plans["http_batch"].concurrency,
    }
    return {
        "ts_put_batch_points_per_s": rounded(batch),
        "ts_put_batch_queued_points_per_s": rounded(batch_queued),
        "ts_put_single_req_per_s": rounded(single),
        "ts_put_single_queued_req_per_s": rounded(single_queued),
        "vector_add_batch_vectors_per_s": rounded(vectors),
        "bare_framing_req_per_s": rounded(bare),
        "http_batch_points_per_s": rounded(http_batch),
        "single_vs_bare_framing": rounded(single / bare),
        "single_queued_vs_bare_framing": rounded(single_queued / bare),
        "batch_vs_http_batch": rounded(batch / http_batch),
        "light_handler_p50_us": rounded(1e6 * light[0.50][0]),
        "light_handler_p99_us": rounded(light_p99_us),
        "light_handler_bucket_us": {
            "p50": [round(1e6 * light[0.50][1], 1), round(1e6 * light[0.50][2], 1)],
            "p99": [round(1e6 * light[0.99][1], 1), round(1e6 * light[0.99][2], 1)],
        },
        "light_client_p99_us": rounded(results["light_queued"]["client_p99_us"]),
        "light_load_req_per_s": summaries["light_queued"]["req_per_s"],
        "goals": {
            "ts_put_batch_points_per_s": goal(batch, BATCH_GOAL),
            "single_vs_bare_framing": goal(single / bare, SINGLE_GOAL),
            "batch_vs_http_batch": goal(batch / http_batch, HTTP_BATCH_GOAL),
            "light_handler_p99_us": goal_below(light_p99_us, LIGHT_P99_GOAL_US),
        },
        "runs": summaries,
        "settings": {
            "load_generator": "themis bench binary-load: one asyncio process, one "
            "BinaryClient connection (pipelined, payloads encoded before the clock "
            "starts), loopback",
            "window": sizes.window,
            "max_requests": sizes.max_requests,
            "max_seconds": sizes.max_seconds,
            "warmup_requests": sizes.warmup_requests,
            "batch_points": points,
            "batch_window": sizes.batch_window,
            "batch_vectors": sizes.batch_vectors,
            "dimension": plans["vectors"].dimension,
            "http_batch_concurrency": plans["http_batch"].concurrency,
            "series": ENTITIES,
            "facade": "themis facade (one process, one event loop; HTTP and binary door), "
            "auth on (writer key), rate limits raised out of the way",
            "facade_histogram_buckets_us": [
                round(1e6 * b, 3) for b in runs.light_after if math.isfinite(b)
            ],
            "light_fraction_of_bare": LIGHT_FRACTION,
            "light_seconds": sizes.light_seconds,
            "producer": "the facade's AsyncProducer: acks=all, idempotent",
        },
        "worker": {
            "ran": False,
            "why": "a buffered write is answered before any worker consumes it; the points "
            "and vector operations stay in their topics",
        },
    }


def _measure(settings: Settings, broker: BenchBroker, sizes: Sizes) -> dict[str, Any]:
    binary_port, bare_port = free_port(), free_port()
    config = with_overrides(
        http.facade_settings(settings, broker, "binary"), {"facade": {"binary_port": binary_port}}
    )
    wanted = {"ts.points", "vectors.ops", "ts.blocks", "wal"}
    apply_topics(broker.bootstrap, config, [s for s in load_specs() if s.name in wanted])
    facade_port = config.facade.port
    progress(
        f"facade on 127.0.0.1:{facade_port} (binary {binary_port}), "
        f"bare framing server on 127.0.0.1:{bare_port}"
    )
    work_dir = broker.work_dir
    facade = ChildProcess(
        [*themis_command(), "facade", "--response-mode", "acked"],
        child_env(config),
        work_dir / "facade.log",
    )
    bare = ChildProcess(
        [*themis_command(), "bench", "binary-bare-server", "--port", str(bare_port)],
        os.environ,
        work_dir / "bare.log",
    )
    dimension = config.vector_auto_buffer.dimension
    plans = {
        **_plans(sizes, binary_port, bare_port, dimension),
        "http_batch": _http_batch_plan(sizes, facade_port),
    }
    try:
        http.wait_listening(facade, facade_port, "the facade")
        _tcp_listening(facade, binary_port, "the facade's binary door")
        _tcp_listening(bare, bare_port, "the bare framing server")
        runs = _load_runs(plans, sizes, facade_port)
    finally:
        facade.stop()
        bare.stop()
    return _figures(runs, plans, sizes)


def run(size: BenchSize, settings: Settings) -> dict[str, object]:
    """Measure everything; the figures described in :data:`DEFINITIONS`.

    ``size`` picks :data:`FULL`, :data:`QUICK` (about a minute) or :data:`SMOKE`
    (seconds; the test suite's). ``settings`` are the ones ``themis`` loaded;
    ``kafka.bootstrap_servers`` (``KAFKA_BOOTSTRAP_SERVERS``) chooses a given broker.
    Raises :class:`~pipeline.errors.BenchmarkFailed` (or another ``ThemisError``) when a
    step fails.
    """
    sizes = SIZES[size]
    with bench_broker(settings, "binary") as broker:
        figures = _measure(settings, broker, sizes)
    return {**figures, **broker.fields()}


# -- output ---------------------------------------------------------------------------


def _verdict(result: Mapping[str, object], name: str) -> str:
    goals = result.get("goals")
    checked = goals.get(name) if isinstance(goals, dict) else None
    return f" ({goal_verdict(checked)})" if isinstance(checked, dict) else ""


def render(result: Mapping[str, object]) -> str:
    """A short human-readable table of ``result``."""
    rows: list[tuple[str, Callable[[object], str]]] = [
        ("bare_framing_req_per_s", lambda v: f"{v:,} req/s"),
        ("ts_put_single_req_per_s", lambda v: f"{v:,} req/s (acked)"),
        ("ts_put_single_queued_req_per_s", lambda v: f"{v:,} req/s (queued)"),
        ("single_vs_bare_framing", str),
        ("ts_put_batch_points_per_s", lambda v: f"{v:,} points/s (acked)"),
        ("ts_put_batch_queued_points_per_s", lambda v: f"{v:,} points/s (queued)"),
        ("http_batch_points_per_s", lambda v: f"{v:,} points/s (HTTP, acked)"),
        ("batch_vs_http_batch", str),
        ("vector_add_batch_vectors_per_s", lambda v: f"{v:,} vectors/s (acked)"),
        ("light_handler_p50_us", lambda v: f"{v} µs (queued, light load)"),
        ("light_handler_p99_us", lambda v: f"{v} µs"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(
        f"{name:<{width}}  {show(result[name])}{_verdict(result, name)}"
        for name, show in rows
        if name in result
    )
