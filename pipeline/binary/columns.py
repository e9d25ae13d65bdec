"""A TS batch payload read as columns in one pass of numpy: the server's fast path.

:func:`ts_batch_columns` reads a TS_PUT_BUFFERED_BATCH payload whose points all carry
the same number of tags (the common shape: one client, one schema) without building a
:class:`~pipeline.binary.bodies.TsPoint` per point: the fixed-size records are one
structured array. It answers ``None`` for anything else (another shape, or any doubt:
a short payload, a reference out of the table, over ``MAX_FRAME_POINTS``), and the
caller decodes with :func:`~pipeline.binary.frames.decode_payload`, whose errors are the
protocol's. So this path changes the cost of a valid batch, never an answer;
``tests/unit/test_binary_columns.py`` checks both readings agree.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from pipeline.limits import MAX_FRAME_POINTS

__all__ = ["TsColumns", "ts_batch_columns"]

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_POINT_BYTES: Final = struct.calcsize("<IIqdH")
_TAG_REF_BYTES: Final = 8


@dataclass(frozen=True, slots=True)
class TsColumns:
    """A batch as columns: ``series`` holds each point's string references, one row of
    ``[metric, entity, tag name, tag value, ...]`` (tags in their order on the wire)."""

    strings: list[str]
    series: npt.NDArray[np.uint32]
    timestamps: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


def _record_dtype(tags: int) -> np.dtype[np.void]:
    fields: list[tuple[str, str] | tuple[str, str, tuple[int, ...]]] = [
        ("metric", "<u4"),
        ("entity", "<u4"),
        ("ts", "<i8"),
        ("value", "<f8"),
        ("tags", "<u2"),
    ]
    if tags:
        fields.append(("refs", "<u4", (tags * 2,)))
    return np.dtype(fields)


def ts_batch_columns(payload: bytes | memoryview) -> TsColumns | None:
    """The columns of a uniform TS batch payload, or ``None`` (decode it the usual way)."""
    data = memoryview(payload)
    strings, offset = _string_table(data)
    if strings is None or offset + 4 > len(data):
        return None
    (count,) = _U32.unpack_from(data, offset)
    offset += 4
    if not 0 < count <= MAX_FRAME_POINTS or offset + _POINT_BYTES > len(data):
        return None
    (tags,) = _U16.unpack_from(data, offset + _POINT_BYTES - 2)
    size = _POINT_BYTES + tags * _TAG_REF_BYTES
    if len(data) - offset != count * size:
        return None
    records = np.frombuffer(data, _record_dtype(tags), count, offset)
    if not bool((records["tags"] == tags).all()):
        return None
    series = np.empty((count, 2 + 2 * tags), np.uint32)
    series[:, 0] = records["metric"]
    series[:, 1] = records["entity"]
    if tags:
        series[:, 2:] = records["refs"]
    if int(series.max()) >= len(strings):
        return None
    return TsColumns(strings, series, records["ts"].copy(), records["value"].copy())


def _string_table(data: memoryview) -> tuple[list[str] | None, int]:
    if len(data) < 4:
        return None, 0
    (count,) = _U32.unpack_from(data)
    offset, strings = 4, []
    for _ in range(count):
        if offset + 2 > len(data):
            return None, 0
        (size,) = _U16.unpack_from(data, offset)
        end = offset + 2 + size
        if end > len(data):
            return None, 0
        try:
            strings.append(str(data[offset + 2 : end], "utf-8"))
        except UnicodeDecodeError:
            return None, 0
        offset = end
    return strings, offset
