"""The one partition framing: frames within their bounds, series order kept, keys checked;
the facade's packing of small flushes gives the same bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import errors
from pipeline.facade.deliveries import small_flush_frames
from pipeline.limits import MAX_FRAME_POINTS
from pipeline.ts.point import decode_frame, series_key
from pipeline.ts.producer import frames_by_partition

pytestmark = pytest.mark.unit


def test_frames_stay_within_the_point_and_byte_bounds_and_keep_series_order() -> None:
    ts = np.arange(10, dtype=np.int64)
    keys = [f'["m","e{i}",{{}}]' for i in range(4)]
    arrays = [(key, ts, ts.astype(np.float64)) for key in keys]
    frames = list(frames_by_partition(arrays, 1, max_points=7))
    assert [f.points for f in frames] == [7, 7, 7, 7, 7, 5]
    decoded = [part for f in frames for part in decode_frame(f.data)]
    for key in keys:
        joined = np.concatenate([t for k, t, _ in decoded if k == key])
        assert joined.tolist() == ts.tolist()
    by_bytes = list(frames_by_partition(arrays, 1, max_bytes=200))
    assert all(len(f.data) <= 200 for f in by_bytes)
    assert sum(f.points for f in by_bytes) == 40
    with pytest.raises(errors.InvalidRecord, match="not a series key"):
        list(frames_by_partition([("plain", ts, ts.astype(np.float64))], 1))


_KEYS = [series_key("m", f"e{i}", {"t": str(i % 3)} if i % 2 else {}) for i in range(40)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_KEYS),
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        min_size=1,
        max_size=120,
    ),
    st.integers(1, 12),
)
def test_a_flush_of_single_points_is_framed_byte_for_byte_as_frames_by_partition_frames_it(
    points: list[tuple[str, int, float]], partitions: int
) -> None:
    series: dict[str, tuple[list[int], list[float]]] = {}
    for key, timestamp_ms, value in points:
        ts, vs = series.setdefault(key, ([], []))
        ts.append(timestamp_ms)
        vs.append(value)
    arrays = [(k, np.array(t, np.int64), np.array(v, np.float64)) for k, (t, v) in series.items()]
    expected = [(f.partition, f.data) for f in frames_by_partition(arrays, partitions)]
    assert small_flush_frames(series, partitions) == expected


def test_a_flush_over_the_frame_bounds_is_left_to_frames_by_partition() -> None:
    many = {_KEYS[0]: (list(range(MAX_FRAME_POINTS + 1)), [0.5] * (MAX_FRAME_POINTS + 1))}
    assert small_flush_frames(many, 1) is None
    assert small_flush_frames({_KEYS[0]: ([1], [0.5])}, 1) is not None
