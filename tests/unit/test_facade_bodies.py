"""The facade's fast body decoders answer exactly like its reference checks: same points,
same series keys, bit-identical values, the same vector operations, the same 400s."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidRequest
from pipeline.facade.ts_bodies import PointBodies
from pipeline.facade.vector_bodies import vector_op_from_body
from pipeline.validation import (
    NDJSON,
    batch_points,
    parse_json,
    point_from_json,
    vector_op_from_json,
)
from pipeline.vectors.ops import OpType, encode_op_json
from tests.fixtures.points import TEXT, encoded, json_values, point_objects, record_values

pytestmark = pytest.mark.unit

DIM = 4
_text = TEXT
_json = json_values(nonfinite=True)  # NaN and the infinities too: the facade names them
_encoded = encoded
_bodies = st.one_of(
    record_values(nonfinite=True),
    point_objects(nonfinite=True).map(lambda obj: json.dumps(obj, indent=1).encode()),
)


def _outcome(call: Callable[..., object], *args: object) -> object:
    try:
        return call(*args)
    except Exception as exc:  # the type and message are the answer's
        return f"{type(exc).__name__}: {exc}"


def _bits(values: object) -> list[bytes]:
    return [struct.pack("<d", v) for v in np.asarray(values, np.float64).tolist()]


def _reference_point(body: bytes) -> tuple[str, int, bytes]:
    point = point_from_json(parse_json(body))
    return point.series_key(), point.timestamp_ms, struct.pack("<d", point.value)


def _fast_point(bodies: PointBodies, body: bytes) -> tuple[str, int, bytes]:
    key, timestamp_ms, value = bodies.point(body)
    return key, timestamp_ms, struct.pack("<d", value)


@settings(max_examples=500, deadline=None)
@given(st.lists(_bodies, min_size=1, max_size=6))
def test_one_point_decodes_and_fails_exactly_like_the_reference_checks(
    bodies: list[bytes],
) -> None:
    decoder = PointBodies()
    for body in bodies:  # twice: the second pass is served from the series-key cache
        expected = _outcome(_reference_point, body)
        assert _outcome(_fast_point, decoder, body) == expected
        assert _outcome(_fast_point, decoder, body) == expected


def _reference_batch(body: bytes, content_type: str) -> list[tuple[str, list[int], list[bytes]]]:
    grouped: dict[str, tuple[list[int], list[float]]] = {}
    for point in batch_points(body, content_type):
        ts, vs = grouped.setdefault(point.series_key(), ([], []))
        ts.append(point.timestamp_ms)
        vs.append(point.value)
    return [(key, ts, _bits(vs)) for key, (ts, vs) in grouped.items()]


def _fast_batch(body: bytes, content_type: str) -> list[tuple[str, list[int], list[bytes]]]:
    series, count = PointBodies().batch(body, content_type)
    assert count == sum(len(ts) for _, ts, _ in series)
    return [(key, ts.tolist(), _bits(vs)) for key, ts, vs in series]


_mostly_valid = st.fixed_dictionaries(
    {
        "metric": st.sampled_from(["cpu", "mem"]),
        "entity": st.sampled_from(["h1", "h2", "h3"]),
        "timestamp_ms": st.integers(-(2**63), 2**63 - 1),
        "value": st.floats(allow_nan=False, allow_infinity=False),
    }
).map(_encoded)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(_mostly_valid, _mostly_valid, _mostly_valid, _bodies), max_size=8),
    st.sampled_from(["\n", "\r\n", "\r", "\n\n", " ", ","]),
    st.booleans(),
    st.sampled_from([NDJSON, "application/json"]),
)
def test_a_batch_decodes_and_fails_exactly_like_the_reference_checks(
    lines: list[bytes], separator: str, as_array: bool, content_type: str
) -> None:
    joined = separator.encode().join(lines)
    body = b"[" + joined + b"]" if as_array else joined
    assert _outcome(_fast_batch, body, content_type) == _outcome(
        _reference_batch, body, content_type
    )


_A = b'{"metric":"cpu","entity":"h1","timestamp_ms":1,"value":1.5}'
_B = b'{"metric":"cpu","entity":"h2","timestamp_ms":2,"value":2.5,"tags":{"a":"b"}}'


@pytest.mark.parametrize(
    "body",
    [
        _A + b"\n" + _B + b"\n",
        _A + b" " + _B,  # two values on one line
        _A + b"\n" + _A + b" " + _B + b"\n\n",  # ... and a blank line: as many values as lines
        _B.replace(b'"tags":', b'"tags":\n') + b"\n" + _A + _A,  # a value over two lines
        _A + b"\r" + _B,
        _A + b"\r\n" + _B + b"\r\n",
        b"\n" + _A,
        _A + b"\n \n" + _B,
        _A + b"\n\x0c\n" + _B,
    ],
)
def test_ndjson_lines_are_decoded_one_by_one_even_when_decoded_in_one_call(body: bytes) -> None:
    assert _outcome(_fast_batch, body, NDJSON) == _outcome(_reference_batch, body, NDJSON)


def test_a_batch_of_valid_points_keeps_each_series_in_order_and_counts_them() -> None:
    body = b"\n".join(
        b'{"metric":"m","entity":"e%d","timestamp_ms":%d,"value":%d.5,"tags":{"b":"1","a":"2"}}'
        % (i % 3, i, i)
        for i in range(9)
    )
    series, count = PointBodies().batch(body, NDJSON)
    assert count == 9
    assert [(k, ts.tolist()) for k, ts, _ in series] == [
        (f'["m","e{e}",{{"a":"2","b":"1"}}]', [e, e + 3, e + 6]) for e in range(3)
    ]
    with pytest.raises(InvalidRequest, match="line 2: field 'value' must be a finite number"):
        PointBodies().batch(body.replace(b"1.5", b"NaN"), NDJSON)


@pytest.mark.parametrize("content_type", [NDJSON, "application/json"])
def test_two_spellings_of_one_series_in_a_batch_are_one_series_in_order(
    content_type: str,
) -> None:
    spellings = [b'{"a":"1","b":"2"}', b'{"b":"2","a":"1"}', b'{"b":"2", "a":"1"}']
    lines = [
        b'{"metric":"m","entity":"e","timestamp_ms":5,"value":%d,"tags":%s}' % (i, spellings[i % 3])
        for i in range(7)
    ]
    body = b"[" + b",".join(lines) + b"]" if content_type != NDJSON else b"\n".join(lines)
    series, count = PointBodies().batch(body, content_type)
    assert count == 7
    assert [(k, ts.tolist(), vs.tolist()) for k, ts, vs in series] == [
        ('["m","e",{"a":"1","b":"2"}]', [5] * 7, [float(i) for i in range(7)])
    ]
    assert _fast_batch(body, content_type) == _reference_batch(body, content_type)


_vectors = st.one_of(
    st.lists(
        st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=DIM, max_size=DIM
    ),
    st.lists(st.integers(-(2**30), 2**30), min_size=DIM, max_size=DIM),
    st.lists(
        st.one_of(st.floats(width=32), st.floats(), st.just(1e39)), min_size=DIM, max_size=DIM
    ),
    st.lists(st.one_of(st.floats(), st.booleans(), _text), max_size=DIM + 1),
    _json,
)


@st.composite
def _op_objects(draw: st.DrawFn) -> dict[str, object]:
    op: dict[str, object] = {
        "pk": draw(st.one_of(st.sampled_from(["doc1", "d"]), _text, _json)),
        "vector": draw(_vectors),
    }
    if draw(st.booleans()):
        op["metadata"] = draw(st.one_of(st.dictionaries(_text, _json, max_size=3), _json))
    for name in draw(st.lists(st.sampled_from(sorted(op)), max_size=1)):
        op.pop(name, None)
    if draw(st.integers(0, 9)) == 0:
        op[draw(st.sampled_from(["op", "x", "metadata"]))] = draw(_json)
    return op


_op_bodies = st.one_of(
    _op_objects().map(_encoded),
    _json.map(_encoded),
    st.binary(max_size=30),
    _op_objects()
    .map(_encoded)
    .flatmap(lambda raw: st.integers(0, len(raw)).map(lambda cut: raw[:cut])),
)


@settings(max_examples=500, deadline=None)
@given(_op_bodies, st.sampled_from(list(OpType)), st.sampled_from([0, 2, 65536]))
def test_a_vector_operation_decodes_and_fails_exactly_like_the_reference_checks(
    body: bytes, op: OpType, max_metadata_bytes: int
) -> None:
    def reference() -> bytes:
        return encode_op_json(vector_op_from_json(parse_json(body), op, DIM, max_metadata_bytes))

    def fast() -> bytes:
        return encode_op_json(vector_op_from_body(body, op, DIM, max_metadata_bytes))

    assert _outcome(fast) == _outcome(reference)
