"""A replica applies only its own primary's WAL, in consistent LSN ranges, all or nothing."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings, load_settings
from pipeline.errors import CorruptBatch, ForeignPrimary
from pipeline.replication import ReplicaState
from pipeline.ts.block import encode_block
from pipeline.ts.point import series_key
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.batch import encode_batch
from pipeline.wal.entry import EntryType, WalEntry

pytestmark = pytest.mark.unit

DIM = 4


def _settings() -> Settings:
    return load_settings(
        path=Path("/dev/null"), env={}, overrides={"vector_auto_buffer": {"dimension": DIM}}
    )


def _block_entry(lsn: int) -> WalEntry:
    ts = np.array([lsn], dtype=np.int64)
    return WalEntry(lsn, EntryType.TS_BLOCK, 1, encode_block(series_key("m", "e"), ts, ts * 1.0))


def _vector_entry(lsn: int, pk: str) -> WalEntry:
    op = VectorOp(OpType.ADD, pk, np.ones(DIM, dtype=np.float32), {})
    return WalEntry(lsn, EntryType.VECTOR_BATCH, 1, encode_op_frame([op], DIM))


def _with_range(batch: bytes, first: int, last: int) -> bytes:
    """``batch`` claiming another LSN range, checksum fixed up (what an attacker can send)."""
    head = bytearray(batch[:50])
    struct.pack_into("<QQ", head, 12, first, last)
    crc = zlib.crc32(batch[54:], zlib.crc32(bytes(head)))
    return bytes(head) + struct.pack("<I", crc) + batch[54:]


def test_an_empty_batch_claiming_a_huge_lsn_range_is_refused_and_replication_goes_on(
    tmp_path: Path,
) -> None:
    replica = ReplicaState(tmp_path, _settings())
    replica.apply_batch(encode_batch([_block_entry(i) for i in range(1, 6)], "zstd", 3, "p1"))
    empty = encode_batch([], "zstd", 3, "p1", first_lsn=6, last_lsn=6)
    with pytest.raises(CorruptBatch, match="carries 0 entries"):
        replica.apply_batch(_with_range(empty, 6, 2**63 - 1))
    result = replica.apply_batch(encode_batch([_block_entry(6)], "zstd", 3, "p1"))
    assert result.entries_applied == 1
    assert replica.last_applied_lsn == 6
    replica.close()


def test_a_batch_ending_beyond_int64_changes_nothing_not_even_the_vector_index(
    tmp_path: Path,
) -> None:
    replica = ReplicaState(tmp_path, _settings())
    batch = encode_batch([_vector_entry(1, "v1")], "zstd", 3, "p1")
    with pytest.raises(CorruptBatch, match="beyond"):
        replica.apply_batch(_with_range(batch, 1, 2**64 - 1))
    assert replica.vector_dump() == {}
    assert replica.last_applied_lsn == 0
    assert replica.apply_batch(batch).entries_applied == 1
    assert list(replica.vector_dump()) == ["v1"]
    replica.close()


def test_a_replica_is_pinned_to_the_first_primary_it_applies_even_after_a_restart(
    tmp_path: Path,
) -> None:
    replica = ReplicaState(tmp_path, _settings())
    replica.apply_batch(encode_batch([_block_entry(1)], "zstd", 3, "p1"))
    with pytest.raises(ForeignPrimary, match="follows primary 'p1'"):
        replica.apply_batch(encode_batch([_block_entry(2)], "zstd", 3, "intruder"))
    replica.close()
    restarted = ReplicaState(tmp_path, _settings())
    assert restarted.primary_id == "p1"
    with pytest.raises(ForeignPrimary):
        restarted.apply_batch(encode_batch([_block_entry(2)], "zstd", 3, "intruder"))
    assert restarted.apply_batch(encode_batch([_block_entry(2)], "zstd", 3, "p1")).last_lsn == 2
    restarted.close()
    with pytest.raises(ForeignPrimary, match="holds a replica of primary 'p1'"):
        ReplicaState(tmp_path, _settings(), primary_id="other")
