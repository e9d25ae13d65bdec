"""Vector operations on Kafka: the roadmap's JSON operation and a binary batch frame.

An operation adds, updates or removes one vector, identified by its primary key
``pk``. Adding a pk that exists replaces it, and so does updating one that does
not: both are upserts once they reach the index.

JSON operation (one per Kafka message)
    ``{"op": "add" | "update" | "remove", "pk": str, "vector": [numbers], "metadata": {...}}``
    ``op`` defaults to ``"add"``; ``metadata`` is optional (a JSON object, ``{}`` when
    absent or ``null``); ``vector`` is required for add and update and ignored for
    remove.

Binary batch frame (many operations in one Kafka message; all integers little-endian)

    ==========  =========================  =======================================
    bytes       field                      meaning
    ==========  =========================  =======================================
    4           magic ``VOF1``             tells a frame from a JSON operation
    4           u32 operation count
    2           u16 dimension ``d``        must equal the index's dimension
    per op:
    1           u8 op code                 1 add, 2 update, 3 remove
    2           u16 pk length
    n           pk, UTF-8                  non-empty
    4           u32 metadata length        0 means ``{}``
    m           metadata, UTF-8 JSON       a JSON object
    4 d         float32 vector (IEEE 754)  add and update only; absent for remove
    ==========  =========================  =======================================

Decoding validates every operation and raises :class:`~pipeline.errors.InvalidRecord`
with a message that names the bad field, so the record can go to the dead-letter
topic. Encoding is for producers and tests and raises ``ValueError`` instead.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from pipeline.errors import InvalidArgument, InvalidRecord
from pipeline.limits import MAX_PK_BYTES

__all__ = [
    "FRAME_MAGIC",
    "MAX_METADATA_BYTES",
    "MAX_PK_BYTES",
    "OpType",
    "VectorOp",
    "decode_op_frame",
    "decode_op_json",
    "encode_op_frame",
    "encode_op_json",
    "is_op_frame",
    "op_metadata_bytes",
    "validate_vector",
]

FRAME_MAGIC: Final = b"VOF1"
MAX_METADATA_BYTES: Final = 65536
"""Default limit on one operation's metadata, in bytes of JSON."""
_METADATA_SETTING: Final = "vector_auto_buffer.max_metadata_bytes"

_HEADER = struct.Struct("<4sIH")
_OP_HEAD = struct.Struct("<BH")
_U32 = struct.Struct("<I")
_FIELDS: Final = frozenset({"op", "pk", "vector", "metadata"})

Float32s = npt.NDArray[np.float32]


class OpType(StrEnum):
    """What an operation does to its pk."""

    ADD = "add"
    UPDATE = "update"
    REMOVE = "remove"


_CODE_OF: Final = {OpType.ADD: 1, OpType.UPDATE: 2, OpType.REMOVE: 3}
_OP_OF_CODE: Final = {code: op for op, code in _CODE_OF.items()}


@dataclass(frozen=True, eq=False, slots=True)
class VectorOp:
    """One operation on one pk.

    ``vector`` is a one-dimensional float32 array for add and update and ``None``
    for remove; ``metadata`` is stored beside the vector and handed to search
    filters. Construction checks that shape (``ValueError``), not the dimension or
    finiteness, which the decoders and :func:`validate_vector` check. Two
    operations are equal when op, pk, vector and metadata are.
    """

    op: OpType
    pk: str
    vector: Float32s | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", OpType(self.op))
        if self.op is OpType.REMOVE:
            if self.vector is not None:
                raise InvalidArgument(f"remove of {self.pk!r} must not carry a vector")
        elif (
            not isinstance(self.vector, np.ndarray)
            or self.vector.dtype != np.float32
            or self.vector.ndim != 1
        ):
            raise InvalidArgument(
                f"{self.op.value} of {self.pk!r} needs a one-dimensional float32 numpy array "
                "as vector (use validate_vector to build one)"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorOp):
            return NotImplemented
        same_vector = (self.vector is None and other.vector is None) or (
            self.vector is not None
            and other.vector is not None
            and np.array_equal(self.vector, other.vector)
        )
        return (
            self.op is other.op
            and self.pk == other.pk
            and same_vector
            and self.metadata == other.metadata
        )

    __hash__ = None  # type: ignore[assignment]  # metadata and vector are mutable


# -- validation ---------------------------------------------------------------


_NUMBER_TYPES: Final = (int, float, list)  # a nested list is reported as not flat


def validate_vector(values: npt.ArrayLike, dimension: int) -> Float32s:
    """``values`` as a one-dimensional float32 array of ``dimension`` finite numbers.

    Raises :class:`~pipeline.errors.InvalidRecord` naming the field ``vector``:
    not numbers, nested, the wrong dimension ("vector has 767 dimensions; the
    index has 768"), or a NaN, infinite or beyond-float32 component. Returns
    ``values`` itself when it already is such an array, else a new array.
    """
    if isinstance(values, list | tuple) and not all(type(v) in _NUMBER_TYPES for v in values):
        # numpy would read "1.5" and True as numbers; JSON sources must send numbers.
        raise InvalidRecord("field 'vector' must be an array of numbers")
    try:
        # Values beyond float32 become inf, which the finiteness check reports.
        with np.errstate(over="ignore"):
            array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidRecord("field 'vector' must be an array of numbers") from None
    except OverflowError:  # an integer beyond even float64 (JSON allows any number of digits)
        raise InvalidRecord(
            "field 'vector' has a component beyond the float32 range; components must be "
            "finite float32 numbers (|x| < 3.4e38)"
        ) from None
    if array.ndim != 1:
        raise InvalidRecord("field 'vector' must be a flat array of numbers")
    if array.shape[0] != dimension:
        raise InvalidRecord(f"vector has {array.shape[0]} dimensions; the index has {dimension}")
    finite = np.isfinite(array)
    if not bool(finite.all()):
        index = int(np.argmin(finite))
        raise InvalidRecord(
            f"field 'vector' component {index} is {array[index]}; components must be finite "
            "float32 numbers (no NaN, no infinity, |x| < 3.4e38)"
        )
    return array


def _validate_pk(pk: object) -> str:
    if not isinstance(pk, str) or not pk:
        raise InvalidRecord("field 'pk' must be a non-empty string")
    size = len(pk.encode("utf-8"))
    if size > MAX_PK_BYTES:
        raise InvalidRecord(
            f"field 'pk' is {size} bytes of UTF-8; at most {MAX_PK_BYTES} (MAX_PK_BYTES)"
        )
    return pk


def _validate_metadata(metadata: object, size: int, max_metadata_bytes: int) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        raise InvalidRecord("field 'metadata' must be a JSON object")
    if size > max_metadata_bytes:
        raise InvalidRecord(
            f"field 'metadata' is {size} bytes of JSON; at most {max_metadata_bytes} "
            f"({_METADATA_SETTING})"
        )
    return metadata


def _op_type(raw: object) -> OpType:
    try:
        return OpType(raw)  # type: ignore[arg-type]  # anything from JSON; bad ones raise
    except ValueError:
        raise InvalidRecord(
            f"field 'op' must be one of 'add', 'update', 'remove'; got {raw!r}"
        ) from None


# -- JSON ---------------------------------------------------------------------


def encode_op_json(op: VectorOp) -> bytes:
    """The JSON operation; ``ValueError`` for a NaN or infinite component."""
    body: dict[str, object] = {"op": op.op.value, "pk": op.pk}
    if op.vector is not None:
        if not bool(np.isfinite(op.vector).all()):
            raise InvalidArgument(f"vector of {op.pk!r} has a NaN or infinite component")
        body["vector"] = op.vector
    if op.metadata:
        body["metadata"] = op.metadata
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_op_json(
    data: bytes, *, dimension: int, max_metadata_bytes: int = MAX_METADATA_BYTES
) -> VectorOp:
    """Decode and validate one JSON operation; ``InvalidRecord`` names the bad field."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidRecord("a vector operation must be a JSON object")
    unknown = raw.keys() - _FIELDS
    if unknown:
        raise InvalidRecord(f"unknown field(s): {', '.join(sorted(unknown))}")
    op = _op_type(raw.get("op", "add"))
    pk = _validate_pk(raw.get("pk"))
    metadata = raw.get("metadata")
    if metadata is None:
        metadata = {}
    elif isinstance(metadata, dict):
        metadata = _validate_metadata(metadata, op_metadata_bytes(metadata), max_metadata_bytes)
    else:
        metadata = _validate_metadata(metadata, 0, max_metadata_bytes)
    if op is OpType.REMOVE:
        return VectorOp(op, pk, None, metadata)
    values = raw.get("vector")
    if values is None:
        raise InvalidRecord(f"field 'vector' is required for op {op.value!r}")
    if not isinstance(values, list):
        raise InvalidRecord("field 'vector' must be an array of numbers")
    return VectorOp(op, pk, validate_vector(values, dimension), metadata)


# -- binary frame -------------------------------------------------------------


def encode_op_frame(ops: Iterable[VectorOp], dimension: int) -> bytes:
    """A ``VOF1`` frame holding ``ops`` in order; ``ValueError`` for an op that cannot go in."""
    if not 1 <= dimension <= 0xFFFF:
        raise InvalidArgument(f"dimension must be 1..65535, got {dimension}")
    parts: list[bytes] = [b""]
    count = 0
    for op in ops:
        pk = op.pk.encode("utf-8")
        if not pk or len(pk) > MAX_PK_BYTES:
            raise InvalidArgument(f"pk {op.pk!r} must be 1..{MAX_PK_BYTES} bytes of UTF-8")
        metadata = orjson.dumps(op.metadata) if op.metadata else b""
        parts += [_OP_HEAD.pack(_CODE_OF[op.op], len(pk)), pk, _U32.pack(len(metadata)), metadata]
        if op.vector is not None:
            if op.vector.shape != (dimension,):
                raise InvalidArgument(
                    f"vector of {op.pk!r} has shape {op.vector.shape}; the frame has "
                    f"dimension {dimension}"
                )
            parts.append(np.ascontiguousarray(op.vector, dtype="<f4").tobytes())
        count += 1
    parts[0] = _HEADER.pack(FRAME_MAGIC, count, dimension)
    return b"".join(parts)


def is_op_frame(data: bytes) -> bool:
    """Whether ``data`` starts like a ``VOF1`` frame (a JSON operation starts with ``{``)."""
    return data[:4] == FRAME_MAGIC


def decode_op_frame(
    data: bytes, *, dimension: int, max_metadata_bytes: int = MAX_METADATA_BYTES
) -> list[VectorOp]:
    """Every operation of a ``VOF1`` frame, validated; ``InvalidRecord`` names the bad field.

    Vectors are read-only float32 views into ``data``.
    """
    view = memoryview(data)
    size = len(view)
    if size < _HEADER.size or bytes(view[:4]) != FRAME_MAGIC:
        raise InvalidRecord("not a VOF1 vector frame (magic or header missing)")
    _, count, frame_dimension = _HEADER.unpack_from(view, 0)
    if frame_dimension != dimension:
        raise InvalidRecord(
            f"field 'dimension' of the frame is {frame_dimension}; the index has {dimension}"
        )
    vector_bytes = 4 * dimension
    pos = _HEADER.size
    out: list[VectorOp] = []
    for i in range(count):
        if pos + _OP_HEAD.size > size:
            raise InvalidRecord(f"frame truncated in op {i} (field 'op')")
        code, pk_len = _OP_HEAD.unpack_from(view, pos)
        pos += _OP_HEAD.size
        op = _OP_OF_CODE.get(code)
        if op is None:
            raise InvalidRecord(f"field 'op' of op {i} has unknown code {code}; expected 1, 2, 3")
        if pos + pk_len + _U32.size > size:
            raise InvalidRecord(f"frame truncated in op {i} (field 'pk')")
        try:
            pk = bytes(view[pos : pos + pk_len]).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRecord(f"field 'pk' of op {i} is not valid UTF-8") from None
        pk = _validate_pk(pk)
        pos += pk_len
        (meta_len,) = _U32.unpack_from(view, pos)
        pos += _U32.size
        if pos + meta_len > size:
            raise InvalidRecord(f"frame truncated in op {i} (field 'metadata')")
        metadata: object = {}
        if meta_len:
            if meta_len > max_metadata_bytes:
                raise InvalidRecord(
                    f"field 'metadata' of op {i} is {meta_len} bytes of JSON; "
                    f"at most {max_metadata_bytes} ({_METADATA_SETTING})"
                )
            try:
                metadata = orjson.loads(view[pos : pos + meta_len])
            except orjson.JSONDecodeError as exc:
                raise InvalidRecord(
                    f"field 'metadata' of op {i} is not valid JSON: {exc}"
                ) from None
        metadata = _validate_metadata(metadata, meta_len, max_metadata_bytes)
        pos += meta_len
        vector: Float32s | None = None
        if op is not OpType.REMOVE:
            if pos + vector_bytes > size:
                raise InvalidRecord(f"frame truncated in op {i} (field 'vector')")
            vector = validate_vector(
                np.frombuffer(view, dtype="<f4", count=dimension, offset=pos), dimension
            )
            pos += vector_bytes
        out.append(VectorOp(op, pk, vector, metadata))
    if pos != size:
        raise InvalidRecord(f"frame has {size - pos} trailing bytes after {count} ops")
    return out


def op_metadata_bytes(metadata: Mapping[str, Any]) -> int:
    """Bytes of ``metadata`` as compact JSON (``0`` for an empty mapping)."""
    return len(orjson.dumps(metadata)) if metadata else 0
