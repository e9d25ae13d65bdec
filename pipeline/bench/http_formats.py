"""The ecosystem's formats in ``themis bench http``: Prometheus remote-write and InfluxDB line
protocol bodies of ``batch_points`` samples each, against the NDJSON batch of the same run.

Same facade, same load generator (:mod:`pipeline.bench.http_load`), same concurrency as
the batch run; the payloads are built with the libraries the tests use (the protobuf
messages of :mod:`pipeline.ts.prom_remote`, ``influxdb-client``'s ``Point``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from pipeline.bench.harness import goal, rounded
from pipeline.bench.http_load import LoadPlan

__all__ = ["DEFINITIONS", "figures", "plans"]

PATHS: Final = {
    "remote_write": "/api/v1/write",
    "line_protocol": "/api/v2/write?bucket=bench&precision=ms",
}
DEFINITIONS: Final = {
    "remote_write_samples_per_s": "samples per second through POST /api/v1/write (snappy "
    "protobuf WriteRequests of batch_points samples over the batch run's series, acked), 2xx",
    "line_protocol_points_per_s": "points per second through POST /api/v2/write (line "
    "protocol bodies of batch_points lines, built by influxdb-client, acked), 2xx",
}


def plans(batch: LoadPlan, facade_port: int) -> dict[str, LoadPlan]:
    """The two runs, shaped as ``batch`` (its concurrency, request and time bounds)."""
    return {
        kind: replace(batch, url=f"http://127.0.0.1:{facade_port}{path}", kind=kind)
        for kind, path in PATHS.items()
    }


def figures(results: Mapping[str, Mapping[str, Any]], batch_points_per_s: float,
            points: int) -> dict[str, Any]:  # fmt: skip
    """The formats' rates, their ratios to the NDJSON batch and the goals (>= 0.8 each)."""
    rate = {kind: results[kind]["ok"] / results[kind]["seconds"] * points for kind in PATHS}
    remote, lines = rate["remote_write"], rate["line_protocol"]
    return {
        "remote_write_samples_per_s": rounded(remote),
        "line_protocol_points_per_s": rounded(lines),
        "remote_write_vs_batch": rounded(remote / batch_points_per_s),
        "line_protocol_vs_batch": rounded(lines / batch_points_per_s),
        "format_goals": {
            "remote_write_vs_batch": goal(remote / batch_points_per_s, 0.8),
            "line_protocol_vs_batch": goal(lines / batch_points_per_s, 0.8),
        },
    }
