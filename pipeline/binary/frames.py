"""Encode and decode binary-protocol frames (docs/api/BINARY_PROTOCOL_EXTENSIONS.md).

Everything is little-endian. :func:`decode_header` reads the ten header bytes and
:func:`check_header` judges them before a payload byte is read (size, opcode, flags);
:func:`decode_payload` then turns the payload into its body. Every decoding failure is a
:class:`~pipeline.errors.ProtocolError` whose ``code`` is the ERROR code to answer with.
"""

from __future__ import annotations

import struct
from typing import Final

from pipeline.binary.bodies import Frame, Header
from pipeline.binary.codes import HEADER, HEADER_BYTES, ErrorCode, Flags, Opcode, max_payload_bytes
from pipeline.binary.payloads import (
    MAX_VECTOR_DIMENSION,
    REPLY_DECODERS,
    REPLY_ENCODERS,
    REQUEST_DECODERS,
    REQUEST_ENCODERS,
)
from pipeline.binary.strings import Reader
from pipeline.errors import InvalidArgument, ProtocolError

__all__ = [
    "MAX_VECTOR_DIMENSION",
    "check_header",
    "decode_frame",
    "decode_header",
    "decode_payload",
    "encode_frame",
]

_KNOWN_FLAGS: Final = Flags.ACK_QUEUED | Flags.COMPRESSED | Flags.CHECKSUM | Flags.REPLY
_UNSUPPORTED_FLAGS: Final = Flags.COMPRESSED | Flags.CHECKSUM
_OPCODES: Final = frozenset(int(opcode) for opcode in Opcode)


def decode_header(data: bytes | memoryview) -> Header:
    """The header in the first ten bytes of ``data``; fewer bytes are MALFORMED_FRAME."""
    if len(data) < HEADER_BYTES:
        raise ProtocolError(
            f"frame header: {len(data)} bytes, need {HEADER_BYTES}",
            code=ErrorCode.MALFORMED_FRAME,
        )
    opcode, flags, length, request_id = HEADER.unpack_from(data)
    return Header(opcode, flags, length, request_id)


def check_header(header: Header, *, max_payload: int | None = None) -> None:
    """Refuse a frame from its header alone, before its payload is read into memory.

    ``max_payload`` (bytes) is what the server advertised; the default is the protocol's
    own bound for the opcode (:func:`~pipeline.binary.codes.max_payload_bytes`).
    Raises FRAME_TOO_LARGE, UNKNOWN_OPCODE or UNSUPPORTED_FLAGS, in that order.
    """
    limit = max_payload_bytes(header.opcode) if max_payload is None else max_payload
    if header.length > limit:
        raise ProtocolError(
            f"frame payload of {header.length} bytes is over the limit of {limit} bytes",
            code=ErrorCode.FRAME_TOO_LARGE,
        )
    if header.opcode not in _OPCODES:
        raise ProtocolError(f"unknown opcode 0x{header.opcode:02x}", code=ErrorCode.UNKNOWN_OPCODE)
    if header.flags & ~_KNOWN_FLAGS & 0xFF:
        raise ProtocolError(
            f"reserved flag bits 0x{header.flags & ~_KNOWN_FLAGS & 0xFF:02x} are set",
            code=ErrorCode.UNSUPPORTED_FLAGS,
        )
    if header.flags & _UNSUPPORTED_FLAGS:
        raise ProtocolError(
            "compression and checksum flags are not supported in protocol version 1",
            code=ErrorCode.UNSUPPORTED_FLAGS,
        )


def decode_frame(data: bytes | memoryview, *, max_payload: int | None = None) -> Frame:
    """One whole frame: exactly its header and the payload length the header declares."""
    header = decode_header(data)
    check_header(header, max_payload=max_payload)
    if len(data) != HEADER_BYTES + header.length:
        raise ProtocolError(
            f"frame of {len(data)} bytes, header declares {HEADER_BYTES + header.length}",
            code=ErrorCode.MALFORMED_FRAME,
        )
    return decode_payload(header, memoryview(data)[HEADER_BYTES:])


def decode_payload(header: Header, payload: bytes | memoryview) -> Frame:
    """The frame of ``header`` and its ``payload`` (exactly ``header.length`` bytes).

    The opcode and flags are checked again (:func:`check_header`, without the size limit,
    which the caller applied before reading the payload).

        A request or reply opcode that has no payload in its direction (a client's GOAWAY,
        a client's ERROR) is UNKNOWN_OPCODE.
    """
    if len(payload) != header.length:
        raise ProtocolError(
            f"payload of {len(payload)} bytes, header declares {header.length}",
            code=ErrorCode.MALFORMED_FRAME,
        )
    check_header(header, max_payload=header.length)
    opcode = Opcode(header.opcode)
    flags = Flags(header.flags)
    reply = bool(flags & Flags.REPLY)
    decoder = (REPLY_DECODERS if reply else REQUEST_DECODERS).get(opcode)
    if decoder is None:
        side = "a reply" if reply else "a request"
        raise ProtocolError(f"{opcode.name} is not {side}", code=ErrorCode.UNKNOWN_OPCODE)
    reader = Reader(payload, opcode.name)
    body = decoder(reader)
    reader.end()
    return Frame(opcode, flags, header.request_id, body)


def encode_frame(frame: Frame) -> bytes:
    """The bytes of ``frame``; a value outside its field's range is InvalidArgument."""
    table = REPLY_ENCODERS if frame.is_reply else REQUEST_ENCODERS
    encoder = table.get(frame.opcode)
    if encoder is None or not isinstance(frame.body, encoder[0]):
        raise InvalidArgument(
            f"{frame.opcode.name} {'reply' if frame.is_reply else 'request'} "
            f"cannot carry {type(frame.body).__name__}"
        )
    try:
        payload = b"".join(encoder[1](frame.body))
        return HEADER.pack(frame.opcode, frame.flags, len(payload), frame.request_id) + payload
    except struct.error as exc:
        raise InvalidArgument(f"{frame.opcode.name}: a field is out of range: {exc}") from exc
