"""Payloads cut into columns by what they hold, and put back together byte for byte.

A TWB2 batch (:mod:`pipeline.wal.sections`) stores its payloads in three columns, each
compressed for its content:

``meta``
    Bytes that compress like text: a payload the codec does not recognise, whole; the
    header of a Gorilla block (``TGBK`` up to its chunk); a ``VOF1`` vector frame without
    its vectors (frame header, op codes, pks, metadata JSON).
``floats``
    The float32 vector bytes of every ``VOF1`` add and update, in order, stored
    *byte-shuffled*: with ``m`` floats, byte ``k`` (0 = least significant) of float ``j``
    is at ``k * m + j``. Sign and exponent bytes then sit together and compress; the
    low mantissa bytes, which are noise, sit together and cost zstd little time.
``chunks``
    The XOR chunk and CRC-32 of every Gorilla block (already compressed).

:class:`ColumnWriter` classifies each payload (:class:`PayloadKind`, by parsing it:
one that does not parse exactly is ``OPAQUE``) and splits it; :class:`ColumnReader`
takes the pieces back in the same order and raises
:class:`~pipeline.errors.CorruptBatch` for anything that does not fit. The layouts
parsed here are those of :mod:`pipeline.ts.block` and :mod:`pipeline.vectors.ops`,
read as bytes only (the WAL sits below both packages); nothing is validated beyond
what is needed to cut and rejoin, so a payload round-trips whatever it holds.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

import numpy as np

from pipeline.errors import CorruptBatch

__all__ = [
    "ColumnReader",
    "ColumnWriter",
    "PayloadKind",
    "meta_of",
    "shuffle_floats",
    "unshuffle_floats",
]

_BLOCK_MAGIC: Final = b"TGBK"
_BLOCK_KEY_LEN: Final = struct.Struct("<H")  # at offset 5
_BLOCK_HEAD: Final = 31  # a block's head is 31 + K bytes; then chunk (L) and CRC (4)
_BLOCK_CHUNK_LEN: Final = struct.Struct("<I")  # at offset 27 + K
_FRAME_MAGIC: Final = b"VOF1"
_FRAME_HEAD: Final = struct.Struct("<4sIH")  # magic, op count, dimension
_OP_HEAD: Final = struct.Struct("<BH")  # op code, pk length
_U32: Final = struct.Struct("<I")
_REMOVE: Final = 3
_MIN_OP_BYTES: Final = _OP_HEAD.size + _U32.size


class PayloadKind(IntEnum):
    """How a payload is cut into columns (a TWB2 index column, u8)."""

    OPAQUE = 0
    """Whole, in ``meta``."""
    GORILLA_BLOCK = 1
    """Head in ``meta``, chunk and CRC in ``chunks``."""
    VECTOR_FRAME = 2
    """Everything but the vectors in ``meta``; vectors in ``floats``."""


def shuffle_floats(data: bytes) -> bytes:
    """Float32 bytes (a multiple of 4) with byte ``k`` of float ``j`` moved to ``k*m + j``."""
    return np.frombuffer(data, np.uint8).reshape(-1, 4).T.tobytes()


def unshuffle_floats(data: bytes) -> bytes:
    """The inverse of :func:`shuffle_floats`."""
    planes = np.frombuffer(data, np.uint8).reshape(4, -1)
    out = np.empty((planes.shape[1], 4), np.uint8)
    for k in range(4):
        out[:, k] = planes[k]
    return out.tobytes()


def _block_split(payload: bytes) -> int:
    """Where a Gorilla block's head ends, or 0 when ``payload`` is not exactly one block."""
    size = len(payload)
    if size < _BLOCK_HEAD + 4:
        return 0
    (key_len,) = _BLOCK_KEY_LEN.unpack_from(payload, 5)
    head = _BLOCK_HEAD + key_len
    if size < head + 4:
        return 0
    (chunk_len,) = _BLOCK_CHUNK_LEN.unpack_from(payload, head - 4)
    return head if size == head + chunk_len + 4 else 0


def _frame_vectors(payload: bytes) -> list[int] | None:
    """Offsets of a ``VOF1`` frame's vectors, or ``None`` when it does not parse exactly."""
    size = len(payload)
    if size < _FRAME_HEAD.size:
        return None
    _, count, dimension = _FRAME_HEAD.unpack_from(payload, 0)
    if count * _MIN_OP_BYTES > size:
        return None
    vector_bytes = 4 * dimension
    op_head, u32 = _OP_HEAD.unpack_from, _U32.unpack_from
    pos = _FRAME_HEAD.size
    starts: list[int] = []
    for _ in range(count):
        if pos + _MIN_OP_BYTES > size:
            return None
        code, pk_len = op_head(payload, pos)
        pos += _OP_HEAD.size + pk_len
        if pos + 4 > size:
            return None
        pos += 4 + u32(payload, pos)[0]
        if code == _REMOVE:
            continue
        if code not in (1, 2) or pos + vector_bytes > size:
            return None
        starts.append(pos)
        pos += vector_bytes
    return starts if pos == size else None


class ColumnWriter:
    """Splits payloads into the three columns (see the module docstring)."""

    def __init__(self) -> None:
        self.meta: list[bytes] = []
        self.floats: list[bytes] = []
        self.chunks: list[bytes] = []

    def add(self, payload: bytes) -> PayloadKind:
        """Split ``payload`` into the columns; how it was split."""
        if payload.startswith(_BLOCK_MAGIC):
            head = _block_split(payload)
            if head:
                self.meta.append(payload[:head])
                self.chunks.append(payload[head:])
                return PayloadKind.GORILLA_BLOCK
        starts = _frame_vectors(payload) if payload.startswith(_FRAME_MAGIC) else None
        if starts is None:
            self.meta.append(payload)
            return PayloadKind.OPAQUE
        vector_bytes = 4 * _FRAME_HEAD.unpack_from(payload, 0)[2]
        at = 0
        for start in starts:
            self.meta.append(payload[at:start])
            at = start + vector_bytes
            self.floats.append(payload[start:at])
        self.meta.append(payload[at:])
        return PayloadKind.VECTOR_FRAME


def meta_of(payload: bytes) -> bytes:
    """The bytes ``payload`` puts into the ``meta`` column (a dictionary training sample)."""
    columns = ColumnWriter()
    columns.add(payload)
    return b"".join(columns.meta)


class ColumnReader:
    """Rebuilds payloads from decoded columns (``floats`` already unshuffled)."""

    def __init__(self, meta: bytes, floats: bytes, chunks: bytes) -> None:
        self._meta, self._floats, self._chunks = meta, floats, chunks
        self._at_meta = self._at_floats = self._at_chunks = 0

    def take(self, kind: PayloadKind, size: int, index: int) -> bytes:
        """Entry ``index``'s payload of ``size`` bytes; ``CorruptBatch`` if it does not fit."""
        if kind is PayloadKind.OPAQUE:
            payload = self._take_meta(size, index)
        elif kind is PayloadKind.GORILLA_BLOCK:
            payload = self._take_block(index)
        else:
            payload = self._take_frame(size, index)
        if len(payload) != size:
            raise CorruptBatch(
                f"WAL batch entry {index} rebuilds to {len(payload)} bytes; its index says {size}"
            )
        return payload

    def finish(self) -> None:
        """Raise ``CorruptBatch`` unless every column was used up exactly."""
        left = (
            len(self._meta) - self._at_meta,
            len(self._floats) - self._at_floats,
            len(self._chunks) - self._at_chunks,
        )
        if any(left):
            raise CorruptBatch(
                f"WAL batch sections hold bytes no entry uses (meta, floats, chunks: {left})"
            )

    def _take_meta(self, size: int, index: int) -> bytes:
        at = self._at_meta
        if at + size > len(self._meta):
            raise CorruptBatch(f"WAL batch meta section ends inside entry {index}")
        self._at_meta = at + size
        return self._meta[at : at + size]

    def _take_block(self, index: int) -> bytes:
        at = self._at_meta
        if at + _BLOCK_HEAD > len(self._meta):
            raise CorruptBatch(f"WAL batch meta section ends inside block head of entry {index}")
        (key_len,) = _BLOCK_KEY_LEN.unpack_from(self._meta, at + 5)
        head = self._take_meta(_BLOCK_HEAD + key_len, index)
        (chunk_len,) = _BLOCK_CHUNK_LEN.unpack_from(head, len(head) - 4)
        start = self._at_chunks
        end = start + chunk_len + 4
        if end > len(self._chunks):
            raise CorruptBatch(f"WAL batch chunks section ends inside entry {index}")
        self._at_chunks = end
        return head + self._chunks[start:end]

    def _take_frame(self, size: int, index: int) -> bytes:
        meta, floats = self._meta, self._floats
        start_meta, start_floats = self._at_meta, self._at_floats
        if start_meta + _FRAME_HEAD.size > len(meta):
            raise CorruptBatch(f"WAL batch meta section ends inside entry {index}")
        _, count, dimension = _FRAME_HEAD.unpack_from(meta, start_meta)
        if count * _MIN_OP_BYTES > size:  # every op holds at least this many bytes
            raise CorruptBatch(f"WAL batch entry {index} claims {count} ops in {size} bytes")
        vector_bytes = 4 * dimension
        op_head, u32 = _OP_HEAD.unpack_from, _U32.unpack_from
        parts: list[bytes] = []
        run = start_meta  # where the meta bytes not yet taken start
        at, at_floats = start_meta + _FRAME_HEAD.size, start_floats
        for _ in range(count):
            if at + _MIN_OP_BYTES > len(meta):
                raise CorruptBatch(f"WAL batch meta section ends inside entry {index}")
            code, pk_len = op_head(meta, at)
            at += _OP_HEAD.size + pk_len
            if at + 4 > len(meta):
                raise CorruptBatch(f"WAL batch meta section ends inside entry {index}")
            at += 4 + u32(meta, at)[0]
            if at > len(meta):
                raise CorruptBatch(f"WAL batch meta section ends inside entry {index}")
            if code != _REMOVE:
                if code not in (1, 2):
                    raise CorruptBatch(f"WAL batch entry {index} has op code {code}")
                if at_floats + vector_bytes > len(floats):
                    raise CorruptBatch(f"WAL batch floats section ends inside entry {index}")
                parts.append(meta[run:at])
                parts.append(floats[at_floats : at_floats + vector_bytes])
                at_floats += vector_bytes
                run = at
            if at - start_meta + at_floats - start_floats > size:
                raise CorruptBatch(f"WAL batch entry {index} rebuilds past its {size} bytes")
        parts.append(meta[run:at])
        self._at_meta, self._at_floats = at, at_floats
        return b"".join(parts)
