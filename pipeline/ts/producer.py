"""Points onto the points topic: :class:`TSProducer`, and the one partition framing.

:func:`frames_by_partition` cuts series into binary frames
(:func:`~pipeline.ts.point.encode_frame`), each for the partition its series belong to.
:meth:`TSProducer.put_arrays` and the facade's ``POST /ts/put/buffered/batch`` both send
what it yields.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from pipeline.config import Settings
from pipeline.errors import InvalidArgument
from pipeline.kafka.producer import TopicProducer, key_partition
from pipeline.limits import MAX_FRAME_BYTES, MAX_FRAME_POINTS
from pipeline.ts.point import (
    DataPoint,
    SeriesArrays,
    encode_frame,
    parse_series_key,
    validate_point,
)

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_FRAME_POINTS",
    "Frame",
    "TSProducer",
    "frames_by_partition",
    "series_arrays",
    "series_partition",
]

_FRAME_HEAD_BYTES = 8  # magic + u32 series count
_PART_HEAD_BYTES = 6  # u16 key length + u32 point count


class Frame(NamedTuple):
    """One binary frame for one partition of the points topic."""

    partition: int
    data: bytes
    points: int


def series_partition(key: str, partitions: int) -> int:
    """The partition of a series (see :func:`pipeline.kafka.producer.key_partition`)."""
    return key_partition(key.encode(), partitions)


def series_arrays(points: Iterable[DataPoint]) -> list[SeriesArrays]:
    """``points`` grouped by series, in order of first appearance; each keeps its order."""
    grouped: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for point in points:
        ts, vs = grouped[point.series_key()]
        ts.append(point.timestamp_ms)
        vs.append(point.value)
    return [
        (key, np.array(ts, np.int64), np.array(vs, np.float64)) for key, (ts, vs) in grouped.items()
    ]


def frames_by_partition(
    series: Iterable[SeriesArrays],
    partitions: int,
    *,
    max_points: int = MAX_FRAME_POINTS,
    max_bytes: int = MAX_FRAME_BYTES,
    check_keys: bool = True,
) -> Iterator[Frame]:
    """Frames holding ``series``, each for the partition of the series in it.

    A series stays in its partition (:func:`series_partition`) and in order; where it
    does not fit into the partition's open frame it is cut, and the rest starts the
    next one. A frame holds at most ``max_points`` points and at most ``max_bytes``
    encoded bytes (unless one point's part alone is larger). Frames come out as they
    fill up, the rest at the end. Sends nothing: callers produce each frame to
    ``frame.partition``. Raises :class:`~pipeline.errors.InvalidRecord` for a key that
    is no series key; ``check_keys=False`` skips that check, for keys that
    :func:`~pipeline.ts.point.series_key` made (the facade's).
    """
    if partitions < 1 or max_points < 1:
        raise InvalidArgument(f"partitions ({partitions}) and max_points must be at least 1")
    parts: dict[int, list[SeriesArrays]] = {}
    points: dict[int, int] = defaultdict(int)
    size: dict[int, int] = defaultdict(lambda: _FRAME_HEAD_BYTES)

    def take(p: int) -> Frame:
        frame = Frame(p, encode_frame(parts.pop(p)), points.pop(p))
        size.pop(p)
        return frame

    for key, ts, vs in series:
        if check_keys:
            parse_series_key(key)  # InvalidRecord names what is wrong
        p = series_partition(key, partitions)
        part_head = _PART_HEAD_BYTES + len(key.encode())
        pos, n = 0, len(ts)
        while pos < n:
            room = min(max_points - points[p], (max_bytes - size[p] - part_head) // 16)
            if room < 1 and p in parts:
                yield take(p)
                continue
            count = min(n - pos, max(room, 1))
            parts.setdefault(p, []).append((key, ts[pos : pos + count], vs[pos : pos + count]))
            points[p] += count
            size[p] += part_head + 16 * count
            pos += count
    for p in list(parts):
        yield take(p)


class TSProducer(TopicProducer):
    """Writes points to ``<namespace>.ts.points``; ``flush`` waits until the broker has them."""

    def __init__(self, settings: Settings, *, bootstrap: str | None = None, **extra: Any) -> None:
        bootstrap = bootstrap or settings.kafka.bootstrap_servers
        if not bootstrap:
            raise InvalidArgument("TSProducer needs a bootstrap address (settings or argument)")
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
        return self.put_arrays(
            series_arrays(
                raw if isinstance(raw, DataPoint) else validate_point(dict(raw)) for raw in points
            )
        )

    def put_arrays(self, series: Iterable[SeriesArrays]) -> int:
        """Send series given as arrays in frames (:func:`frames_by_partition`); returns the
        number of points sent."""
        sent = 0
        for frame in frames_by_partition(series, self.partitions):
            self.send(frame.data, partition=frame.partition)
            sent += frame.points
        self.points_sent += sent
        return sent
