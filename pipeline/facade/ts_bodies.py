"""The bodies of the buffered TS writes, decoded in C: one point, or a batch into arrays.

:class:`PointBodies` decodes with msgspec into the same typed point as the worker's
decoder, and keeps series keys in the same kind of cache
(:class:`~pipeline.ts.json_batch.WirePoint`, :class:`~pipeline.ts.json_batch.SeriesKeys`).
Whatever that fast path does not take as it is (a type or field it rejects, NaN or
Infinity, a blank NDJSON line, tags that are no object of strings) goes through the
checks of :mod:`pipeline.validation` instead, which accept the same bodies and
name what is wrong in the 400 (``field 'value'``, ``line 4: ...``, ``point 3: ...``). So
the fast path changes the cost, never the answer; ``tests/unit/test_facade_bodies.py``
checks both agree.

An NDJSON batch of the plainest points (printable ASCII strings without escapes, one
object a line) is first read by the worker's compiled scan
(:func:`~pipeline.ts.json_columns.scan_columns`, which accepts a subset of what the reference
accepts and reads every value it takes as the reference does) straight into columns;
anything else goes through msgspec as above.

A batch becomes one ``(series key, int64 timestamps, float64 values)`` triple per series,
in order of first appearance, each keeping its points' order (two spellings of one
series, such as its tags in another order, are one series): what
:func:`~pipeline.ts.producer.frames_by_partition` frames.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import msgspec
import numpy as np
import numpy.typing as npt

from pipeline.binary.columns import TsColumns
from pipeline.errors import InvalidRecord
from pipeline.ts.json_batch import (
    DECODE_POINT,
    FAST_FAILURES,
    SeriesKeys,
    WirePoint,
    decode_object_lines,
)
from pipeline.ts.json_columns import scan_columns
from pipeline.ts.point import DataPoint, SeriesArrays, checked_series_key
from pipeline.validation import NDJSON, batch_points, parse_json, point_from_json

if TYPE_CHECKING:
    from confluent_kafka import Message

__all__ = ["PointBodies", "group_columns", "group_points"]

_JSON_ARRAY: Final = re.compile(rb"\s*\[")
_ARRAY: Final = msgspec.json.Decoder(list[WirePoint])
_NOT_FAST: Final = (*FAST_FAILURES, InvalidRecord)


class _Slow(Exception):
    """The fast path does not take this body as it is; the reference checks decide."""


class PointBodies:
    """Decodes point bodies; keeps a cache of series keys (safe to share with threads)."""

    def __init__(self) -> None:
        self._keys = SeriesKeys()

    def point(self, body: bytes) -> tuple[str, int, float]:
        """``(series key, timestamp_ms, finite value)`` of one JSON point;
        :class:`~pipeline.errors.InvalidRequest` names the bad field."""
        try:
            point = DECODE_POINT.decode(body)
            if math.isfinite(point.value):
                key = self._keys.key(point.metric, point.entity, bytes(point.tags))
                return key, point.timestamp_ms, point.value
        except (*_NOT_FAST, _Slow):
            pass
        checked = point_from_json(parse_json(body))
        return checked.series_key(), checked.timestamp_ms, checked.value

    def batch(self, body: bytes, content_type: str) -> tuple[list[SeriesArrays], int]:
        """Every point of a JSON array or NDJSON body grouped by series, and the count;
        :class:`~pipeline.errors.InvalidRequest` names the bad point or line. Nothing
        is returned unless every point is valid."""
        try:
            if _JSON_ARRAY.match(body) and content_type != NDJSON:
                points: Sequence[WirePoint] = _ARRAY.decode(body)
            else:
                scanned = self._scan(body)
                if scanned is not None:
                    return scanned
                points = _lines(body)
            if points:
                return self._group(points), len(points)
        except (*_NOT_FAST, _Slow):
            pass
        checked = batch_points(body, content_type)
        return group_points(checked), len(checked)

    def _scan(self, body: bytes) -> tuple[list[SeriesArrays], int] | None:
        """An NDJSON body's points through the compiled scan, or ``None`` when it does
        not take every line as it is (or a series key is refused: the reference names why)."""
        stripped = body[:-1] if body.endswith(b"\n") else body
        if not stripped or b"\r" in stripped:  # splitlines() would cut lines there too
            return None
        lines = list(map(_Line, stripped.split(b"\n")))
        # The scan calls only value(), partition() and offset() of what it is given.
        columns = scan_columns(cast("list[Message]", lines), self._keys)
        if columns is None:
            return None
        # One number per series key (two spellings of one series are one), in order.
        return _split(columns.keys, columns.index, columns.timestamps, columns.values), len(lines)

    def _group(self, points: Sequence[WirePoint]) -> list[SeriesArrays]:
        # Whole columns at a time: one series code per point, then one stable sort.
        ids = [(p.metric, p.entity, bytes(p.tags)) for p in points]
        codes: dict[tuple[str, str, bytes], int] = {}
        code_of = [codes.setdefault(i, len(codes)) for i in ids]
        ts = np.array([p.timestamp_ms for p in points], np.int64)
        vs = np.array([p.value for p in points], np.float64)
        if not bool(np.isfinite(vs).all()):
            raise _Slow
        keys = [self._keys.key(*i) for i in codes]  # in order of first appearance
        return _split(*_one_code_per_key(keys, np.array(code_of, np.int64)), ts, vs)


class _Line:
    """One NDJSON line as the scan reads a consumed record (its value, partition 0)."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


def _one_code_per_key(
    keys: list[str], code: npt.NDArray[np.integer[Any]]
) -> tuple[list[str], npt.NDArray[np.integer[Any]]]:
    """``keys`` without repeats and ``code`` renumbered to match: two spellings of one
    series (its tags in another order) must stay one series, its points in order."""
    if len(set(keys)) == len(keys):
        return keys, code
    unique = list(dict.fromkeys(keys))
    position = {key: number for number, key in enumerate(unique)}
    return unique, np.array([position[key] for key in keys], np.int64)[code]


def _lines(body: bytes) -> list[WirePoint]:
    """The point of each NDJSON line, decoded line by line as the reference does.

    In one call when :func:`~pipeline.ts.json_batch.decode_object_lines` can (no ``\\r``,
    which ``splitlines`` also splits at; one trailing newline allowed), else line by line.
    """
    stripped = body[:-1] if body.endswith(b"\n") else body
    if b"\r" not in stripped:
        points = decode_object_lines(stripped, stripped.count(b"\n") + 1)
        if points is not None:
            return points
    return list(map(DECODE_POINT.decode, body.splitlines()))


def group_points(points: Sequence[DataPoint]) -> list[SeriesArrays]:
    """Validated points grouped by series, in order of first appearance, each series
    keeping its points' order (the REST batch's reference path and the binary batch)."""
    grouped: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for point in points:
        ts, vs = grouped[point.series_key()]
        ts.append(point.timestamp_ms)
        vs.append(point.value)
    return _arrays(grouped)


def _arrays(grouped: dict[str, tuple[list[int], list[float]]]) -> list[SeriesArrays]:
    return [
        (key, np.array(ts, np.int64), np.array(vs, np.float64)) for key, (ts, vs) in grouped.items()
    ]


def group_columns(
    columns: TsColumns, known: dict[tuple[str, ...], str] | None = None
) -> list[SeriesArrays] | None:
    """A binary batch's columns grouped as :func:`group_points` groups its points, or
    ``None`` when the reference checks must decide (a non-finite value, a field over
    its limit, a tag named twice, two spellings of one series).

    Each distinct row of string references is checked once, not each point; ``known``
    keeps the keys of rows already checked (the caller bounds it).
    """
    vs = columns.values
    if not bool(np.isfinite(vs).all()):
        return None
    first, inverse = _distinct_rows(columns)
    keys: list[str] = []
    strings, known = columns.strings, {} if known is None else known
    for row in columns.series[first].tolist():
        parts = tuple(strings[ref] for ref in row)
        key = known.get(parts)
        if key is None:
            key = _checked_key(parts)
            if key is None:
                return None
            known[parts] = key
        keys.append(key)
    if len(set(keys)) != len(keys):
        return None
    return _split(keys, inverse, columns.timestamps, vs)


def _split(
    keys: list[str],
    code: npt.NDArray[np.integer[Any]],
    ts: npt.NDArray[np.int64],
    vs: npt.NDArray[np.float64],
) -> list[SeriesArrays]:
    """Points with series number ``code`` (0 = ``keys[0]``, in order of first appearance)
    as one triple per series, each keeping its points' order: one stable sort."""
    if len(keys) == 1:
        return [(keys[0], ts, vs)]
    order = np.argsort(code, kind="stable")
    ends = np.cumsum(np.bincount(code)).tolist()
    starts = [0, *ends[:-1]]
    ts, vs = ts[order], vs[order]
    return [(key, ts[a:b], vs[a:b]) for key, a, b in zip(keys, starts, ends, strict=True)]


def _distinct_rows(
    columns: TsColumns,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The index of each distinct row's first point, in order of first appearance, and
    each point's distinct-row number in that order."""
    series = columns.series
    base, width = max(len(columns.strings), 1), series.shape[1]
    if base**width < 2**63:  # one integer per row: a 1-D unique, several times faster
        packed = np.zeros(len(series), np.int64)
        for column in range(width):
            packed = packed * base + series[:, column].astype(np.int64)
        _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
    else:
        _, first, inverse = np.unique(series, axis=0, return_index=True, return_inverse=True)
    by_appearance = np.argsort(first, kind="stable")
    rank = np.empty_like(by_appearance)
    rank[by_appearance] = np.arange(len(by_appearance))
    return first[by_appearance], rank[inverse.reshape(-1)]


def _checked_key(parts: tuple[str, ...]) -> str | None:
    """The series key of ``(metric, entity, name, value, ...)``, or ``None`` if refused."""
    metric, entity, names = parts[0], parts[1], parts[2::2]
    tags = dict(zip(names, parts[3::2], strict=True))
    if not metric or not entity or len(tags) != len(names):
        return None
    try:
        return checked_series_key(metric, entity, tags)
    except InvalidRecord:
        return None
