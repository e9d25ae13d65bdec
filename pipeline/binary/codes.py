"""The numbers of the binary protocol: opcodes, header flags, error codes, limits.

docs/api/BINARY_PROTOCOL_EXTENSIONS.md is the specification; this module and the
spec name the same values, and ``spec/binary/*.json`` holds a golden frame for each.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import Final

from pipeline.limits import (
    MAX_BINARY_MESSAGE_BYTES,
    MAX_BINARY_PING_BYTES,
    MAX_FRAME_BYTES,
    MAX_WAL_BODY_BYTES,
)

__all__ = [
    "BEFORE_AUTH",
    "HEADER",
    "HEADER_BYTES",
    "MAGIC",
    "MAX_BINARY_MESSAGE_BYTES",
    "MAX_BINARY_PING_BYTES",
    "PROTOCOL_VERSION",
    "RETRIABLE",
    "ErrorCode",
    "Flags",
    "Opcode",
    "max_payload_bytes",
]

MAGIC: Final = b"THMB"
"""The first four bytes of a HELLO payload."""
PROTOCOL_VERSION: Final = 1
"""The highest protocol version this codec speaks (and the only one so far)."""
HEADER: Final = struct.Struct("<BBII")
"""opcode u8, flags u8, payload length u32 (bytes after the header), request id u32."""
HEADER_BYTES: Final = HEADER.size
"""10: the roadmap's six bytes, then the request id."""


class Opcode(IntEnum):
    """What a frame is; a reply carries its request's opcode with :attr:`Flags.REPLY`."""

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


class Flags(IntFlag):
    """The header's flag byte. Bits 3-6 are reserved and must be zero."""

    NONE = 0x00
    ACK_QUEUED = 0x01
    """Answer once the write is queued in the producer, not once the broker acknowledged it."""
    COMPRESSED = 0x02
    """Reserved: the payload is compressed (refused with UNSUPPORTED_FLAGS in version 1)."""
    CHECKSUM = 0x04
    """Reserved: a CRC-32C trails the payload (refused with UNSUPPORTED_FLAGS in version 1)."""
    REPLY = 0x80
    """Set on every frame the server sends in answer to a request (and on GOAWAY)."""


class ErrorCode(IntEnum):
    """The code of an ERROR reply (u16); :data:`RETRIABLE` tells which may succeed later."""

    MALFORMED_FRAME = 1
    UNKNOWN_OPCODE = 2
    UNSUPPORTED_FLAGS = 3
    FRAME_TOO_LARGE = 4
    UNSUPPORTED_VERSION = 5
    NOT_AUTHENTICATED = 6
    AUTHENTICATION_FAILED = 7
    PERMISSION_DENIED = 8
    INVALID_REQUEST = 9
    NOT_FOUND = 10
    CONFLICT = 11
    TOO_MANY_IN_FLIGHT = 12
    RATE_LIMITED = 13
    BUFFER_FULL = 14
    UNAVAILABLE = 15
    TIMEOUT = 16
    CORRUPT_BATCH = 17
    WAL_GAP = 18
    FOREIGN_PRIMARY = 19
    SHUTTING_DOWN = 20
    INTERNAL = 21
    NEED_DICTIONARY = 22


RETRIABLE: Final[frozenset[ErrorCode]] = frozenset(
    {
        ErrorCode.TOO_MANY_IN_FLIGHT,
        ErrorCode.RATE_LIMITED,
        ErrorCode.BUFFER_FULL,
        ErrorCode.UNAVAILABLE,
        ErrorCode.TIMEOUT,
        ErrorCode.WAL_GAP,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.INTERNAL,
        ErrorCode.NEED_DICTIONARY,
    }
)
"""The codes whose ERROR frames carry the retriable bit: the same frame may succeed later."""

BEFORE_AUTH: Final[frozenset[Opcode]] = frozenset({Opcode.HELLO, Opcode.AUTH, Opcode.PING})
"""The only requests a server accepts before AUTH succeeded (HELLO only as the first)."""


def max_payload_bytes(opcode: int) -> int:
    """The largest payload (bytes) a frame of ``opcode`` may declare in version 1.

    WAL batches may be as large as a replica takes over HTTP (``MAX_WAL_BODY_BYTES``);
    everything else is bounded by ``MAX_FRAME_BYTES``. A server may advertise less.
    """
    return MAX_WAL_BODY_BYTES if opcode == Opcode.WAL_APPLY_COMPRESSED else MAX_FRAME_BYTES
