"""The one partition framing: frames within their bounds, series order kept, keys checked."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import errors
from pipeline.ts.point import decode_frame
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
