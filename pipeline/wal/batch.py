"""The shipped batch: consecutive WAL entries, serialized, compressed, checksummed.

Two formats share the header below: TWB1 (magic ``TWB1``, version 1) compresses the
serialized entries as one zstd frame; TWB2 (magic ``TWB2``, version 2, the default
since issue 17) groups the payloads by content and compresses each group for what it
holds (:mod:`pipeline.wal.sections`). A replica reads both. The version is a new
magic rather than a flag in TWB1 so that a replica built before TWB2 refuses such a
batch at its magic ("not a WAL batch") instead of misreading its body.

A batch covers the LSN range ``first_lsn..last_lsn`` of one partition of the
primary's WAL (byte 7; LSNs count per WAL partition, :mod:`pipeline.wal.entry`). Every
entry in the range is in the batch unless its record could not be read (an offset
without an entry); each entry carries its LSN as a delta from ``first_lsn``, so a
replica that applied up to ``first_lsn - 1`` can apply the batch and move to
``last_lsn``.

Layout (every integer little-endian)

    ======  ======  ====================================================
    offset  size    field
    ======  ======  ====================================================
    0       4       magic ``TWB1`` or ``TWB2``
    4       1       format version (u8), 1 or 2 (the magic's digit); bit 7
                    set (0x81, 0x82) when byte 7 names a WAL partition >= 1
    5       1       codec (u8): 0 = none, 1 = zstd
    6       1       flags (u8): bit 0 = the batch carries its dictionary
    7       1       WAL partition (u8) the LSNs count in, 0-255; written 0
                    (reserved) before issue 17's partitioned WAL, so a
                    batch of an older primary is partition 0's. A batch of
                    partition >= 1 sets bit 7 of byte 4: a replica built
                    before partitions refuses it ("format 129/130 is not
                    supported") instead of applying it as partition 0's,
                    and takes partition 0's batches as it always did
    8       4       dictionary id (u32), 0 = no dictionary
    12      8       first LSN (u64)
    20      8       last LSN (u64)
    28      4       entry count (u32)
    32      8       uncompressed body length in bytes (u64); TWB2: the sum
                    of its sections' decoded lengths
    40      4       compressed body length in bytes (u32)
    44      2       primary id length ``P`` (u16)
    46      4       carried dictionary length ``D`` (u32), 0 without the flag
    50      4       CRC-32 (``zlib.crc32``) of every byte of the batch except
                    these four: header, primary id, dictionary and body
    54      P       primary id, UTF-8
    54+P    D       zstd dictionary bytes (only with flag bit 0)
    54+P+D  B       body: the entries, compressed with the codec
    ======  ======  ====================================================

TWB1 uncompressed body: per entry, in LSN order::

    u32 LSN - first LSN | u8 entry type | i64 timestamp (ms) | u32 payload length | payload

A dictionary is a zstd dictionary made by :func:`train_dictionary`; its id is
zstd's own dictionary id (in the dictionary's bytes), so two different
dictionaries practically never share an id. A replica keeps every dictionary it
received (see :class:`pipeline.replication.replica.ReplicaState`); a batch whose dictionary
the replica does not know raises :class:`UnknownDictionary` and must be re-sent
with the dictionary attached.

Compression ratio of a batch: uncompressed body bytes over the batch's bytes on the
wire (:attr:`BatchHeader.compression_ratio`), so a batch with codec ``none`` has a
ratio a little below 1 (its header).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import zstandard

from pipeline.errors import CorruptBatch, InvalidArgument, UnknownDictionary
from pipeline.limits import MAX_DECOMPRESSED_BYTES
from pipeline.wal.dictionary import Dictionary, train_dictionary
from pipeline.wal.entry import EntryType, WalEntry
from pipeline.wal.sections import bounded_decompress, decode_body, encode_body

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAGIC_V1",
    "MAX_PARTITION",
    "MAX_UNCOMPRESSED_BYTES",
    "BatchHeader",
    "Codec",
    "Dictionary",
    "decode_batch",
    "encode_batch",
    "read_header",
    "train_dictionary",
]

MAGIC_V1: Final = b"TWB1"
MAGIC: Final = b"TWB2"
FORMAT_VERSION: Final = 2
"""What :func:`encode_batch` writes unless told ``format_version=1``."""
_MAGIC_OF: Final = {1: MAGIC_V1, 2: MAGIC}
MAX_UNCOMPRESSED_BYTES: Final = MAX_DECOMPRESSED_BYTES
"""A batch claiming a larger body is refused before decompression (a bomb guard)."""

MAX_PARTITION: Final = 0xFF
"""The highest WAL partition a batch can name (its header holds it in one byte)."""
_FLAG_CARRIES_DICTIONARY: Final = 0x01
_PARTITIONED: Final = 0x80
"""Bit 7 of the format version byte: byte 7 names a WAL partition >= 1."""
_HEAD: Final = struct.Struct("<4sBBBBIQQIQIHI")  # up to, not including, the CRC
_CRC: Final = struct.Struct("<I")
_HEADER_BYTES: Final = _HEAD.size + _CRC.size
_ENTRY: Final = struct.Struct("<IBqI")


class Codec(IntEnum):
    """How a batch body is compressed."""

    NONE = 0
    ZSTD = 1

    @classmethod
    def from_name(cls, name: str) -> Codec:
        """``"none"`` or ``"zstd"`` (the values of ``features.compressed_wal_shipping``)."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise InvalidArgument(
                f"unknown WAL compression {name!r}; allowed: none, zstd"
            ) from None


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The decoded header of a batch; lengths in bytes."""

    codec: Codec
    dictionary_id: int
    primary_id: str
    first_lsn: int
    last_lsn: int
    entry_count: int
    uncompressed_bytes: int
    body_bytes: int
    batch_bytes: int
    checksum: int
    dictionary: Dictionary | None
    """The dictionary the batch carries (flag bit 0), else ``None``."""
    format_version: int = FORMAT_VERSION
    """1 (TWB1) or 2 (TWB2)."""
    partition: int = 0
    """The WAL partition whose LSNs the batch covers."""

    @property
    def compression_ratio(self) -> float:
        """Uncompressed body bytes over batch bytes (header included)."""
        return self.uncompressed_bytes / self.batch_bytes if self.batch_bytes else 0.0


def _serialize_entries(entries: Sequence[WalEntry], first_lsn: int) -> bytes:
    parts: list[bytes] = []
    for entry in entries:
        parts.append(
            _ENTRY.pack(
                entry.lsn - first_lsn, int(entry.type), entry.timestamp_ms, len(entry.payload)
            )
        )
        parts.append(entry.payload)
    return b"".join(parts)


def encode_batch(
    entries: Sequence[WalEntry],
    codec: Codec | str,
    level: int,
    primary_id: str,
    dictionary: Dictionary | None = None,
    *,
    first_lsn: int | None = None,
    last_lsn: int | None = None,
    carry_dictionary: bool = True,
    format_version: int = FORMAT_VERSION,
    partition: int = 0,
) -> bytes:
    """A batch of ``entries`` (in increasing LSN order) as in the module docstring.

    ``level`` is the zstd level (1-22, ignored for ``none``). ``dictionary`` (zstd
    only) compresses with a trained dictionary; ``carry_dictionary`` puts its bytes
    into the batch so any replica can decompress it. ``first_lsn``/``last_lsn``
    default to the first and last entry's LSN; a wider range says that the LSNs in
    it without an entry hold nothing to apply. ``format_version`` 1 writes TWB1 (for
    replicas built before TWB2), 2 TWB2. ``partition`` is the WAL partition of the
    entries (0-255).
    """
    codec = Codec.from_name(codec) if isinstance(codec, str) else codec
    if format_version not in _MAGIC_OF:
        raise InvalidArgument(f"WAL batch format {format_version} is unknown; allowed: 1, 2")
    if not 0 <= partition <= MAX_PARTITION:
        raise InvalidArgument(f"WAL partition {partition} is outside 0..{MAX_PARTITION}")
    if not entries and (first_lsn is None or last_lsn is None):
        raise InvalidArgument("an empty batch needs first_lsn and last_lsn")
    first = entries[0].lsn if first_lsn is None else first_lsn
    last = entries[-1].lsn if last_lsn is None else last_lsn
    if first < 1 or last < first:
        raise InvalidArgument(f"LSN range {first}..{last} is not a range of LSNs >= 1")
    previous = first - 1
    for entry in entries:
        if not previous < entry.lsn <= last:
            raise InvalidArgument(
                f"entry LSN {entry.lsn} is out of order or outside {first}..{last}"
            )
        previous = entry.lsn
    if last - first > 0xFFFFFFFF:
        raise InvalidArgument(f"LSN range {first}..{last} is wider than 2**32 entries")
    use_dict = dictionary if codec is Codec.ZSTD else None
    if format_version == 2:
        body, body_bytes = encode_body(
            entries,
            first,
            level if codec is Codec.ZSTD else None,
            use_dict.zstd() if use_dict is not None else None,
        )
    else:
        compressed, body_bytes = _encode_v1_body(entries, first, codec, level, use_dict)
        body = [compressed]
    key = primary_id.encode("utf-8")
    if len(key) > 0xFFFF:
        raise InvalidArgument("primary id is longer than 65535 bytes of UTF-8")
    carried = use_dict.data if use_dict is not None and carry_dictionary else b""
    head = _HEAD.pack(
        _MAGIC_OF[format_version],
        format_version | (_PARTITIONED if partition else 0),
        int(codec),
        _FLAG_CARRIES_DICTIONARY if carried else 0,
        partition,
        use_dict.dictionary_id if use_dict is not None else 0,
        first,
        last,
        len(entries),
        body_bytes,
        sum(map(len, body)),
        len(key),
        len(carried),
    )
    crc = zlib.crc32(carried, zlib.crc32(key, zlib.crc32(head)))
    for piece in body:
        crc = zlib.crc32(piece, crc)
    return b"".join((head, _CRC.pack(crc), key, carried, *body))


def _encode_v1_body(
    entries: Sequence[WalEntry],
    first: int,
    codec: Codec,
    level: int,
    dictionary: Dictionary | None,
) -> tuple[bytes, int]:
    """``(compressed body, uncompressed length)`` of a TWB1 batch."""
    body = _serialize_entries(entries, first)
    if codec is not Codec.ZSTD:
        return body, len(body)
    compressor = (
        zstandard.ZstdCompressor(level=level, dict_data=dictionary.zstd())
        if dictionary is not None
        else zstandard.ZstdCompressor(level=level)
    )
    return compressor.compress(body), len(body)


def read_header(data: bytes | bytearray | memoryview) -> BatchHeader:
    """Parse and verify a batch's header and checksum without decompressing it.

    Raises :class:`CorruptBatch` naming what is wrong.
    """
    view = memoryview(data)
    if len(view) < _HEADER_BYTES:
        raise CorruptBatch(
            f"WAL batch is {len(view)} bytes, shorter than its {_HEADER_BYTES}-byte header"
        )
    (
        magic,
        version,
        raw_codec,
        flags,
        partition,
        dictionary_id,
        first_lsn,
        last_lsn,
        count,
        uncompressed,
        body_len,
        key_len,
        dict_len,
    ) = _HEAD.unpack_from(view, 0)
    if magic not in (MAGIC, MAGIC_V1):
        raise CorruptBatch(
            f"not a WAL batch: magic {bytes(magic)!r}, expected {MAGIC!r} or {MAGIC_V1!r}"
        )
    expected = _HEADER_BYTES + key_len + dict_len + body_len
    if len(view) != expected:
        raise CorruptBatch(
            f"WAL batch is {len(view)} bytes but its header describes {expected} "
            "(truncated, padded or a damaged length field)"
        )
    (stored,) = _CRC.unpack_from(view, _HEAD.size)
    actual = zlib.crc32(view[_HEADER_BYTES:], zlib.crc32(view[: _HEAD.size]))
    if stored != actual:
        raise CorruptBatch(
            f"WAL batch {first_lsn}..{last_lsn} checksum mismatch: stored crc32 {stored:08x}, "
            f"computed {actual:08x}; send the range again"
        )
    partitioned = bool(version & _PARTITIONED)
    version &= ~_PARTITIONED
    if partitioned != bool(partition):
        raise CorruptBatch(
            f"WAL batch names partition {partition} but its format byte says "
            f"{'a partition >= 1' if partitioned else 'partition 0'}"
        )
    if _MAGIC_OF.get(version) != magic:
        raise CorruptBatch(
            f"WAL batch format {version} is not supported under magic {bytes(magic)!r} "
            "(this build reads TWB1 version 1 and TWB2 version 2)"
        )
    try:
        codec = Codec(raw_codec)
    except ValueError:
        raise CorruptBatch(f"WAL batch has unknown codec {raw_codec}") from None
    if not 1 <= first_lsn <= last_lsn:  # what encode_batch refuses to write
        raise CorruptBatch(
            f"WAL batch claims LSNs {first_lsn}..{last_lsn}, not a range of LSNs >= 1"
        )
    if uncompressed > MAX_UNCOMPRESSED_BYTES:
        raise CorruptBatch(
            f"WAL batch claims {uncompressed} uncompressed bytes; at most "
            f"{MAX_UNCOMPRESSED_BYTES} (MAX_DECOMPRESSED_BYTES)"
        )
    try:
        primary_id = bytes(view[_HEADER_BYTES : _HEADER_BYTES + key_len]).decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptBatch("WAL batch primary id is not valid UTF-8") from None
    dictionary = None
    if flags & _FLAG_CARRIES_DICTIONARY:
        at = _HEADER_BYTES + key_len
        dictionary = Dictionary(dictionary_id, bytes(view[at : at + dict_len]))
    return BatchHeader(
        codec=codec,
        dictionary_id=dictionary_id,
        primary_id=primary_id,
        first_lsn=first_lsn,
        last_lsn=last_lsn,
        entry_count=count,
        uncompressed_bytes=uncompressed,
        body_bytes=body_len,
        batch_bytes=len(view),
        checksum=stored,
        dictionary=dictionary,
        format_version=version,
        partition=partition,
    )


def decode_batch(
    data: bytes | bytearray | memoryview, dictionaries: Mapping[int, Dictionary] | None = None
) -> tuple[BatchHeader, list[WalEntry]]:
    """Verify, decompress and parse a batch: ``(header, entries in LSN order)``.

    ``dictionaries`` maps dictionary ids to dictionaries the caller received
    before; a dictionary the batch carries is used first. Raises
    :class:`CorruptBatch` on a checksum mismatch, a body that does not decompress
    or parse, and :class:`UnknownDictionary` for a dictionary not at hand.
    """
    header = read_header(data)
    header, entries = _decode_entries(data, header, dictionaries)
    if header.partition:
        p = header.partition
        entries = [WalEntry(e.lsn, e.type, e.timestamp_ms, e.payload, p) for e in entries]
    return header, entries


def _decode_entries(
    data: bytes | bytearray | memoryview,
    header: BatchHeader,
    dictionaries: Mapping[int, Dictionary] | None,
) -> tuple[BatchHeader, list[WalEntry]]:
    view = memoryview(data)
    compressed = view[header.batch_bytes - header.body_bytes :]
    dictionary = header.dictionary
    if header.codec is Codec.ZSTD and header.dictionary_id and dictionary is None:
        dictionary = (dictionaries or {}).get(header.dictionary_id)
        if dictionary is None:
            raise UnknownDictionary(
                f"WAL batch {header.first_lsn}..{header.last_lsn} needs zstd dictionary "
                f"{header.dictionary_id}, which this replica has not received; "
                "send the batch again with the dictionary attached",
                dictionary_id=header.dictionary_id,
            )
    zstd_dictionary = dictionary.zstd() if dictionary is not None else None
    if header.format_version == 2:
        try:
            entries = decode_body(
                compressed,
                first_lsn=header.first_lsn,
                last_lsn=header.last_lsn,
                count=header.entry_count,
                uncompressed=header.uncompressed_bytes,
                dictionary=zstd_dictionary,
            )
        except zstandard.ZstdError as exc:  # a damaged dictionary
            raise CorruptBatch(
                f"WAL batch {header.first_lsn}..{header.last_lsn} does not decompress: {exc}"
            ) from None
        return header, entries
    if header.codec is Codec.NONE:
        body = bytes(compressed)
    else:
        try:
            decompressor = (
                zstandard.ZstdDecompressor(dict_data=zstd_dictionary)
                if zstd_dictionary is not None
                else zstandard.ZstdDecompressor()
            )
            body = bounded_decompress(
                decompressor,
                compressed,
                header.uncompressed_bytes,
                f"WAL batch {header.first_lsn}..{header.last_lsn}",
            )
        except zstandard.ZstdError as exc:
            raise CorruptBatch(
                f"WAL batch {header.first_lsn}..{header.last_lsn} does not decompress: {exc}"
            ) from None
    if len(body) != header.uncompressed_bytes:
        raise CorruptBatch(
            f"WAL batch body is {len(body)} bytes; the header says {header.uncompressed_bytes}"
        )
    return header, _parse_entries(body, header)


def _parse_entries(body: bytes, header: BatchHeader) -> list[WalEntry]:
    entries: list[WalEntry] = []
    pos = 0
    previous = header.first_lsn - 1
    for i in range(header.entry_count):
        if pos + _ENTRY.size > len(body):
            raise CorruptBatch(f"WAL batch body truncated in entry {i}")
        delta, raw_type, timestamp_ms, size = _ENTRY.unpack_from(body, pos)
        pos += _ENTRY.size
        lsn = header.first_lsn + delta
        if not previous < lsn <= header.last_lsn:
            raise CorruptBatch(f"WAL batch entry {i} has LSN {lsn}, out of order or range")
        try:
            entry_type = EntryType(raw_type)
        except ValueError:
            raise CorruptBatch(f"WAL batch entry {i} has unknown type {raw_type}") from None
        if pos + size > len(body):
            raise CorruptBatch(f"WAL batch body truncated in entry {i} payload")
        entries.append(WalEntry(lsn, entry_type, timestamp_ms, body[pos : pos + size]))
        pos += size
        previous = lsn
    if pos != len(body):
        raise CorruptBatch(f"WAL batch body has {len(body) - pos} bytes after its entries")
    return entries
