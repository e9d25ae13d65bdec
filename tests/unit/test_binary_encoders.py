"""The binary codec's encoders refuse what the protocol cannot carry, naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.binary.bodies import (
    AuthRequest,
    Empty,
    Frame,
    HelloRequest,
    Ping,
    TsBatch,
    TsPoint,
    VectorBatch,
    VectorWrite,
)
from pipeline.binary.codes import Flags, Opcode
from pipeline.binary.frames import encode_frame
from pipeline.errors import InvalidArgument
from pipeline.limits import MAX_BINARY_ID_BYTES, MAX_BINARY_PING_BYTES, MAX_FRAME_POINTS

pytestmark = pytest.mark.unit

POINT = TsPoint("cpu", "h1", 1, 1.0)


def _frame(opcode: Opcode, body: object) -> Frame:
    return Frame(opcode, Flags.NONE, 7, body)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("opcode", "body", "reason"),
    [
        (Opcode.HELLO, HelloRequest(1, 1, "c" * (MAX_BINARY_ID_BYTES + 1)), "client_id is 257"),
        (Opcode.AUTH, AuthRequest("api_key", b"k" * 70_000), "credential is 70000 bytes"),
        (Opcode.PING, Ping(b"p" * (MAX_BINARY_PING_BYTES + 1)), "PING data is 65 bytes"),
        (
            Opcode.TS_PUT_BUFFERED,
            TsPoint("cpu", "h1", 1, 1.0, (("a", "1"), ("a", "2"))),
            "tags name one tag twice",
        ),
        (
            Opcode.TS_PUT_BUFFERED_BATCH,
            TsBatch((POINT,) * (MAX_FRAME_POINTS + 1)),
            "over MAX_FRAME_POINTS",
        ),
        (
            Opcode.TS_PUT_BUFFERED_BATCH,
            TsBatch((TsPoint("cpu", "h1", 1, 1.0, (("a", "1"), ("a", "2"))),)),
            "tags name one tag twice",
        ),
        (
            Opcode.VECTOR_ADD_BUFFERED,
            VectorWrite("pk", np.zeros((2, 2), dtype=np.float32)),
            "a vector must be 1-D float32",
        ),
        (
            Opcode.VECTOR_ADD_BUFFERED_BATCH,
            VectorBatch(("a", "b"), np.zeros(4, dtype=np.float32)),
            "vectors must be (len(pks)",
        ),
        (
            Opcode.VECTOR_ADD_BUFFERED_BATCH,
            VectorBatch(("a", "b"), np.zeros((2, 4), dtype=np.float32), ({}, {}, {})),
            "3 metadata for 2 pks",
        ),
        (Opcode.TS_PUT_BUFFERED, Empty(), "TS_PUT_BUFFERED request cannot carry Empty"),
    ],
)
def test_a_body_the_protocol_cannot_carry_is_refused_naming_the_field(
    opcode: Opcode, body: object, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        encode_frame(_frame(opcode, body))
    assert reason in str(refused.value)


def test_a_request_id_out_of_range_is_refused_and_a_valid_frame_starts_with_its_header() -> None:
    with pytest.raises(InvalidArgument, match="out of range"):
        encode_frame(Frame(Opcode.PING, Flags.NONE, 2**32, Ping(b"")))
    data = encode_frame(Frame(Opcode.PING, Flags.NONE, 9, Ping(b"hi")))
    assert (
        data
        == bytes([Opcode.PING, 0]) + (2).to_bytes(4, "little") + (9).to_bytes(4, "little") + b"hi"
    )
