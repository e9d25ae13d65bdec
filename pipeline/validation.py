"""Request bodies and query parameters into checked values; what is wrong is named.

Every check raises :class:`~pipeline.errors.InvalidRequest` (400) with a message that
names the field, parameter, line or point at fault. Nothing here sends anything: a
handler validates the whole request before it produces a record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from multidict import MultiMapping

from pipeline.errors import InvalidRecord, InvalidRequest
from pipeline.limits import MAX_SEARCH_EF, MAX_SEARCH_K
from pipeline.ts.point import DataPoint, series_key, validate_point
from pipeline.vectors.ops import OpType, VectorOp, decode_op_json, validate_vector

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_SEARCH_EF",
    "MAX_SEARCH_K",
    "NDJSON",
    "SearchRequest",
    "SeriesQuery",
    "batch_points",
    "int_param",
    "parse_json",
    "point_from_json",
    "query_answer",
    "search_request",
    "series_query",
    "series_query_body",
    "vector_op_from_json",
]


INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
_SEARCH_FIELDS: Final = frozenset({"vector", "k", "ef", "filter"})
NDJSON: Final = "application/x-ndjson"
"""The content type of a newline-delimited JSON batch."""
_UTF8_BOM: Final = b"\xef\xbb\xbf"


def parse_json(body: bytes) -> Any:
    """Decoded JSON; NaN and Infinity literals are decoded (and then rejected by field)."""
    if not body.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        # The standard parser accepts NaN/Infinity, so the field holding one can be named.
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    try:  # it also takes lone surrogates ("\ud800"), which no string may carry on
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest(
            "the body is not valid JSON: a string holds a lone UTF-16 surrogate "
            "(\\ud800-\\udfff); send valid Unicode"
        ) from None
    return value


def point_from_json(raw: object, where: str = "") -> DataPoint:
    """A validated point with a finite value; the error names the field (after ``where``)."""
    try:
        point = validate_point(raw)
    except InvalidRecord as exc:
        raise InvalidRequest(f"{where}{exc}") from None
    if not math.isfinite(point.value):
        raise InvalidRequest(
            f"{where}field 'value' must be a finite number; NaN and Infinity are not accepted"
        )
    return point


def batch_points(body: bytes, content_type: str) -> list[DataPoint]:
    """Every point of a JSON array or NDJSON body, all validated; errors name the point
    (``point 3: ...``) or line (``line 4: ...``)."""
    # A leading UTF-8 BOM is skipped by the parser, as for one point; it must not turn
    # an array into NDJSON ("line 1: a point must be a JSON object").
    if body.removeprefix(_UTF8_BOM).lstrip().startswith(b"[") and content_type != NDJSON:
        items = parse_json(body)
        if not isinstance(items, list):
            raise InvalidRequest("the body must be a JSON array of points or NDJSON")
        return [point_from_json(item, f"point {i}: ") for i, item in enumerate(items)]
    points = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = parse_json(line)
        except InvalidRequest as exc:
            raise InvalidRequest(f"line {number}: {exc}") from None
        points.append(point_from_json(raw, f"line {number}: "))
    return points


def _numbers(values: object) -> list[float]:
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise InvalidRequest("field 'vector' must be an array of numbers")
    return values


def _checked_vector(values: object, dimension: int) -> list[float]:
    numbers = _numbers(values)
    try:
        validate_vector(numbers, dimension)
    except InvalidRecord as exc:
        raise InvalidRequest(str(exc)) from None
    return numbers


def vector_op_from_json(
    raw: object, op: OpType, dimension: int, max_metadata_bytes: int
) -> VectorOp:
    """A validated vector operation from a request body; ``op`` comes from the path.

    ``dimension`` is the configured vector length; ``max_metadata_bytes`` bounds the
    metadata's JSON size (bytes).
    """
    if not isinstance(raw, dict):
        raise InvalidRequest("the body must be a JSON object with field 'pk'")
    if "op" in raw:
        raise InvalidRequest("field 'op' is not accepted here: the path names the operation")
    if op is not OpType.REMOVE:
        if raw.get("vector") is None:
            raise InvalidRequest(f"field 'vector' is required for {op.value}")
        _checked_vector(raw["vector"], dimension)
    elif set(raw) - {"pk"}:
        raise InvalidRequest("remove takes only field 'pk'")
    try:
        return decode_op_json(
            orjson.dumps(raw | {"op": op.value}),
            dimension=dimension,
            max_metadata_bytes=max_metadata_bytes,
        )
    except (InvalidRecord, TypeError) as exc:
        raise InvalidRequest(str(exc)) from None


@dataclass(frozen=True)
class SearchRequest:
    """A checked ``POST /vectors/search`` body; ``where`` is the metadata filter (equality)."""

    vector: list[float]
    k: int = 10
    ef: int | None = None
    where: Mapping[str, Any] = field(default_factory=dict)


def _bounded_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def search_request(raw: object, dimension: int) -> SearchRequest:
    """The search body ``{"vector", "k"?, "ef"?, "filter"?}``, checked field by field."""
    if not isinstance(raw, dict):
        raise InvalidRequest("the body must be a JSON object with field 'vector'")
    unknown = set(raw) - _SEARCH_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    vector = _checked_vector(raw.get("vector"), dimension)
    k = raw.get("k", 10)
    if not _bounded_int(k, 1, MAX_SEARCH_K):
        raise InvalidRequest(
            f"field 'k' must be an integer from 1 to {MAX_SEARCH_K} (MAX_SEARCH_K)"
        )
    ef = raw.get("ef")
    if ef is not None and not _bounded_int(ef, 1, MAX_SEARCH_EF):
        raise InvalidRequest(
            f"field 'ef' must be an integer from 1 to {MAX_SEARCH_EF} (MAX_SEARCH_EF)"
        )
    where = raw.get("filter")
    if where is not None and not isinstance(where, dict):
        raise InvalidRequest("field 'filter' must be an object of metadata values")
    return SearchRequest(vector, k, ef, where or {})


def int_param(raw: str | None, name: str, default: int) -> int:
    """Query parameter ``name`` as a 64-bit integer (milliseconds), ``default`` if absent."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(
            f"query parameter {name!r} must be an integer (milliseconds)"
        ) from None
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidRequest(f"query parameter {name!r} is outside the int64 range")
    return value


@dataclass(frozen=True)
class SeriesQuery:
    """A checked ``GET /ts/query``: the series and its range (milliseconds, inclusive)."""

    metric: str
    entity: str
    tags: dict[str, str]
    start_ms: int
    end_ms: int


def series_query(query: MultiMapping[str]) -> SeriesQuery:
    """``metric``, ``entity`` (required), ``start``, ``end`` (ms), ``tag=key:value`` (repeated)."""
    metric, entity = query.get("metric", ""), query.get("entity", "")
    for name, value in (("metric", metric), ("entity", entity)):
        if not value:
            raise InvalidRequest(f"query parameter {name!r} is required (non-empty)")
    start = int_param(query.get("start"), "start", INT64_MIN)
    end = int_param(query.get("end"), "end", INT64_MAX)
    tags: dict[str, str] = {}
    for tag in query.getall("tag", []):
        name, sep, value = tag.partition(":")
        if not sep or not name:
            raise InvalidRequest(f"query parameter 'tag' must be key:value; got {tag!r}")
        tags[name] = value
    return SeriesQuery(metric, entity, tags, start, end)


_QUERY_FIELDS: Final = frozenset({"metric", "entity", "tags", "start", "end"})


def series_query_body(raw: object) -> SeriesQuery:
    """The ``POST /ts/query`` body: ``{"metric", "entity", "tags"?, "start"?, "end"?}``
    (``tags`` an object of strings, ``start`` and ``end`` integer milliseconds); the
    query of ``GET /ts/query`` with no limit on the series key's length."""
    if not isinstance(raw, dict):
        raise InvalidRequest("the body must be a JSON object with fields 'metric' and 'entity'")
    unknown = set(raw) - _QUERY_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    metric, entity = _required_text(raw, "metric"), _required_text(raw, "entity")
    tags = raw.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise InvalidRequest("field 'tags' must be an object of string to string")
    bounds = []
    for name, default in (("start", INT64_MIN), ("end", INT64_MAX)):
        value = raw.get(name, default)
        if value is None:
            value = default
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequest(f"field {name!r} must be an integer (milliseconds)")
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidRequest(f"field {name!r} is outside the int64 range")
        bounds.append(value)
    return SeriesQuery(metric, entity, dict(tags), bounds[0], bounds[1])


def _required_text(raw: Mapping[str, object], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"field {name!r} is required (a non-empty string)")
    return value


def _finite_or_text(value: float) -> float | str:
    """``value``, or for NaN and infinities (which JSON lacks) ``"NaN"``, ``"inf"``, ``"-inf"``."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def query_answer(q: SeriesQuery, timestamps: list[int], values: list[float]) -> dict[str, Any]:
    """The body answering ``q``: ``{"series", "count", "points": [{"timestamp_ms", "value"}]}``
    (every door that answers a series query answers this)."""
    points = [
        {"timestamp_ms": t, "value": _finite_or_text(v)}
        for t, v in zip(timestamps, values, strict=True)
    ]
    return {
        "series": series_key(q.metric, q.entity, q.tags),
        "count": len(points),
        "points": points,
    }
