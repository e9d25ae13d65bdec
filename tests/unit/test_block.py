"""Gorilla block container: layout, checksum, content ids and the devops dataset."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from pipeline.errors import CorruptBlock, ThemisError
from pipeline.ts.block import (
    CODEC_VERSION,
    MAGIC,
    GorillaBlock,
    block_id,
    decode_block,
    encode_block,
)
from pipeline.ts.dataset import devops_dataset
from pipeline.ts.gorilla import encode_chunk

pytestmark = pytest.mark.unit

KEY = "cpu_usage_percent{host=host-00001}"
TIMESTAMPS = np.array([1_700_000_000_000, 1_700_000_010_003, 1_700_000_019_998], dtype=np.int64)
VALUES = np.array([12.5, 12.75, float("nan")])


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_block_round_trips_header_fields_and_points() -> None:
    block = decode_block(encode_block(KEY, TIMESTAMPS, VALUES))
    assert block.series_key == KEY
    assert block.count == 3
    assert block.first_ts_ms == 1_700_000_000_000
    assert block.last_ts_ms == 1_700_000_019_998
    assert block.codec_version == CODEC_VERSION
    assert block.chunk == encode_chunk(TIMESTAMPS, VALUES)
    timestamps, values = block.points()
    np.testing.assert_array_equal(timestamps, TIMESTAMPS)
    np.testing.assert_array_equal(values.view(np.uint64), VALUES.view(np.uint64))


def test_block_layout_matches_documented_byte_table() -> None:
    data = encode_block(KEY, TIMESTAMPS, VALUES)
    key = KEY.encode()
    chunk = encode_chunk(TIMESTAMPS, VALUES)
    assert data[:4] == MAGIC
    assert data[4] == CODEC_VERSION
    assert struct.unpack_from("<H", data, 5) == (len(key),)
    assert data[7 : 7 + len(key)] == key
    assert struct.unpack_from("<IqqI", data, 7 + len(key)) == (
        3,
        1_700_000_000_000,
        1_700_000_019_998,
        len(chunk),
    )
    assert data[31 + len(key) : -4] == chunk
    assert struct.unpack("<I", data[-4:]) == (zlib.crc32(data[:-4]),)
    assert len(data) == 35 + len(key) + len(chunk)


def test_every_single_flipped_bit_is_detected_as_corrupt_block() -> None:
    data = encode_block(KEY, TIMESTAMPS, VALUES)
    for position in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[position // 8] ^= 1 << (position % 8)
        with pytest.raises(CorruptBlock):
            decode_block(bytes(damaged))


def test_flipped_chunk_bit_reports_checksum_mismatch() -> None:
    data = bytearray(encode_block(KEY, TIMESTAMPS, VALUES))
    data[-6] ^= 0x10
    with pytest.raises(CorruptBlock, match="checksum mismatch"):
        decode_block(bytes(data))


def test_corrupt_block_belongs_to_the_themis_error_tree() -> None:
    with pytest.raises(ThemisError):
        decode_block(b"")


def test_every_truncation_and_appended_byte_is_a_corrupt_block() -> None:
    data = encode_block(KEY, TIMESTAMPS, VALUES)
    for length in range(len(data)):
        with pytest.raises(CorruptBlock):
            decode_block(data[:length])
    with pytest.raises(CorruptBlock, match="header describes"):
        decode_block(data + b"\x00")


def test_foreign_magic_is_named_in_the_error() -> None:
    data = b"PK\x03\x04" + encode_block(KEY, TIMESTAMPS, VALUES)[4:]
    with pytest.raises(CorruptBlock, match="magic"):
        decode_block(data)


def test_unknown_codec_version_with_valid_checksum_is_rejected() -> None:
    data = bytearray(encode_block(KEY, TIMESTAMPS, VALUES))
    data[4] = 9
    with pytest.raises(CorruptBlock, match="codec version 9"):
        decode_block(_with_crc(bytes(data[:-4])))


def test_header_count_disagreeing_with_chunk_is_rejected() -> None:
    data = bytearray(encode_block(KEY, TIMESTAMPS, VALUES))
    struct.pack_into("<I", data, 7 + len(KEY), 4)
    with pytest.raises(CorruptBlock, match="header says 4 points"):
        decode_block(_with_crc(bytes(data[:-4])))


def test_header_timestamps_disagreeing_with_chunk_fail_on_points() -> None:
    data = bytearray(encode_block(KEY, TIMESTAMPS, VALUES))
    struct.pack_into("<q", data, 11 + len(KEY), 5)
    block = decode_block(_with_crc(bytes(data[:-4])))
    with pytest.raises(CorruptBlock, match="header spans 5"):
        block.points()


def test_undecodable_chunk_with_valid_checksum_fails_on_points() -> None:
    good = decode_block(encode_block(KEY, TIMESTAMPS, VALUES))
    # The count header still says 3, but the chunk loses its last two bytes.
    damaged = GorillaBlock(KEY, 3, good.first_ts_ms, good.last_ts_ms, 1, good.chunk[:-2])
    block = decode_block(damaged.to_bytes())
    with pytest.raises(CorruptBlock, match="corrupt Gorilla chunk"):
        block.points()


def test_unicode_series_key_round_trips() -> None:
    key = "température{site=Zürich,rack=機架-7}"
    assert decode_block(encode_block(key, TIMESTAMPS, VALUES)).series_key == key


def test_series_key_over_65535_bytes_is_rejected() -> None:
    with pytest.raises(ValueError, match="at most 65535"):
        encode_block("k" * 65536, TIMESTAMPS, VALUES)


def test_block_id_is_deterministic_across_encodings() -> None:
    first = decode_block(encode_block(KEY, TIMESTAMPS, VALUES))
    again = decode_block(encode_block(KEY, TIMESTAMPS.copy(), VALUES.copy()))
    assert first.block_id == again.block_id
    assert first.block_id == block_id(KEY, first.first_ts_ms, first.last_ts_ms, 3, first.chunk)
    assert len(first.block_id) == 32
    int(first.block_id, 16)


def test_block_id_is_pinned_so_replays_keep_their_ids() -> None:
    assert block_id("a", 1, 2, 3, b"\x00\x03") == block_id("a", 1, 2, 3, b"\x00\x03")
    assert block_id("a", 1, 2, 3, b"\x00\x03") == "f63da158d2ccf58a2d68c8e9354b4e75"


def test_block_id_changes_with_any_input() -> None:
    base = block_id(KEY, 1, 2, 3, b"chunk")
    variants = {
        block_id(KEY + "x", 1, 2, 3, b"chunk"),
        block_id(KEY, 0, 2, 3, b"chunk"),
        block_id(KEY, 1, 3, 3, b"chunk"),
        block_id(KEY, 1, 2, 4, b"chunk"),
        block_id(KEY, 1, 2, 3, b"chunk!"),
    }
    assert base not in variants
    assert len(variants) == 5


# --- devops dataset ---------------------------------------------------------------------


def test_devops_dataset_is_deterministic_per_seed() -> None:
    first = devops_dataset(10, 50, seed=3)
    again = devops_dataset(10, 50, seed=3)
    other = devops_dataset(10, 50, seed=4)
    for (key_a, ts_a, values_a), (key_b, ts_b, values_b) in zip(first, again, strict=True):
        assert key_a == key_b
        np.testing.assert_array_equal(ts_a, ts_b)
        np.testing.assert_array_equal(values_a, values_b)
    assert any(not np.array_equal(a[2], b[2]) for a, b in zip(first, other, strict=True))


def test_devops_dataset_series_do_not_depend_on_series_count() -> None:
    small = devops_dataset(3, 40)
    large = devops_dataset(12, 40)
    for (_, ts_small, values_small), (_, ts_large, values_large) in zip(
        small, large[:3], strict=True
    ):
        np.testing.assert_array_equal(ts_small, ts_large)
        np.testing.assert_array_equal(values_small, values_large)


def test_devops_dataset_has_jittered_10s_interval_and_value_mix() -> None:
    data = devops_dataset(50, 500)
    integer_series = 0
    decimal_series = 0
    rarely_changing = 0
    for _key, timestamps, values in data:
        assert timestamps.dtype == np.int64
        assert values.dtype == np.float64
        steps = np.diff(timestamps)
        assert steps.min() >= 10_000 - 400
        assert steps.max() <= 10_000 + 400
        assert np.unique(steps).size > 1
        if np.count_nonzero(np.diff(values)) <= 10:
            rarely_changing += 1
        elif np.array_equal(values, np.round(values)):
            integer_series += 1
        elif np.array_equal(values, np.round(values, 2)):
            decimal_series += 1
    assert (integer_series, decimal_series, rarely_changing) == (20, 20, 10)


def test_devops_dataset_round_trips_through_blocks() -> None:
    for key, timestamps, values in devops_dataset(20, 300, seed=1):
        block = decode_block(encode_block(key, timestamps, values))
        decoded_ts, decoded_values = block.points()
        assert block.series_key == key
        np.testing.assert_array_equal(decoded_ts, timestamps)
        np.testing.assert_array_equal(decoded_values, values)


def test_devops_dataset_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        devops_dataset(-1, 10)
