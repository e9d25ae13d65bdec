"""The time-series benchmark's data, and its codec figures (no broker involved).

:func:`fleet` draws :func:`~pipeline.ts.dataset.devops_dataset` series as
``(metric, entity, timestamps_ms, values)``; :func:`series_tags` gives series ``i``
the 2-4 tags a scraper would attach; :func:`interleaved` walks their points in time
order across series, as a fleet of hosts reports them.
:func:`measure_codec` cuts the fleet into blocks the way the buffer's size trigger
cuts them and measures block bytes and the chunk codec's speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from pipeline.bench.harness import best_rate
from pipeline.errors import BenchmarkFailed
from pipeline.ts.block import encode_block
from pipeline.ts.dataset import devops_dataset
from pipeline.ts.gorilla import decode_chunk, encode_chunk
from pipeline.ts.point import series_key

__all__ = [
    "SEED",
    "CodecResult",
    "Series",
    "fleet",
    "interleaved",
    "measure_codec",
    "series_tags",
]

SEED: Final = 0
"""Seed of every :func:`~pipeline.ts.dataset.devops_dataset` the benchmark draws."""

Int64s = npt.NDArray[np.int64]
Float64s = npt.NDArray[np.float64]
Series = tuple[str, str, Int64s, Float64s]
"""``(metric, entity, timestamps_ms, values)``."""


def fleet(series: int, points_per_series: int) -> list[Series]:
    """:func:`devops_dataset` series as ``(metric, entity, ...)``: the entity is the host."""
    out = []
    for name, ts, vs in devops_dataset(series, points_per_series, SEED):
        metric, _, host = name.partition("{host=")
        out.append((metric, host.rstrip("}"), ts, vs))
    return out


_TAG_VALUES: Final = (
    ("region", ("eu-west-1", "us-east-1", "ap-south-1")),
    ("service", ("api", "billing", "search", "ingest", "auth")),
    ("env", ("prod", "staging")),
    ("rack", tuple(f"r{n:02d}" for n in range(12))),
)


def series_tags(index: int) -> dict[str, str]:
    """The tags of series ``index`` of :func:`fleet`: the first ``2 + index % 3`` of
    region, service, env and rack (2, 3 or 4 tags, a third of the series each), their
    values picked by the series' host (five series per host)."""
    host = index // 5
    return {name: values[host % len(values)] for name, values in _TAG_VALUES[: 2 + index % 3]}


def interleaved(series: list[Series]) -> Iterator[tuple[str, int, float]]:
    """``(series key, timestamp_ms, value)`` of every point, in time order across series."""
    columns = [(series_key(m, e), ts.tolist(), vs.tolist()) for m, e, ts, vs in series]
    length = min((len(ts) for _, ts, _ in columns), default=0)
    for i in range(length):
        for key, ts, vs in columns:
            yield key, ts[i], vs[i]


@dataclass(frozen=True)
class CodecResult:
    points: int
    blocks: int
    block_bytes: int
    """Whole blocks: header, chunk and checksum."""
    encode_points_per_s: float
    decode_points_per_s: float


def measure_codec(
    series: int, points_per_series: int, block_points: int, repetitions: int
) -> CodecResult:
    """Blocks of ``block_points`` points: their bytes, and the best chunk encode/decode
    rates (points per second, one core) over ``repetitions`` runs.

    Raises :class:`BenchmarkFailed` if a chunk does not decode to its input.
    """
    chunks = [
        (series_key(m, e), ts[i : i + block_points], vs[i : i + block_points])
        for m, e, ts, vs in fleet(series, points_per_series)
        for i in range(0, ts.size, block_points)
    ]
    points = sum(int(ts.size) for _, ts, _ in chunks)
    block_bytes = sum(len(encode_block(key, ts, vs)) for key, ts, vs in chunks)
    encoded = [encode_chunk(ts, vs) for _, ts, vs in chunks]
    for (key, ts, vs), chunk in zip(chunks, encoded, strict=True):
        got_ts, got_vs = decode_chunk(chunk)
        if not (
            np.array_equal(got_ts, ts)
            and np.array_equal(got_vs.view(np.uint64), vs.view(np.uint64))
        ):
            raise BenchmarkFailed(f"a chunk of {key} did not decode to its input")
    encode_rate = best_rate(
        lambda: [encode_chunk(ts, vs) for _, ts, vs in chunks], points, repetitions
    )
    decode_rate = best_rate(lambda: [decode_chunk(c) for c in encoded], points, repetitions)
    return CodecResult(points, len(chunks), block_bytes, encode_rate, decode_rate)
