"""The TWB2 column split (``pipeline.wal.columns``): what the writer takes apart, the
reader puts back byte for byte, and every way a damaged column is refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import CorruptBatch
from pipeline.ts.block import encode_block
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.columns import ColumnReader, ColumnWriter, PayloadKind, meta_of

pytestmark = pytest.mark.unit

DIM = 4


def _block() -> bytes:
    ts = np.arange(1_000, 1_010, dtype=np.int64)
    return encode_block("cpu|host-1|{}", ts, ts * 0.5)


def _frame() -> bytes:
    vectors = np.arange(2 * DIM, dtype=np.float32).reshape(2, DIM)
    ops = [
        VectorOp(OpType.ADD, "a", vectors[0], {"n": 1}),
        VectorOp(OpType.REMOVE, "gone", None, {}),
        VectorOp(OpType.UPDATE, "b", vectors[1], {}),
    ]
    return encode_op_frame(ops, DIM)


def _ops_head(count: int) -> bytes:
    return count.to_bytes(4, "little") + DIM.to_bytes(2, "little")


def _columns(*payloads: bytes) -> tuple[list[PayloadKind], bytes, bytes, bytes]:
    writer = ColumnWriter()
    kinds = [writer.add(p) for p in payloads]
    return kinds, b"".join(writer.meta), b"".join(writer.floats), b"".join(writer.chunks)


def test_blocks_frames_and_other_payloads_split_and_rebuild_byte_for_byte() -> None:
    payloads = [_block(), _frame(), b"opaque bytes", _block()]
    kinds, meta, floats, chunks = _columns(*payloads)

    reader = ColumnReader(meta, floats, chunks)
    rebuilt = [
        reader.take(k, len(p), i) for i, (k, p) in enumerate(zip(kinds, payloads, strict=True))
    ]
    reader.finish()

    assert kinds == [
        PayloadKind.GORILLA_BLOCK,
        PayloadKind.VECTOR_FRAME,
        PayloadKind.OPAQUE,
        PayloadKind.GORILLA_BLOCK,
    ]
    assert rebuilt == payloads
    assert len(floats) == 2 * 4 * DIM
    assert len(meta_of(_frame())) == len(_frame()) - 2 * 4 * DIM  # the vectors left out


@pytest.mark.parametrize(
    "payload",
    [
        b"TGBK" + bytes(20),  # a block's magic, shorter than any block
        b"TGBK\x00" + (1_000).to_bytes(2, "little") + bytes(40),  # a key past the end
        _block()[:-1],  # a block one byte short of its chunk and CRC
        _block() + b"x",  # a block with a byte after it
        b"VOF1" + bytes(3),  # a frame's magic, shorter than a frame head
        b"VOF1" + (1_000).to_bytes(4, "little") + DIM.to_bytes(2, "little"),  # 1,000 ops in 0
        _frame()[:-3],  # the last op cut short
        b"VOF1" + _ops_head(2) + b"\x03\x00\x00" + (10).to_bytes(4, "little") + bytes(10),
        b"VOF1" + _ops_head(1) + b"\x01" + (500).to_bytes(2, "little") + bytes(4),  # pk past end
        _frame() + b"y",  # a byte after the last op
        _frame()[:10] + b"\x09" + _frame()[11:],  # op code 9
    ],
)
def test_a_payload_that_only_looks_like_a_block_or_frame_is_kept_whole(payload: bytes) -> None:
    kinds, meta, floats, chunks = _columns(payload)

    assert kinds == [PayloadKind.OPAQUE]
    assert (meta, floats, chunks) == (payload, b"", b"")


def test_a_block_is_refused_when_its_head_or_chunk_is_cut_off() -> None:
    kinds, meta, floats, chunks = _columns(_block())

    with pytest.raises(CorruptBatch, match="inside block head of entry 0"):
        ColumnReader(meta[:20], floats, chunks).take(kinds[0], len(_block()), 0)
    with pytest.raises(CorruptBatch, match="meta section ends inside entry 0"):
        ColumnReader(meta[:-2], floats, chunks).take(kinds[0], len(_block()), 0)
    with pytest.raises(CorruptBatch, match="chunks section ends inside entry 0"):
        ColumnReader(meta, floats, chunks[:-1]).take(kinds[0], len(_block()), 0)
    with pytest.raises(CorruptBatch, match="its index says 5"):
        ColumnReader(meta, floats, chunks).take(kinds[0], 5, 0)


def test_a_frame_is_refused_naming_the_section_that_ends_inside_it() -> None:
    frame = _frame()
    kinds, meta, floats, chunks = _columns(frame)
    kind, size = kinds[0], len(frame)

    def take(meta: bytes = meta, floats: bytes = floats, size: int = size) -> bytes:
        return ColumnReader(meta, floats, chunks).take(kind, size, 3)

    assert take() == frame
    with pytest.raises(CorruptBatch, match="meta section ends inside entry 3"):
        take(meta=meta[:5])  # inside the frame head
    with pytest.raises(CorruptBatch, match="claims 3 ops in 8 bytes"):
        take(size=8)
    with pytest.raises(CorruptBatch, match="meta section ends inside entry 3"):
        take(meta=meta[:12])  # inside the first op's head
    with pytest.raises(CorruptBatch, match="meta section ends inside entry 3"):
        take(meta=meta[:17])  # inside the first op's metadata length
    with pytest.raises(CorruptBatch, match="meta section ends inside entry 3"):
        take(meta=meta[:20])  # inside the first op's metadata
    with pytest.raises(CorruptBatch, match="floats section ends inside entry 3"):
        take(floats=floats[:-1])
    with pytest.raises(CorruptBatch, match="rebuilds past its 30 bytes"):
        take(size=30)
    bad_code = meta[:10] + b"\x09" + meta[11:]
    with pytest.raises(CorruptBatch, match="op code 9"):
        take(meta=bad_code)


def test_columns_with_bytes_no_entry_uses_are_refused() -> None:
    kinds, meta, floats, chunks = _columns(b"abc")
    reader = ColumnReader(meta + b"z", floats, chunks)
    assert reader.take(kinds[0], 3, 0) == b"abc"

    with pytest.raises(CorruptBatch, match=r"no entry uses \(meta, floats, chunks: \(1, 0, 0\)\)"):
        reader.finish()
