"""Synthetic devops-style metrics for benchmarks and tests of the time-series path.

:func:`devops_dataset` imitates what a fleet of hosts reports to a scraper:

* Timestamps: int64 milliseconds on a 10 s grid starting at 2023-11-14 22:13:20 UTC
  (1_700_000_000_000 ms) plus a per-series phase of up to 10 s, each sample
  jittered uniformly by up to 2 % of the interval (+-200 ms). They always
  increase.
* Series kinds, by ``index % 5`` so the mix is exact for every multiple of 5:

  - 0: integer counter (requests, bytes sent): cumulative Poisson increments.
  - 1: integer gauge (open connections, running processes): a +-few-steps random
    walk that stays at or above 0.
  - 2: 1-decimal gauge (temperature, load average): a random walk rounded to 0.1.
  - 3: 2-decimal gauge (CPU %, memory %): a random walk in [0, 100] rounded to 0.01.
  - 4: constant or rarely changing (config value, ``up``): changes with
    probability 0.2 % per sample.

  That is 40 % integers, 40 % 1-2 decimal gauges and 20 % near-constant series.
* Values are float64. Series ``i`` draws from its own generator seeded with
  ``(seed, i)``, so a series does not change when the series count does, and
  the same arguments always give bit-identical data.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from pipeline.errors import InvalidArgument

__all__ = ["devops_dataset"]

START_MS: Final = 1_700_000_000_000
INTERVAL_MS: Final = 10_000
JITTER_MS: Final = INTERVAL_MS * 2 // 100

_METRICS: Final = (
    "http_requests_total",
    "tcp_connections_open",
    "node_load1",
    "cpu_usage_percent",
    "config_max_workers",
)

Series = tuple[str, npt.NDArray[np.int64], npt.NDArray[np.float64]]


def _timestamps(rng: np.random.Generator, points: int) -> npt.NDArray[np.int64]:
    phase = int(rng.integers(0, INTERVAL_MS))
    grid = START_MS + phase + np.arange(points, dtype=np.int64) * INTERVAL_MS
    jitter = rng.integers(-JITTER_MS, JITTER_MS + 1, size=points, dtype=np.int64)
    return grid + jitter


def _counter(rng: np.random.Generator, points: int) -> npt.NDArray[np.float64]:
    start = float(rng.integers(0, 1_000_000))
    return start + np.cumsum(rng.poisson(rng.uniform(1, 500), size=points)).astype(np.float64)


def _int_gauge(rng: np.random.Generator, points: int) -> npt.NDArray[np.float64]:
    steps = rng.integers(-3, 4, size=points)
    return np.abs(int(rng.integers(0, 200)) + np.cumsum(steps)).astype(np.float64)


def _decimal_gauge(
    rng: np.random.Generator, points: int, decimals: int, low: float, high: float
) -> npt.NDArray[np.float64]:
    walk = rng.uniform(low, high) + np.cumsum(rng.normal(0, (high - low) / 200, size=points))
    # Reflect into [low, high] so long series do not drift off.
    span = high - low
    folded = np.abs((walk - low) % (2 * span) - span)
    return np.round(high - folded, decimals)


def _rarely_changing(rng: np.random.Generator, points: int) -> npt.NDArray[np.float64]:
    levels = rng.integers(1, 64, size=points).astype(np.float64)
    changes = rng.random(points) < 0.002
    changes[0] = True
    return levels[np.maximum.accumulate(np.where(changes, np.arange(points), 0))]


def devops_dataset(series: int, points_per_series: int, seed: int = 0) -> list[Series]:
    """Deterministic devops-like series as ``(series_key, timestamps_ms, values)`` tuples.

    ``series`` and ``points_per_series`` must be non-negative; timestamps are
    int64 milliseconds, values float64. See the module docstring for the
    generator. Raises ``ValueError`` for negative sizes.
    """
    if series < 0 or points_per_series < 0:
        raise InvalidArgument(
            f"series ({series}) and points_per_series ({points_per_series}) must be >= 0"
        )
    result: list[Series] = []
    for index in range(series):
        rng = np.random.default_rng([seed, index])
        kind = index % 5
        key = f"{_METRICS[kind]}{{host=host-{index // 5:05d}}}"
        timestamps = _timestamps(rng, points_per_series)
        if kind == 0:
            values = _counter(rng, points_per_series)
        elif kind == 1:
            values = _int_gauge(rng, points_per_series)
        elif kind == 2:
            values = _decimal_gauge(rng, points_per_series, 1, 0.0, 16.0)
        elif kind == 3:
            values = _decimal_gauge(rng, points_per_series, 2, 0.0, 100.0)
        else:
            values = _rarely_changing(rng, points_per_series)
        result.append((key, timestamps, values))
    return result
