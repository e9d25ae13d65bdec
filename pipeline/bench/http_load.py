"""The HTTP benchmark's child processes: the load generator and the bare aiohttp server.

* ``themis bench http-load --plan JSON`` runs :func:`generate_load` for one
  :class:`LoadPlan` and prints its result as one JSON line; :func:`run_load` is
  how the benchmark starts it (:meth:`LoadPlan.argv`) and reads that line. The
  generator is an asyncio ``aiohttp.ClientSession`` with a
  ``TCPConnector(limit=connections)`` (keep-alive). Closed loop (``rate_per_s`` 0):
  ``concurrency`` tasks, each sending its next request as soon as the last one was
  answered. Open loop (``rate_per_s`` > 0): a steady load, request ``i`` started at
  ``i / rate_per_s`` seconds whether or not earlier ones were answered (at most
  ``concurrency`` in flight). Either until ``max_requests`` were sent or
  ``max_seconds`` passed.
* ``themis bench http-bare-server --port N`` (:func:`serve_bare`): one handler that
  reads the body and answers the same-sized JSON as the facade, no middleware, on
  the facade's event loop (uvloop).

Both are hidden sub-commands of ``themis bench`` (:mod:`pipeline.bench.cli`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import uvloop
from aiohttp import web

from pipeline.errors import BenchmarkFailed
from pipeline.worker.process import themis_command

__all__ = [
    "API_KEY",
    "BATCH_PATH",
    "ENTITIES",
    "PUT_PATH",
    "LoadPlan",
    "generate_load",
    "run_load",
    "run_load_command",
    "serve_bare",
]

API_KEY: Final = "bench-http-key"
"""The writer key the benchmark's facade is configured with."""
PUT_PATH: Final = "/ts/put/buffered"
BATCH_PATH: Final = "/ts/put/buffered/batch"
ENTITIES: Final = 64
"""Series the generated points are spread over (one metric, this many entities)."""
_BASE_TS_MS: Final = 1_702_645_200_000
_BARE_ANSWER: Final = b'{"success":true,"buffered":true,"buffer_size":0}'
"""What the bare server answers: the facade's buffered answer, same fields, same size class."""


@dataclass(frozen=True)
class LoadPlan:
    """One load generator run: where, what, how many at once, and for how long."""

    url: str
    kind: str
    """``point`` (one JSON point per request), ``batch`` (NDJSON of ``batch_points``),
    ``remote_write`` (a Prometheus WriteRequest of ``batch_points`` samples) or
    ``line_protocol`` (``batch_points`` lines, built with ``influxdb-client``'s ``Point``)."""
    connections: int
    """Keep-alive connections at most (``TCPConnector(limit=...)``)."""
    concurrency: int
    """Tasks, each with one request outstanding."""
    max_requests: int
    max_seconds: float
    batch_points: int = 1000
    response_mode: str = "acked"
    rate_per_s: float = 0.0
    """0: closed loop; above 0: requests started at this steady rate (open loop)."""

    def argv(self) -> list[str]:
        """The ``themis bench http-load`` command line that runs this plan."""
        plan = json.dumps(dataclasses.asdict(self))
        return [*themis_command(), "bench", "http-load", "--plan", plan]


def _point_body(n: int) -> bytes:
    """The ``n``-th point: 64 series, one millisecond apart within a series."""
    return b'{"metric":"bench_http","entity":"e%d","timestamp_ms":%d,"value":%d.25}' % (
        n % ENTITIES,
        _BASE_TS_MS + n // ENTITIES,
        n % 1000,
    )


def _batch_body(points: int) -> bytes:
    """NDJSON of ``points`` points (every request sends the same points: last write wins)."""
    return b"\n".join(_point_body(n) for n in range(points)) + b"\n"


def _remote_write_body(samples: int) -> bytes:
    """A snappy WriteRequest of ``samples`` samples over the same 64 series."""
    from pipeline.ts.prom_remote import WRITE_REQUEST, encode_snappy

    request = WRITE_REQUEST()
    series = []
    for e in range(min(ENTITIES, samples)):
        one = request.timeseries.add()
        one.labels.add(name="__name__", value="bench_http")
        one.labels.add(name="instance", value=f"e{e}")
        series.append(one)
    for n in range(samples):
        series[n % len(series)].samples.add(timestamp=_BASE_TS_MS + n // ENTITIES, value=n + 0.25)
    return encode_snappy(request.SerializeToString())


def _line_protocol_body(points: int) -> bytes:
    """``points`` lines over the same 64 series, serialized by ``influxdb-client``."""
    from influxdb_client.client.write.point import Point
    from influxdb_client.domain.write_precision import WritePrecision

    lines = [
        Point("bench").tag("host", f"e{n % ENTITIES}").field("http", n % 1000 + 0.25)  # type: ignore[no-untyped-call]
        .time(_BASE_TS_MS + n // ENTITIES, WritePrecision.MS).to_line_protocol()
        for n in range(points)
    ]  # fmt: skip
    return "\n".join(lines).encode()


_BODIES: Final[dict[str, Callable[[int], bytes]]] = {
    "batch": _batch_body,
    "remote_write": _remote_write_body,
    "line_protocol": _line_protocol_body,
}
_CONTENT: Final = {
    "point": {"Content-Type": "application/json"},
    "batch": {"Content-Type": "application/x-ndjson"},
    "remote_write": {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"},
    "line_protocol": {"Content-Type": "text/plain"},
}


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def generate_load(plan: LoadPlan) -> dict[str, Any]:
    """Run ``plan``; returns requests, 2xx answers, statuses, seconds and client latencies (ms).

    The clock starts before the first request and stops after the last answer.
    """
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "X-Themis-Response-Mode": plan.response_mode,
        **_CONTENT[plan.kind],
    }
    batch = _BODIES[plan.kind](plan.batch_points) if plan.kind != "point" else b""
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    issued = 0
    connector = aiohttp.TCPConnector(limit=plan.connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as session:

        async def send(body: bytes) -> None:
            t0 = time.perf_counter()
            try:
                async with session.post(plan.url, data=body) as response:
                    await response.read()
                    statuses[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
                return
            latencies.append(time.perf_counter() - t0)

        def next_body() -> bytes:
            nonlocal issued
            issued += 1
            return _point_body(issued - 1) if plan.kind == "point" else batch

        async def sender() -> None:
            while issued < plan.max_requests and time.perf_counter() < deadline:
                await send(next_body())

        async def paced() -> None:
            slots = asyncio.Semaphore(plan.concurrency)
            running: set[asyncio.Task[None]] = set()

            async def one(body: bytes) -> None:
                try:
                    await send(body)
                finally:
                    slots.release()

            while issued < plan.max_requests:
                due = begun + issued / plan.rate_per_s
                if due > deadline:
                    break
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                await slots.acquire()
                task = asyncio.create_task(one(next_body()))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.gather(*running)

        begun = time.perf_counter()
        deadline = begun + plan.max_seconds
        if plan.rate_per_s > 0:
            await paced()
        else:
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


def run_load_command(plan_json: str) -> None:
    """``themis bench http-load --plan JSON``: run the plan, print its result as one line."""
    plan = LoadPlan(**json.loads(plan_json))
    print(json.dumps(asyncio.run(generate_load(plan))), flush=True)


def run_load(plan: LoadPlan) -> dict[str, Any]:
    """Run ``plan`` in a load generator child process; its result.

    Raises :class:`BenchmarkFailed` if the child fails or any answer is not 2xx.
    """
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


def serve_bare(port: int) -> None:
    """``themis bench http-bare-server``: the bare server on 127.0.0.1:``port`` until SIGTERM."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=_BARE_ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post(PUT_PATH, answer)
    app.router.add_post(BATCH_PATH, answer)
    # The facade's event loop (themis facade runs on uvloop): the baseline is the same stack.
    loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)
