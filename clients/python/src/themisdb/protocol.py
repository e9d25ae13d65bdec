"""The binary protocol, version 1 (``docs/api/BINARY_PROTOCOL_EXTENSIONS.md``): the frames
this client sends and the replies it reads. Little-endian throughout."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

__all__ = [
    "HEADER",
    "RETRIABLE_CODES",
    "ErrorReply",
    "Flags",
    "HelloOk",
    "Opcode",
    "decode_error",
    "decode_hello_ok",
    "decode_write_ack",
    "encode_auth",
    "encode_frame",
    "encode_hello",
    "encode_json",
    "encode_ts_batch",
    "encode_ts_columns",
    "encode_ts_point",
    "encode_vector_batch",
    "encode_vector_remove",
    "encode_vector_write",
    "encode_wal_apply",
]

HEADER: Final = struct.Struct("<BBII")
"""opcode u8, flags u8, payload length u32, request id u32."""
MAGIC: Final = b"THMB"
VERSION: Final = 1


class Opcode(IntEnum):
    HELLO = 0x01
    AUTH = 0x02
    PING = 0x03
    GOAWAY = 0x04
    ERROR = 0x0F
    TS_PUT_BUFFERED = 0x70
    TS_BUFFER_STATS = 0x71
    TS_BUFFER_FLUSH = 0x72
    TS_PUT_BUFFERED_BATCH = 0x73
    VECTOR_ADD_BUFFERED = 0x80
    VECTOR_UPDATE_BUFFERED = 0x81
    VECTOR_REMOVE_BUFFERED = 0x82
    VECTOR_BUFFER_STATS = 0x83
    VECTOR_BUFFER_FLUSH = 0x84
    VECTOR_ADD_BUFFERED_BATCH = 0x85
    VECTOR_UPDATE_BUFFERED_BATCH = 0x86
    WAL_APPLY_COMPRESSED = 0x90
    REPLICATION_STATS = 0x91
    REPLICATION_CONFIG = 0x92


class Flags:
    ACK_QUEUED: Final = 0x01
    REPLY: Final = 0x80


ERROR_NAMES: Final = {
    1: "MALFORMED_FRAME", 2: "UNKNOWN_OPCODE", 3: "UNSUPPORTED_FLAGS", 4: "FRAME_TOO_LARGE",
    5: "UNSUPPORTED_VERSION", 6: "NOT_AUTHENTICATED", 7: "AUTHENTICATION_FAILED",
    8: "PERMISSION_DENIED", 9: "INVALID_REQUEST", 10: "NOT_FOUND", 11: "CONFLICT",
    12: "TOO_MANY_IN_FLIGHT", 13: "RATE_LIMITED", 14: "BUFFER_FULL", 15: "UNAVAILABLE",
    16: "TIMEOUT", 17: "CORRUPT_BATCH", 18: "WAL_GAP", 19: "FOREIGN_PRIMARY",
    20: "SHUTTING_DOWN", 21: "INTERNAL", 22: "NEED_DICTIONARY",
}  # fmt: skip
RETRIABLE_CODES: Final = frozenset({12, 13, 14, 15, 16, 18, 20, 21, 22})

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_POINT: Final = struct.Struct("<IIqdH")
_TAG: Final = struct.Struct("<II")


def encode_frame(opcode: int, request_id: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return HEADER.pack(opcode, flags, len(payload), request_id) + payload


def _str16(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError(f"a string of {len(data)} bytes does not fit the protocol's u16 length")
    return _U16.pack(len(data)) + data


def _str8(text: str) -> bytes:
    data = text.encode("utf-8")
    return bytes([len(data)]) + data


def encode_json(document: Any) -> bytes:
    """Compact UTF-8 JSON, as the protocol's JSON payloads are."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encode_hello(client_id: str) -> bytes:
    return MAGIC + struct.pack("<HH", VERSION, VERSION) + _str16(client_id)


def encode_auth(api_key: str) -> bytes:
    credential = api_key.encode("utf-8")
    return _str8("api_key") + _U16.pack(len(credential)) + credential


def _tags_json(tags: dict[str, str] | None) -> bytes:
    return encode_json(tags) if tags else b""


def encode_ts_point(
    metric: str, entity: str, ts: int, value: float, tags: dict[str, str] | None
) -> bytes:
    raw_tags = _tags_json(tags)
    return (
        _str16(metric) + _str16(entity) + struct.pack("<qdH", ts, value, len(raw_tags)) + raw_tags
    )


def encode_ts_batch(points: Sequence[tuple[str, str, int, float, dict[str, str] | None]]) -> bytes:
    """TsBatch: the string table (each distinct string once, in order of first use), then the
    points referring to it."""
    series: list[tuple[str, str, tuple[tuple[str, str], ...]]] = []
    numbers: dict[tuple[str, str, tuple[tuple[str, str], ...]], int] = {}
    sids = []
    for metric, entity, _, _, tags in points:
        key = (metric, entity, tuple(tags.items()) if tags else ())
        sid = numbers.setdefault(key, len(series))
        if sid == len(series):
            series.append(key)
        sids.append(sid)
    return encode_ts_columns(series, sids, [p[2] for p in points], [p[3] for p in points])


def encode_ts_columns(
    series: Sequence[tuple[str, str, tuple[tuple[str, str], ...]]],
    sids: Sequence[int],
    timestamps: Sequence[int],
    values: Sequence[float],
) -> bytes:
    """TsBatch from columns: point ``i`` is ``series[sids[i]]`` at ``timestamps[i]`` with
    ``values[i]``. The same bytes as :func:`encode_ts_batch` of those points; each series'
    strings and tag references are worked out once."""
    index: dict[str, int] = {}
    strings: list[bytes] = []

    def ref(text: str) -> int:
        at = index.get(text)
        if at is None:
            at = index[text] = len(strings)
            strings.append(_str16(text))
        return at

    heads: dict[int, tuple[int, int, int, bytes]] = {}
    pack_point, pack_tag = _POINT.pack, _TAG.pack
    body: list[bytes] = []
    append = body.append
    for sid, ts, value in zip(sids, timestamps, values, strict=True):
        head = heads.get(sid)
        if head is None:
            metric, entity, tags = series[sid]
            m, e = ref(metric), ref(entity)
            refs = b"".join(pack_tag(ref(name), ref(tag)) for name, tag in tags)
            head = heads[sid] = (m, e, len(tags), refs)
        append(pack_point(head[0], head[1], ts, value, head[2]))
        if head[2]:
            append(head[3])
    return b"".join([_U32.pack(len(strings)), *strings, _U32.pack(len(sids)), *body])


def _metadata(metadata: dict[str, Any] | None) -> bytes:
    raw = encode_json(metadata) if metadata is not None else b""
    return _U32.pack(len(raw)) + raw


def encode_vector_write(
    pk: str, vector: bytes, dimension: int, metadata: dict[str, Any] | None
) -> bytes:
    """VectorWrite; ``vector`` is ``dimension`` little-endian float32 values."""
    return _U32.pack(dimension) + vector + _str16(pk) + _metadata(metadata)


def encode_vector_batch(
    items: Sequence[tuple[str, bytes, dict[str, Any] | None]], dimension: int
) -> bytes:
    """VectorBatch: count, dimension, the vectors as one float32 block, then pk and metadata."""
    head = struct.pack("<II", len(items), dimension)
    vectors = b"".join(vector for _, vector, _ in items)
    tails = b"".join(_str16(pk) + _metadata(metadata) for pk, _, metadata in items)
    return head + vectors + tails


def encode_vector_remove(pk: str) -> bytes:
    return _str16(pk)


def encode_wal_apply(primary_id: str, batch: bytes) -> bytes:
    return _str16(primary_id) + batch


@dataclass(frozen=True)
class HelloOk:
    version: int
    max_frame_bytes: int
    max_in_flight: int
    auth_methods: list[str]


@dataclass(frozen=True)
class ErrorReply:
    code: int
    retriable: bool
    retry_after_ms: int
    items_accepted: int
    message: str

    @property
    def name(self) -> str:
        return ERROR_NAMES.get(self.code, f"ERROR_{self.code}")


def decode_hello_ok(payload: bytes) -> HelloOk:
    version, max_frame, in_flight, count = struct.unpack_from("<HIHB", payload)
    at, methods = 9, []
    for _ in range(count):
        n = payload[at]
        methods.append(payload[at + 1 : at + 1 + n].decode())
        at += 1 + n
    return HelloOk(version, max_frame, in_flight, methods)


def decode_error(payload: bytes) -> ErrorReply:
    code, flags, retry_after, accepted, n = struct.unpack_from("<HBIIH", payload)
    message = payload[13 : 13 + n].decode("utf-8", "replace")
    return ErrorReply(code, bool(flags & 1), retry_after, accepted, message)


def decode_write_ack(payload: bytes) -> tuple[int, int]:
    """``(accepted, buffer_size)``."""
    accepted, buffer_size = struct.unpack_from("<II", payload)
    return accepted, buffer_size
