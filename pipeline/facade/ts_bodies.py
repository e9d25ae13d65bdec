"""The bodies of the buffered TS writes, decoded in C: one point, or a batch into arrays.

:class:`PointBodies` decodes with msgspec into the same typed point as the worker's
decoder (:mod:`pipeline.ts.json_batch`) and keeps the series key of each distinct
``(metric, entity, tags)``. Whatever that fast path does not take as it is (a type or
field it rejects, NaN or Infinity, a blank NDJSON line, tags that are no object of
strings) goes through the checks of :mod:`pipeline.facade.validation` instead, which
accept the same bodies and name what is wrong in the 400 (``field 'value'``,
``line 4: ...``, ``point 3: ...``). So the fast path changes the cost, never the answer;
``tests/unit/test_facade_auth.py`` checks both agree.

A batch becomes one ``(series key, int64 timestamps, float64 values)`` triple per series,
in order of first appearance, each keeping its points' order: what
:func:`~pipeline.ts.producer.frames_by_partition` frames.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Annotated, Final

import msgspec
import numpy as np
import orjson

from pipeline.errors import InvalidRecord
from pipeline.facade.validation import NDJSON, batch_points, parse_json, point_from_json
from pipeline.ts.point import SeriesArrays, check_series_key, series_key

__all__ = ["PointBodies"]

_KEY_CACHE_LIMIT: Final = 200_000
"""Distinct ``(metric, entity, tags)`` whose series keys are kept; cleared when full."""
_JSON_ARRAY: Final = re.compile(rb"\s*\[")

_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Name = Annotated[str, msgspec.Meta(min_length=1)]


class _Point(msgspec.Struct, forbid_unknown_fields=True):
    """A JSON point as :func:`~pipeline.ts.point.validate_point` accepts it; tags kept raw."""

    metric: _Name
    entity: _Name
    timestamp_ms: _Int64
    value: float
    tags: msgspec.Raw = msgspec.Raw(b"")


_ONE: Final = msgspec.json.Decoder(_Point)
_ARRAY: Final = msgspec.json.Decoder(list[_Point])
_NOT_FAST: Final = (msgspec.DecodeError, msgspec.ValidationError, InvalidRecord)


class _Slow(Exception):
    """The fast path does not take this body as it is; the reference checks decide."""


class PointBodies:
    """Decodes point bodies; keeps a cache of series keys (safe to share with threads)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, bytes], str] = {}

    def point(self, body: bytes) -> tuple[str, int, float]:
        """``(series key, timestamp_ms, finite value)`` of one JSON point;
        :class:`~pipeline.errors.InvalidRequest` names the bad field."""
        try:
            point = _ONE.decode(body)
            if math.isfinite(point.value):
                key = self._key(point.metric, point.entity, bytes(point.tags))
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
                points: Sequence[_Point] = _ARRAY.decode(body)
            else:
                points = _lines(body)
            if points:
                return self._group(points), len(points)
        except (*_NOT_FAST, _Slow):
            pass
        checked = batch_points(body, content_type)
        grouped: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        for point in checked:
            ts, vs = grouped[point.series_key()]
            ts.append(point.timestamp_ms)
            vs.append(point.value)
        return _arrays(grouped), len(checked)

    def _group(self, points: Sequence[_Point]) -> list[SeriesArrays]:
        # Whole columns at a time: one series code per point, then one stable sort.
        ids = [(p.metric, p.entity, bytes(p.tags)) for p in points]
        codes: dict[tuple[str, str, bytes], int] = {}
        code_of = [codes.setdefault(i, len(codes)) for i in ids]
        ts = np.array([p.timestamp_ms for p in points], np.int64)
        vs = np.array([p.value for p in points], np.float64)
        if not bool(np.isfinite(vs).all()):
            raise _Slow
        keys = [self._key(*i) for i in codes]  # in order of first appearance
        if len(keys) == 1:
            return [(keys[0], ts, vs)]
        code = np.array(code_of, np.int64)
        order = np.argsort(code, kind="stable")
        ends = np.cumsum(np.bincount(code)).tolist()
        ts, vs = ts[order], vs[order]
        starts = [0, *ends[:-1]]
        return [(key, ts[a:b], vs[a:b]) for key, a, b in zip(keys, starts, ends, strict=True)]

    def _key(self, metric: str, entity: str, raw_tags: bytes) -> str:
        cache_key = (metric, entity, raw_tags)
        key = self._keys.get(cache_key)
        if key is not None:
            return key
        tags = orjson.loads(raw_tags) if raw_tags else None
        if not tags:
            tags = {}  # absent, null or another falsy value: no tags, as validate_point has it
        elif not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise _Slow
        key = check_series_key(series_key(metric, entity, tags))
        if len(self._keys) >= _KEY_CACHE_LIMIT:
            self._keys.clear()
        self._keys[cache_key] = key
        return key


def _lines(body: bytes) -> list[_Point]:
    """The point of each NDJSON line, decoded line by line as the reference does.

    One call decodes the whole body when that is sure to give the same: msgspec's
    ``decode_lines`` reads values across newlines, but when every line starts with
    ``{`` and ends with ``}`` right at its newlines (a raw newline can only sit between
    tokens, and after a ``}`` that does not end a value comes no ``{``) no value spans
    two lines, no line is blank, and as many values as lines means one on each.
    """
    lines = body.count(b"\n") + (not body.endswith(b"\n"))
    if (
        b"\r" not in body
        and body.startswith(b"{")
        and body.count(b"\n{") == lines - 1
        and body.count(b"}\n") + (not body.endswith(b"\n")) == lines
        and body.rstrip(b"\n").endswith(b"}")
    ):
        points = _ONE.decode_lines(body)
        if len(points) == lines:
            return points
    return list(map(_ONE.decode, body.splitlines()))


def _arrays(grouped: dict[str, tuple[list[int], list[float]]]) -> list[SeriesArrays]:
    return [
        (key, np.array(ts, np.int64), np.array(vs, np.float64)) for key, (ts, vs) in grouped.items()
    ]
