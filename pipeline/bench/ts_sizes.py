"""The sizes of ``themis bench ts``: how much data each measurement uses at each size."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pipeline.bench.harness import BenchSize

__all__ = ["FULL", "QUICK", "SIZES", "SMOKE", "Sizes"]


@dataclass(frozen=True)
class Sizes:
    """How much data each measurement uses (series x points per series)."""

    codec_series: int
    codec_points_per_series: int
    codec_repetitions: int
    json_series: int
    """Series of each JSON run (untagged and tagged alike)."""
    json_points_per_series: int
    frames_series: int
    frames_points_per_series: int
    frame_slice_points: int
    """Points of each series in one ``put_arrays`` call."""
    buffered_series: int
    buffered_points_per_series: int
    direct_points: int
    query_series: int
    """Series of the query store (``query_points_per_series`` points each)."""
    query_points_per_series: int
    queries: int
    """Timed one-series queries (after ``query_warm_up`` untimed ones)."""
    query_warm_up: int


QUICK: Final = Sizes(
    codec_series=200,
    codec_points_per_series=2000,
    codec_repetitions=5,
    json_series=100,
    json_points_per_series=5000,
    frames_series=200,
    frames_points_per_series=50_000,
    frame_slice_points=100,
    buffered_series=100,
    buffered_points_per_series=1000,
    direct_points=300,
    query_series=100,
    query_points_per_series=10_000,
    queries=500,
    query_warm_up=20,
)
FULL: Final = Sizes(
    codec_series=1000,
    codec_points_per_series=5000,
    codec_repetitions=7,
    json_series=200,
    json_points_per_series=5000,
    frames_series=500,
    frames_points_per_series=20_000,
    frame_slice_points=100,
    buffered_series=200,
    buffered_points_per_series=5000,
    direct_points=2000,
    query_series=1000,
    query_points_per_series=10_000,
    queries=1000,
    query_warm_up=50,
)
SMOKE: Final = Sizes(
    codec_series=20,
    codec_points_per_series=500,
    codec_repetitions=2,
    json_series=20,
    json_points_per_series=1000,
    frames_series=50,
    frames_points_per_series=20_000,
    frame_slice_points=100,
    buffered_series=20,
    buffered_points_per_series=200,
    direct_points=50,
    query_series=12,
    query_points_per_series=10_000,
    queries=50,
    query_warm_up=5,
)
SIZES: Final[Mapping[BenchSize, Sizes]] = {"smoke": SMOKE, "quick": QUICK, "full": FULL}
