"""Vector operations: JSON and VOF1 frame round trips, and validation that names the field."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from pipeline.errors import InvalidRecord
from pipeline.vectors.ops import (
    FRAME_MAGIC,
    OpType,
    VectorOp,
    decode_op_frame,
    decode_op_json,
    encode_op_frame,
    encode_op_json,
    is_op_frame,
    validate_vector,
)

pytestmark = pytest.mark.unit

DIM = 8


def vec(seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def sample_ops() -> list[VectorOp]:
    return [
        VectorOp(OpType.ADD, "doc-1", vec(1), {"lang": "en", "n": 1}),
        VectorOp(OpType.UPDATE, "doc-ü", vec(2), {}),
        VectorOp(OpType.REMOVE, "doc-3", None),
        VectorOp(OpType.ADD, "doc-4", vec(4), {"nested": {"a": [1, 2]}}),
    ]


# -- JSON ---------------------------------------------------------------------


@pytest.mark.parametrize("op", sample_ops(), ids=lambda op: op.op.value + ":" + op.pk)
def test_json_round_trip_keeps_op_pk_vector_and_metadata_exactly(op: VectorOp) -> None:
    decoded = decode_op_json(encode_op_json(op), dimension=DIM)

    assert decoded == op
    if decoded.vector is not None:
        assert decoded.vector.dtype == np.float32
        assert decoded.vector.tobytes() == op.vector.tobytes()  # type: ignore[union-attr]


def test_json_op_defaults_to_add_and_metadata_to_empty() -> None:
    data = orjson.dumps({"pk": "a", "vector": [0.5] * DIM})

    op = decode_op_json(data, dimension=DIM)

    assert op.op is OpType.ADD
    assert op.metadata == {}
    assert op.vector is not None
    assert op.vector.tolist() == [0.5] * DIM


def test_json_null_metadata_is_empty_and_remove_ignores_a_vector() -> None:
    op = decode_op_json(
        orjson.dumps({"op": "remove", "pk": "a", "vector": [1.0], "metadata": None}),
        dimension=DIM,
    )

    assert op == VectorOp(OpType.REMOVE, "a", None, {})


def test_json_accepts_integer_components() -> None:
    op = decode_op_json(orjson.dumps({"pk": "a", "vector": list(range(DIM))}), dimension=DIM)

    assert op.vector is not None
    assert op.vector.tolist() == [float(i) for i in range(DIM)]


def test_encode_json_refuses_nan_component() -> None:
    vector = vec()
    vector[3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        encode_op_json(VectorOp(OpType.ADD, "a", vector))


def _json(**fields: object) -> bytes:
    body: dict[str, object] = {"op": "add", "pk": "a", "vector": [0.0] * DIM}
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not _DROP})


_DROP = object()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_json(vector=[0.0] * (DIM - 1)), f"vector has {DIM - 1} dimensions; the index has {DIM}"),
        (_json(vector=[0.0] * DIM + [1.0]), f"vector has {DIM + 1} dimensions"),
        (_json(vector=[1e39] + [0.0] * (DIM - 1)), "field 'vector' component 0 is inf"),
        (_json(vector=["x"] * DIM), "field 'vector' must be an array of numbers"),
        (_json(vector=[[0.0] * DIM]), "field 'vector' must be a flat array"),
        (_json(vector="0,0"), "field 'vector' must be an array of numbers"),
        (_json(vector=_DROP), "field 'vector' is required for op 'add'"),
        (_json(op="update", vector=None), "field 'vector' is required for op 'update'"),
        (_json(pk=""), "field 'pk' must be a non-empty string"),
        (_json(pk=7), "field 'pk' must be a non-empty string"),
        (_json(pk=_DROP), "field 'pk' must be a non-empty string"),
        (_json(pk="p" * 70000), "field 'pk' is 70000 bytes of UTF-8; at most 65535"),
        (_json(metadata=[1, 2]), "field 'metadata' must be a JSON object"),
        (_json(metadata="x"), "field 'metadata' must be a JSON object"),
        (_json(metadata={"k": "v" * 70000}), "field 'metadata' is 70008 bytes of JSON; at most"),
        (_json(op="upsert"), "field 'op' must be one of 'add', 'update', 'remove'; got 'upsert'"),
        (_json(op=None), "field 'op' must be one of"),
        (_json(extra=1), "unknown field(s): extra"),
        (b"[1, 2]", "a vector operation must be a JSON object"),
        (b'{"pk": "a", ', "not valid JSON"),
        (b'{"pk": "a", "vector": [NaN]}', "not valid JSON"),
    ],
)
def test_json_validation_error_names_the_field(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        decode_op_json(data, dimension=DIM)

    assert message in str(info.value)


def test_json_metadata_limit_is_configurable() -> None:
    data = _json(metadata={"k": "v" * 20})
    assert decode_op_json(data, dimension=DIM, max_metadata_bytes=64).metadata == {"k": "v" * 20}
    with pytest.raises(InvalidRecord, match="field 'metadata' is 28 bytes of JSON; at most 16"):
        decode_op_json(data, dimension=DIM, max_metadata_bytes=16)


# -- frame --------------------------------------------------------------------


def test_frame_round_trip_keeps_every_op_in_order() -> None:
    ops = sample_ops()

    data = encode_op_frame(ops, DIM)
    decoded = decode_op_frame(data, dimension=DIM)

    assert is_op_frame(data)
    assert decoded == ops
    for got, sent in zip(decoded, ops, strict=True):
        if sent.vector is not None:
            assert got.vector is not None
            assert got.vector.dtype == np.float32
            assert got.vector.tobytes() == sent.vector.tobytes()


def test_frame_layout_matches_the_documented_table() -> None:
    vector = np.arange(DIM, dtype=np.float32)
    op = VectorOp(OpType.UPDATE, "ab", vector, {"x": 1})

    data = encode_op_frame([op], DIM)

    meta = b'{"x":1}'
    expected = (
        FRAME_MAGIC
        + struct.pack("<IH", 1, DIM)
        + struct.pack("<BH", 2, 2)
        + b"ab"
        + struct.pack("<I", len(meta))
        + meta
        + vector.astype("<f4").tobytes()
    )
    assert data == expected


def test_empty_frame_decodes_to_no_ops() -> None:
    assert decode_op_frame(encode_op_frame([], DIM), dimension=DIM) == []


def test_json_is_not_a_frame() -> None:
    assert not is_op_frame(encode_op_json(sample_ops()[0]))


def test_encode_frame_refuses_vector_of_other_dimension() -> None:
    with pytest.raises(ValueError, match="has shape"):
        encode_op_frame([VectorOp(OpType.ADD, "a", vec(dim=DIM + 1))], DIM)


def _frame_one(
    *,
    code: int = 1,
    pk: bytes = b"a",
    meta: bytes = b'{"x":1}',
    vector: np.ndarray | None = None,
    dim: int = DIM,
) -> bytes:
    body = struct.pack("<BH", code, len(pk)) + pk + struct.pack("<I", len(meta)) + meta
    if code != 3:
        body += (np.zeros(dim, dtype="<f4") if vector is None else vector.astype("<f4")).tobytes()
    return FRAME_MAGIC + struct.pack("<IH", 1, dim) + body


def _with(index: int, value: float) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[index] = value
    return vector


GOOD = _frame_one()
HEADER = 10


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_frame_one(vector=_with(2, np.nan)), "field 'vector' component 2 is nan"),
        (_frame_one(vector=_with(0, np.inf)), "field 'vector' component 0 is inf"),
        (_frame_one(vector=_with(5, -np.inf)), "field 'vector' component 5 is -inf"),
        (_frame_one(dim=DIM - 1), f"field 'dimension' of the frame is {DIM - 1}; the index has"),
        (_frame_one(code=0), "field 'op' of op 0 has unknown code 0"),
        (_frame_one(code=9), "field 'op' of op 0 has unknown code 9"),
        (_frame_one(pk=b""), "field 'pk' must be a non-empty string"),
        (_frame_one(pk=b"\xff\xfe"), "field 'pk' of op 0 is not valid UTF-8"),
        (_frame_one(meta=b"[1]"), "field 'metadata' must be a JSON object"),
        (_frame_one(meta=b"{oops"), "field 'metadata' of op 0 is not valid JSON"),
        (_frame_one(meta=b'{"k":"' + b"v" * 70000 + b'"}'), "field 'metadata' of op 0 is 70008"),
        (GOOD[: HEADER + 1], "frame truncated in op 0 (field 'op')"),
        (GOOD[: HEADER + 4], "frame truncated in op 0 (field 'pk')"),
        (GOOD[: HEADER + 10], "frame truncated in op 0 (field 'metadata')"),
        (GOOD[:-1], "frame truncated in op 0 (field 'vector')"),
        (GOOD + b"\x00", "frame has 1 trailing bytes"),
        (b"VOF1\x01", "not a VOF1 vector frame"),
        (b"XXXX" + GOOD[4:], "not a VOF1 vector frame"),
    ],
)
def test_frame_validation_error_names_the_field(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        decode_op_frame(data, dimension=DIM)

    assert message in str(info.value)


def test_frame_remove_carries_no_vector_bytes() -> None:
    data = _frame_one(code=3, meta=b"")

    assert decode_op_frame(data, dimension=DIM) == [VectorOp(OpType.REMOVE, "a", None)]


# -- validate_vector and VectorOp ----------------------------------------------


def test_validate_vector_returns_float32_of_the_dimension() -> None:
    array = validate_vector([1, 2.5, -3], 3)

    assert array.dtype == np.float32
    assert array.tolist() == [1.0, 2.5, -3.0]


def test_validate_vector_passes_a_valid_float32_array_through() -> None:
    vector = vec()

    assert validate_vector(vector, DIM) is vector


def test_validate_vector_rejects_wrong_dimension_with_both_numbers() -> None:
    with pytest.raises(InvalidRecord, match="vector has 767 dimensions; the index has 768"):
        validate_vector(np.zeros(767, dtype=np.float32), 768)


def test_vector_op_coerces_op_strings_to_op_type() -> None:
    op = VectorOp("update", "a", vec())  # type: ignore[arg-type]

    assert op.op is OpType.UPDATE


@pytest.mark.parametrize(
    ("op", "vector", "message"),
    [
        (OpType.REMOVE, vec(), "must not carry a vector"),
        (OpType.ADD, None, "one-dimensional float32"),
        (OpType.UPDATE, np.zeros(DIM), "one-dimensional float32"),
        (OpType.ADD, np.zeros((2, DIM), dtype=np.float32), "one-dimensional float32"),
    ],
)
def test_vector_op_rejects_vector_inconsistent_with_op(
    op: OpType, vector: np.ndarray | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        VectorOp(op, "a", vector)


def test_vector_ops_compare_by_value() -> None:
    assert VectorOp(OpType.ADD, "a", vec(1), {"k": 1}) == VectorOp(
        OpType.ADD, "a", vec(1), {"k": 1}
    )
    assert VectorOp(OpType.ADD, "a", vec(1)) != VectorOp(OpType.ADD, "a", vec(2))
    assert VectorOp(OpType.ADD, "a", vec(1)) != VectorOp(OpType.UPDATE, "a", vec(1))
    assert VectorOp(OpType.REMOVE, "a", None) != VectorOp(OpType.REMOVE, "b", None)


@pytest.mark.parametrize("component", ['"1.5"', "true", "null"])
def test_json_components_that_are_not_numbers_are_rejected_as_the_facade_does(
    component: str,
) -> None:
    data = ('{"op":"add","pk":"a","vector":[' + ",".join(["0.5"] * 7 + [component]) + "]}").encode()
    with pytest.raises(InvalidRecord, match="field 'vector' must be an array of numbers"):
        decode_op_json(data, dimension=8)
