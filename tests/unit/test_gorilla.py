"""The Gorilla chunk codec against Prometheus goldens and its pure-Python reference."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pipeline.errors import CorruptBlock, InvalidArgument
from pipeline.ts import _gorilla
from pipeline.ts.gorilla import (
    MAX_POINTS,
    decode_chunk,
    encode_chunk,
    reference_decode,
    reference_encode,
)

pytestmark = pytest.mark.unit

GOLDEN_FILE = Path(__file__).resolve().parents[1] / "golden" / "xor_chunks.json"
GOLDEN = json.loads(GOLDEN_FILE.read_text())
STORED_CASES = [case for case in GOLDEN["cases"] if "chunk_hex" in case]
GENERATED_CASES = [case for case in GOLDEN["cases"] if "generator" in case]
UINT64_MASK = (1 << 64) - 1

Samples = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]


def _golden_samples(case: dict[str, Any]) -> Samples:
    timestamps = np.array(case["timestamps"], dtype=np.int64)
    bits = np.array([int(word, 16) for word in case["value_bits"]], dtype=np.uint64)
    return timestamps, bits.view(np.float64)


def _replay_lcg_devops(generator: dict[str, Any]) -> Samples:
    """Python twin of lcgDevops in tests/golden/gen/main.go."""
    assert generator["kind"] == "lcg_devops_v1"
    state = generator["seed"]
    timestamps: list[int] = []
    values: list[float] = []
    previous = 0.0
    for i in range(generator["count"]):
        state = (state * 6364136223846793005 + 1442695040888963407) & UINT64_MASK
        r = state >> 33
        if i == 0 or (r >> 10) % 4 != 0:
            previous = float((r >> 12) % 100000) / 100
        timestamps.append(generator["start_ms"] + i * 10_000 + r % 401 - 200)
        values.append(previous)
    return np.array(timestamps, dtype=np.int64), np.array(values, dtype=np.float64)


def _assert_same_samples(actual: Samples, expected: Samples) -> None:
    assert actual[0].dtype == np.int64
    assert actual[1].dtype == np.float64
    np.testing.assert_array_equal(actual[0], expected[0])
    # Compare bit patterns so NaN payloads and -0.0 count.
    np.testing.assert_array_equal(actual[1].view(np.uint64), expected[1].view(np.uint64))


def _case_id(case: dict[str, Any]) -> str:
    return str(case["name"])


def _random_samples(rng: np.random.Generator, size: int) -> Samples:
    """Samples from a random mix of timestamp and value shapes, edge cases included."""
    ts_kind = rng.integers(0, 4)
    if ts_kind == 0:  # jittered scrape interval
        timestamps = 1_700_000_000_000 + np.arange(size) * 10_000 + rng.integers(-200, 201, size)
    elif ts_kind == 1:  # anything in int64, so deltas and delta-of-deltas wrap
        timestamps = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size)
    elif ts_kind == 2:  # duplicates and backwards steps
        timestamps = rng.integers(-50, 50, size)
    else:  # gaps of every bucket size
        deltas = rng.choice([0, 1, 8192, 8193, 65537, 524289, 1 << 33], size) * rng.choice(
            [-1, 1], size
        )
        timestamps = rng.integers(-(1 << 40), 1 << 40) + np.cumsum(deltas)
    value_kind = rng.integers(0, 4)
    values: npt.NDArray[Any]
    if value_kind == 0:  # raw bits: NaN payloads, subnormals, infinities
        values = rng.integers(0, UINT64_MASK, size, dtype=np.uint64, endpoint=True).view(np.float64)
    elif value_kind == 1:  # 2-decimal gauge
        values = np.round(np.cumsum(rng.normal(0, 1, size)), 2)
    elif value_kind == 2:  # mostly repeated integers
        values = rng.integers(0, 3, size).astype(np.float64)
    else:  # specials mixed with ordinary numbers
        specials = np.array(
            [0x7FF8000000000ABC, 0x7FF0000000000001, 0x8000000000000000, 1, 0x7FF0000000000000],
            dtype=np.uint64,
        ).view(np.float64)
        values = rng.choice(np.concatenate([specials, rng.normal(0, 1e6, 5)]), size)
    return timestamps.astype(np.int64), values.astype(np.float64)


# --- Prometheus goldens -----------------------------------------------------------------


def test_goldens_were_made_by_a_pinned_prometheus_release() -> None:
    assert GOLDEN["prometheus"] == "github.com/prometheus/prometheus v0.316.0"
    names = {case["name"] for case in GOLDEN["cases"]}
    assert {"one_point", "two_points", "special_floats", "max_points_65535"} <= names


@pytest.mark.parametrize("case", STORED_CASES, ids=_case_id)
def test_prometheus_golden_chunk_decodes_to_its_exact_samples(case: dict[str, Any]) -> None:
    chunk = bytes.fromhex(case["chunk_hex"])
    _assert_same_samples(decode_chunk(chunk), _golden_samples(case))


@pytest.mark.parametrize("case", STORED_CASES, ids=_case_id)
def test_encoder_output_is_byte_identical_to_prometheus(case: dict[str, Any]) -> None:
    timestamps, values = _golden_samples(case)
    chunk = encode_chunk(timestamps, values)
    assert chunk.hex() == case["chunk_hex"]
    assert hashlib.sha256(chunk).hexdigest() == case["chunk_sha256"]


@pytest.mark.parametrize("case", STORED_CASES, ids=_case_id)
def test_reference_codec_is_byte_identical_to_prometheus(case: dict[str, Any]) -> None:
    timestamps, values = _golden_samples(case)
    chunk = bytes.fromhex(case["chunk_hex"])
    assert reference_encode(timestamps, values) == chunk
    _assert_same_samples(reference_decode(chunk), (timestamps, values))


@pytest.mark.parametrize("case", GENERATED_CASES, ids=_case_id)
def test_generated_golden_encodes_to_prometheus_sha256_and_round_trips(
    case: dict[str, Any],
) -> None:
    timestamps, values = _replay_lcg_devops(case["generator"])
    chunk = encode_chunk(timestamps, values)
    assert len(chunk) == case["chunk_len"]
    assert hashlib.sha256(chunk).hexdigest() == case["chunk_sha256"]
    _assert_same_samples(decode_chunk(chunk), (timestamps, values))


# --- C codec against the reference ------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_c_codec_matches_reference_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.choice([1, 2, 3, int(rng.integers(4, 400))]))
    timestamps, values = _random_samples(rng, size)
    chunk = encode_chunk(timestamps, values)
    assert chunk == reference_encode(timestamps, values)
    _assert_same_samples(decode_chunk(chunk), (timestamps, values))
    _assert_same_samples(reference_decode(chunk), (timestamps, values))


@pytest.mark.parametrize("seed", range(6))
def test_bit_flipped_chunk_decodes_like_reference_or_raises_like_it(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    chunk = bytearray(encode_chunk(*_random_samples(rng, int(rng.integers(2, 200)))))
    for _ in range(150):
        damaged = bytearray(chunk)
        position = int(rng.integers(0, len(damaged) * 8))
        damaged[position // 8] ^= 0x80 >> (position % 8)
        try:
            expected = reference_decode(bytes(damaged))
        except CorruptBlock:
            with pytest.raises(CorruptBlock, match="corrupt Gorilla chunk"):
                decode_chunk(bytes(damaged))
        else:
            _assert_same_samples(decode_chunk(bytes(damaged)), expected)


# --- edge cases -------------------------------------------------------------------------


def test_special_floats_round_trip_bit_exactly() -> None:
    bits = np.array(
        [
            0x7FF8000000000ABC,  # quiet NaN with payload
            0xFFF0000000000001,  # negative signalling NaN
            0x7FF0000000000002,  # Prometheus stale marker
            0x7FF0000000000000,  # +inf
            0xFFF0000000000000,  # -inf
            0x8000000000000000,  # -0.0
            0x0000000000000000,  # +0.0
            0x0000000000000001,  # smallest subnormal
            0x800FFFFFFFFFFFFF,  # largest negative subnormal
            0x7FEFFFFFFFFFFFFF,  # largest finite
        ],
        dtype=np.uint64,
    )
    timestamps = np.arange(bits.size, dtype=np.int64) * 1000
    values = bits.view(np.float64)
    _assert_same_samples(decode_chunk(encode_chunk(timestamps, values)), (timestamps, values))


def test_single_point_chunk_is_header_varint_and_raw_value() -> None:
    timestamps = np.array([-3], dtype=np.int64)
    values = np.array([1.0])
    chunk = encode_chunk(timestamps, values)
    assert chunk == b"\x00\x01" + b"\x05" + struct.pack(">d", 1.0)
    _assert_same_samples(decode_chunk(chunk), (timestamps, values))


def test_65535_point_chunk_round_trips_and_counts_ffff() -> None:
    rng = np.random.default_rng(5)
    timestamps = np.cumsum(rng.integers(9_800, 10_200, MAX_POINTS)).astype(np.int64)
    values = np.round(rng.normal(50, 10, MAX_POINTS), 1)
    chunk = encode_chunk(timestamps, values)
    assert chunk[:2] == b"\xff\xff"
    _assert_same_samples(decode_chunk(chunk), (timestamps, values))


def test_more_than_65535_points_are_rejected() -> None:
    timestamps = np.arange(MAX_POINTS + 1, dtype=np.int64)
    values = np.zeros(MAX_POINTS + 1)
    with pytest.raises(ValueError, match="at most 65535 points"):
        encode_chunk(timestamps, values)
    with pytest.raises(ValueError, match="at most 65535 points"):
        _gorilla.encode(timestamps, values)


def test_zero_points_are_rejected() -> None:
    with pytest.raises(ValueError, match="0 points"):
        encode_chunk(np.array([], dtype=np.int64), np.array([], dtype=np.float64))
    with pytest.raises(ValueError, match="0 points"):
        _gorilla.encode(b"", b"")


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        encode_chunk(np.arange(3, dtype=np.int64), np.zeros(2))
    with pytest.raises(ValueError, match="differ in length"):
        _gorilla.encode(np.arange(3, dtype=np.int64), np.zeros(2))


def test_buffers_that_are_not_8_byte_items_are_rejected() -> None:
    with pytest.raises(ValueError, match="8-byte items"):
        _gorilla.encode(b"\x00" * 12, b"\x00" * 12)


def test_non_contiguous_buffers_are_rejected_with_type_error() -> None:
    with pytest.raises(TypeError, match="contiguous"):
        _gorilla.encode(np.arange(8, dtype=np.int64)[::2], np.zeros(4))


def test_integer_values_and_float_timestamps_are_rejected_as_invalid_arguments() -> None:
    with pytest.raises(InvalidArgument, match="values must be a float array"):
        encode_chunk(np.arange(3, dtype=np.int64), np.arange(3, dtype=np.int64))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="timestamps must be integer milliseconds"):
        encode_chunk(np.zeros(3), np.zeros(3))  # type: ignore[arg-type]


def test_narrower_dtypes_are_widened_exactly() -> None:
    timestamps = np.array([1, 2, 4], dtype=np.int32)
    values = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    decoded_ts, decoded_values = decode_chunk(encode_chunk(timestamps, values))
    np.testing.assert_array_equal(decoded_ts, timestamps.astype(np.int64))
    np.testing.assert_array_equal(decoded_values, values.astype(np.float64))


def test_empty_chunk_header_decodes_to_empty_arrays() -> None:
    timestamps, values = decode_chunk(b"\x00\x00")
    assert timestamps.size == 0
    assert values.size == 0


def test_decode_accepts_bytearray_and_memoryview() -> None:
    chunk = bytes.fromhex(STORED_CASES[0]["chunk_hex"])
    expected = _golden_samples(STORED_CASES[0])
    _assert_same_samples(decode_chunk(bytearray(chunk)), expected)
    _assert_same_samples(decode_chunk(memoryview(b"xx" + chunk)[2:]), expected)


@pytest.mark.parametrize(
    "case",
    [case for case in STORED_CASES if case["name"] in {"random_bits", "dod_boundaries"}],
    ids=_case_id,
)
def test_every_truncation_of_a_chunk_raises_corrupt_block(case: dict[str, Any]) -> None:
    chunk = bytes.fromhex(case["chunk_hex"])
    for length in range(len(chunk)):
        with pytest.raises(CorruptBlock, match="corrupt Gorilla chunk"):
            decode_chunk(chunk[:length])


def test_bytes_after_the_last_sample_are_rejected() -> None:
    chunk = bytes.fromhex(STORED_CASES[0]["chunk_hex"])
    with pytest.raises(CorruptBlock, match="left over"):
        decode_chunk(chunk + b"\x00")


def test_count_header_larger_than_the_data_raises() -> None:
    chunk = bytes.fromhex(STORED_CASES[0]["chunk_hex"])
    with pytest.raises(CorruptBlock, match="data ends inside sample"):
        decode_chunk(b"\xff\xff" + chunk[2:])


def test_window_reuse_before_any_window_is_rejected() -> None:
    # count 2, t0 = 0, v0 = 0.0, delta 1, then '10' (reuse) with no window yet.
    chunk = b"\x00\x02" + b"\x00" + bytes(8) + b"\x01" + b"\x80"
    with pytest.raises(CorruptBlock, match="reuses a leading/trailing window"):
        decode_chunk(chunk)
    with pytest.raises(CorruptBlock, match="window reused"):
        reference_decode(chunk)


def test_window_wider_than_64_bits_is_rejected() -> None:
    # '11', leading 31, significant 40: 71 bits do not fit in a float64.
    control = (0b11 << 11 | 31 << 6 | 40) << 3
    chunk = b"\x00\x02\x00" + bytes(8) + b"\x01" + control.to_bytes(2, "big") + bytes(5)
    with pytest.raises(CorruptBlock, match="above 64"):
        decode_chunk(chunk)


def test_timestamp_varint_longer_than_64_bits_is_rejected() -> None:
    with pytest.raises(CorruptBlock, match="overflows 64 bits"):
        decode_chunk(b"\x00\x01" + b"\xff" * 10 + b"\x01" + bytes(8))


def test_random_garbage_raises_corrupt_block_or_decodes_like_reference() -> None:
    rng = np.random.default_rng(99)
    for _ in range(300):
        garbage = bytes([0, int(rng.integers(0, 6))]) + rng.bytes(int(rng.integers(0, 40)))
        try:
            expected = reference_decode(garbage)
        except CorruptBlock:
            with pytest.raises(CorruptBlock, match="corrupt Gorilla chunk"):
                decode_chunk(garbage)
        else:
            _assert_same_samples(decode_chunk(garbage), expected)


def test_decoded_arrays_are_read_only_views() -> None:
    timestamps, values = decode_chunk(bytes.fromhex(STORED_CASES[0]["chunk_hex"]))
    assert not timestamps.flags.writeable
    assert not values.flags.writeable
