"""The binary front door's wire format: frames, opcodes, error codes (no server yet).

``codes`` (opcodes, flags, error codes, limits), ``bodies`` (the header and one
dataclass per payload), ``frames`` (encode and decode; every failure a
:class:`~pipeline.errors.ProtocolError`), ``strings`` (the field reader).
docs/api/BINARY_PROTOCOL_EXTENSIONS.md is the specification and ``spec/binary/`` its
golden frames.
"""

from pipeline.binary.bodies import (
    AuthOk,
    AuthRequest,
    Body,
    Empty,
    ErrorReply,
    Frame,
    GoAway,
    Header,
    HelloOk,
    HelloRequest,
    JsonBody,
    Ping,
    RawPayload,
    TsBatch,
    TsPoint,
    VectorBatch,
    VectorRemove,
    VectorWrite,
    WalApply,
    WriteAck,
)
from pipeline.binary.codes import (
    BEFORE_AUTH,
    HEADER_BYTES,
    MAGIC,
    PROTOCOL_VERSION,
    RETRIABLE,
    ErrorCode,
    Flags,
    Opcode,
    max_payload_bytes,
)
from pipeline.binary.frames import (
    MAX_VECTOR_DIMENSION,
    check_header,
    decode_frame,
    decode_header,
    decode_payload,
    encode_frame,
)

__all__ = [
    "BEFORE_AUTH",
    "HEADER_BYTES",
    "MAGIC",
    "MAX_VECTOR_DIMENSION",
    "PROTOCOL_VERSION",
    "RETRIABLE",
    "AuthOk",
    "AuthRequest",
    "Body",
    "Empty",
    "ErrorCode",
    "ErrorReply",
    "Flags",
    "Frame",
    "GoAway",
    "Header",
    "HelloOk",
    "HelloRequest",
    "JsonBody",
    "Opcode",
    "Ping",
    "RawPayload",
    "TsBatch",
    "TsPoint",
    "VectorBatch",
    "VectorRemove",
    "VectorWrite",
    "WalApply",
    "WriteAck",
    "check_header",
    "decode_frame",
    "decode_header",
    "decode_payload",
    "encode_frame",
    "max_payload_bytes",
]
