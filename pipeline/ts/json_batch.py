"""Decoding JSON points at Kafka speed: msgspec's typed decoding, the reference behind it.

:class:`JsonPointDecoder` turns the values of a consumed batch into ``(series key,
timestamp_ms, value)`` triples. Each value is decoded by msgspec into a typed struct
(the checks run in C: field names, types, non-empty strings, the int64 range); the
``tags`` object is kept as raw bytes and checked once per distinct ``(metric, entity,
tags)``, whose series key is cached. A value the fast path does not accept goes
through the reference decoder :func:`~pipeline.ts.point.decode_point_json`, so both
accept the same values, reject the same values with the reference's reason, and give
the same keys and bit-identical values (``tests/unit/test_json_batch.py`` checks that
differentially).

A whole batch is decoded in one call when it can be done safely: the values are
joined with newlines and decoded as JSON lines (``Decoder.decode_lines``), but only when
no value holds a newline and every value is exactly one object (``{`` ... ``}``), so
every line is exactly one record. Values are never
spliced into one JSON array: two malformed records could combine into valid points
there. A batch that does not decode that way (a bad record, a frame, a newline in a
value) is decoded record by record.

The facade's request bodies use the same pieces (:class:`WirePoint`,
:class:`SeriesKeys`, :func:`decode_object_lines`), with its own checks behind them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Final

import msgspec
import orjson

from pipeline.errors import InvalidRecord
from pipeline.ts.point import checked_series_key, decode_point_json

__all__ = [
    "DECODE_POINT",
    "FAST_FAILURES",
    "DecodedPoint",
    "JsonPointDecoder",
    "SeriesKeys",
    "WirePoint",
    "decode_object_lines",
]

DecodedPoint = tuple[str, int, float]
"""``(series key, timestamp_ms, value)`` of one point."""

_KEY_CACHE_LIMIT: Final = 200_000
"""Distinct ``(metric, entity, tags)`` whose series keys are kept; cleared when full."""

_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Name = Annotated[str, msgspec.Meta(min_length=1)]


class WirePoint(msgspec.Struct, forbid_unknown_fields=True):
    """A JSON point as :func:`~pipeline.ts.point.validate_point` accepts it; tags kept raw."""

    metric: _Name
    entity: _Name
    timestamp_ms: _Int64
    value: float
    tags: msgspec.Raw = msgspec.Raw(b"")


DECODE_POINT: Final = msgspec.json.Decoder(WirePoint)
FAST_FAILURES: Final = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    RecursionError,  # msgspec on nesting deeper than the interpreter's limit
    orjson.JSONDecodeError,  # raw tags msgspec passes but orjson refuses (bad UTF-8, 1e400)
)
"""What the typed decoding raises for a value it does not take; the reference decides."""


class SeriesKeys:
    """Series keys by ``(metric, entity, raw tags JSON)``, each built and checked once.

    Safe to share between threads (one dict, replaced whole when full).
    """

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str, bytes], str] = {}
        """Read it directly on hot paths; :meth:`key` fills it."""

    def key(self, metric: str, entity: str, raw_tags: bytes) -> str:
        """The series key; :class:`~pipeline.errors.InvalidRecord` for tags that are not an
        object of strings (absent, ``null`` or another falsy value means no tags, as
        :func:`~pipeline.ts.point.validate_point` has it) or a key too long for a block."""
        found = self.cache.get((metric, entity, raw_tags))
        if found is not None:
            return found
        tags = orjson.loads(raw_tags) if raw_tags else None
        if not tags:
            tags = {}
        elif not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise InvalidRecord("field 'tags' must be an object of string to string")
        key = checked_series_key(metric, entity, tags)
        if len(self.cache) >= _KEY_CACHE_LIMIT:
            self.cache = {}
        self.cache[(metric, entity, raw_tags)] = key
        return key


def decode_object_lines(data: bytes, lines: int) -> list[WirePoint] | None:
    """The ``lines`` newline-separated points of ``data`` in one call, or ``None``.

    msgspec's ``decode_lines`` reads one value across newlines and several on one line,
    so this decodes only when every line is exactly one object: ``data`` starts with
    ``{``, ends with ``}``, and each of its ``lines - 1`` newlines stands between ``}`` and
    ``{``. Then no value can span lines (after a ``}`` inside a value no ``{`` may come),
    and as many values as lines means one on each. ``None`` also when a line does not
    decode as a :class:`WirePoint`.
    """
    if (
        data.count(b"\n") != lines - 1
        or data.count(b"}\n{") != lines - 1
        or not data.startswith(b"{")
        or not data.endswith(b"}")
    ):
        return None
    try:
        points = DECODE_POINT.decode_lines(data)
    except FAST_FAILURES:
        return None
    return points if len(points) == lines else None


class JsonPointDecoder:
    """Decodes JSON point records; keeps a cache of series keys between batches."""

    def __init__(self) -> None:
        self.keys = SeriesKeys()

    def decode(self, value: bytes) -> DecodedPoint:
        """One record's point; :class:`~pipeline.errors.InvalidRecord` names what is wrong."""
        try:
            wire = DECODE_POINT.decode(value)
            key = self.keys.key(wire.metric, wire.entity, bytes(wire.tags))
        except FAST_FAILURES:
            point = decode_point_json(value)
            return point.series_key(), point.timestamp_ms, point.value
        return key, wire.timestamp_ms, wire.value

    def decode_many(self, values: Sequence[bytes]) -> list[DecodedPoint | InvalidRecord]:
        """Every record's point, or the error that rejects it, in the order given."""
        fast = self.decode_lines(values)
        if fast is not None:
            return fast
        out: list[DecodedPoint | InvalidRecord] = []
        append = out.append
        decode = self.decode
        for value in values:
            try:
                append(decode(value))
            except InvalidRecord as exc:
                append(exc)
        return out

    def decode_lines(self, values: Sequence[bytes]) -> list[DecodedPoint | InvalidRecord] | None:
        """The batch decoded in one call, or ``None`` when it must go record by record.

        ``None`` when a value holds a newline, is not exactly one object, or fails the
        typed decoding; otherwise every value's point, or the error of a value whose tags
        or series key the reference rejects.
        """
        if not values:
            return []
        wires = decode_object_lines(b"\n".join(values), len(values))
        if wires is None:
            return None
        out: list[DecodedPoint | InvalidRecord] = []
        append = out.append
        keys = self.keys
        known = keys.cache.get
        for wire in wires:
            raw_tags = bytes(wire.tags)
            key = known((wire.metric, wire.entity, raw_tags))
            if key is None:
                try:
                    key = keys.key(wire.metric, wire.entity, raw_tags)
                except InvalidRecord as exc:
                    append(exc)
                    continue
                except FAST_FAILURES:  # tags only the reference can judge: record by record
                    return None
            append((key, wire.timestamp_ms, wire.value))
        return out
