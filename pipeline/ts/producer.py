"""``TSProducer``: write points to the points topic, one JSON point or many in frames."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from pipeline.config import Settings
from pipeline.errors import InvalidRecord
from pipeline.kafka.producer import TopicProducer, key_partition
from pipeline.ts.point import (
    DataPoint,
    SeriesArrays,
    encode_frame,
    parse_series_key,
    validate_point,
)

MAX_FRAME_POINTS = 100_000
"""Points per frame at most (1.6 MB of payload, well under the topic's message limit)."""


def series_partition(key: str, partitions: int) -> int:
    """The partition of a series (see :func:`pipeline.kafka.producer.key_partition`)."""
    return key_partition(key.encode(), partitions)


class TSProducer(TopicProducer):
    """Writes points to ``<namespace>.ts.points``; ``flush`` waits until the broker has them."""

    def __init__(self, settings: Settings, *, bootstrap: str | None = None, **extra: Any) -> None:
        bootstrap = bootstrap or settings.kafka.bootstrap_servers
        if not bootstrap:
            raise ValueError("TSProducer needs a bootstrap address (settings or argument)")
        super().__init__(bootstrap, settings.topic("ts.points"), **extra)
        self.points_sent = 0

    def put(self, point: DataPoint | Mapping[str, Any]) -> None:
        """Send one point as JSON, keyed by its series.

        JSON has no NaN or infinity: such a point goes as a one-point binary frame.
        """
        if not isinstance(point, DataPoint):
            point = validate_point(dict(point))
        if not math.isfinite(point.value):
            self.put_many([point])
            return
        self.send(point.to_json(), key=point.series_key().encode())
        self.points_sent += 1

    def put_many(self, points: Iterable[DataPoint | Mapping[str, Any]]) -> int:
        """Send many points in binary frames, grouped by series; returns the count."""
        grouped: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        for raw in points:
            point = raw if isinstance(raw, DataPoint) else validate_point(dict(raw))
            ts, vs = grouped[point.series_key()]
            ts.append(point.timestamp_ms)
            vs.append(point.value)
        return self.put_arrays(
            (key, np.array(ts, np.int64), np.array(vs, np.float64))
            for key, (ts, vs) in grouped.items()
        )

    def put_arrays(self, series: Iterable[SeriesArrays]) -> int:
        """Send series given as arrays in frames, one frame per partition; returns the count."""
        by_partition: dict[int, list[SeriesArrays]] = defaultdict(list)
        sizes: dict[int, int] = defaultdict(int)
        sent = 0
        for key, ts, vs in series:
            try:
                parse_series_key(key)
            except ValueError:
                raise InvalidRecord(
                    f"{key!r} is not a series key; build one with pipeline.ts.series_key()"
                ) from None
            p = series_partition(key, self.partitions)
            for start in range(0, len(ts), MAX_FRAME_POINTS):
                part = (
                    key,
                    ts[start : start + MAX_FRAME_POINTS],
                    vs[start : start + MAX_FRAME_POINTS],
                )
                by_partition[p].append(part)
                sizes[p] += len(part[1])
                sent += len(part[1])
                if sizes[p] >= MAX_FRAME_POINTS:
                    self.send(encode_frame(by_partition.pop(p)), partition=p)
                    sizes[p] = 0
        for p, parts in by_partition.items():
            self.send(encode_frame(parts), partition=p)
        self.points_sent += sent
        return sent
