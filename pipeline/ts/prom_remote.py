"""Prometheus remote-write 1.0 bodies into series: what a Prometheus server sends.

The messages are Prometheus' own (``prompb/types.proto``, ``prompb/remote.proto``: the
fields remote-write 1.0 and remote-read use), built at import from a descriptor with the
``protobuf`` library rather than generated code. A body is a snappy block (``cramjam``)
holding a ``WriteRequest``.

Mapping (``docs/api/ECOSYSTEM.md``): ``metric`` = ``__name__``, ``entity`` = the value of
the entity label (``instance`` unless configured), every other label a tag. Values keep
their bits: a stale marker (the NaN ``0x7ff0000000000002``) is stored as that NaN. The
whole request is checked first; any bad series refuses it all (``InvalidRecord``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import cramjam
import numpy as np
import numpy.typing as npt
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from pipeline.errors import InvalidRecord
from pipeline.limits import MAX_DECOMPRESSED_BYTES
from pipeline.ts.point import SeriesArrays, checked_series_key, parse_series_key
from pipeline.ts.store import SeriesSelector

__all__ = [
    "READ_REQUEST",
    "READ_RESPONSE",
    "WRITE_REQUEST",
    "decode_read",
    "decode_write",
    "encode_read_response",
    "encode_samples",
    "encode_snappy",
    "selector_of",
    "series_of_write",
]

_F = descriptor_pb2.FieldDescriptorProto
_Field = tuple[str, int, int, str | None, bool]
_MESSAGES: Final[dict[str, list[_Field]]] = {
    "Label": [("name", 1, _F.TYPE_STRING, None, False), ("value", 2, _F.TYPE_STRING, None, False)],
    "Sample": [("value", 1, _F.TYPE_DOUBLE, None, False),
               ("timestamp", 2, _F.TYPE_INT64, None, False)],
    "TimeSeries": [("labels", 1, _F.TYPE_MESSAGE, "Label", True),
                   ("samples", 2, _F.TYPE_MESSAGE, "Sample", True)],
    "WriteRequest": [("timeseries", 1, _F.TYPE_MESSAGE, "TimeSeries", True)],
    "LabelMatcher": [("type", 1, _F.TYPE_INT32, None, False),
                     ("name", 2, _F.TYPE_STRING, None, False),
                     ("value", 3, _F.TYPE_STRING, None, False)],
    "Query": [("start_timestamp_ms", 1, _F.TYPE_INT64, None, False),
              ("end_timestamp_ms", 2, _F.TYPE_INT64, None, False),
              ("matchers", 3, _F.TYPE_MESSAGE, "LabelMatcher", True)],
    "ReadRequest": [("queries", 1, _F.TYPE_MESSAGE, "Query", True),
                    ("accepted_response_types", 2, _F.TYPE_INT32, None, True)],
    "QueryResult": [("timeseries", 1, _F.TYPE_MESSAGE, "TimeSeries", True)],
    "ReadResponse": [("results", 1, _F.TYPE_MESSAGE, "QueryResult", True)],
}  # fmt: skip
"""name -> fields ``(name, number, type, message type, repeated)``; the matcher's type is
Prometheus' enum (EQ 0, NEQ 1, RE 2, NRE 3), carried as its int32 wire form."""


def _classes() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="themis_prompb.proto", package="prometheus", syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field, number, kind, type_name, repeated in fields:
            added = message.field.add(name=field, number=number, type=kind)
            added.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if type_name:
                added.type_name = f".prometheus.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
        for name in _MESSAGES
    }


_CLASSES: Final = _classes()
WRITE_REQUEST: Final = _CLASSES["WriteRequest"]
READ_REQUEST: Final = _CLASSES["ReadRequest"]
READ_RESPONSE: Final = _CLASSES["ReadResponse"]


def _unsnappy(body: bytes) -> bytes:
    try:
        size = int(cramjam.snappy.decompress_raw_len(body))
    except Exception as exc:
        raise InvalidRecord(f"the body is not a snappy block: {exc}") from None
    if size > MAX_DECOMPRESSED_BYTES:
        raise InvalidRecord(
            f"the body decompresses to {size} bytes, over {MAX_DECOMPRESSED_BYTES} "
            "(MAX_DECOMPRESSED_BYTES)"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:
        raise InvalidRecord(f"the body is not a snappy block: {exc}") from None


def encode_snappy(data: bytes) -> bytes:
    """``data`` as a snappy block (a remote-read answer)."""
    return bytes(cramjam.snappy.compress_raw(data))


def decode_write(body: bytes) -> Any:
    """The ``WriteRequest`` of a snappy-compressed remote-write body."""
    request = WRITE_REQUEST()
    try:
        request.ParseFromString(_unsnappy(body))
    except InvalidRecord:
        raise
    except Exception as exc:
        raise InvalidRecord(f"the body is not a remote-write WriteRequest: {exc}") from None
    return request


def decode_read(body: bytes) -> Any:
    """The ``ReadRequest`` of a snappy-compressed remote-read body."""
    request = READ_REQUEST()
    data = _unsnappy(body)
    try:
        request.ParseFromString(data)
    except Exception as exc:
        raise InvalidRecord(f"the body is not a remote-read ReadRequest: {exc}") from None
    return request


_EQ, _NEQ, _RE, _NRE = 0, 1, 2, 3


def selector_of(matchers: Iterable[Any], entity_label: str) -> SeriesSelector:
    """A query's label matchers as a :class:`SeriesSelector` (``InvalidRecord`` for a bad one)."""
    tests: list[tuple[str, int, Any]] = []
    exact: dict[str, str] = {}
    for m in matchers:
        if m.type in (_RE, _NRE):
            try:
                pattern: Any = re.compile(f"(?:{m.value})")
            except re.error as exc:
                raise InvalidRecord(f"matcher {m.name}=~{m.value!r}: {exc}") from None
            tests.append((m.name, m.type, pattern))
        elif m.type in (_EQ, _NEQ):
            tests.append((m.name, m.type, m.value))
            if m.type == _EQ and m.value:
                exact[m.name] = m.value
        else:
            raise InvalidRecord(f"matcher type {m.type} is not one of =, !=, =~, !~")

    def keep(metric: str, entity: str, tags: dict[str, str]) -> bool:
        labels = {**tags, "__name__": metric, entity_label: entity}
        for name, kind, want in tests:
            value = labels.get(name, "")
            hit = value == want if kind in (_EQ, _NEQ) else want.fullmatch(value) is not None
            if hit != (kind in (_EQ, _RE)):
                return False
        return True

    metric = exact.pop("__name__", None)
    entity = exact.pop(entity_label, None)
    return SeriesSelector(metric, entity, exact, keep)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_samples(ts: npt.NDArray[np.int64], vs: npt.NDArray[np.float64]) -> bytes:
    """``TimeSeries.samples`` (field 2) of these points, serialized in one vectorised pass:
    per sample ``12 len 09 <8-byte value> 10 <varint timestamp>``. Building a million
    ``Sample`` messages one by one took most of a second (``docs/benchmarks.md``); a
    differential test holds this equal to what ``protobuf`` parses."""
    n = int(ts.size)
    if n == 0:
        return b""
    stamps = ts.astype(np.int64).view(np.uint64)
    width = np.ones(n, dtype=np.int64)
    for k in range(1, 10):
        width += (stamps >> np.uint64(7 * k)) != 0
    rows = np.zeros((n, 22), dtype=np.uint8)
    rows[:, 0], rows[:, 2], rows[:, 11] = 0x12, 0x09, 0x10
    rows[:, 1] = 10 + width
    rows[:, 3:11] = vs.astype("<f8").view(np.uint8).reshape(n, 8)
    for k in range(10):
        group = ((stamps >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        rows[:, 12 + k] = group | np.where(k < width - 1, 0x80, 0).astype(np.uint8)
    return rows[np.arange(22) < (12 + width)[:, None]].tobytes()


def encode_read_response(results: Iterable[Iterable[Any]], entity_label: str) -> bytes:
    """A ``ReadResponse``, one ``QueryResult`` per item of ``results`` (each an iterable of
    ``SeriesPoints``), labels sorted, ``__name__`` and the entity label included."""
    out = []
    for found in results:
        series_bytes = []
        for series in found:
            metric, entity, tags = parse_series_key(series.series_key)
            head = _CLASSES["TimeSeries"]()
            for name, value in sorted({**tags, "__name__": metric, entity_label: entity}.items()):
                head.labels.add(name=name, value=value)
            body = head.SerializeToString() + encode_samples(series.timestamps, series.values)
            series_bytes.append(_field(1, body))
        out.append(_field(1, b"".join(series_bytes)))
    return b"".join(out)


def series_of_write(timeseries: Iterable[Any], entity_label: str) -> tuple[list[SeriesArrays], int]:
    """Every series of a ``WriteRequest``, mapped and checked, and the sample count."""
    grouped: dict[str, tuple[list[int], list[float]]] = {}
    count = 0
    for number, series in enumerate(timeseries):
        labels = {label.name: label.value for label in series.labels}
        metric = labels.pop("__name__", "")
        entity = labels.pop(entity_label, "")
        if not metric:
            raise InvalidRecord(f"series {number}: no __name__ label")
        if not entity:
            raise InvalidRecord(
                f"series {number} ({metric}): no {entity_label!r} label (the entity)"
            )
        try:
            key = checked_series_key(metric, entity, labels)
        except InvalidRecord as exc:
            raise InvalidRecord(f"series {number} ({metric}): {exc}") from None
        ts, vs = grouped.setdefault(key, ([], []))
        for sample in series.samples:
            ts.append(sample.timestamp)
            vs.append(sample.value)
        count += len(series.samples)
    arrays = [
        (key, np.array(ts, dtype=np.int64), np.array(vs, dtype=np.float64))
        for key, (ts, vs) in grouped.items()
        if ts
    ]
    return arrays, count
