"""The shipped WAL batch: round trips, corruption, dictionaries and the ratio."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import CorruptBatch, UnknownDictionary, call_with_retries
from pipeline.ts.block import encode_block
from pipeline.ts.dataset import devops_dataset
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.batch import Codec, decode_batch, encode_batch, read_header, train_dictionary
from pipeline.wal.entry import EntryType, WalEntry, encode_entry_record
from tests.fixtures.wal import decode_in_a_small_process, resigned, zstd_bomb

pytestmark = pytest.mark.unit


def _entries(count: int = 60, first_lsn: int = 1) -> list[WalEntry]:
    data = devops_dataset(10, 300, seed=3)
    rng = np.random.default_rng(1)
    out: list[WalEntry] = []
    for i in range(count):
        lsn = first_lsn + i
        if i % 3:
            key, ts, vs = data[i % len(data)]
            start = (i * 7) % 200
            payload = encode_block(key, ts[start : start + 100], vs[start : start + 100])
            out.append(WalEntry(lsn, EntryType.TS_BLOCK, 1_700_000_000_000 + i, payload))
        else:
            ops = [
                VectorOp(
                    OpType.ADD,
                    f"doc{i}-{j}",
                    rng.normal(0, 1, 16).astype(np.float32),
                    {"source": "unit", "n": j},
                )
                for j in range(5)
            ]
            payload = encode_op_frame(ops, 16)
            out.append(WalEntry(lsn, EntryType.VECTOR_BATCH, 1_700_000_000_000 + i, payload))
    return out


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_round_trip_returns_the_same_entries_and_header(codec: str) -> None:
    entries = _entries(first_lsn=4294967362)
    data = encode_batch(entries, codec, 3, "primary-1")
    header, decoded = decode_batch(data)
    assert decoded == entries
    assert header.codec is Codec.from_name(codec)
    assert (header.first_lsn, header.last_lsn) == (entries[0].lsn, entries[-1].lsn)
    assert header.entry_count == len(entries)
    assert header.primary_id == "primary-1"
    assert header.dictionary_id == 0


def test_wider_range_than_entries_is_kept_and_entries_keep_their_lsns() -> None:
    entries = [_entries(3)[i] for i in (0, 2)]
    data = encode_batch(entries, "zstd", 3, "p", first_lsn=1, last_lsn=5)
    header, decoded = decode_batch(data)
    assert (header.first_lsn, header.last_lsn) == (1, 5)
    assert [e.lsn for e in decoded] == [1, 3]


def test_dictionary_round_trip_carried_then_from_the_replica_store() -> None:
    samples = [encode_entry_record(e.type, e.timestamp_ms, e.payload) for e in _entries(600)]
    dictionary = train_dictionary(samples, 8 * 1024)
    assert dictionary.dictionary_id != 0
    entries = _entries(20)
    carried = encode_batch(entries, "zstd", 3, "p", dictionary)
    header, decoded = decode_batch(carried)
    assert decoded == entries
    assert header.dictionary == dictionary
    bare = encode_batch(entries, "zstd", 3, "p", dictionary, carry_dictionary=False)
    assert len(bare) < len(carried)
    with pytest.raises(UnknownDictionary) as raised:
        decode_batch(bare)
    assert raised.value.dictionary_id == dictionary.dictionary_id
    assert decode_batch(bare, {dictionary.dictionary_id: dictionary})[1] == entries


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_any_flipped_byte_is_detected_as_corrupt(codec: str) -> None:
    data = encode_batch(_entries(10), codec, 3, "p")
    for position in (0, 9, 13, 30, 52, len(data) // 2, len(data) - 1):
        damaged = bytearray(data)
        damaged[position] ^= 0x40
        with pytest.raises(CorruptBatch):
            decode_batch(bytes(damaged))
    with pytest.raises(CorruptBatch, match="header describes"):
        decode_batch(data[:-1])


def test_a_corrupt_batch_is_raised_at_once_by_the_retry_loop_never_retried() -> None:
    damaged = bytearray(encode_batch(_entries(3), "zstd", 3, "p"))
    damaged[-1] ^= 0x40
    calls: list[int] = []

    def decode() -> object:
        calls.append(1)
        return decode_batch(bytes(damaged))

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"a corrupt batch was retried (after {seconds:.2f} s)")

    with pytest.raises(CorruptBatch):
        call_with_retries(decode, timeout_s=60, sleep=no_sleep)
    assert calls == [1]


@pytest.mark.parametrize("format_version", [1, 2])
def test_compression_ratio_is_uncompressed_body_over_batch_bytes(format_version: int) -> None:
    entries = _entries(90)
    plain = encode_batch(entries, "none", 3, "p", format_version=format_version)
    packed = encode_batch(entries, "zstd", 9, "p", format_version=format_version)
    plain_header, packed_header = read_header(plain), read_header(packed)
    body = plain_header.uncompressed_bytes
    assert body == packed_header.uncompressed_bytes
    assert plain_header.compression_ratio == pytest.approx(body / len(plain))
    assert plain_header.compression_ratio < 1.0  # the header costs a little
    assert packed_header.compression_ratio == pytest.approx(body / len(packed))
    assert packed_header.compression_ratio > 1.5


def test_out_of_order_entries_are_refused_when_encoding() -> None:
    entries = _entries(3)
    with pytest.raises(ValueError, match="out of order"):
        encode_batch([entries[1], entries[0]], "zstd", 3, "p", first_lsn=1, last_lsn=3)


def _with_body(batch: bytes, body: bytes, *, uncompressed: int) -> bytes:
    """``batch`` with its compressed body replaced (lengths and checksum fixed up)."""
    head = bytearray(batch[:50])
    key_len, dict_len = struct.unpack_from("<HI", head, 44)
    struct.pack_into("<QI", head, 32, uncompressed, len(body))
    rest = batch[54 : 54 + key_len + dict_len]
    return resigned(bytes(head) + bytes(4) + rest + body)


@pytest.mark.parametrize("declare_size", [True, False])
def test_a_decompression_bomb_is_refused_within_a_memory_limit(
    tmp_path: Path, declare_size: bool
) -> None:
    entry = WalEntry(1, EntryType.TS_BLOCK, 1, b"x" * 100)
    batch = encode_batch([entry], Codec.ZSTD, 3, "p1", None, format_version=1)
    body = zstd_bomb(declare_size)  # 1 GiB of zeros; the header claims 200 bytes
    assert len(body) < 100_000
    path = tmp_path / "bomb.twb"
    path.write_bytes(_with_body(batch, body, uncompressed=200))
    assert decode_in_a_small_process(path).startswith("refused: ")
