"""What a binary-protocol frame carries: the header and one dataclass per payload layout.

Plain values only: the codec (:mod:`pipeline.binary.frames`) turns them into bytes and
back; checking a point's series key, a vector's dimension or finiteness is the server's
job (``pipeline.ts``, ``pipeline.vectors``), which answers INVALID_REQUEST.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipeline.binary.codes import Flags, Opcode

__all__ = [
    "AuthOk",
    "AuthRequest",
    "Body",
    "Empty",
    "ErrorReply",
    "Frame",
    "GoAway",
    "Header",
    "HelloOk",
    "HelloRequest",
    "JsonBody",
    "Ping",
    "RawPayload",
    "TsBatch",
    "TsPoint",
    "VectorBatch",
    "VectorRemove",
    "VectorWrite",
    "WalApply",
    "WriteAck",
]

Tags = tuple[tuple[str, str], ...]
Metadata = dict[str, object] | None


@dataclass(frozen=True, slots=True)
class Header:
    """The ten bytes in front of every payload; ``opcode`` and ``flags`` as read (raw ints)."""

    opcode: int
    flags: int
    length: int
    """Payload bytes after the header."""
    request_id: int


@dataclass(frozen=True, slots=True)
class Empty:
    """No payload (stats and flush requests)."""


@dataclass(frozen=True, slots=True)
class HelloRequest:
    """The client's first frame: the versions it speaks (inclusive range) and who it is."""

    min_version: int
    max_version: int
    client_id: str


@dataclass(frozen=True, slots=True)
class HelloOk:
    """The server's answer to HELLO: the chosen version and what the session may do."""

    version: int
    max_frame_bytes: int
    """Largest payload the server reads in this session (bytes)."""
    max_in_flight: int
    """Most requests a client may have unanswered at once."""
    auth_methods: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """AUTH: ``method`` (``api_key``) and its credential (the facade's API key, UTF-8)."""

    method: str
    credential: bytes


@dataclass(frozen=True, slots=True)
class AuthOk:
    """The role the key holds (``reader``, ``writer``, ``admin``)."""

    role: str


@dataclass(frozen=True, slots=True)
class Ping:
    """PING, and its PONG (the same opcode with REPLY): opaque bytes echoed unchanged."""

    data: bytes = b""


@dataclass(frozen=True, slots=True)
class GoAway:
    """The server stops: requests up to ``last_request_id`` are answered, later ones not."""

    last_request_id: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A request failed; nothing of its frame was applied (``items_accepted`` is 0 in v1)."""

    code: int
    retriable: bool
    retry_after_ms: int
    items_accepted: int
    message: str


@dataclass(frozen=True, slots=True)
class TsPoint:
    """One time-series point; ``tags`` in the order they were sent."""

    metric: str
    entity: str
    timestamp_ms: int
    value: float
    tags: Tags = ()

    def same_as(self, other: TsPoint) -> bool:
        """Equality with the value compared bit for bit (NaN equals the same NaN)."""
        return (self.metric, self.entity, self.timestamp_ms, self.tags) == (
            other.metric,
            other.entity,
            other.timestamp_ms,
            other.tags,
        ) and np.float64(self.value).tobytes() == np.float64(other.value).tobytes()


@dataclass(frozen=True, slots=True)
class TsBatch:
    """Many points; on the wire their strings go through one table per frame."""

    points: tuple[TsPoint, ...]


@dataclass(frozen=True, slots=True)
class WriteAck:
    """A write was accepted: items in the frame and the buffer's size as last reported."""

    accepted: int
    buffer_size: int


@dataclass(frozen=True, slots=True)
class JsonBody:
    """A JSON object: stats and flush replies, the replication config request and reply."""

    document: dict[str, object]


@dataclass(frozen=True, slots=True, eq=False)
class VectorWrite:
    """VECTOR_ADD_BUFFERED or VECTOR_UPDATE_BUFFERED: one float32 vector (read-only view)."""

    pk: str
    vector: npt.NDArray[np.float32]
    metadata: Metadata = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorWrite):
            return NotImplemented
        return (
            self.pk == other.pk
            and self.metadata == other.metadata
            and self.vector.shape == other.vector.shape
            and self.vector.tobytes() == other.vector.tobytes()
        )

    def __hash__(self) -> int:
        return hash((self.pk, self.vector.tobytes()))


@dataclass(frozen=True, slots=True, eq=False)
class VectorBatch:
    """Many vectors of one dimension: ``vectors`` is one (n, dimension) float32 block."""

    pks: tuple[str, ...]
    vectors: npt.NDArray[np.float32]
    metadata: tuple[Metadata, ...] = field(default=())
    """One entry per pk (``None``: no metadata); empty means none for every pk."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorBatch):
            return NotImplemented
        return (
            self.pks == other.pks
            and self.metadata_per_pk() == other.metadata_per_pk()
            and self.vectors.shape == other.vectors.shape
            and self.vectors.tobytes() == other.vectors.tobytes()
        )

    def __hash__(self) -> int:
        return hash((self.pks, self.vectors.tobytes()))

    def metadata_per_pk(self) -> tuple[Metadata, ...]:
        """The metadata of each pk in order (``None`` where it has none)."""
        return self.metadata or (None,) * len(self.pks)


@dataclass(frozen=True, slots=True)
class VectorRemove:
    """VECTOR_REMOVE_BUFFERED: the pk to remove."""

    pk: str


@dataclass(frozen=True, slots=True)
class WalApply:
    """WAL_APPLY_COMPRESSED: the sending primary and one TWB1 batch, unchanged."""

    primary_id: str
    batch: bytes


@dataclass(frozen=True, slots=True)
class RawPayload:
    """A request payload a server left undecoded for its handler (a fast path of its own;
    the handler falls back to :func:`~pipeline.binary.frames.decode_payload`)."""

    header: Header
    data: bytes


Body = (
    Empty
    | HelloRequest
    | HelloOk
    | AuthRequest
    | AuthOk
    | Ping
    | GoAway
    | ErrorReply
    | TsPoint
    | TsBatch
    | WriteAck
    | JsonBody
    | VectorWrite
    | VectorBatch
    | VectorRemove
    | WalApply
    | RawPayload
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One whole frame: what it is, its flags, the request id replies echo, its payload."""

    opcode: Opcode
    flags: Flags
    request_id: int
    body: Body

    @property
    def is_reply(self) -> bool:
        """Whether the server sent it (REPLY set)."""
        return bool(self.flags & Flags.REPLY)
