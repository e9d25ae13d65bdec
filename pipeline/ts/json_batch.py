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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Final

import msgspec
import orjson

from pipeline.errors import InvalidRecord
from pipeline.ts.point import check_series_key, decode_point_json, series_key

__all__ = ["DecodedPoint", "JsonPointDecoder"]

DecodedPoint = tuple[str, int, float]
"""``(series key, timestamp_ms, value)`` of one point."""

_KEY_CACHE_LIMIT: Final = 200_000
"""Distinct ``(metric, entity, tags)`` whose series keys are kept; cleared when full."""

_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Name = Annotated[str, msgspec.Meta(min_length=1)]


class _WirePoint(msgspec.Struct, forbid_unknown_fields=True):
    metric: _Name
    entity: _Name
    timestamp_ms: _Int64
    value: float
    tags: msgspec.Raw = msgspec.Raw(b"")


_DECODE: Final = msgspec.json.Decoder(_WirePoint)
_FAST_FAILURES: Final = (msgspec.DecodeError, msgspec.ValidationError)


class JsonPointDecoder:
    """Decodes JSON point records; keeps a cache of series keys between batches."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, bytes], str] = {}

    def decode(self, value: bytes) -> DecodedPoint:
        """One record's point; :class:`~pipeline.errors.InvalidRecord` names what is wrong."""
        try:
            wire = _DECODE.decode(value)
        except _FAST_FAILURES:
            return self._reference(value)
        raw_tags = bytes(wire.tags)
        cache_key = (wire.metric, wire.entity, raw_tags)
        key = self._keys.get(cache_key)
        if key is None:
            key = self._series_key(wire, raw_tags, value)
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

        ``None`` when a value holds a newline or any value fails the typed decoding;
        otherwise every value's point, or the error of a value whose tags or series key
        the reference rejects.
        """
        if not values:
            return []
        joined = b"\n".join(values)
        # msgspec reads one value across newlines, and several values on one line: so
        # every value must hold no newline and be exactly an object, "{...}". Then a
        # value cannot span lines (after a "}" inside a value no "{" may come), and as
        # many values as lines means one value per record.
        if (
            joined.count(b"\n") != len(values) - 1
            or joined.count(b"}\n{") != len(values) - 1
            or not joined.startswith(b"{")
            or not joined.endswith(b"}")
        ):
            return None
        try:
            wires = _DECODE.decode_lines(joined)
        except _FAST_FAILURES:
            return None
        if len(wires) != len(values):
            return None
        out: list[DecodedPoint | InvalidRecord] = []
        append = out.append
        keys = self._keys
        for wire, value in zip(wires, values, strict=True):
            raw_tags = bytes(wire.tags)
            key = keys.get((wire.metric, wire.entity, raw_tags))
            if key is None:
                try:
                    key = self._series_key(wire, raw_tags, value)
                except InvalidRecord as exc:
                    append(exc)
                    continue
            append((key, wire.timestamp_ms, wire.value))
        return out

    def _series_key(self, wire: _WirePoint, raw_tags: bytes, value: bytes) -> str:
        tags = orjson.loads(raw_tags) if raw_tags else None
        if not tags:
            tags = {}
        elif not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            # The reference names the field; it rejects what this rejects.
            decode_point_json(value)
            raise InvalidRecord("field 'tags' must be an object of string to string")
        key = check_series_key(series_key(wire.metric, wire.entity, tags))
        if len(self._keys) >= _KEY_CACHE_LIMIT:
            self._keys.clear()
        self._keys[(wire.metric, wire.entity, raw_tags)] = key
        return key

    @staticmethod
    def _reference(value: bytes) -> DecodedPoint:
        point = decode_point_json(value)
        return point.series_key(), point.timestamp_ms, point.value
