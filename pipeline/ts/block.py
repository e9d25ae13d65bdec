"""The Gorilla block: one series chunk with the header that names and guards it.

A block is the unit the time-series path stores and ships. Every integer is
little-endian; ``K`` is the UTF-8 length of the series key, ``L`` the chunk length:

=============  ==========  =====================================================
offset         size        field
=============  ==========  =====================================================
0              4           magic ``b"TGBK"``
4              1           codec version (u8), currently 1 = Prometheus XOR chunk
5              2           series key length ``K`` in bytes (u16)
7              K           series key, UTF-8
7 + K          4           point count (u32), equal to the chunk's own count
11 + K         8           first timestamp, milliseconds since the epoch (i64)
19 + K         8           last timestamp, milliseconds since the epoch (i64)
27 + K         4           chunk length ``L`` in bytes (u32)
31 + K         L           chunk: Prometheus XOR chunk bytes, see ``pipeline.ts.gorilla``
31 + K + L     4           CRC-32 (``zlib.crc32``, the ISO-HDLC polynomial, not CRC-32C)
                           of bytes ``[0, 31 + K + L)``, header and chunk together
=============  ==========  =====================================================

"First" and "last" are the first and last samples in append order. A block is
``35 + K + L`` bytes with nothing after the checksum.

:func:`block_id` names a block by its content, so replaying the same input
produces the same id and stores can deduplicate on it.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from pipeline.errors import CorruptBlock, InvalidArgument
from pipeline.ts.gorilla import MAX_POINTS, decode_chunk, encode_chunk

__all__ = [
    "CODEC_VERSION",
    "MAGIC",
    "GorillaBlock",
    "block_id",
    "decode_block",
    "encode_block",
]

MAGIC: Final = b"TGBK"
CODEC_VERSION: Final = 1
"""Codec version written by :func:`encode_block`: 1 = Prometheus XOR chunk."""

_PREFIX: Final = struct.Struct("<4sBH")  # magic, codec version, key length
_FIELDS: Final = struct.Struct("<IqqI")  # count, first ts, last ts, chunk length
_CRC: Final = struct.Struct("<I")
_MAX_KEY_BYTES: Final = 0xFFFF
_MIN_BLOCK_BYTES: Final = _PREFIX.size + _FIELDS.size + _CRC.size


@dataclass(frozen=True, slots=True)
class GorillaBlock:
    """A decoded block header plus its still-compressed chunk.

    ``first_ts_ms`` and ``last_ts_ms`` are milliseconds since the epoch of the
    first and last sample in append order; ``chunk`` holds the Prometheus XOR
    chunk bytes.
    """

    series_key: str
    count: int
    first_ts_ms: int
    last_ts_ms: int
    codec_version: int
    chunk: bytes

    @property
    def block_id(self) -> str:
        """Content id of this block; see :func:`block_id`."""
        return block_id(self.series_key, self.first_ts_ms, self.last_ts_ms, self.count, self.chunk)

    def points(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Decompress the chunk into ``(timestamps_ms, values)`` read-only arrays.

        Raises :class:`~pipeline.errors.CorruptBlock` if the chunk does not decode
        or disagrees with the header's count or first/last timestamps.
        """
        try:
            timestamps, values = decode_chunk(self.chunk)
        except CorruptBlock as exc:
            raise CorruptBlock(f"block for {self.series_key!r}: {exc}") from exc
        if timestamps.size != self.count:
            raise CorruptBlock(
                f"block for {self.series_key!r}: header says {self.count} points, "
                f"chunk holds {timestamps.size}"
            )
        if self.count and (
            int(timestamps[0]) != self.first_ts_ms or int(timestamps[-1]) != self.last_ts_ms
        ):
            raise CorruptBlock(
                f"block for {self.series_key!r}: header spans {self.first_ts_ms}..{self.last_ts_ms}"
                f" ms, chunk spans {int(timestamps[0])}..{int(timestamps[-1])} ms"
            )
        return timestamps, values

    def to_bytes(self) -> bytes:
        """Serialise the block in the layout of the module docstring."""
        key = self.series_key.encode("utf-8")
        if len(key) > _MAX_KEY_BYTES:
            raise InvalidArgument(
                f"series key is {len(key)} bytes of UTF-8; a block allows at most {_MAX_KEY_BYTES}"
            )
        body = b"".join(
            (
                _PREFIX.pack(MAGIC, self.codec_version, len(key)),
                key,
                _FIELDS.pack(self.count, self.first_ts_ms, self.last_ts_ms, len(self.chunk)),
                self.chunk,
            )
        )
        return body + _CRC.pack(zlib.crc32(body))


def block_id(series_key: str, first_ts_ms: int, last_ts_ms: int, count: int, chunk: bytes) -> str:
    """Deterministic 32-hex-digit id of a block's content.

    BLAKE2b with a 16-byte digest over the length-prefixed UTF-8 series key, the
    first and last timestamps (i64 milliseconds), the count (u32) and the chunk
    bytes, all little-endian. Equal inputs give equal ids across processes and
    replays; the codec version is implied by the chunk and not hashed.
    """
    key = series_key.encode("utf-8")
    digest = hashlib.blake2b(digest_size=16, person=b"themis-gorilla")
    digest.update(struct.pack("<H", len(key)))
    digest.update(key)
    digest.update(struct.pack("<qqI", first_ts_ms, last_ts_ms, count))
    digest.update(chunk)
    return digest.hexdigest()


def encode_block(
    series_key: str,
    timestamps: npt.NDArray[np.integer[Any]],
    values: npt.NDArray[np.floating[Any]],
) -> bytes:
    """Compress one series' samples into a block (layout in the module docstring).

    ``timestamps`` are integer milliseconds and ``values`` floats, 1 to 65535 of
    each. Raises :class:`~pipeline.errors.InvalidArgument` like
    :func:`pipeline.ts.gorilla.encode_chunk`, and for a series key longer than 65535
    bytes of UTF-8.
    """
    chunk = encode_chunk(timestamps, values)
    ts = np.asarray(timestamps)
    block = GorillaBlock(
        series_key=series_key,
        count=int(ts.size),
        first_ts_ms=int(ts[0]),
        last_ts_ms=int(ts[-1]),
        codec_version=CODEC_VERSION,
        chunk=chunk,
    )
    return block.to_bytes()


def encode_blocks(
    series_key: str,
    timestamps: npt.NDArray[np.integer[Any]],
    values: npt.NDArray[np.floating[Any]],
) -> list[GorillaBlock]:
    """One series' samples as blocks of at most :data:`~pipeline.ts.gorilla.MAX_POINTS` each.

    The samples stay in the order given; raises like :func:`encode_block`.
    """
    blocks = []
    for start in range(0, int(np.asarray(timestamps).size), MAX_POINTS):
        ts = timestamps[start : start + MAX_POINTS]
        vs = values[start : start + MAX_POINTS]
        chunk = encode_chunk(ts, vs)
        blocks.append(
            GorillaBlock(series_key, int(ts.size), int(ts[0]), int(ts[-1]), CODEC_VERSION, chunk)
        )
    return blocks


def decode_block(data: bytes | bytearray | memoryview) -> GorillaBlock:
    """Parse and verify a block; the chunk stays compressed until :meth:`GorillaBlock.points`.

    Raises :class:`~pipeline.errors.CorruptBlock` naming the problem when the
    magic, version, lengths, checksum, series key or chunk count header are
    wrong. The checksum covers every byte, so any single flipped bit is caught.
    """
    raw = bytes(data)
    if len(raw) < _MIN_BLOCK_BYTES:
        raise CorruptBlock(
            f"block is {len(raw)} bytes, shorter than the {_MIN_BLOCK_BYTES}-byte minimum"
        )
    magic, version, key_len = _PREFIX.unpack_from(raw, 0)
    if magic != MAGIC:
        raise CorruptBlock(f"not a Gorilla block: magic {magic!r}, expected {MAGIC!r}")
    fields_at = _PREFIX.size + key_len
    if len(raw) < fields_at + _FIELDS.size + _CRC.size:
        raise CorruptBlock(
            f"block is {len(raw)} bytes, too short for its {key_len}-byte series key"
        )
    count, first_ts_ms, last_ts_ms, chunk_len = _FIELDS.unpack_from(raw, fields_at)
    chunk_at = fields_at + _FIELDS.size
    expected_len = chunk_at + chunk_len + _CRC.size
    if len(raw) != expected_len:
        raise CorruptBlock(
            f"block is {len(raw)} bytes but its header describes {expected_len} bytes "
            f"(truncated, padded or a damaged length field)"
        )
    (stored_crc,) = _CRC.unpack_from(raw, expected_len - _CRC.size)
    actual_crc = zlib.crc32(memoryview(raw)[: expected_len - _CRC.size])
    if stored_crc != actual_crc:
        raise CorruptBlock(
            f"block checksum mismatch: stored crc32 {stored_crc:08x}, computed {actual_crc:08x}"
        )
    if version != CODEC_VERSION:
        raise CorruptBlock(
            f"block codec version {version} is not supported (this build reads {CODEC_VERSION})"
        )
    try:
        series_key = raw[_PREFIX.size : fields_at].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptBlock(f"block series key is not valid UTF-8: {exc}") from exc
    chunk = raw[chunk_at : chunk_at + chunk_len]
    chunk_count = int.from_bytes(chunk[:2], "big") if len(chunk) >= 2 else -1
    if chunk_count != count:
        raise CorruptBlock(
            f"block for {series_key!r}: header says {count} points, chunk header says {chunk_count}"
        )
    return GorillaBlock(
        series_key=series_key,
        count=count,
        first_ts_ms=first_ts_ms,
        last_ts_ms=last_ts_ms,
        codec_version=version,
        chunk=chunk,
    )
