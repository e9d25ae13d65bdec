"""Time-series points on Kafka: the roadmap's JSON point and a binary batch frame.

Series key
    ``[metric, entity, {tags sorted by name}]`` as compact JSON (UTF-8). It is the Kafka
    key of a JSON point, the identity of a series in blocks and queries, and it needs
    no escaping rules.

JSON point (one per Kafka message)
    ``{"metric": str, "entity": str, "timestamp_ms": int, "value": number, "tags": {str: str}}``
    with ``tags`` optional.

Binary batch frame (many points in one Kafka message; all integers little-endian)

    ==========  =========================  =======================================
    bytes       field                      meaning
    ==========  =========================  =======================================
    4           magic ``TSF1``             tells a frame from a JSON point
    4           u32 series count
    per series:
    2           u16 key length
    n           series key, UTF-8          as above
    4           u32 point count ``k``
    8 k         int64 timestamps (ms)
    8 k         float64 values (IEEE 754)
    ==========  =========================  =======================================
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import orjson

from pipeline.errors import InvalidArgument, InvalidRecord
from pipeline.limits import (
    MAX_ENTITY_BYTES,
    MAX_METRIC_BYTES,
    MAX_SERIES_KEY_BYTES,
    MAX_TAG_NAME_BYTES,
    MAX_TAG_VALUE_BYTES,
    MAX_TAGS,
)

FRAME_MAGIC = b"TSF1"
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FIELDS = {"metric", "entity", "timestamp_ms", "value", "tags"}


def check_series_key(key: str) -> str:
    """``key`` if a block can hold it; ``InvalidRecord`` naming the limit otherwise."""
    if len(key) * 4 > MAX_SERIES_KEY_BYTES and len(key.encode()) > MAX_SERIES_KEY_BYTES:
        raise InvalidRecord(
            f"the series key (metric, entity and tags) is {len(key.encode())} bytes of UTF-8; "
            f"at most {MAX_SERIES_KEY_BYTES} (MAX_SERIES_KEY_BYTES)"
        )
    return key


def _utf8_over(text: str, limit: int) -> int:
    """The UTF-8 size of ``text`` if over ``limit``, else 0 (no encoding when it cannot be)."""
    if len(text) * 4 <= limit:
        return 0
    size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else 0


def check_series_parts(metric: str, entity: str, tags: Mapping[str, str]) -> None:
    """``InvalidRecord`` naming the field and limit (:mod:`pipeline.limits`) it is over."""
    for name, text, limit in (
        ("metric", metric, MAX_METRIC_BYTES),
        ("entity", entity, MAX_ENTITY_BYTES),
    ):
        if size := _utf8_over(text, limit):
            raise InvalidRecord(
                f"field {name!r} is {size} bytes of UTF-8; "
                f"at most {limit} (MAX_{name.upper()}_BYTES)"
            )
    if len(tags) > MAX_TAGS:
        raise InvalidRecord(f"field 'tags' has {len(tags)} tags; at most {MAX_TAGS} (MAX_TAGS)")
    for tag, value in tags.items():
        if size := _utf8_over(tag, MAX_TAG_NAME_BYTES):
            raise InvalidRecord(
                f"a tag name in field 'tags' is {size} bytes of UTF-8; "
                f"at most {MAX_TAG_NAME_BYTES} (MAX_TAG_NAME_BYTES)"
            )
        if size := _utf8_over(value, MAX_TAG_VALUE_BYTES):
            raise InvalidRecord(
                f"the value of tag {tag[:100]!r} is {size} bytes of UTF-8; "
                f"at most {MAX_TAG_VALUE_BYTES} (MAX_TAG_VALUE_BYTES)"
            )


def checked_series_key(metric: str, entity: str, tags: Mapping[str, str]) -> str:
    """The series key of a point from outside, once every limit is checked."""
    check_series_parts(metric, entity, tags)
    return check_series_key(series_key(metric, entity, tags))


def series_key(metric: str, entity: str, tags: Mapping[str, str] | None = None) -> str:
    """The canonical key of a series: ``[metric, entity, {sorted tags}]`` as compact JSON."""
    ordered = dict(sorted(tags.items())) if tags else {}
    return orjson.dumps([metric, entity, ordered]).decode()


def parse_series_key(key: str) -> tuple[str, str, dict[str, str]]:
    """``(metric, entity, tags)`` of a series key.

    Raises :class:`~pipeline.errors.InvalidRecord` unless ``key`` is exactly what
    :func:`series_key` makes: a JSON array of a non-empty metric, a non-empty entity and
    an object of string tags, compact, tags sorted (another spelling of the same series
    would be stored apart from it).
    """
    try:
        metric, entity, tags = orjson.loads(key)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        metric = entity = tags = None
    if not (
        isinstance(metric, str)
        and metric
        and isinstance(entity, str)
        and entity
        and isinstance(tags, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
        and series_key(metric, entity, tags) == key
    ):
        raise InvalidRecord(
            f"{key[:200]!r} is not a series key: expected the compact JSON "
            '["metric","entity",{sorted tags}] that pipeline.ts.series_key() makes'
        )
    check_series_parts(metric, entity, tags)
    return metric, entity, tags


@dataclass(frozen=True, slots=True)
class DataPoint:
    """One time-series point; ``timestamp_ms`` is milliseconds since the Unix epoch."""

    metric: str
    entity: str
    timestamp_ms: int
    value: float
    tags: Mapping[str, str] = field(default_factory=dict)

    def series_key(self) -> str:
        return series_key(self.metric, self.entity, self.tags)

    def to_json(self) -> bytes:
        """The JSON point; ``ValueError`` for NaN or infinity, which JSON cannot carry."""
        if not math.isfinite(self.value):
            raise InvalidArgument(f"{self.value} cannot be sent as JSON; use a binary batch frame")
        body: dict[str, object] = {
            "metric": self.metric,
            "entity": self.entity,
            "timestamp_ms": self.timestamp_ms,
            "value": self.value,
        }
        if self.tags:
            body["tags"] = dict(self.tags)
        return orjson.dumps(body)


def validate_point(raw: object) -> DataPoint:
    """A :class:`DataPoint` from decoded JSON; ``InvalidRecord`` names the bad field."""
    if not isinstance(raw, dict):
        raise InvalidRecord("a point must be a JSON object")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise InvalidRecord(f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in ("metric", "entity"):
        value = raw.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidRecord(f"field {name!r} must be a non-empty string")
    ts = raw.get("timestamp_ms")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise InvalidRecord("field 'timestamp_ms' must be an integer (milliseconds)")
    if not _INT64_MIN <= ts <= _INT64_MAX:
        raise InvalidRecord("field 'timestamp_ms' is outside the int64 range")
    value = raw.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRecord("field 'value' must be a number")
    if isinstance(value, int) and not -(2**1023) < value < 2**1023:
        raise InvalidRecord("field 'value' does not fit a float64")
    tags = raw.get("tags") or {}
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise InvalidRecord("field 'tags' must be an object of string to string")
    checked_series_key(raw["metric"], raw["entity"], tags)
    return DataPoint(raw["metric"], raw["entity"], ts, float(value), tags)


def decode_point_json(data: bytes) -> DataPoint:
    """Decode one JSON point; ``InvalidRecord`` on bad JSON or a bad field."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"not valid JSON: {exc}") from None
    return validate_point(raw)


SeriesArrays = tuple[str, np.ndarray, np.ndarray]
"""``(series key, int64 timestamps in ms, float64 values)``."""


def encode_frame(series: Iterable[SeriesArrays]) -> bytes:
    """A binary batch frame holding every series given."""
    parts = [FRAME_MAGIC, b""]
    count = 0
    for key, timestamps, values in series:
        ts = np.ascontiguousarray(timestamps, dtype="<i8")
        vs = np.ascontiguousarray(values, dtype="<f8")
        if ts.shape != vs.shape or ts.ndim != 1:
            raise InvalidArgument(f"series {key}: timestamps and values differ in shape")
        encoded = key.encode()
        parts += [_U16.pack(len(encoded)), encoded, _U32.pack(len(ts)), ts.tobytes(), vs.tobytes()]
        count += 1
    parts[1] = _U32.pack(count)
    return b"".join(parts)


def is_frame(data: bytes) -> bool:
    return data[:4] == FRAME_MAGIC


def decode_frame(data: bytes) -> list[SeriesArrays]:
    """Every series of a frame; ``InvalidRecord`` if it is truncated or malformed."""
    view = memoryview(data)
    if len(view) < 8 or bytes(view[:4]) != FRAME_MAGIC:
        raise InvalidRecord("not a TSF1 batch frame")
    (count,) = _U32.unpack_from(view, 4)
    pos = 8
    out: list[SeriesArrays] = []
    try:
        for _ in range(count):
            (key_len,) = _U16.unpack_from(view, pos)
            pos += 2
            key = bytes(view[pos : pos + key_len]).decode()
            pos += key_len
            (n,) = _U32.unpack_from(view, pos)
            pos += 4
            end = pos + 16 * n
            if end > len(view):
                raise InvalidRecord(f"frame truncated in series {key}")
            ts = np.frombuffer(view, dtype="<i8", count=n, offset=pos)
            vs = np.frombuffer(view, dtype="<f8", count=n, offset=pos + 8 * n)
            pos = end
            parse_series_key(key)
            out.append((key, ts, vs))
    except (struct.error, UnicodeDecodeError, orjson.JSONDecodeError, ValueError) as exc:
        raise InvalidRecord(f"malformed frame: {exc}") from None
    if pos != len(view):
        raise InvalidRecord(f"frame has {len(view) - pos} trailing bytes")
    return out
