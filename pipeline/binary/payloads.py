"""The payload of every opcode in both directions: one encoder and one decoder each.

The layouts are the byte tables of docs/api/BINARY_PROTOCOL_EXTENSIONS.md; the four
tables at the end map (opcode, direction) to them for :mod:`pipeline.binary.frames`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from pipeline.binary.bodies import (
    AuthOk,
    AuthRequest,
    Body,
    Empty,
    ErrorReply,
    GoAway,
    HelloOk,
    HelloRequest,
    JsonBody,
    Metadata,
    Ping,
    TsBatch,
    TsPoint,
    VectorBatch,
    VectorRemove,
    VectorWrite,
    WalApply,
    WriteAck,
)
from pipeline.binary.codes import (
    MAGIC,
    MAX_BINARY_MESSAGE_BYTES,
    MAX_BINARY_PING_BYTES,
    ErrorCode,
    Opcode,
)
from pipeline.binary.strings import Reader, json_bytes, utf8
from pipeline.errors import InvalidArgument, ProtocolError
from pipeline.limits import (
    MAX_BINARY_ID_BYTES,
    MAX_ENTITY_BYTES,
    MAX_FRAME_POINTS,
    MAX_METRIC_BYTES,
    MAX_VECTOR_DIMENSION,
)

__all__ = [
    "MAX_VECTOR_DIMENSION",
    "REPLY_DECODERS",
    "REPLY_ENCODERS",
    "REQUEST_DECODERS",
    "REQUEST_ENCODERS",
]

_POINT: Final = struct.Struct("<IIqdH")
_TAG_REF: Final = struct.Struct("<II")
_U8: Final = struct.Struct("<B")
_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_HELLO: Final = struct.Struct("<4sHH")
_HELLO_OK: Final = struct.Struct("<HIHB")
_GOAWAY: Final = struct.Struct("<IH")
_ERROR: Final = struct.Struct("<HBII")
_TS_FIXED: Final = struct.Struct("<qd")
_ACK: Final = struct.Struct("<II")
_BATCH_HEAD: Final = struct.Struct("<II")


def _short(text: str, size: struct.Struct, what: str, limit: int | None = None) -> bytes:
    data = utf8(text, what)
    bound = min(limit, 256**size.size - 1) if limit is not None else 256**size.size - 1
    if len(data) > bound:
        raise InvalidArgument(f"{what} is {len(data)} UTF-8 bytes, over {bound}")
    return size.pack(len(data)) + data


def _metadata_bytes(metadata: Metadata) -> bytes:
    data = b"" if metadata is None else json_bytes(metadata)
    return _U32.pack(len(data)) + data


def _read_metadata(reader: Reader) -> Metadata:
    (size,) = reader.unpack(_U32, "metadata length")
    return None if size == 0 else reader.json_object(size, "metadata")


def _enc_empty(body: Empty) -> list[bytes]:
    return []


def _dec_empty(reader: Reader) -> Empty:
    return Empty()


def _enc_hello(body: HelloRequest) -> list[bytes]:
    return [
        _HELLO.pack(MAGIC, body.min_version, body.max_version),
        _short(body.client_id, _U16, "client_id", MAX_BINARY_ID_BYTES),
    ]


def _dec_hello(reader: Reader) -> HelloRequest:
    magic, low, high = reader.unpack(_HELLO, "HELLO")
    if magic != MAGIC:
        raise ProtocolError(
            f"HELLO magic is {magic!r}, not {MAGIC!r}", code=ErrorCode.MALFORMED_FRAME
        )
    if not 1 <= low <= high:
        raise ProtocolError(
            f"HELLO versions {low}..{high} are not a range from 1", code=ErrorCode.MALFORMED_FRAME
        )
    return HelloRequest(low, high, reader.text(_U16, "client_id", MAX_BINARY_ID_BYTES))


def _enc_hello_ok(body: HelloOk) -> list[bytes]:
    head = _HELLO_OK.pack(
        body.version, body.max_frame_bytes, body.max_in_flight, len(body.auth_methods)
    )
    return [head, *(_short(method, _U8, "auth method") for method in body.auth_methods)]


def _dec_hello_ok(reader: Reader) -> HelloOk:
    version, max_frame, in_flight, count = reader.unpack(_HELLO_OK, "HELLO reply")
    methods = tuple(reader.text(_U8, "auth method") for _ in range(count))
    return HelloOk(version, max_frame, in_flight, methods)


def _enc_auth(body: AuthRequest) -> list[bytes]:
    if len(body.credential) > 0xFFFF:
        raise InvalidArgument(f"credential is {len(body.credential)} bytes, over 65535")
    return [
        _short(body.method, _U8, "auth method"),
        _U16.pack(len(body.credential)),
        body.credential,
    ]


def _dec_auth(reader: Reader) -> AuthRequest:
    method = reader.text(_U8, "auth method")
    (size,) = reader.unpack(_U16, "credential length")
    return AuthRequest(method, reader.take(size, "credential"))


def _enc_auth_ok(body: AuthOk) -> list[bytes]:
    return [_short(body.role, _U8, "role")]


def _dec_auth_ok(reader: Reader) -> AuthOk:
    return AuthOk(reader.text(_U8, "role"))


def _enc_ping(body: Ping) -> list[bytes]:
    if len(body.data) > MAX_BINARY_PING_BYTES:
        raise InvalidArgument(f"PING data is {len(body.data)} bytes, over {MAX_BINARY_PING_BYTES}")
    return [body.data]


def _dec_ping(reader: Reader) -> Ping:
    data = reader.rest()
    if len(data) > MAX_BINARY_PING_BYTES:
        raise ProtocolError(
            f"PING data is {len(data)} bytes, over {MAX_BINARY_PING_BYTES}",
            code=ErrorCode.MALFORMED_FRAME,
        )
    return Ping(data)


def _enc_goaway(body: GoAway) -> list[bytes]:
    message = _short(body.message, _U16, "message", MAX_BINARY_MESSAGE_BYTES)
    return [_GOAWAY.pack(body.last_request_id, body.code), message]


def _dec_goaway(reader: Reader) -> GoAway:
    last, code = reader.unpack(_GOAWAY, "GOAWAY")
    return GoAway(last, code, reader.text(_U16, "message", MAX_BINARY_MESSAGE_BYTES))


def _enc_error(body: ErrorReply) -> list[bytes]:
    head = _ERROR.pack(body.code, int(body.retriable), body.retry_after_ms, body.items_accepted)
    return [head, _short(body.message, _U16, "message", MAX_BINARY_MESSAGE_BYTES)]


def _dec_error(reader: Reader) -> ErrorReply:
    code, bits, retry_after_ms, accepted = reader.unpack(_ERROR, "ERROR")
    if bits > 1:
        raise ProtocolError(
            f"ERROR flag bits 0x{bits:02x}: only bit 0 (retriable) is defined",
            code=ErrorCode.MALFORMED_FRAME,
        )
    message = reader.text(_U16, "message", MAX_BINARY_MESSAGE_BYTES)
    return ErrorReply(code, bool(bits), retry_after_ms, accepted, message)


def _enc_ts_point(body: TsPoint) -> list[bytes]:
    tags = json_bytes(dict(body.tags)) if body.tags else b""
    if len(dict(body.tags)) != len(body.tags):
        raise InvalidArgument("tags name one tag twice")
    return [
        _short(body.metric, _U16, "metric", MAX_METRIC_BYTES),
        _short(body.entity, _U16, "entity", MAX_ENTITY_BYTES),
        _TS_FIXED.pack(body.timestamp_ms, body.value),
        _U16.pack(len(tags)) if len(tags) <= 0xFFFF else _too_long("tags JSON", len(tags)),
        tags,
    ]


def _too_long(what: str, size: int) -> bytes:
    raise InvalidArgument(f"{what} is {size} bytes, over 65535")


def _dec_ts_point(reader: Reader) -> TsPoint:
    metric = reader.text(_U16, "metric", MAX_METRIC_BYTES)
    entity = reader.text(_U16, "entity", MAX_ENTITY_BYTES)
    timestamp_ms, value = reader.unpack(_TS_FIXED, "timestamp_ms and value")
    (size,) = reader.unpack(_U16, "tags length")
    tags = reader.json_tags(size) if size else ()
    return TsPoint(metric, entity, timestamp_ms, value, tags)


def _enc_ts_batch(body: TsBatch) -> list[bytes]:
    if len(body.points) > MAX_FRAME_POINTS:
        raise InvalidArgument(f"{len(body.points)} points, over MAX_FRAME_POINTS")
    index: dict[str, int] = {}

    def ref(text: str) -> int:
        return index.setdefault(text, len(index))

    rows: list[bytes] = [_U32.pack(len(body.points))]
    for point in body.points:
        if len(dict(point.tags)) != len(point.tags):
            raise InvalidArgument("tags name one tag twice")
        rows.append(
            _POINT.pack(
                ref(point.metric),
                ref(point.entity),
                point.timestamp_ms,
                point.value,
                len(point.tags),
            )
        )
        rows += [_TAG_REF.pack(ref(name), ref(value)) for name, value in point.tags]
    table = [_U32.pack(len(index))]
    table += [_short(text, _U16, "batch string") for text in index]
    return table + rows


def _dec_ts_batch(reader: Reader) -> TsBatch:
    (count,) = reader.unpack(_U32, "string count")
    strings = [reader.text(_U16, f"string {n}") for n in range(min(count, reader.left() // 2 + 1))]
    if len(strings) != count:
        raise ProtocolError(
            "string table is longer than the payload", code=ErrorCode.MALFORMED_FRAME
        )
    (points,) = reader.unpack(_U32, "point count")
    if points > MAX_FRAME_POINTS:
        raise ProtocolError(
            f"{points} points, over MAX_FRAME_POINTS ({MAX_FRAME_POINTS})",
            code=ErrorCode.INVALID_REQUEST,
        )

    def string(ref: int, what: str) -> str:
        if ref >= len(strings):
            raise ProtocolError(
                f"{what} refers to string {ref} of {len(strings)}", code=ErrorCode.MALFORMED_FRAME
            )
        return strings[ref]

    out: list[TsPoint] = []
    for n in range(points):
        metric, entity, timestamp_ms, value, tag_count = reader.unpack(_POINT, f"point {n}")
        tags = tuple(
            (string(name, f"point {n} tag"), string(text, f"point {n} tag"))
            for name, text in (reader.unpack(_TAG_REF, f"point {n} tag") for _ in range(tag_count))
        )
        if len(dict(tags)) != len(tags):
            raise ProtocolError(f"point {n} names one tag twice", code=ErrorCode.INVALID_REQUEST)
        out.append(
            TsPoint(
                string(metric, f"point {n} metric"),
                string(entity, f"point {n} entity"),
                timestamp_ms,
                value,
                tags,
            )
        )
    return TsBatch(tuple(out))


def _enc_ack(body: WriteAck) -> list[bytes]:
    return [_ACK.pack(body.accepted, body.buffer_size)]


def _dec_ack(reader: Reader) -> WriteAck:
    return WriteAck(*reader.unpack(_ACK, "acknowledgement"))


def _enc_json(body: JsonBody) -> list[bytes]:
    return [json_bytes(body.document)]


def _dec_json(reader: Reader) -> JsonBody:
    return JsonBody(reader.json_object(reader.left(), "JSON body"))


def _vector_block(vector: object) -> bytes:
    block = np.ascontiguousarray(vector, dtype="<f4")
    if block.ndim != 1 or not 1 <= block.size <= MAX_VECTOR_DIMENSION:
        raise InvalidArgument(
            f"a vector must be 1-D float32 of 1..{MAX_VECTOR_DIMENSION} components"
        )
    return block.tobytes()


def _enc_vector(body: VectorWrite) -> list[bytes]:
    data = _vector_block(body.vector)
    return [
        _U32.pack(len(data) // 4),
        data,
        _short(body.pk, _U16, "pk"),
        _metadata_bytes(body.metadata),
    ]


def _read_dimension(reader: Reader) -> int:
    dimension = int(reader.unpack(_U32, "dimension")[0])
    if not 1 <= dimension <= MAX_VECTOR_DIMENSION:
        raise ProtocolError(
            f"dimension {dimension} is outside 1..{MAX_VECTOR_DIMENSION}",
            code=ErrorCode.INVALID_REQUEST,
        )
    return dimension


def _dec_vector(reader: Reader) -> VectorWrite:
    dimension = _read_dimension(reader)
    vector = reader.float32(dimension, "vector")
    pk = reader.text(_U16, "pk")
    return VectorWrite(pk, vector, _read_metadata(reader))


def _enc_vector_batch(body: VectorBatch) -> list[bytes]:
    block = np.ascontiguousarray(body.vectors, dtype="<f4")
    if (
        block.ndim != 2
        or block.shape[0] != len(body.pks)
        or not 1 <= block.shape[1] <= MAX_VECTOR_DIMENSION
    ):
        raise InvalidArgument(f"vectors must be (len(pks), 1..{MAX_VECTOR_DIMENSION}) float32")
    metadata = body.metadata_per_pk()
    if len(metadata) != len(body.pks):
        raise InvalidArgument(f"{len(metadata)} metadata for {len(body.pks)} pks")
    out = [_BATCH_HEAD.pack(block.shape[0], block.shape[1]), block.tobytes()]
    for pk, meta in zip(body.pks, metadata, strict=True):
        out += [_short(pk, _U16, "pk"), _metadata_bytes(meta)]
    return out


def _dec_vector_batch(reader: Reader) -> VectorBatch:
    (count,) = reader.unpack(_U32, "vector count")
    dimension = _read_dimension(reader)
    if count * dimension * 4 > reader.left():
        raise ProtocolError(
            f"{count} vectors of {dimension} components do not fit the payload",
            code=ErrorCode.MALFORMED_FRAME,
        )
    vectors = reader.float32(count * dimension, "vectors").reshape(count, dimension)
    pks: list[str] = []
    metadata: list[Metadata] = []
    for n in range(count):
        pks.append(reader.text(_U16, f"pk {n}"))
        metadata.append(_read_metadata(reader))
    return VectorBatch(tuple(pks), vectors, tuple(metadata))


def _enc_remove(body: VectorRemove) -> list[bytes]:
    return [_short(body.pk, _U16, "pk")]


def _dec_remove(reader: Reader) -> VectorRemove:
    return VectorRemove(reader.text(_U16, "pk"))


def _enc_wal(body: WalApply) -> list[bytes]:
    return [_short(body.primary_id, _U16, "primary_id", MAX_BINARY_ID_BYTES), body.batch]


def _dec_wal(reader: Reader) -> WalApply:
    return WalApply(reader.text(_U16, "primary_id", MAX_BINARY_ID_BYTES), reader.rest())


_Enc = tuple[type, Callable[[Any], list[bytes]]]
_EMPTY: Final[_Enc] = (Empty, _enc_empty)
_JSON: Final[_Enc] = (JsonBody, _enc_json)
_ACKED: Final[_Enc] = (WriteAck, _enc_ack)
REQUEST_ENCODERS: Final[dict[Opcode, _Enc]] = {
    Opcode.HELLO: (HelloRequest, _enc_hello),
    Opcode.AUTH: (AuthRequest, _enc_auth),
    Opcode.PING: (Ping, _enc_ping),
    Opcode.TS_PUT_BUFFERED: (TsPoint, _enc_ts_point),
    Opcode.TS_BUFFER_STATS: _EMPTY,
    Opcode.TS_BUFFER_FLUSH: _EMPTY,
    Opcode.TS_PUT_BUFFERED_BATCH: (TsBatch, _enc_ts_batch),
    Opcode.VECTOR_ADD_BUFFERED: (VectorWrite, _enc_vector),
    Opcode.VECTOR_UPDATE_BUFFERED: (VectorWrite, _enc_vector),
    Opcode.VECTOR_REMOVE_BUFFERED: (VectorRemove, _enc_remove),
    Opcode.VECTOR_BUFFER_STATS: _EMPTY,
    Opcode.VECTOR_BUFFER_FLUSH: _EMPTY,
    Opcode.VECTOR_ADD_BUFFERED_BATCH: (VectorBatch, _enc_vector_batch),
    Opcode.VECTOR_UPDATE_BUFFERED_BATCH: (VectorBatch, _enc_vector_batch),
    Opcode.WAL_APPLY_COMPRESSED: (WalApply, _enc_wal),
    Opcode.REPLICATION_STATS: _EMPTY,
    Opcode.REPLICATION_CONFIG: _JSON,
}
REPLY_ENCODERS: Final[dict[Opcode, _Enc]] = {
    Opcode.HELLO: (HelloOk, _enc_hello_ok),
    Opcode.AUTH: (AuthOk, _enc_auth_ok),
    Opcode.PING: (Ping, _enc_ping),
    Opcode.GOAWAY: (GoAway, _enc_goaway),
    Opcode.ERROR: (ErrorReply, _enc_error),
    Opcode.TS_PUT_BUFFERED: _ACKED,
    Opcode.TS_BUFFER_STATS: _JSON,
    Opcode.TS_BUFFER_FLUSH: _JSON,
    Opcode.TS_PUT_BUFFERED_BATCH: _ACKED,
    Opcode.VECTOR_ADD_BUFFERED: _ACKED,
    Opcode.VECTOR_UPDATE_BUFFERED: _ACKED,
    Opcode.VECTOR_REMOVE_BUFFERED: _ACKED,
    Opcode.VECTOR_BUFFER_STATS: _JSON,
    Opcode.VECTOR_BUFFER_FLUSH: _JSON,
    Opcode.VECTOR_ADD_BUFFERED_BATCH: _ACKED,
    Opcode.VECTOR_UPDATE_BUFFERED_BATCH: _ACKED,
    Opcode.WAL_APPLY_COMPRESSED: _JSON,
    Opcode.REPLICATION_STATS: _JSON,
    Opcode.REPLICATION_CONFIG: _JSON,
}
_Dec = Callable[[Reader], Body]
REQUEST_DECODERS: Final[dict[Opcode, _Dec]] = {
    Opcode.HELLO: _dec_hello,
    Opcode.AUTH: _dec_auth,
    Opcode.PING: _dec_ping,
    Opcode.TS_PUT_BUFFERED: _dec_ts_point,
    Opcode.TS_BUFFER_STATS: _dec_empty,
    Opcode.TS_BUFFER_FLUSH: _dec_empty,
    Opcode.TS_PUT_BUFFERED_BATCH: _dec_ts_batch,
    Opcode.VECTOR_ADD_BUFFERED: _dec_vector,
    Opcode.VECTOR_UPDATE_BUFFERED: _dec_vector,
    Opcode.VECTOR_REMOVE_BUFFERED: _dec_remove,
    Opcode.VECTOR_BUFFER_STATS: _dec_empty,
    Opcode.VECTOR_BUFFER_FLUSH: _dec_empty,
    Opcode.VECTOR_ADD_BUFFERED_BATCH: _dec_vector_batch,
    Opcode.VECTOR_UPDATE_BUFFERED_BATCH: _dec_vector_batch,
    Opcode.WAL_APPLY_COMPRESSED: _dec_wal,
    Opcode.REPLICATION_STATS: _dec_empty,
    Opcode.REPLICATION_CONFIG: _dec_json,
}
REPLY_DECODERS: Final[dict[Opcode, _Dec]] = {
    Opcode.HELLO: _dec_hello_ok,
    Opcode.AUTH: _dec_auth_ok,
    Opcode.PING: _dec_ping,
    Opcode.GOAWAY: _dec_goaway,
    Opcode.ERROR: _dec_error,
    **{
        opcode: _dec_json if encoder is _JSON else _dec_ack
        for opcode, encoder in REPLY_ENCODERS.items()
        if encoder in (_JSON, _ACKED)
    },
}
