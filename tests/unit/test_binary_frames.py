"""The binary protocol's codec against its golden frames (spec/binary/*.json), property
round trips bit for bit, and a bounded fuzz of the decoder: it decodes or raises
ProtocolError, never anything else.

The golden files' "frame" objects use the meaning format of the spec
(docs/api/BINARY_PROTOCOL_EXTENSIONS.md, "Test vectors"); :func:`to_meaning` and
:func:`from_meaning` are that format, the same one every SDK's tests read.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.binary import (
    HEADER_BYTES,
    RETRIABLE,
    AuthOk,
    AuthRequest,
    Body,
    Empty,
    ErrorCode,
    ErrorReply,
    Flags,
    Frame,
    GoAway,
    HelloOk,
    HelloRequest,
    JsonBody,
    Opcode,
    Ping,
    TsBatch,
    TsPoint,
    VectorBatch,
    VectorRemove,
    VectorWrite,
    WalApply,
    WriteAck,
    check_header,
    decode_frame,
    decode_header,
    decode_payload,
    encode_frame,
)
from pipeline.errors import ProtocolError
from pipeline.limits import MAX_FRAME_BYTES, MAX_WAL_BODY_BYTES

pytestmark = pytest.mark.unit

SPEC = Path(__file__).resolve().parents[2] / "spec" / "binary"
_CANONICAL_NAN = 0x7FF8000000000000


# --- the meaning format -------------------------------------------------------------------


def _value_meaning(value: float) -> float | str:
    if math.isnan(value):
        bits = struct.unpack("<Q", struct.pack("<d", value))[0]
        return "NaN" if bits == _CANONICAL_NAN else f"NaN:{bits:016x}"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _value_of(meaning: float | str) -> float:
    if isinstance(meaning, str) and meaning.startswith("NaN:"):
        return float(struct.unpack("<d", struct.pack("<Q", int(meaning[4:], 16)))[0])
    if meaning == "NaN":
        return float(struct.unpack("<d", struct.pack("<Q", _CANONICAL_NAN))[0])
    return float(meaning)


def _point_meaning(point: TsPoint) -> dict[str, Any]:
    return {
        "metric": point.metric,
        "entity": point.entity,
        "timestamp_ms": point.timestamp_ms,
        "value": _value_meaning(point.value),
        "tags": dict(point.tags),
    }


def _point_of(meaning: dict[str, Any]) -> TsPoint:
    tags = tuple(meaning["tags"].items())
    value = _value_of(meaning["value"])
    return TsPoint(meaning["metric"], meaning["entity"], meaning["timestamp_ms"], value, tags)


def _floats(values: Any) -> Any:
    return [_floats(v) for v in values] if isinstance(values, list) else _value_meaning(values)


def body_meaning(body: Body) -> dict[str, Any]:
    """The JSON meaning of one body: its type and its fields (bytes as hex)."""
    kind = type(body).__name__
    if isinstance(body, TsPoint):
        return {"type": kind, **_point_meaning(body)}
    if isinstance(body, TsBatch):
        return {"type": kind, "points": [_point_meaning(p) for p in body.points]}
    if isinstance(body, VectorWrite):
        vector = _floats(body.vector.astype(float).tolist())
        return {"type": kind, "pk": body.pk, "vector": vector, "metadata": body.metadata}
    if isinstance(body, VectorBatch):
        vectors = _floats(body.vectors.astype(float).tolist())
        return {
            "type": kind,
            "pks": list(body.pks),
            "vectors": vectors,
            "metadata": list(body.metadata_per_pk()),
        }
    if isinstance(body, HelloOk):
        return {
            "type": kind,
            "version": body.version,
            "max_frame_bytes": body.max_frame_bytes,
            "max_in_flight": body.max_in_flight,
            "auth_methods": list(body.auth_methods),
        }
    out: dict[str, Any] = {"type": kind}
    for name in body.__dataclass_fields__:
        value = getattr(body, name)
        out[name] = value.hex() if isinstance(value, bytes) else value
    return out


_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Empty,
        HelloRequest,
        HelloOk,
        AuthRequest,
        AuthOk,
        Ping,
        GoAway,
        ErrorReply,
        TsPoint,
        TsBatch,
        WriteAck,
        JsonBody,
        VectorWrite,
        VectorBatch,
        VectorRemove,
        WalApply,
    )
}
_HEX_FIELDS = {"data", "credential", "batch"}


def body_of(meaning: dict[str, Any]) -> Body:
    """The body a meaning describes (inverse of :func:`body_meaning`)."""
    fields = {k: v for k, v in meaning.items() if k != "type"}
    kind = meaning["type"]
    if kind == "TsPoint":
        return _point_of(fields)
    if kind == "TsBatch":
        return TsBatch(tuple(_point_of(p) for p in fields["points"]))
    if kind == "VectorWrite":
        vector = np.array([_value_of(v) for v in fields["vector"]], dtype="<f4")
        return VectorWrite(fields["pk"], vector, fields["metadata"])
    if kind == "VectorBatch":
        rows = [[_value_of(v) for v in row] for row in fields["vectors"]]
        vectors = np.array(rows, dtype="<f4").reshape(len(rows), -1)
        return VectorBatch(tuple(fields["pks"]), vectors, tuple(fields["metadata"]))
    if kind == "HelloOk":
        fields["auth_methods"] = tuple(fields["auth_methods"])
    for name in _HEX_FIELDS & set(fields):
        fields[name] = bytes.fromhex(fields[name])
    body: Body = _TYPES[kind](**fields)
    return body


def to_meaning(frame: Frame) -> dict[str, Any]:
    """A frame's meaning: opcode and flag names, request id, body."""
    flags = [flag.name for flag in Flags if flag and flag in frame.flags]
    return {
        "opcode": frame.opcode.name,
        "flags": flags,
        "request_id": frame.request_id,
        "body": body_meaning(frame.body),
    }


def from_meaning(meaning: dict[str, Any]) -> Frame:
    """The frame a meaning describes."""
    flags = Flags.NONE
    for name in meaning["flags"]:
        flags |= Flags[name]
    return Frame(Opcode[meaning["opcode"]], flags, meaning["request_id"], body_of(meaning["body"]))


# --- golden frames ------------------------------------------------------------------------


def _golden(kind: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(SPEC.glob("*.json")):
        document = json.loads(path.read_text())
        cases += [{**case, "file": path.name} for case in document[kind]]
    return cases


VALID = _golden("frames")
INVALID = _golden("invalid")


def test_the_golden_files_cover_every_opcode_and_error_code() -> None:
    opcodes = {case["frame"]["opcode"] for case in VALID}
    assert opcodes == {opcode.name for opcode in Opcode}
    codes = {case["frame"]["body"]["code"] for case in VALID if case["frame"]["opcode"] == "ERROR"}
    assert codes >= {int(code) for code in ErrorCode}
    refused = {case["error"] for case in INVALID}
    assert {"MALFORMED_FRAME", "UNKNOWN_OPCODE", "UNSUPPORTED_FLAGS", "FRAME_TOO_LARGE"} <= refused


@pytest.mark.parametrize("case", VALID, ids=[c["name"] for c in VALID])
def test_a_golden_frame_decodes_to_its_meaning(case: dict[str, Any]) -> None:
    frame = decode_frame(bytes.fromhex(case["hex"]))
    assert to_meaning(frame) == case["frame"]


@pytest.mark.parametrize("case", VALID, ids=[c["name"] for c in VALID])
def test_a_golden_meaning_encodes_to_its_exact_bytes(case: dict[str, Any]) -> None:
    assert encode_frame(from_meaning(case["frame"])).hex() == case["hex"]


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_a_golden_bad_frame_is_refused_with_its_code(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_frame(bytes.fromhex(case["hex"]))
    assert ErrorCode(caught.value.code).name == case["error"]


def test_an_error_reply_carries_the_retriable_bit_of_its_code() -> None:
    for case in VALID:
        body = case["frame"]["body"]
        if body["type"] == "ErrorReply":
            assert body["retriable"] == (ErrorCode(body["code"]) in RETRIABLE)


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    header = struct.pack("<BBII", Opcode.TS_PUT_BUFFERED_BATCH, 0, MAX_FRAME_BYTES + 1, 9)
    with pytest.raises(ProtocolError) as caught:
        check_header(decode_header(header))
    assert caught.value.code == ErrorCode.FRAME_TOO_LARGE
    wal = decode_header(struct.pack("<BBII", Opcode.WAL_APPLY_COMPRESSED, 0, MAX_WAL_BODY_BYTES, 9))
    check_header(wal)
    with pytest.raises(ProtocolError, match="over the limit of 1024"):
        check_header(wal, max_payload=1024)


def test_an_unknown_opcode_is_refused_after_the_size_check_with_its_request_id_readable() -> None:
    header = decode_header(struct.pack("<BBII", 0x55, 0, 3, 77))
    assert header.request_id == 77
    with pytest.raises(ProtocolError) as caught:
        check_header(header)
    assert caught.value.code == ErrorCode.UNKNOWN_OPCODE


def test_a_decoded_vector_is_a_read_only_view_of_the_payload_at_offset_4() -> None:
    vector = np.arange(768, dtype="<f4")
    data = encode_frame(Frame(Opcode.VECTOR_ADD_BUFFERED, Flags.NONE, 1, VectorWrite("pk", vector)))
    payload = data[HEADER_BYTES:]
    body = decode_payload(decode_header(data), payload).body
    assert isinstance(body, VectorWrite)
    assert body.vector.base is not None
    assert not body.vector.flags.writeable
    assert body.vector.dtype == np.dtype("<f4")
    assert payload[4 : 4 + 768 * 4] == vector.tobytes()


def test_decode_payload_rechecks_the_header() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_payload(decode_header(struct.pack("<BBII", 0x55, 0, 0, 1)), b"")
    assert caught.value.code == ErrorCode.UNKNOWN_OPCODE
    with pytest.raises(ProtocolError) as caught:
        decode_payload(decode_header(struct.pack("<BBII", Opcode.PING, 0, 2, 1)), b"x")
    assert caught.value.code == ErrorCode.MALFORMED_FRAME


# --- round trips --------------------------------------------------------------------------

_text = st.text(max_size=12)
_u32 = st.integers(0, 2**32 - 1)
_json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text
_json_floats = st.floats(allow_nan=False, allow_infinity=False)
_documents = st.dictionaries(
    _text,
    st.recursive(
        _json_scalars | _json_floats,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
        max_leaves=6,
    ),
    max_size=4,
)
_tags = st.dictionaries(_text, _text, max_size=4).map(lambda d: tuple(d.items()))
_points = st.builds(TsPoint, _text, _text, st.integers(-(2**63), 2**63 - 1), st.floats(), _tags)
_f32 = st.integers(0, 2**32 - 1).map(lambda bits: np.array([bits], "<u4").view("<f4")[0])


def _vectors(dimension: int) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    return st.lists(_f32, min_size=dimension, max_size=dimension).map(
        lambda values: np.array(values, dtype="<f4")
    )


def _as_metadata(document: Any) -> dict[str, object] | None:
    return document if document is None else dict(document)


@st.composite
def _vector_batch(draw: st.DrawFn) -> VectorBatch:
    dimension = draw(st.integers(1, 6))
    pks = tuple(draw(st.lists(_text, max_size=4)))
    rows = [draw(_vectors(dimension)) for _ in pks]
    block = np.array(rows, dtype="<f4").reshape(len(pks), dimension)
    metadata = tuple(_as_metadata(draw(st.none() | _documents)) for _ in pks)
    return VectorBatch(pks, block, metadata)


_REQUESTS: dict[Opcode, st.SearchStrategy[Any]] = {
    Opcode.HELLO: st.builds(
        lambda low, extra, cid: HelloRequest(low, low + extra, cid),
        st.integers(1, 100),
        st.integers(0, 100),
        _text,
    ),
    Opcode.AUTH: st.builds(AuthRequest, _text, st.binary(max_size=40)),
    Opcode.PING: st.builds(Ping, st.binary(max_size=64)),
    Opcode.TS_PUT_BUFFERED: _points,
    Opcode.TS_BUFFER_STATS: st.just(Empty()),
    Opcode.TS_BUFFER_FLUSH: st.just(Empty()),
    Opcode.TS_PUT_BUFFERED_BATCH: st.builds(TsBatch, st.lists(_points, max_size=5).map(tuple)),
    Opcode.VECTOR_ADD_BUFFERED: st.builds(
        VectorWrite, _text, st.integers(1, 8).flatmap(_vectors), st.none() | _documents
    ),
    Opcode.VECTOR_UPDATE_BUFFERED: st.builds(
        VectorWrite, _text, st.integers(1, 8).flatmap(_vectors), st.none() | _documents
    ),
    Opcode.VECTOR_REMOVE_BUFFERED: st.builds(VectorRemove, _text),
    Opcode.VECTOR_BUFFER_STATS: st.just(Empty()),
    Opcode.VECTOR_BUFFER_FLUSH: st.just(Empty()),
    Opcode.VECTOR_ADD_BUFFERED_BATCH: _vector_batch(),
    Opcode.VECTOR_UPDATE_BUFFERED_BATCH: _vector_batch(),
    Opcode.WAL_APPLY_COMPRESSED: st.builds(WalApply, _text, st.binary(max_size=64)),
    Opcode.REPLICATION_STATS: st.just(Empty()),
    Opcode.REPLICATION_CONFIG: st.builds(JsonBody, _documents),
}
_acks = st.builds(WriteAck, _u32, _u32)
_json_replies = st.builds(JsonBody, _documents)
_REPLIES: dict[Opcode, st.SearchStrategy[Any]] = {
    Opcode.HELLO: st.builds(
        HelloOk,
        st.integers(1, 65535),
        _u32,
        st.integers(0, 65535),
        st.lists(_text, max_size=3).map(tuple),
    ),
    Opcode.AUTH: st.builds(AuthOk, _text),
    Opcode.PING: st.builds(Ping, st.binary(max_size=64)),
    Opcode.GOAWAY: st.builds(GoAway, _u32, st.integers(0, 65535), _text),
    Opcode.ERROR: st.builds(
        ErrorReply, st.integers(0, 65535), st.booleans(), _u32, _u32, st.text(max_size=40)
    ),
    **{op: _acks for op in Opcode if op.name.endswith(("PUT_BUFFERED", "_BATCH"))},
    **{op: _acks for op in Opcode if op.name.startswith("VECTOR_") and "BUFFERED" in op.name},
    **{op: _json_replies for op in Opcode if op.name.endswith(("_STATS", "_FLUSH", "_CONFIG"))},
    Opcode.WAL_APPLY_COMPRESSED: _json_replies,
}


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    """Any valid frame of any opcode, request or reply."""
    reply = draw(st.booleans())
    table = _REPLIES if reply else _REQUESTS
    opcode = draw(st.sampled_from(sorted(table)))
    flags = Flags.REPLY if reply else draw(st.sampled_from([Flags.NONE, Flags.ACK_QUEUED]))
    return Frame(opcode, flags, draw(_u32), draw(table[opcode]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_every_frame_round_trips_bit_for_bit(frame: Frame) -> None:
    data = encode_frame(frame)
    decoded = decode_frame(data)
    assert encode_frame(decoded) == data
    assert json.dumps(to_meaning(decoded)) == json.dumps(to_meaning(frame))


# --- fuzz ---------------------------------------------------------------------------------


def _decodes_or_refuses(data: bytes) -> None:
    code = 0
    try:
        decode_frame(data)
    except ProtocolError as exc:
        code = int(exc.code)
    assert code == 0 or code in {int(known) for known in ErrorCode}


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    _decodes_or_refuses(data)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=190), st.sampled_from(sorted(Opcode)), st.integers(0, 255))
def test_arbitrary_payloads_behind_a_valid_header_decode_or_raise(
    payload: bytes, opcode: Opcode, flags: int
) -> None:
    _decodes_or_refuses(struct.pack("<BBII", opcode, flags, len(payload), 5) + payload)


_SMALL = [bytes.fromhex(case["hex"]) for case in VALID if len(case["hex"]) < 4000]


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from(_SMALL),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 3),
)
def test_mutated_golden_frames_decode_or_raise(
    data: bytes, edits: list[tuple[int, int]], trim: int
) -> None:
    mutated = bytearray(data)
    for position, byte in edits:
        mutated[position % len(mutated)] = byte
    body = bytes(mutated[: len(mutated) - trim]) if trim else bytes(mutated)
    _decodes_or_refuses(body)
    # the same mutation with the header's length fixed up reaches the payload decoders
    if len(body) >= HEADER_BYTES:
        fixed = body[:2] + struct.pack("<I", len(body) - HEADER_BYTES) + body[6:]
        _decodes_or_refuses(fixed)
