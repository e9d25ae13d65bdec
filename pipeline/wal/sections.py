"""The TWB2 body: a batch's entries as four sections, each compressed for its content.

The header in front of it is TWB1's (:mod:`pipeline.wal.batch`); only the body differs.
Every integer is little-endian; ``n`` is the header's entry count.

Body

    ========  ==========================================================
    size      field
    ========  ==========================================================
    1         present sections (u8): bit ``i`` set = section ``i`` of the
              table below is in the batch (an absent one decodes to
              nothing); bits 4-7 are 0
    per present section, in order:
    1         encoding (u8)
    1-5       decoded length in bytes (varint, at least 1)
    1-5       stored length in bytes (varint)
    then      the present sections' stored bytes, in the same order
    ========  ==========================================================

A varint is LEB128: seven bits a byte, least significant first, the top bit set on
every byte but the last; at most 5 bytes and below 2**32. Encodings: 0 = stored,
1 = zstd (one frame with its content size), 2 = zstd with the batch's dictionary (the
header's dictionary id). The decoded lengths add up to the header's uncompressed
length, the table and the stored lengths to its body length. (A one-entry batch of a
small JSON payload carries a 7-byte table.)

Sections

    =========  ==========================================================
    section    decoded content
    =========  ==========================================================
    index      five columns of ``n`` values each: LSN - first LSN (u32),
               entry type (u8), timestamp (i64, ms) minus the previous
               entry's (the first minus 0; wrapping), payload kind (u8,
               :class:`~pipeline.wal.columns.PayloadKind`), payload length
               (u32); ``18 n`` bytes
    meta       the ``meta`` column of :mod:`pipeline.wal.columns`
    floats     the ``floats`` column, byte-shuffled (a multiple of 4 bytes)
    chunks     the ``chunks`` column
    =========  ==========================================================

With codec zstd the encoder writes every section at the batch's level, ``meta`` with
the dictionary when there is one, and stores a section whose frame would not be
smaller. With codec none every section is stored. Gorilla chunks are compressed
already, but series sampled at the same instants share their timestamp bits: on
``themis bench wal``'s blocks zstd level 1 takes 12 % off the chunks and level 3 25 %,
so a blocks-only WAL would ship more as TWB2 than as TWB1 if they got level 1 only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import zstandard

from pipeline.errors import CorruptBatch, InvalidArgument
from pipeline.limits import MAX_DECOMPRESSED_BYTES
from pipeline.wal.columns import (
    ColumnReader,
    ColumnWriter,
    PayloadKind,
    shuffle_floats,
    unshuffle_floats,
)
from pipeline.wal.entry import EntryType, WalEntry

__all__ = ["SECTIONS", "bounded_decompress", "decode_body", "encode_body", "encode_varint"]

SECTIONS: Final = ("index", "meta", "floats", "chunks")

_STORED: Final = 0
_ZSTD: Final = 1
_ZSTD_DICTIONARY: Final = 2
_ALL_PRESENT: Final = (1 << len(SECTIONS)) - 1
_VARINT_BYTES: Final = 5
_INDEX_ENTRY_BYTES: Final = 4 + 1 + 8 + 1 + 4
_ENTRY_TYPES: Final = np.array([int(t) for t in EntryType], np.uint8)
_KINDS: Final = tuple(PayloadKind)


def _index(entries: Sequence[WalEntry], first_lsn: int, kinds: bytearray) -> bytes:
    n = len(entries)
    deltas = np.fromiter((e.lsn - first_lsn for e in entries), np.uint32, n)
    types = np.fromiter((e.type for e in entries), np.uint8, n)
    stamps = np.fromiter((e.timestamp_ms for e in entries), np.int64, n)
    sizes = np.fromiter((len(e.payload) for e in entries), np.uint32, n)
    steps = np.diff(stamps, prepend=np.int64(0)) if n else stamps
    return b"".join(
        (deltas.tobytes(), types.tobytes(), steps.tobytes(), bytes(kinds), sizes.tobytes())
    )


def encode_body(
    entries: Sequence[WalEntry],
    first_lsn: int,
    level: int | None,
    dictionary: zstandard.ZstdCompressionDict | None,
) -> tuple[list[bytes], int]:
    """``(body as its pieces, decoded bytes)`` of ``entries``; ``level`` ``None`` stores
    every section. The pieces are joined once, with the header (a batch is megabytes)."""
    columns = ColumnWriter()
    kinds = bytearray(columns.add(e.payload) for e in entries)
    floats = b"".join(columns.floats)
    decoded = (
        _index(entries, first_lsn, kinds),
        b"".join(columns.meta),
        shuffle_floats(floats) if floats else b"",
        b"".join(columns.chunks),
    )
    total = sum(map(len, decoded))
    if total > MAX_DECOMPRESSED_BYTES:
        raise InvalidArgument(
            f"a batch of {total} decoded bytes is over MAX_DECOMPRESSED_BYTES "
            f"({MAX_DECOMPRESSED_BYTES}); ship fewer entries per batch"
        )
    present = 0
    table = bytearray(1)
    stored: list[bytes] = []
    for i, (name, data) in enumerate(zip(SECTIONS, decoded, strict=True)):
        if not data:
            continue
        present |= 1 << i
        encoding, out = _STORED, data
        if level is not None:
            with_dictionary = name == "meta" and dictionary is not None
            compressor = (
                zstandard.ZstdCompressor(level=level, dict_data=dictionary)
                if with_dictionary
                else zstandard.ZstdCompressor(level=level)
            )
            packed = compressor.compress(data)
            if len(packed) < len(data):
                encoding = _ZSTD_DICTIONARY if with_dictionary else _ZSTD
                out = packed
        table.append(encoding)
        table += encode_varint(len(data)) + encode_varint(len(out))
        stored.append(out)
    table[0] = present
    return [bytes(table), *stored], total


def encode_varint(value: int) -> bytes:
    """``value`` (>= 0) as a LEB128 varint, the table's lengths."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(body: memoryview, at: int, what: str) -> tuple[int, int]:
    """``(value, position after it)``; ``CorruptBatch`` past the table or 5 bytes."""
    value = 0
    for i in range(_VARINT_BYTES):
        if at + i >= len(body):
            raise CorruptBatch(f"{what}: section table cut short")
        byte = body[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >= 1 << 32:
                break
            return value, at + i + 1
    raise CorruptBatch(f"{what}: section table holds a length of more than 32 bits")


def bounded_decompress(
    decompressor: zstandard.ZstdDecompressor, compressed: memoryview, limit: int, what: str
) -> bytes:
    """The frame's content, never more than ``limit`` bytes held in memory.

    zstandard ignores ``max_output_size`` when the frame declares its content size, so
    the declared size is checked first; a frame without one is read as a stream and
    cut off one byte past the limit. ``what`` names the frame in errors.
    """
    declared = zstandard.frame_content_size(compressed)
    if declared > limit:
        raise CorruptBatch(f"{what}: its zstd frame declares {declared} bytes, the header {limit}")
    if declared >= 0:
        return decompressor.decompress(compressed)
    out = bytearray()
    with decompressor.stream_reader(compressed) as reader:
        while len(out) <= limit:
            chunk = reader.read(min(1 << 20, limit + 1 - len(out)))
            if not chunk:
                break
            out += chunk
    return bytes(out)


def _sections(
    body: memoryview,
    uncompressed: int,
    dictionary: zstandard.ZstdCompressionDict | None,
    what: str,
) -> list[bytes]:
    """Every section decoded, each checked against its declared lengths."""
    if not len(body) or body[0] & ~_ALL_PRESENT:
        raise CorruptBatch(f"{what}: body has no table of at most {len(SECTIONS)} sections")
    present = body[0]
    table: list[tuple[int, int, int]] = []
    at = 1
    for i in range(len(SECTIONS)):
        if not present & 1 << i:
            table.append((_STORED, 0, 0))
            continue
        if at >= len(body):
            raise CorruptBatch(f"{what}: section table cut short")
        encoding = body[at]
        size, at = _read_varint(body, at + 1, what)
        stored_size, at = _read_varint(body, at, what)
        if not size:
            raise CorruptBatch(f"{what}: section {SECTIONS[i]} is present but empty")
        table.append((encoding, size, stored_size))
    if sum(t[1] for t in table) != uncompressed:
        raise CorruptBatch(f"{what}: sections decode to other than the header's {uncompressed}")
    if at + sum(t[2] for t in table) != len(body):
        raise CorruptBatch(f"{what}: section lengths do not add up to the body's {len(body)}")
    out = []
    for name, (encoding, size, stored_size) in zip(SECTIONS, table, strict=True):
        stored = body[at : at + stored_size]
        at += stored_size
        if encoding == _STORED:
            data = bytes(stored)
        elif encoding in (_ZSTD, _ZSTD_DICTIONARY):
            if encoding == _ZSTD_DICTIONARY and dictionary is None:
                raise CorruptBatch(f"{what}: section {name} needs a dictionary the header lacks")
            decompressor = (
                zstandard.ZstdDecompressor(dict_data=dictionary)
                if encoding == _ZSTD_DICTIONARY and dictionary is not None
                else zstandard.ZstdDecompressor()
            )
            try:
                data = bounded_decompress(decompressor, stored, size, f"{what} section {name}")
            except zstandard.ZstdError as exc:
                raise CorruptBatch(f"{what}: section {name} does not decompress: {exc}") from None
        else:
            raise CorruptBatch(f"{what}: section {name} has unknown encoding {encoding}")
        if len(data) != size:
            raise CorruptBatch(f"{what}: section {name} is {len(data)} bytes, declared {size}")
        out.append(data)
    return out


def decode_body(
    body: memoryview,
    *,
    first_lsn: int,
    last_lsn: int,
    count: int,
    uncompressed: int,
    dictionary: zstandard.ZstdCompressionDict | None,
) -> list[WalEntry]:
    """The entries of a TWB2 body whose header says the rest; ``CorruptBatch`` on any misfit.

    ``uncompressed`` was checked against ``MAX_DECOMPRESSED_BYTES`` by the header, and
    every section is bounded by its own declared length before it is decompressed.
    """
    what = f"WAL batch {first_lsn}..{last_lsn}"
    index, meta, floats, chunks = _sections(body, uncompressed, dictionary, what)
    if len(index) != _INDEX_ENTRY_BYTES * count:
        raise CorruptBatch(f"{what}: index is {len(index)} bytes for {count} entries")
    if len(floats) % 4:
        raise CorruptBatch(f"{what}: floats section is {len(floats)} bytes, not whole float32s")
    at = 0

    def column(dtype: str, width: int) -> np.ndarray:
        nonlocal at
        values = np.frombuffer(index, dtype, count, at)
        at += width * count
        return values

    deltas = column("<u4", 4).astype(np.int64)
    types = column("u1", 1)
    stamps = np.cumsum(column("<i8", 8), dtype=np.int64)
    kinds = column("u1", 1)
    sizes = column("<u4", 4)
    if count and (bool(np.any(np.diff(deltas) <= 0)) or first_lsn + int(deltas[-1]) > last_lsn):
        raise CorruptBatch(f"{what}: entry LSNs out of order or outside the range")
    if not bool(np.isin(types, _ENTRY_TYPES).all()):
        raise CorruptBatch(f"{what}: an entry has an unknown type")
    if count and int(kinds.max()) >= len(_KINDS):
        raise CorruptBatch(f"{what}: an entry has an unknown payload kind")
    if int(sizes.sum(dtype=np.uint64)) != len(meta) + len(floats) + len(chunks):
        raise CorruptBatch(f"{what}: payload lengths do not add up to the sections")
    reader = ColumnReader(meta, unshuffle_floats(floats) if floats else b"", chunks)
    columns = zip(
        deltas.tolist(),
        types.tolist(),
        stamps.tolist(),
        kinds.tolist(),
        sizes.tolist(),
        strict=True,
    )
    entries = [
        WalEntry(first_lsn + delta, EntryType(kind_of), stamp, reader.take(_KINDS[kind], size, i))
        for i, (delta, kind_of, stamp, kind, size) in enumerate(columns)
    ]
    reader.finish()
    return entries
