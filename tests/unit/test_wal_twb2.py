"""TWB2: payloads grouped by content, each section compressed for what it holds; TWB1 still read."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError, CorruptBatch, UnknownDictionary
from pipeline.replication.replica import ReplicaState
from pipeline.replication.shipper import WalShipper
from pipeline.ts.block import encode_block
from pipeline.ts.dataset import devops_dataset
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.batch import Codec, decode_batch, encode_batch, read_header, train_dictionary
from pipeline.wal.columns import shuffle_floats, unshuffle_floats
from pipeline.wal.entry import EntryType, WalEntry
from pipeline.wal.sections import encode_varint
from tests.fixtures.wal import (
    TwbSection,
    decode_in_a_small_process,
    resigned,
    twb2_batch,
    twb2_table,
    zstd_bomb,
)

pytestmark = pytest.mark.unit

DIM = 8


def _block(i: int) -> bytes:
    key, ts, vs = devops_dataset(4, 200, seed=5)[i % 4]
    return encode_block(key, ts[: 50 + i], vs[: 50 + i])


def _frame(i: int, rng: np.random.Generator) -> bytes:
    ops = [
        VectorOp(OpType.ADD, f"doc-{i}-{j}", rng.normal(0, 1, DIM).astype(np.float32), {"j": j})
        for j in range(3)
    ]
    ops.append(VectorOp(OpType.REMOVE, f"gone-{i}", None, {}))
    ops.append(VectorOp(OpType.UPDATE, f"doc-{i}-0", np.full(DIM, i, np.float32), {}))
    return encode_op_frame(ops, DIM)


def _entries(count: int = 30, first_lsn: int = 1) -> list[WalEntry]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(count):
        kind = i % 3
        payload = _block(i) if kind == 0 else _frame(i, rng) if kind == 1 else b'{"n": %d}' % i
        entry_type = EntryType.VECTOR_BATCH if kind == 1 else EntryType.TS_BLOCK
        out.append(WalEntry(first_lsn + 2 * i, entry_type, 1_700_000_000_000 + 7 * i, payload))
    return out


def _index(*rows: tuple[int, int, int, int, int]) -> bytes:
    """Index columns of ``(lsn delta, type, timestamp step, kind, length)`` rows."""
    columns = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    return b"".join(
        np.array(values, dtype).tobytes()
        for values, dtype in zip(columns, ("<u4", "u1", "<i8", "u1", "<u4"), strict=True)
    )


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_blocks_frames_and_other_payloads_round_trip_byte_for_byte(codec: str) -> None:
    entries = _entries(first_lsn=2**40)
    batch = encode_batch(entries, codec, 3, "p1")
    header, decoded = decode_batch(batch)
    assert batch[:4] == b"TWB2"
    assert header.format_version == 2
    assert decoded == entries
    assert (header.first_lsn, header.last_lsn, header.entry_count) == (2**40, 2**40 + 58, 30)
    assert header.uncompressed_bytes == sum(size for _, size, _ in twb2_table(batch))


def test_vector_floats_go_byte_shuffled_to_their_own_section_and_chunks_to_theirs() -> None:
    entries = _entries()
    index, meta, floats, chunks = twb2_table(encode_batch(entries, "none", 3, "p1"))
    vectors = 10 * 4  # ten frames, three adds and one update each
    assert floats == (0, 4 * DIM * vectors, 4 * DIM * vectors)
    assert index[1] == 18 * len(entries)
    blocks = [e.payload for e in entries[::3]]
    heads = sum(31 + struct.unpack_from("<H", b, 5)[0] for b in blocks)
    assert chunks[1] == sum(map(len, blocks)) - heads
    assert meta[1] == sum(len(e.payload) for e in entries) - chunks[1] - floats[1]
    data = np.arange(12, dtype="<f4").tobytes()
    assert shuffle_floats(data)[:3] == bytes([data[0], data[4], data[8]])
    assert unshuffle_floats(shuffle_floats(data)) == data


@pytest.mark.parametrize(
    "payload",
    [
        _block(1)[:-1],  # a block one byte short
        _block(2) + b"\0",  # and one byte long
        b"TGBK",
        encode_op_frame([VectorOp(OpType.REMOVE, "a", None, {})], DIM) + b"x",
        b"VOF1" + struct.pack("<IH", 1, DIM) + struct.pack("<BH", 9, 1) + b"a" + bytes(4),
        b"VOF1" + struct.pack("<IH", 2**32 - 1, DIM),
        b"",
    ],
)
def test_payloads_that_only_look_like_blocks_or_frames_travel_whole(payload: bytes) -> None:
    entry = WalEntry(1, EntryType.TS_BLOCK, 5, payload)
    batch = encode_batch([entry], "zstd", 3, "p1")
    assert decode_batch(batch)[1] == [entry]
    assert [size for _, size, _ in twb2_table(batch)][1:] == [len(payload), 0, 0]


def test_the_meta_section_is_compressed_with_the_dictionary_the_replica_must_have() -> None:
    samples = [e.payload for e in _entries(600) if e.type is EntryType.TS_BLOCK]
    dictionary = train_dictionary(samples, 4096)
    entries = _entries(6)
    plain = encode_batch(entries, "zstd", 3, "p1", dictionary, carry_dictionary=False)
    carried = encode_batch(entries, "zstd", 3, "p1", dictionary)
    assert [t[0] for t in twb2_table(plain)][1] == 2  # zstd with the dictionary
    assert read_header(plain).dictionary_id == dictionary.dictionary_id
    assert decode_batch(carried)[1] == entries
    assert decode_batch(plain, {dictionary.dictionary_id: dictionary})[1] == entries
    with pytest.raises(UnknownDictionary) as raised:
        decode_batch(plain)
    assert raised.value.dictionary_id == dictionary.dictionary_id


def test_a_replica_applies_a_twb1_batch_then_a_twb2_batch(tmp_path: Path) -> None:
    settings = load_settings(
        path=Path("/dev/null"), env={}, overrides={"vector_auto_buffer": {"dimension": DIM}}
    )
    entries = _entries(20)
    old = [e for e in entries if e.lsn <= 19]
    new = [e for e in entries if e.lsn > 19]
    state = ReplicaState(tmp_path / "replica", settings, primary_id="p1")
    try:
        v1 = encode_batch(old, "zstd", 3, "p1", first_lsn=1, last_lsn=19, format_version=1)
        assert v1[:4] == b"TWB1"
        assert decode_batch(v1)[1] == old
        first = state.apply_batch(v1)
        second = state.apply_batch(encode_batch(new, "zstd", 3, "p1", first_lsn=20))
        assert (first.first_lsn, first.last_lsn, second.last_lsn) == (1, 19, entries[-1].lsn)
        assert state.last_applied_lsn == entries[-1].lsn
    finally:
        state.close()


def _stored(
    rows: tuple[tuple[int, int, int, int, int], ...],
    meta: bytes = b"",
    floats: bytes = b"",
    chunks: bytes = b"",
) -> list[tuple[int, bytes, int]]:
    """Four stored sections: the index of ``rows``, then meta, floats and chunks."""
    return [(0, data, len(data)) for data in (_index(*rows), meta, floats, chunks)]


_ONE = ((0, 1, 5, 0, 3),)
_FRAME_OP = b"VOF1" + struct.pack("<IH", 1, 1)  # one op, dimension 1


def _with(sections: list[TwbSection], at: int, section: TwbSection) -> list[TwbSection]:
    """``sections`` with the one at ``at`` replaced."""
    return [*sections[:at], section, *sections[at + 1 :]]


@pytest.mark.parametrize(
    ("sections", "count", "message"),
    [
        (_with(_stored(_ONE, b"abc"), 3, (7, b"z", 1)), 1, "unknown encoding 7"),
        (_with(_stored(_ONE, b"abc"), 1, (0, b"abc", 4)), 1, "is 3 bytes, declared 4"),
        (_stored(_ONE, b"abc"), 2, "index is 18 bytes for 2"),
        (_with(_stored(_ONE, b"abc"), 1, (2, b"abc", 3)), 1, "needs a dictionary"),
        (_with(_stored(_ONE, b"abc"), 1, (1, b"abc", 3)), 1, "does not decompress"),
        (_stored(((0, 1, 5, 0, 5),), b"ab", b"abc"), 1, "not whole float32s"),
        (_stored(((9, 1, 5, 0, 3),), b"abc"), 1, "LSNs out of order"),
        (_stored(((0, 9, 5, 0, 3),), b"abc"), 1, "unknown type"),
        (_stored(((0, 1, 5, 7, 3),), b"abc"), 1, "unknown payload kind"),
        (_stored(((0, 1, 5, 0, 2),), b"abc"), 1, "do not add up"),
        (_stored(((0, 1, 5, 1, 3),), b"abc"), 1, "ends inside block head of entry 0"),
        (
            _stored(((0, 2, 5, 2, 13),), b"VOF1" + struct.pack("<IH", 5, 1), chunks=b"xyz"),
            1,
            "claims 5 ops in 13 bytes",
        ),
        (_stored(((0, 2, 5, 2, 17),), _FRAME_OP + struct.pack("<BHI", 9, 0, 0)), 1, "op code 9"),
        (
            _stored(((0, 2, 5, 2, 21),), _FRAME_OP + struct.pack("<BHI", 1, 0, 0), chunks=b"abcd"),
            1,
            "floats section ends inside entry 0",
        ),
    ],
)
def test_a_twb2_body_that_does_not_fit_its_header_is_a_corrupt_batch(
    sections: list[TwbSection], count: int, message: str
) -> None:
    forged = twb2_batch(sections, count)
    assert read_header(forged).format_version == 2  # header and checksum are fine
    with pytest.raises(CorruptBatch, match=message):
        decode_batch(forged)


@pytest.mark.parametrize("section", [0, 1, 2, 3])
@pytest.mark.parametrize("declare_size", [True, False])
def test_a_decompression_bomb_in_any_section_is_refused_within_a_memory_limit(
    tmp_path: Path, section: int, declare_size: bool
) -> None:
    sections = [(0, b"", 0)] * 4
    sections[section] = (1, zstd_bomb(declare_size), 200)  # 1 GiB of zeros declared as 200 bytes
    path = tmp_path / "bomb.twb"
    path.write_bytes(twb2_batch(sections, 0))
    assert decode_in_a_small_process(path).startswith("refused: ")


@pytest.mark.parametrize(
    ("present", "varints", "message"),
    [
        (0x10, b"", "no table of at most 4 sections"),
        (0x01, b"", "section table cut short"),
        (0x01, b"\x00\x80", "section table cut short"),
        (0x01, b"\x00" + encode_varint(2**32) + b"\x00", "length of more than 32 bits"),
        (0x01, b"\x00\xff\xff\xff\xff\xff\x01", "length of more than 32 bits"),
        (0x01, b"\x00\x00\x00", "present but empty"),
    ],
)
def test_a_twb2_section_table_that_does_not_parse_is_a_corrupt_batch(
    present: int, varints: bytes, message: str
) -> None:
    good = twb2_batch(_stored(_ONE, b"abc"), 1)
    body_at = 54 + 2
    body = bytes([present]) + varints
    head = bytearray(good[:body_at])
    struct.pack_into("<I", head, 40, len(body))
    forged = resigned(bytes(head) + body)
    with pytest.raises(CorruptBatch, match=message):
        decode_batch(forged)


def test_an_unknown_format_version_is_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="format 3 is unknown"):
        encode_batch(_entries(2), Codec.ZSTD, 3, "p1", format_version=3)


def test_the_shipper_takes_its_dictionary_from_the_setting_and_names_it_when_unusable(
    tmp_path: Path,
) -> None:
    dictionary = train_dictionary([e.payload for e in _entries(600)], 2048)
    path = tmp_path / "wal.dict"
    path.write_bytes(dictionary.data)
    setting = "compressed_wal_shipping.dictionary_file"

    def shipper_with(file: Path) -> WalShipper:
        settings = load_settings(
            path=Path("/dev/null"),
            env={},
            overrides={"compressed_wal_shipping": {"dictionary_file": str(file)}},
        )
        return WalShipper(settings, bootstrap="127.0.0.1:9")

    assert shipper_with(path).compression() == (Codec.ZSTD, 3, dictionary)
    with pytest.raises(ConfigError, match=f"{setting}: cannot read .*missing"):
        shipper_with(tmp_path / "missing")
    (tmp_path / "junk").write_bytes(b"no dictionary")
    with pytest.raises(ConfigError, match=f"{setting}: .*junk is not a zstd dictionary"):
        shipper_with(tmp_path / "junk")
