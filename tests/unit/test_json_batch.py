"""The fast JSON point decoder accepts, rejects and decodes exactly like the reference."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidRecord
from pipeline.ts.json_batch import JsonPointDecoder
from pipeline.ts.point import decode_point_json
from tests.fixtures.points import point_objects, record_values

pytestmark = pytest.mark.unit

_values = record_values(nonfinite=False)
_pretty = point_objects(nonfinite=False).map(lambda obj: json.dumps(obj, indent=1).encode())


def _reference(value: bytes) -> tuple[str, int, bytes] | str:
    try:
        point = decode_point_json(value)
    except InvalidRecord as exc:
        return f"rejected: {exc}"
    return point.series_key(), point.timestamp_ms, struct.pack("<d", point.value)


def _fast(decoder: JsonPointDecoder, value: bytes) -> tuple[str, int, bytes] | str:
    try:
        key, ts, v = decoder.decode(value)
    except InvalidRecord as exc:
        return f"rejected: {exc}"
    return key, ts, struct.pack("<d", v)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_values, min_size=1, max_size=8))
def test_fast_decoder_matches_the_reference_bit_for_bit(values: list[bytes]) -> None:
    decoder = JsonPointDecoder()
    for value in values:  # twice: the second pass is served from the series-key cache
        assert _fast(decoder, value) == _reference(value)
        assert _fast(decoder, value) == _reference(value)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_values, _pretty), min_size=1, max_size=12))
def test_a_whole_batch_decodes_like_the_reference_record_by_record(values: list[bytes]) -> None:
    decoder = JsonPointDecoder()
    got = [
        f"rejected: {item}"
        if isinstance(item, InvalidRecord)
        else (item[0], item[1], struct.pack("<d", item[2]))
        for item in decoder.decode_many(values)
    ]
    assert got == [_reference(value) for value in values]


def test_a_batch_of_valid_points_is_decoded_in_one_call_unless_a_value_has_a_newline() -> None:
    good = b'{"metric":"cpu","entity":"h1","timestamp_ms":5,"value":1.5}'
    decoder = JsonPointDecoder()
    assert decoder.decode_lines([good, good]) == [('["cpu","h1",{}]', 5, 1.5)] * 2
    assert decoder.decode_lines([good, b'{"metric":"cpu",\n"entity":"h1"}']) is None
    assert decoder.decode_lines([good, b"{"]) is None


def test_records_that_are_invalid_alone_never_combine_into_points_in_one_call() -> None:
    head = b'{"metric":"m","entity":"e","timestamp_ms":1'
    tail = b',"value":1}'
    two = b'{"metric":"a","entity":"b","timestamp_ms":2,"value":2}' * 2
    decoder = JsonPointDecoder()
    assert decoder.decode_lines([head, tail, two]) is None
    out = decoder.decode_many([head, tail, two])
    assert all(isinstance(item, InvalidRecord) for item in out)


def test_decode_many_keeps_order_and_returns_the_reference_reason() -> None:
    good = b'{"metric":"cpu","entity":"h1","timestamp_ms":5,"value":1.5,"tags":{"b":"2","a":"1"}}'
    bad_tags = b'{"metric":"cpu","entity":"h1","timestamp_ms":5,"value":1.5,"tags":{"a":1}}'
    out = JsonPointDecoder().decode_many([good, b"{", bad_tags, good])
    assert out[0] == ('["cpu","h1",{"a":"1","b":"2"}]', 5, 1.5)
    assert out[3] == out[0]
    assert isinstance(out[1], InvalidRecord)
    assert "not valid JSON" in str(out[1])
    assert isinstance(out[2], InvalidRecord)
    assert str(out[2]) == "field 'tags' must be an object of string to string"


def test_whole_number_float_timestamps_are_rejected_like_the_reference() -> None:
    value = b'{"metric":"m","entity":"e","timestamp_ms":4439.0,"value":1}'
    assert _fast(JsonPointDecoder(), value) == _reference(value)
    assert str(_reference(value)).startswith("rejected: field 'timestamp_ms'")
