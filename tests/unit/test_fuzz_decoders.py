"""Every decoder of outside bytes answers with the reference result or the project's own error.

Each decoder gets (a) arbitrary bytes, (b) mutations of valid encodings drawn by
hypothesis (bit flips, truncations, cuts, splices, inserted JSON oddities, overwritten
integers such as length fields; for checksummed formats also with the checksum
recomputed, so the parser behind it is reached) and (c) round trips: a valid encoding
decodes to exactly its input, floats bit for bit. Where a reference decoder exists the
answer must equal the reference's. Anything raised that is not a
:class:`~pipeline.errors.ThemisError` fails the test with its traceback; so does an
example over its deadline, and a length field claiming a huge size that makes a decoder
allocate more than a little memory (:func:`tracemalloc`) or take more than a second.

Budget: 50 to 200 examples per test (``max_examples``, with a per-example ``deadline``), the
whole file in about 20 s of CPU on two slow cores; a hung test is stopped by its timeout.
Inputs that once found a bug are pinned with ``@example`` and tried first on every run.
"""

from __future__ import annotations

import http.client
import json
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import pytest
import zstandard
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from pipeline.config import VectorAutoBufferSettings, load_settings
from pipeline.errors import ThemisError
from pipeline.facade.ts_bodies import PointBodies
from pipeline.facade.vector_bodies import vector_op_from_body
from pipeline.replication.replica import ApplyResult, ReplicaState
from pipeline.replication.targets import HttpTarget, KafkaTarget
from pipeline.ts.block import GorillaBlock, decode_block, encode_block
from pipeline.ts.gorilla import decode_chunk, encode_chunk, reference_decode
from pipeline.ts.json_batch import JsonPointDecoder
from pipeline.ts.point import (
    DataPoint,
    decode_frame,
    decode_point_json,
    encode_frame,
    parse_series_key,
    series_key,
)
from pipeline.validation import (
    NDJSON,
    batch_points,
    int_param,
    parse_json,
    point_from_json,
    search_request,
    series_query,
)
from pipeline.vectors.ops import (
    OpType,
    VectorOp,
    decode_op_frame,
    decode_op_json,
    encode_op_frame,
    encode_op_json,
)
from pipeline.vectors.shard import decode_ops
from pipeline.wal.batch import (
    MAX_UNCOMPRESSED_BYTES,
    BatchHeader,
    Codec,
    Dictionary,
    decode_batch,
    encode_batch,
    read_header,
    train_dictionary,
)
from pipeline.wal.entry import (
    EntryType,
    WalEntry,
    decode_entry_record,
    encode_entry_record,
    parse_lsn,
)
from tests.fixtures.points import record_values
from tests.fixtures.wal import resigned, twb2_batch

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

_T = TypeVar("_T")
DIM = 3

_FEW = settings(max_examples=50, deadline=timedelta(seconds=2))
_SOME = settings(max_examples=120, deadline=timedelta(seconds=2))
_MANY = settings(max_examples=200, deadline=timedelta(seconds=2))
_SLOW = settings(
    max_examples=80,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _outcome(call: Callable[[], _T]) -> _T | ThemisError:
    """``call()``'s result, or the project error it raised; any other exception propagates."""
    try:
        out = call()
    except ThemisError as exc:
        event(f"refused: {type(exc).__name__}")  # --hypothesis-show-statistics shows the mix
        return exc
    event("accepted")
    return out


def _bits(values: npt.NDArray[Any]) -> list[int]:
    """The IEEE 754 bit patterns of float64 ``values`` (NaN payloads and -0.0 kept)."""
    return cast(list[int], np.ascontiguousarray(values, np.float64).view(np.uint64).tolist())


def _bits_of(value: float) -> int:
    return cast(int, struct.unpack("<Q", struct.pack("<d", value))[0])


# -- mutations -----------------------------------------------------------------------

_INTERESTING = (0, 1, 2, 7, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x10000, 2**31 - 1, 2**32 - 1)
_JSON_ODDITIES = (
    b'"\\ud800"',
    b'"\\udc00x"',
    b'"\\u0000"',
    b"1e400",
    b"-1e400",
    b"9" * 400,
    b"-0",
    b"NaN",
    b"-Infinity",
    b"[" * 1100,
    b"{" * 1100,
    b"[[[[]]]]",
    b"\xff\xfe",
    b"\xed\xa0\x80",  # a surrogate written as UTF-8
    b"\x00",
    b"\n",
    b"\r",
    b"}\n{",
    b"null",
    b"[]",
    b"{}",
    b'"',
    b",",
    b":",
)


@st.composite
def _mutants(
    draw: st.DrawFn,
    valid: st.SearchStrategy[bytes],
    fix: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """``valid`` damaged one to three times; with ``fix``, its checksum recomputed or not."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "cut", "insert", "splice", "int"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "cut":
            del data[at : draw(st.integers(at, len(data)))]
        elif kind == "insert":
            data[at:at] = draw(
                st.one_of(st.binary(min_size=1, max_size=8), *map(st.just, _JSON_ODDITIES))
            )
        elif kind == "splice":
            start = draw(st.integers(0, len(data)))
            data[at:at] = data[start : draw(st.integers(start, len(data)))]
        else:  # an integer field, a length field most often, overwritten in place
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.one_of(st.sampled_from(_INTERESTING), st.integers(0, 2**64 - 1)))
            order = draw(st.sampled_from(["little", "big"]))
            data[at : at + width] = (value % 2 ** (8 * width)).to_bytes(width, order)
    if fix is not None and draw(st.booleans()):
        return fix(bytes(data))
    return bytes(data)


_ARBITRARY = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"TSF1", b"VOF1", b"TGBK", b"TWB1", b"TWB2", b"TWE1"]).flatmap(
        lambda magic: st.binary(max_size=120).map(lambda rest: magic + rest)
    ),
)

# -- valid inputs --------------------------------------------------------------------

_int64 = st.integers(-(2**63), 2**63 - 1)
_text = st.text(max_size=8)
_name = st.text(min_size=1, max_size=8)
_wild_text = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=6)
_tags = st.dictionaries(_text, _text, max_size=3)
_keys = st.builds(series_key, _name, _name, _tags)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_NICE = (0.0, -0.0, 1.0, 1.5, 2.0, 100.25, 1e-300, float("inf"), float("nan"))
_value_bits = st.one_of(
    st.sampled_from([_bits_of(v) for v in _NICE] + [0x7FF0000000000001, 0xFFF8DEADBEEF0001]),
    st.integers(0, 2**64 - 1),
    st.floats().map(_bits_of),
)
_steps = st.one_of(st.just(10_000), st.integers(-10, 10), st.integers(-(2**21), 2**21), _int64)

Samples = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]


@st.composite
def _samples(draw: st.DrawFn, min_size: int = 0, max_size: int = 30) -> Samples:
    """Timestamps (ms, int64, wrapping steps of every delta-of-delta size) and values
    given as raw bit patterns, NaN payloads included."""
    size = draw(st.integers(min_size, max_size))
    t = draw(_int64)
    ts = []
    for step in draw(st.lists(_steps, min_size=size, max_size=size)):
        ts.append(t)
        t = (t + step + 2**63) % 2**64 - 2**63
    bits = draw(st.lists(_value_bits, min_size=size, max_size=size))
    return np.array(ts, np.int64), np.array(bits, np.uint64).view(np.float64)


_frames = st.lists(st.tuples(_keys, _samples(0, 8)), max_size=3).map(
    lambda series: encode_frame((key, ts, vs) for key, (ts, vs) in series)
)
_chunks = _samples(1, 12).map(lambda s: encode_chunk(*s))
_blocks = st.tuples(_keys, _samples(1, 12)).map(lambda k_s: encode_block(k_s[0], *k_s[1]))
_points = st.builds(DataPoint, _name, _name, _int64, _finite, _tags)
_metadata = st.dictionaries(
    _text, st.one_of(st.none(), st.booleans(), _int64, _finite, _text), max_size=3
)
_vectors = st.lists(
    st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=DIM, max_size=DIM
).map(lambda v: np.array(v, np.float32))


@st.composite
def _ops(draw: st.DrawFn) -> VectorOp:
    op = draw(st.sampled_from(OpType))
    vector = None if op is OpType.REMOVE else draw(_vectors)
    return VectorOp(op, draw(_name), vector, draw(_metadata))


_op_frames = st.lists(_ops(), max_size=4).map(lambda ops: encode_op_frame(ops, DIM))


def _fix_block_crc(data: bytes) -> bytes:
    """A block's trailing CRC-32 recomputed over what precedes it."""
    if len(data) < 4:
        return data
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


@cache
def _dictionary() -> Dictionary:
    samples = [
        encode_entry_record(EntryType.TS_BLOCK, 1_700_000_000_000 + i, b"series-%d-" % (i % 17))
        * (1 + i % 5)
        for i in range(400)
    ]
    return train_dictionary(samples, 2048)


@st.composite
def _wal_entries(
    draw: st.DrawFn, first_lsn: int, payloads: st.SearchStrategy[bytes]
) -> tuple[list[WalEntry], int]:
    """Entries from ``first_lsn`` on, some LSNs skipped, and the batch's last LSN."""
    entries = []
    lsn = first_lsn
    for _ in range(draw(st.integers(0, 5))):
        lsn += draw(st.integers(0, 2))
        entry_type = draw(st.sampled_from(EntryType))
        entries.append(WalEntry(lsn, entry_type, draw(_int64), draw(payloads)))
        lsn += 1
    return entries, max(first_lsn, lsn - 1) + draw(st.integers(0, 2))


@st.composite
def _batches(
    draw: st.DrawFn, first_lsn: int | None = None, payloads: st.SearchStrategy[bytes] | None = None
) -> tuple[bytes, list[WalEntry], str]:
    """``(batch, its entries, primary id)``, both formats, every codec, with and without a
    dictionary; payloads by default arbitrary bytes, Gorilla blocks and VOF1 frames (the
    kinds TWB2 cuts into columns)."""
    first = draw(st.integers(1, 2**40)) if first_lsn is None else first_lsn
    entries, last = draw(
        _wal_entries(
            first,
            st.one_of(st.binary(max_size=40), _blocks, _op_frames)
            if payloads is None
            else payloads,
        )
    )
    codec = draw(st.sampled_from(Codec))
    dictionary = _dictionary() if codec is Codec.ZSTD and draw(st.booleans()) else None
    primary = draw(_text) if first_lsn is None else "p1"
    batch = encode_batch(
        entries,
        codec,
        1,
        primary,
        dictionary,
        first_lsn=first,
        last_lsn=last,
        carry_dictionary=draw(st.booleans()),
        format_version=draw(st.sampled_from([1, 2])),
    )
    return batch, entries, primary


# -- time-series points: JSON, series keys, TSF1 frames ------------------------------


def _wild_point_bodies() -> st.SearchStrategy[bytes]:
    """Points shaped right whose strings may hold lone surrogates, as the standard
    encoder (which escapes them) or a hostile client writes them."""
    point = st.fixed_dictionaries(
        {
            "metric": _wild_text,
            "entity": _wild_text,
            "timestamp_ms": _int64,
            "value": st.one_of(_finite, st.floats(), st.integers()),
        },
        optional={"tags": st.dictionaries(_wild_text, _wild_text, max_size=2)},
    )
    return point.map(lambda p: json.dumps(p).encode())


_point_bodies = st.one_of(
    _ARBITRARY,
    record_values(nonfinite=True),
    _wild_point_bodies(),
    _mutants(_points.map(DataPoint.to_json)),
    _mutants(_wild_point_bodies()),
)


def _decoded_point(point: DataPoint) -> tuple[str, int, int]:
    return point.series_key(), point.timestamp_ms, _bits_of(point.value)


_POINT = b'{"metric":"m","entity":"e","timestamp_ms":1,"value":1.5'
_POINT_REGRESSIONS = (
    _POINT + b',"tags":{"a":"\xc2"}}',  # raw tags msgspec passes, orjson refuses
    _POINT + b',"tags":{"a":1e400}}',
    _POINT + b',"tags":' + b"[" * 1100 + b"]" * 1100 + b"}",  # msgspec's RecursionError
    b'{"metric":"\\ud800","entity":"e","timestamp_ms":1,"value":1}',  # a lone surrogate
    b'{"metric":"m","entity":"e","timestamp_ms":1,"value":NaN,"tags":{"\\udfff":"x"}}',
)


def _regressions(*inputs: object) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Pin the inputs that found bugs, so every run tries them first."""

    def pin(test: Callable[..., None]) -> Callable[..., None]:
        for value in inputs:
            test = example(value)(test)
        return test

    return pin


@_MANY
@given(_point_bodies)
@_regressions(*_POINT_REGRESSIONS)
def test_a_json_point_decodes_like_the_reference_or_is_an_invalid_record(body: bytes) -> None:
    reference = _outcome(lambda: _decoded_point(decode_point_json(body)))
    decoder = JsonPointDecoder()
    fast = _outcome(lambda: decoder.decode(body))
    if isinstance(reference, ThemisError):
        assert isinstance(fast, ThemisError)
        assert str(fast) == str(reference)
    else:
        assert not isinstance(fast, ThemisError)
        assert (fast[0], fast[1], _bits_of(fast[2])) == reference
        assert series_key(*parse_series_key(fast[0])) == fast[0]
    many = decoder.decode_many([body, body])
    assert [type(item) for item in many] == [type(fast)] * 2


@_FEW
@given(_points)
def test_a_json_point_round_trips_bit_for_bit(point: DataPoint) -> None:
    data = point.to_json()
    decoded = decode_point_json(data)
    assert decoded == point
    assert _bits_of(decoded.value) == _bits_of(point.value)
    key, timestamp_ms, value = JsonPointDecoder().decode(data)
    assert (key, timestamp_ms, _bits_of(value)) == _decoded_point(point)
    assert parse_series_key(key) == (point.metric, point.entity, point.tags)


@_SOME
@given(
    st.one_of(
        _text,
        _wild_text,
        _keys,
        _mutants(_keys.map(str.encode)).map(lambda raw: raw.decode("utf-8", "replace")),
    )
)
def test_a_series_key_parses_back_to_itself_or_is_an_invalid_record(key: str) -> None:
    parsed = _outcome(lambda: parse_series_key(key))
    if not isinstance(parsed, ThemisError):
        assert series_key(*parsed) == key


def _frame_series(data: bytes) -> list[tuple[str, list[int], list[int]]]:
    return [(key, ts.tolist(), _bits(vs)) for key, ts, vs in decode_frame(data)]


@_MANY
@given(st.one_of(_ARBITRARY, _mutants(_frames)))
def test_a_tsf1_frame_decodes_to_series_keys_and_aligned_arrays_or_is_an_invalid_record(
    data: bytes,
) -> None:
    series = _outcome(lambda: _frame_series(data))
    if not isinstance(series, ThemisError):
        # What was accepted is exactly what the encoder writes for it.
        arrays = [
            (key, np.array(ts, np.int64), np.array(vs, np.uint64).view(np.float64))
            for key, ts, vs in series
        ]
        assert encode_frame(arrays) == data


@_FEW
@given(st.lists(st.tuples(_keys, _samples()), max_size=4))
def test_a_tsf1_frame_round_trips_bit_for_bit(series: list[tuple[str, Samples]]) -> None:
    data = encode_frame((key, ts, vs) for key, (ts, vs) in series)
    assert _frame_series(data) == [(key, ts.tolist(), _bits(vs)) for key, (ts, vs) in series]


# -- Gorilla chunks and blocks -------------------------------------------------------


def _chunk_samples(decode: Callable[[bytes], Samples], data: bytes) -> tuple[list[int], list[int]]:
    ts, vs = decode(data)
    return ts.tolist(), _bits(vs)


@_SOME
@given(st.one_of(st.binary(max_size=60), _mutants(_chunks)))
def test_a_gorilla_chunk_decodes_like_the_reference_decoder_or_is_a_corrupt_block(
    data: bytes,
) -> None:
    fast = _outcome(lambda: _chunk_samples(decode_chunk, data))
    reference = _outcome(lambda: _chunk_samples(reference_decode, data))
    assert isinstance(fast, ThemisError) == isinstance(reference, ThemisError)
    if not isinstance(fast, ThemisError):
        assert fast == reference


@_FEW
@given(_samples(1, 40))
def test_a_gorilla_chunk_round_trips_bit_for_bit(samples: Samples) -> None:
    ts, vs = samples
    assert _chunk_samples(decode_chunk, encode_chunk(ts, vs)) == (ts.tolist(), _bits(vs))


def _block_points(data: bytes) -> tuple[GorillaBlock, tuple[list[int], list[int]]]:
    block = decode_block(data)
    ts, vs = block.points()
    return block, (ts.tolist(), _bits(vs))


@_MANY
@given(st.one_of(_ARBITRARY, _mutants(_blocks, fix=_fix_block_crc)))
def test_a_block_decodes_to_its_reference_points_or_is_a_corrupt_block(data: bytes) -> None:
    decoded = _outcome(lambda: _block_points(data))
    if not isinstance(decoded, ThemisError):
        block, points = decoded
        assert points == _chunk_samples(reference_decode, block.chunk)
        assert block.to_bytes() == data


@_FEW
@given(_keys, _samples(1, 40))
def test_a_block_round_trips_bit_for_bit(key: str, samples: Samples) -> None:
    ts, vs = samples
    block, points = _block_points(encode_block(key, ts, vs))
    assert (block.series_key, block.count) == (key, ts.size)
    assert (block.first_ts_ms, block.last_ts_ms) == (int(ts[0]), int(ts[-1]))
    assert points == (ts.tolist(), _bits(vs))


# -- vector operations: JSON and VOF1 frames -----------------------------------------


def _wild_op_bodies() -> st.SearchStrategy[bytes]:
    op = st.fixed_dictionaries(
        {"pk": _wild_text},
        optional={
            "op": st.sampled_from(["add", "update", "remove", "x"]),
            "vector": st.lists(
                st.one_of(st.floats(), st.integers(), st.sampled_from([10**400, -(10**400)])),
                max_size=DIM + 1,
            ),
            "metadata": st.dictionaries(
                _wild_text, st.one_of(st.floats(), st.integers(), _wild_text), max_size=2
            ),
        },
    )
    return op.map(lambda o: json.dumps(o).encode())


_op_bodies = st.one_of(
    _ARBITRARY,
    _wild_op_bodies(),
    _mutants(_ops().map(encode_op_json)),
    _mutants(_wild_op_bodies()),
)


def _same_op(a: VectorOp, b: VectorOp) -> bool:
    vectors_same = (a.vector is None and b.vector is None) or (
        a.vector is not None and b.vector is not None and a.vector.tobytes() == b.vector.tobytes()
    )
    return a == b and vectors_same


@_MANY
@given(_op_bodies, st.sampled_from([2, 65536]))
def test_a_json_vector_op_decodes_or_is_an_invalid_record(body: bytes, max_meta: int) -> None:
    op = _outcome(lambda: decode_op_json(body, dimension=DIM, max_metadata_bytes=max_meta))
    if not isinstance(op, ThemisError):
        again = decode_op_json(encode_op_json(op), dimension=DIM, max_metadata_bytes=max_meta)
        assert _same_op(again, op)


@_FEW
@given(_ops())
def test_a_json_vector_op_round_trips_bit_for_bit(op: VectorOp) -> None:
    assert _same_op(decode_op_json(encode_op_json(op), dimension=DIM), op)


@_MANY
@given(st.one_of(_ARBITRARY, _mutants(_op_frames)), st.sampled_from([2, 65536]))
def test_a_vof1_frame_decodes_or_is_an_invalid_record(data: bytes, max_meta: int) -> None:
    ops = _outcome(lambda: decode_op_frame(data, dimension=DIM, max_metadata_bytes=max_meta))
    if not isinstance(ops, ThemisError):
        again = decode_op_frame(encode_op_frame(ops, DIM), dimension=DIM)
        assert all(_same_op(a, b) for a, b in zip(again, ops, strict=True))
    config = VectorAutoBufferSettings(dimension=DIM, max_metadata_bytes=max_meta)
    assert isinstance(_outcome(lambda: decode_ops(data, config)), list | ThemisError)


@_FEW
@given(st.lists(_ops(), max_size=5))
def test_a_vof1_frame_round_trips_bit_for_bit(ops: list[VectorOp]) -> None:
    decoded = decode_op_frame(encode_op_frame(ops, DIM), dimension=DIM)
    assert len(decoded) == len(ops)
    assert all(_same_op(a, b) for a, b in zip(decoded, ops, strict=True))


# -- WAL entries and batches ---------------------------------------------------------


@_SOME
@given(
    st.one_of(
        _ARBITRARY,
        _mutants(
            st.builds(
                encode_entry_record, st.sampled_from(EntryType), _int64, st.binary(max_size=40)
            )
        ),
    ),
    st.integers(0, 2**62),
)
def test_a_wal_record_decodes_to_what_encodes_it_again_or_is_an_invalid_record(
    value: bytes, offset: int
) -> None:
    entry = _outcome(lambda: decode_entry_record(value, offset))
    if not isinstance(entry, ThemisError):
        assert entry.lsn == offset + 1
        assert encode_entry_record(entry.type, entry.timestamp_ms, entry.payload) == value


@_SOME
@given(st.one_of(st.text(max_size=20), st.from_regex(r"[-+_ 0-9a-fA-FxX]{16}", fullmatch=True)))
@_regressions("-000000000000001", "0000_0000_0000_1", " 00000000000001F", "000000000000000:")
def test_an_lsn_parses_from_16_hex_digits_only(text: str) -> None:
    lsn = _outcome(lambda: parse_lsn(text))
    if not isinstance(lsn, ThemisError):
        assert f"{lsn:016X}" == text.upper()


def _batch_claiming(first_lsn: int, last_lsn: int) -> bytes:
    """An empty batch whose header claims ``first_lsn..last_lsn``, checksum fixed."""
    batch = bytearray(encode_batch([], Codec.NONE, 1, "p", first_lsn=5, last_lsn=5))
    struct.pack_into("<QQ", batch, 12, first_lsn, last_lsn)
    return resigned(bytes(batch))


def _check_decoded_batch(header: BatchHeader, entries: list[WalEntry]) -> None:
    """What a decoded batch promises the replica: a range of LSNs >= 1 holding its
    entries in increasing order, as many as the header counts."""
    assert 1 <= header.first_lsn <= header.last_lsn
    assert len(entries) == header.entry_count
    lsns = [entry.lsn for entry in entries]
    assert lsns == sorted(set(lsns))
    assert all(header.first_lsn <= lsn <= header.last_lsn for lsn in lsns)


@_SLOW
@given(st.one_of(_ARBITRARY, _mutants(_batches().map(lambda b: b[0]), fix=resigned)))
@_regressions(_batch_claiming(9, 3), _batch_claiming(0, 0))
def test_a_wal_batch_decodes_to_consistent_entries_or_is_a_corrupt_batch(data: bytes) -> None:
    known = {_dictionary().dictionary_id: _dictionary()}
    header = _outcome(lambda: read_header(data))
    decoded = _outcome(lambda: decode_batch(data, known))
    if not isinstance(decoded, ThemisError):
        assert decoded[0] == header
        _check_decoded_batch(*decoded)


@_FEW
@given(_batches())
def test_a_wal_batch_round_trips(batch: tuple[bytes, list[WalEntry], str]) -> None:
    data, entries, primary = batch
    header, decoded = decode_batch(data, {_dictionary().dictionary_id: _dictionary()})
    assert decoded == entries
    assert header.primary_id == primary
    assert header.batch_bytes == len(data)
    _check_decoded_batch(header, decoded)


# -- the replica: batches from the network, payloads inside them ---------------------

_replica_payloads = st.one_of(
    _blocks,
    _op_frames,
    _mutants(_blocks, fix=_fix_block_crc),
    _mutants(_op_frames),
)


def test_a_replica_applies_or_refuses_any_batch_it_is_sent(tmp_path: Path) -> None:
    replica_settings = load_settings(
        path=Path("/dev/null"), env={}, overrides={"vector_auto_buffer": {"dimension": DIM}}
    )
    state = ReplicaState(tmp_path / "replica", replica_settings, primary_id="p1")

    @_SLOW
    @given(st.data())
    def apply(data: st.DataObject) -> None:
        batch, _, _ = data.draw(_batches(state.last_applied_lsn + 1, _replica_payloads))
        sent = data.draw(st.one_of(st.just(batch), _mutants(st.just(batch), fix=resigned)))
        result = _outcome(lambda: state.apply_batch(sent))
        assert isinstance(result, ApplyResult | ThemisError)

    try:
        apply()
    finally:
        state.close()


class _Answer:
    """A canned HTTP response."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self._body = body

    def read(self) -> bytes:
        return self._body


class _CannedConnection:
    def __init__(self, answer: _Answer) -> None:
        self._answer = answer

    def request(self, *args: object, **kwargs: object) -> None:
        return None

    def getresponse(self) -> _Answer:
        return self._answer

    def close(self) -> None:
        return None


class _AnsweringTarget(HttpTarget):
    """An HTTP target whose replica answers ``answer`` without a network."""

    answer = _Answer(200, b"")

    def _connection(self) -> http.client.HTTPConnection:
        return cast(http.client.HTTPConnection, _CannedConnection(self.answer))


@cache
def _answering_target() -> _AnsweringTarget:
    return _AnsweringTarget("http://replica.invalid:1", None)  # one TLS context, made once


_json_any = st.recursive(
    st.one_of(st.none(), st.booleans(), _int64, _finite, _wild_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "error"]), inner)
    ),
    max_leaves=5,
)
_replies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "success": st.booleans(),
            "error": _json_any,
            "expected_lsn": st.one_of(
                _json_any, st.from_regex(r"[-+_ 0-9a-fA-Fg]{16}", fullmatch=True)
            ),
            "need_dictionary": _json_any,
        },
    ),
    _json_any,
).map(lambda reply: json.dumps(reply).encode())


@_SOME
@given(
    st.sampled_from([200, 400, 401, 409, 413, 500, 503]),
    st.one_of(_replies, _mutants(_replies), st.binary(max_size=40)),
)
@example(400, b"[]")
@example(409, b'{"expected_lsn":"-000000000000001"}')
def test_a_replica_answer_is_a_success_or_a_ship_error(status: int, body: bytes) -> None:
    header = read_header(encode_batch([], Codec.NONE, 1, "p1", first_lsn=5, last_lsn=5))
    target = _answering_target()
    target.answer = _Answer(status, body)
    shipped = _outcome(lambda: target.ship(b"", header))
    assert (shipped is None) == (status == 200)


class _StatusRecord:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value


class _StatusConsumer:
    def __init__(self, values: list[bytes]) -> None:
        self._records = [_StatusRecord(value) for value in values]

    def consume(self, num_messages: int, timeout: float) -> list[_StatusRecord]:
        records, self._records = self._records, []
        return records


@_SOME
@given(st.lists(st.one_of(_replies, _mutants(_replies), st.binary(max_size=20)), max_size=3))
@_regressions([b"[]"], [b'{"gap":true,"expected_lsn":"-000000000000001"}'])
def test_a_replica_status_record_reports_a_gap_lsn_or_nothing(values: list[bytes]) -> None:
    target = KafkaTarget.__new__(KafkaTarget)  # no broker: only the status reader runs
    target._status = cast(Any, _StatusConsumer(values))
    target._last_status_poll = 0.0
    gap = _outcome(target.reported_gap)
    assert gap is None or (isinstance(gap, int) and gap >= 0)


# -- request bodies of the front door ------------------------------------------------


def _body_outcome(call: Callable[[], _T]) -> _T | str:
    """The result, or the refusal's class and message (which must be the project's)."""
    out = _outcome(call)
    return f"{type(out).__name__}: {out}" if isinstance(out, ThemisError) else out


@_MANY
@given(_point_bodies)
@_regressions(*_POINT_REGRESSIONS)
def test_a_point_body_decodes_like_the_reference_checks_or_is_an_invalid_request(
    body: bytes,
) -> None:
    def fast() -> tuple[str, int, int]:
        key, timestamp_ms, value = PointBodies().point(body)
        return key, timestamp_ms, _bits_of(value)

    def reference() -> tuple[str, int, int]:
        return _decoded_point(point_from_json(parse_json(body)))

    assert _body_outcome(fast) == _body_outcome(reference)


@_SOME
@given(
    st.lists(_point_bodies, max_size=4),
    st.sampled_from([b"\n", b",", b"\r\n"]),
    st.booleans(),
    st.sampled_from([NDJSON, "application/json"]),
)
def test_a_batch_body_decodes_like_the_reference_checks_or_is_an_invalid_request(
    lines: list[bytes], separator: bytes, as_array: bool, content_type: str
) -> None:
    joined = separator.join(lines)
    body = b"[" + joined + b"]" if as_array else joined

    def fast() -> list[tuple[str, list[int], list[int]]]:
        series, _ = PointBodies().batch(body, content_type)
        return [(key, ts.tolist(), _bits(vs)) for key, ts, vs in series]

    def reference() -> list[tuple[str, list[int], list[int]]]:
        grouped: dict[str, tuple[list[int], list[int]]] = {}
        for point in batch_points(body, content_type):
            ts, vs = grouped.setdefault(point.series_key(), ([], []))
            ts.append(point.timestamp_ms)
            vs.append(_bits_of(point.value))
        return [(key, ts, vs) for key, (ts, vs) in grouped.items()]

    assert _body_outcome(fast) == _body_outcome(reference)


@_MANY
@given(_op_bodies, st.sampled_from(OpType), st.sampled_from([2, 65536]))
@example(b'{"pk":"a","vector":[1,2,' + b"9" * 400 + b"]}", OpType.ADD, 65536)
@example(b'{"pk":"a","vector":[1,2,3],"metadata":{"a":1e400}}', OpType.UPDATE, 65536)
@example(b'{"pk":"\\ud800","vector":[1,2,NaN]}', OpType.ADD, 65536)
def test_a_vector_body_decodes_or_is_an_invalid_request(
    body: bytes, op: OpType, max_meta: int
) -> None:
    decoded = _outcome(lambda: vector_op_from_body(body, op, DIM, max_meta))
    if not isinstance(decoded, ThemisError):
        assert decoded.op is op
        assert _same_op(decode_op_json(encode_op_json(decoded), dimension=DIM), decoded)


_search_bodies = st.fixed_dictionaries(
    {"vector": st.one_of(_vectors.map(np.ndarray.tolist), _json_any)},
    optional={"k": _json_any, "ef": _json_any, "filter": _json_any, "x": _json_any},
).map(lambda body: json.dumps(body).encode())


@_SOME
@given(st.one_of(_ARBITRARY, _search_bodies, _mutants(_search_bodies)))
def test_a_search_body_is_checked_or_is_an_invalid_request(body: bytes) -> None:
    request = _outcome(lambda: search_request(parse_json(body), DIM))
    if not isinstance(request, ThemisError):
        assert len(request.vector) == DIM
        assert request.k >= 1


@_SOME
@given(st.dictionaries(st.sampled_from(["metric", "entity", "start", "end", "tag"]), _wild_text))
def test_query_parameters_are_checked_or_are_an_invalid_request(query: dict[str, str]) -> None:
    parsed = _outcome(lambda: series_query(MultiDict(query)))
    if not isinstance(parsed, ThemisError):
        assert parsed.metric
        assert parsed.entity
        assert parsed.start_ms >= -(2**63)
        assert parsed.end_ms <= 2**63 - 1
    assert isinstance(
        _outcome(lambda: int_param(query.get("start"), "start", 0)), int | ThemisError
    )


# -- length fields claiming huge sizes fail fast -------------------------------------


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _huge_block() -> bytes:
    return _fix_block_crc(b"TGBK\x01\xff\xff" + b"k" * 40 + b"\xff" * 28 + b"\0" * 4)


def _huge_batch(**fields: int) -> bytes:
    """A zstd batch whose header fields ``fields`` name claim huge sizes, checksum fixed."""
    batch = bytearray(encode_batch([WalEntry(1, EntryType.TS_BLOCK, 0, b"x")], Codec.ZSTD, 1, "p"))
    offsets = {"body": ("<I", 40), "uncompressed": ("<Q", 32), "count": ("<I", 28)}
    for name, value in fields.items():
        fmt, at = offsets[name]
        struct.pack_into(fmt, batch, at, value)
    return resigned(bytes(batch))


def _none_batch_with_body(body: bytes, count: int) -> bytes:
    batch = bytearray(encode_batch([], Codec.NONE, 1, "p", first_lsn=1, last_lsn=9))
    struct.pack_into("<IQI", batch, 28, count, len(body), len(body))
    return resigned(bytes(batch) + body)


def _twb2_batch(*, meta_size: int = 64, count: int = 1, uncompressed: int | None = None) -> bytes:
    """A TWB2 batch of one 64-byte opaque entry whose meta section's decoded length, entry
    count and header's uncompressed length may claim other sizes, checksum fixed."""
    index = struct.pack("<IBqBI", 0, 1, 0, 0, 64)  # the five columns of one entry
    meta = zstandard.ZstdCompressor(level=1).compress(b"x" * 64)
    sections = [(0, index, 18), (1, meta, meta_size), (0, b"", 0), (0, b"", 0)]
    return twb2_batch(sections, count, first=1, last=1, uncompressed=uncompressed)


def _twb2_frame_claiming(ops: int) -> bytes:
    """A TWB2 batch holding a VOF1 frame whose op count says ``ops``, checksum fixed."""
    frame = encode_op_frame([VectorOp(OpType.REMOVE, "p", None, {})], DIM)
    batch = encode_batch([WalEntry(1, EntryType.VECTOR_BATCH, 0, frame)], Codec.NONE, 1, "p")
    at = batch.index(b"VOF1")
    return resigned(batch[: at + 4] + struct.pack("<I", ops) + batch[at + 8 :])


_HUGE: dict[str, Callable[[], object]] = {
    "tsf1 series count": lambda: decode_frame(b"TSF1" + _u32(2**32 - 1)),
    "tsf1 point count": lambda: decode_frame(
        b"TSF1" + _u32(1) + b"\x0f\0" + b'["m","e",{}]' + _u32(2**32 - 1) + b"\0" * 64
    ),
    "tsf1 key length": lambda: decode_frame(b"TSF1" + _u32(1) + b"\xff\xff" + b"k" * 8),
    "vof1 op count": lambda: decode_op_frame(
        b"VOF1" + _u32(2**32 - 1) + struct.pack("<H", DIM), dimension=DIM
    ),
    "vof1 metadata length": lambda: decode_op_frame(
        b"VOF1" + _u32(1) + struct.pack("<HBH", DIM, 3, 1) + b"p" + _u32(2**32 - 1),
        dimension=DIM,
    ),
    "vof1 dimension": lambda: decode_op_frame(
        b"VOF1" + _u32(2**32 - 1) + struct.pack("<HBH", 65535, 1, 1) + b"p" + _u32(0),
        dimension=65535,
    ),
    "block key and chunk length": lambda: decode_block(_huge_block()),
    "chunk count": lambda: decode_chunk(b"\xff\xff\x00"),
    "batch body length": lambda: decode_batch(_huge_batch(body=2**32 - 1)),
    "batch uncompressed length": lambda: decode_batch(_huge_batch(uncompressed=2**64 - 1)),
    "batch entry count": lambda: decode_batch(_none_batch_with_body(b"\0" * 17, 2**32 - 1)),
    "batch entry payload length": lambda: decode_batch(
        _none_batch_with_body(struct.pack("<IBqI", 0, 1, 0, 2**32 - 1), 1)
    ),
    "batch uncompressed length at its limit": lambda: decode_batch(
        _huge_batch(uncompressed=MAX_UNCOMPRESSED_BYTES)  # the zstd frame holds 21 bytes
    ),
    "twb2 section length": lambda: decode_batch(_twb2_batch(meta_size=2**32 - 1, uncompressed=82)),
    "twb2 section length at its limit": lambda: decode_batch(
        _twb2_batch(meta_size=MAX_UNCOMPRESSED_BYTES - 18, uncompressed=MAX_UNCOMPRESSED_BYTES)
    ),
    "twb2 entry count": lambda: decode_batch(_twb2_batch(count=2**32 - 1)),
    "twb2 vof1 op count": lambda: decode_batch(_twb2_frame_claiming(2**32 - 1)),
    "json nesting": lambda: parse_json(b"[" * 100_000),
    "json nesting in a point": lambda: JsonPointDecoder().decode(
        b'{"metric":"m","entity":"e","timestamp_ms":1,"value":1,"tags":' + b"[" * 100_000
    ),
    "json nesting in a point body": lambda: PointBodies().point(b"[" * 100_000),
    "json nesting in a vector body": lambda: vector_op_from_body(
        b'{"pk":"a","vector":[1,2,3],"metadata":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        OpType.ADD,
        DIM,
        2**30,
    ),
    "json digits": lambda: search_request(
        parse_json(b'{"vector":[' + b"9" * 4000 + b",1,1]}"), DIM
    ),
}


@pytest.mark.parametrize("case", sorted(_HUGE))
def test_a_length_field_claiming_a_huge_size_fails_fast_without_allocating_it(case: str) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ThemisError):  # and nothing else
            _HUGE[case]()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 8 * 2**20  # bytes; the inputs are at most 200 KiB
