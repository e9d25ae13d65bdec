"""InfluxDB line protocol into points: what Telegraf and every InfluxDB client write.

``measurement[,tag=value...] field=value[,field=value...] [timestamp]``, one point per
line (``#`` comments and blank lines skipped), with the protocol's escapes (``\\,``,
``\\=``, ``\\ `` in names and tags; ``\\"``, ``\\\\`` in string fields).

Mapping (``docs/api/ECOSYSTEM.md``): each field of a line is one point of the series
``metric = <measurement>_<field key>``, ``entity`` = the value of the entity tag
(``host`` unless configured), every other tag a tag. Float and integer fields are stored
(``i`` and ``u`` integers beyond +-2^53 are refused, never rounded); string and boolean
fields are refused. Timestamps in ``precision`` (``ns``, ``us``, ``ms``, ``s``) become
milliseconds, floored: two writes of one series within the same millisecond are one
point under last-write-wins, the later line winning. A line without a timestamp takes
``now_ms``.

:func:`parse_lines` checks the whole body before it returns anything: one bad line
refuses the body (:class:`~pipeline.errors.InvalidRecord` naming the line and what is
wrong), so nothing of it is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Final

import numpy as np

from pipeline.errors import InvalidRecord
from pipeline.ts.point import DataPoint, SeriesArrays, checked_series_key

__all__ = ["PRECISIONS", "is_line_protocol", "parse_lines", "parse_series"]

PRECISIONS: Final = {"ns": 1_000_000, "us": 1_000, "ms": 1, "s": -1000}
"""Units per millisecond (negative: milliseconds per unit)."""
_MAX_EXACT: Final = 2**53
_FLOAT: Final = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_BOOLS: Final = frozenset({"t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"})
_DIGITS: Final = frozenset("0123456789")
_UNESCAPE: Final = re.compile(r"\\([,= \"\\])")


def _split(text: str, sep: str, *, quotes: bool = False) -> list[str]:
    """``text`` split at each ``sep`` that is not escaped (nor, with ``quotes``, quoted)."""
    parts, start, i, quoted = [], 0, 0, False
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if quotes and c == '"':
            quoted = not quoted
        elif c == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    return _UNESCAPE.sub(r"\1", text)


def _sections(line: str) -> tuple[str, str, str | None]:
    """The series, the fields and the timestamp (or ``None``) of one line."""
    parts = _split(line, " ", quotes=True)
    parts = [p for p in parts if p != ""] if len(parts) > 3 else parts
    if len(parts) < 2 or not parts[1]:
        raise ValueError("no fields (a line is 'measurement[,tags] field=value [timestamp]')")
    if len(parts) > 3:
        raise ValueError("more than three space-separated sections")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _field_value(key: str, raw: str) -> float:
    if raw[-1] in _DIGITS and raw.isascii() and "_" not in raw:  # the common float: fast
        try:
            value = float(raw)
        except ValueError:
            pass
        else:
            if value - value == 0.0:
                return value
    if raw.startswith('"'):
        raise ValueError(f"field {key!r} is a string; only float and integer fields are stored")
    if raw in _BOOLS:
        raise ValueError(f"field {key!r} is a boolean; only float and integer fields are stored")
    if raw[-1:] in ("i", "u") and raw[:-1].lstrip("-+").isdigit():
        number = int(raw[:-1])
        if raw[-1] == "u" and number < 0:
            raise ValueError(f"field {key!r}: an unsigned integer cannot be negative")
        if not -_MAX_EXACT <= number <= _MAX_EXACT:
            raise ValueError(
                f"field {key!r}: integer {number} is beyond +-2^53 and would be rounded"
            )
        return float(number)
    if not _FLOAT.fullmatch(raw):
        raise ValueError(f"field {key!r}: {raw[:40]!r} is not a number")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"field {key!r}: {raw[:40]!r} does not fit a float64")
    return value


def _timestamp_ms(raw: str | None, precision: str, now_ms: int) -> int:
    if raw is None:
        return now_ms
    if not raw.isascii() or not raw.lstrip("-").isdigit():
        raise ValueError(f"timestamp {raw[:40]!r} is not an integer")
    per = PRECISIONS[precision]
    value = int(raw) * -per if per < 0 else int(raw) // per
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"timestamp {raw[:40]!r} is outside the int64 milliseconds range")
    return value


def _head(series: str, entity_tag: str) -> tuple[str, str, dict[str, str]]:
    """The measurement, the entity and the other tags of a line's series section."""
    head = _split(series, ",") if "\\" in series else series.split(",")
    measurement = _unescape(head[0])
    if not measurement:
        raise ValueError("the measurement is empty")
    tags: dict[str, str] = {}
    for pair in head[1:]:
        kv = _split(pair, "=")
        if len(kv) != 2 or not kv[0] or not kv[1]:
            raise ValueError(f"tag {pair[:40]!r} is not key=value")
        tags[_unescape(kv[0])] = _unescape(kv[1])
    entity = tags.pop(entity_tag, "")
    if not entity:
        raise ValueError(f"tag {entity_tag!r} (the entity) is missing")
    return measurement, entity, tags


_Point = tuple[str, str, str, dict[str, str], int, float]
"""``(series key, metric, entity, tags, timestamp_ms, value)``."""


class _Reader:
    """One body's lines into points; each series section and each series key is worked
    out (and checked) once per body, however many lines repeat it."""

    def __init__(self, precision: str, entity_tag: str, now_ms: int) -> None:
        if precision not in PRECISIONS:
            raise InvalidRecord(
                f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}"
            )
        self.precision, self.entity_tag, self.now_ms = precision, entity_tag, now_ms
        self.heads: dict[str, tuple[str, str, dict[str, str]]] = {}
        self.keys: dict[tuple[str, str], tuple[str, str]] = {}

    def points(self, body: bytes) -> Iterator[_Point]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRecord(f"the body is not UTF-8 (byte {exc.start})") from None
        for number, raw_line in enumerate(text.split("\n"), start=1):
            line = raw_line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                yield from self._line(line)
            except (ValueError, InvalidRecord) as exc:
                raise InvalidRecord(f"line {number}: {exc}") from None

    def _line(self, line: str) -> list[_Point]:
        plain = "\\" not in line and '"' not in line
        parts = line.split(" ") if plain else []
        if plain and len(parts) > 3:
            parts = [p for p in parts if p]
        if plain and 2 <= len(parts) <= 3 and parts[1]:
            series, fields, stamp = parts[0], parts[1], parts[2] if len(parts) == 3 else None
        else:
            series, fields, stamp = _sections(line)
        head = self.heads.get(series)
        if head is None:
            head = self.heads[series] = _head(series, self.entity_tag)
        measurement, entity, tags = head
        ts = _timestamp_ms(stamp, self.precision, self.now_ms)
        out: list[_Point] = []
        for pair in fields.split(",") if plain else _split(fields, ",", quotes=True):
            kv = pair.split("=") if plain else _split(pair, "=", quotes=True)
            if len(kv) != 2 or not kv[0] or not kv[1]:
                raise ValueError(f"field {pair[:40]!r} is not key=value")
            field_key, raw = kv[0] if plain else _unescape(kv[0]), kv[1]
            known = self.keys.get((series, field_key))
            if known is None:
                metric = f"{measurement}_{field_key}"
                key = checked_series_key(metric, entity, tags)
                known = self.keys[(series, field_key)] = (key, metric)
            out.append((known[0], known[1], entity, tags, ts, _field_value(field_key, raw)))
        return out


def parse_lines(body: bytes, *, precision: str, entity_tag: str, now_ms: int) -> list[DataPoint]:
    """Every point of a line-protocol body, in order; ``InvalidRecord`` for the first bad
    line (``line 3: field 'up' is a boolean; ...``) and nothing else returned."""
    reader = _Reader(precision, entity_tag, now_ms)
    return [
        DataPoint(metric, entity, ts, value, dict(tags))
        for _, metric, entity, tags, ts, value in reader.points(body)
    ]


def is_line_protocol(record: bytes) -> bool:
    """Whether a points-topic record is line protocol rather than a JSON point (which
    starts with ``{``) or a TSF1 frame (checked before this)."""
    head = record.lstrip()[:1]
    return bool(head) and head not in (b"{", b"[")


def parse_series(
    record: bytes, *, precision: str, entity_tag: str, now_ms: int
) -> list[SeriesArrays]:
    """A line-protocol record (one or more lines) as series, each in line order: what a
    frame decodes to. ``InvalidRecord`` for a bad line, naming it."""
    grouped: dict[str, tuple[list[int], list[float]]] = {}
    for key, _, _, _, ts, value in _Reader(precision, entity_tag, now_ms).points(record):
        run = grouped.get(key)
        if run is None:
            run = grouped[key] = ([], [])
        run[0].append(ts)
        run[1].append(value)
    if not grouped:
        raise InvalidRecord("the body holds no line-protocol points")
    return [
        (key, np.array(ts, dtype=np.int64), np.array(vs, dtype=np.float64))
        for key, (ts, vs) in grouped.items()
    ]
