"""``themis bench remote-read [--stack PATH] [--quick|--smoke] [--json]``: Prometheus
remote-read of one series of a million samples, on a live stack.

The samples go in as Prometheus sends them (remote-write bodies of 10,000 samples), the
workers are flushed (the samples are then in blocks) and the series is read back with a
``ReadRequest`` three times: ``read_first_s`` (the facade's block store catches up with
the new blocks first) and ``read_best_s``. Goal: ``read_best_s`` under 1 s at a million.
Every answer is checked to hold every sample.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import cramjam

from pipeline.bench.harness import BenchSize, goal_below, goal_row, live_stack, progress
from pipeline.config import Settings
from pipeline.errors import BenchmarkFailed
from pipeline.ts.prom_remote import READ_REQUEST, READ_RESPONSE, WRITE_REQUEST, encode_snappy

__all__ = ["DEFINITIONS", "SIZES", "RemoteReadBenchmark"]

SIZES: Final[Mapping[BenchSize, int]] = {"smoke": 20_000, "quick": 1_000_000, "full": 1_000_000}
_PER_REQUEST: Final = 10_000
_T0: Final = 1_700_000_000_000
DEFINITIONS: Final = {
    "samples": "samples of the one series read back",
    "read_first_s": "seconds for the first POST /api/v1/read of the whole series (the "
    "facade's block store catches up with the new blocks in it)",
    "read_best_s": "the fastest of the next two reads of the same (goal: under 1 s)",
    "write_samples_per_s": "the samples' remote-write rate (bodies of 10,000, acked)",
}


class _Facade:
    def __init__(self, stack: dict[str, Any]) -> None:
        host, port = stack["http_addr"].rsplit(":", 1)
        self.host, self.port, self.keys = host, int(port), stack["keys"]

    def post(self, path: str, body: bytes, role: str = "writer") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        if body:
            headers |= {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def _write(facade: _Facade, name: str, samples: int) -> float:
    begun = time.perf_counter()
    for first in range(0, samples, _PER_REQUEST):
        request = WRITE_REQUEST()
        series = request.timeseries.add()
        series.labels.add(name="__name__", value=name)
        series.labels.add(name="instance", value="bench")
        for i in range(first, min(samples, first + _PER_REQUEST)):
            series.samples.add(timestamp=_T0 + i, value=i * 0.5)
        status, answer = facade.post("/api/v1/write", encode_snappy(request.SerializeToString()))
        if status != 204:
            raise BenchmarkFailed(f"remote write answered {status}: {answer[:300]!r}")
    return samples / (time.perf_counter() - begun)


def _read(facade: _Facade, name: str, samples: int) -> float:
    request = READ_REQUEST()
    query = request.queries.add()
    query.start_timestamp_ms, query.end_timestamp_ms = _T0, _T0 + samples
    matcher = query.matchers.add()
    matcher.type, matcher.name, matcher.value = 0, "__name__", name
    body = encode_snappy(request.SerializeToString())
    begun = time.perf_counter()
    status, answer = facade.post("/api/v1/read", body)
    elapsed = time.perf_counter() - begun
    if status != 200:
        raise BenchmarkFailed(f"remote read answered {status}: {answer[:300]!r}")
    response = READ_RESPONSE()
    response.ParseFromString(bytes(cramjam.snappy.decompress_raw(answer)))
    got = sum(len(series.samples) for series in response.results[0].timeseries)
    if got != samples:
        raise BenchmarkFailed(f"remote read gave {got} samples of {samples}")
    return elapsed


class RemoteReadBenchmark:
    """The module-like object :mod:`pipeline.bench.cli` lists (``--stack`` optional)."""

    DEFINITIONS: Mapping[str, str] = DEFINITIONS

    def __init__(self, stack: Path | None = None) -> None:
        self.stack = stack

    def run(self, size: BenchSize, settings: Settings) -> dict[str, object]:
        if self.stack is not None:
            return self._measure(self.stack, size) | {"stack": str(self.stack)}
        with live_stack(settings, "remote-read") as (described, broker):
            return self._measure(described, size) | broker.fields()

    def _measure(self, described: Path, size: BenchSize) -> dict[str, object]:
        facade, samples = _Facade(json.loads(described.read_text())), SIZES[size]
        name = f"bench_remote_read_{uuid.uuid4().hex[:8]}"
        progress(f"remote-writing {samples:,} samples of one series")
        write_rate = _write(facade, name, samples)
        status, answer = facade.post("/ts/buffer/flush", b"", role="admin")
        if status != 200:
            raise BenchmarkFailed(f"flush answered {status}: {answer[:300]!r}")
        deadline = time.monotonic() + 120
        while True:  # the worker may not have consumed every write yet when it flushed
            try:
                first = _read(facade, name, samples)
                break
            except BenchmarkFailed:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        best = min(_read(facade, name, samples) for _ in range(2))
        return {
            "samples": samples,
            "read_first_s": round(first, 3),
            "read_best_s": round(best, 3),
            "write_samples_per_s": round(write_rate),
            "goals": {"read_best_s": goal_below(best, 1.0)},
        }

    def render(self, result: Mapping[str, object]) -> str:
        goals: Mapping[str, Any] = result["goals"]  # type: ignore[assignment]
        lines = [
            f"themis bench remote-read ({result.get('size')}, {result.get('samples')} samples)"
        ]
        lines += [f"  read_first_s  {result.get('read_first_s')}"]
        lines += ["  {}  {}  {}".format(*goal_row("read_best_s", goals["read_best_s"]))]
        return "\n".join(lines)
