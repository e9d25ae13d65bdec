"""WAL entries: ``{partition, lsn, type, timestamp, payload}`` on the WAL topic.

WAL partitions
    A mutation from input partition ``p`` goes to WAL partition ``p mod N`` (``N`` the
    WAL topic's partition count, :class:`~pipeline.wal.writer.WalWriter`). A series or
    a pk lives in one input partition, so all of its mutations are in one WAL
    partition, in the order they were applied; the partitions are independent of each
    other and are shipped and applied in parallel. A WAL of one partition (the layout
    before issue 17) is simply partition 0.

LSN
    An LSN is per WAL partition: ``offset + 1`` of the entry's record in its partition
    of ``<namespace>.wal``, a 64-bit integer written as 16 upper-case hex digits
    (``"0000000000000043"`` is offset 66; the roadmap's ``"0000000100000042"`` is
    simply LSN 4294967362). LSN 0 means "nothing". The LSN is not stored in the
    record: the broker assigns the offset, and readers derive the LSN from it. An
    entry is named by ``(partition, LSN)``; every partition has its own sequence.

Record value (little-endian)

    =====  ==============  ============================================
    bytes  field           meaning
    =====  ==============  ============================================
    4      magic ``TWE1``
    1      u8 type         1 = TS block, 2 = vector batch
    8      i64 timestamp   when the mutation was applied, ms since epoch
    n      payload         TS block: the Gorilla block bytes;
                           vector batch: an op frame (``VOF1``) of the
                           batch's upserts (as ADD) and removes
    =====  ==============  ============================================
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from pipeline.errors import InvalidArgument, InvalidRecord

MAGIC = b"TWE1"
_HEX_DIGITS = "0123456789abcdefABCDEF"
_HEAD = struct.Struct("<4sBq")


class EntryType(IntEnum):
    """What a WAL entry's payload holds."""

    TS_BLOCK = 1
    VECTOR_BATCH = 2


@dataclass(frozen=True)
class WalEntry:
    """One applied mutation; ``lsn`` counts within WAL partition ``partition``."""

    lsn: int
    type: EntryType
    timestamp_ms: int
    payload: bytes
    partition: int = 0


def format_lsn(lsn: int) -> str:
    """16 upper-case hex digits."""
    return f"{lsn:016X}"


def parse_lsn(text: str) -> int:
    """The LSN written as 16 hex digits; ``InvalidArgument`` for anything else."""
    # int() alone would also take signs, underscores and spaces ("-000000000000001").
    if len(text) != 16 or text.strip(_HEX_DIGITS):
        raise InvalidArgument(f"an LSN has 16 hex digits; got {text!r}")
    return int(text, 16)


def lsn_of_offset(offset: int) -> int:
    return offset + 1


def encode_entry_record(entry_type: EntryType, timestamp_ms: int, payload: bytes) -> bytes:
    """The record value of an entry (its LSN comes from the offset the broker gives it)."""
    return _HEAD.pack(MAGIC, int(entry_type), timestamp_ms) + payload


def decode_entry_record(value: bytes, offset: int, partition: int = 0) -> WalEntry:
    """The entry at ``offset`` of WAL partition ``partition``; ``InvalidRecord`` if malformed."""
    if len(value) < _HEAD.size:
        raise InvalidRecord(f"WAL record at offset {offset} is {len(value)} bytes, too short")
    magic, raw_type, timestamp_ms = _HEAD.unpack_from(value)
    if magic != MAGIC:
        raise InvalidRecord(f"WAL record at offset {offset} has magic {magic!r}, not {MAGIC!r}")
    try:
        entry_type = EntryType(raw_type)
    except ValueError:
        raise InvalidRecord(f"WAL record at offset {offset} has unknown type {raw_type}") from None
    return WalEntry(
        lsn_of_offset(offset), entry_type, timestamp_ms, bytes(value[_HEAD.size :]), partition
    )
