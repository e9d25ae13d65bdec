from __future__ import annotations

import math
import re

import numpy as np
import orjson
import pytest

from pipeline.errors import InvalidRecord
from pipeline.limits import MAX_SERIES_KEY_BYTES, MAX_TAGS
from pipeline.ts.json_batch import JsonPointDecoder
from pipeline.ts.point import (
    DataPoint,
    decode_frame,
    decode_point_json,
    encode_frame,
    is_frame,
    parse_series_key,
    series_key,
)

pytestmark = pytest.mark.unit


def test_series_key_sorts_tags_so_equal_series_have_equal_keys() -> None:
    a = series_key("cpu", "h1", {"b": "2", "a": "1"})
    b = series_key("cpu", "h1", {"a": "1", "b": "2"})
    assert a == b == '["cpu","h1",{"a":"1","b":"2"}]'
    assert parse_series_key(a) == ("cpu", "h1", {"a": "1", "b": "2"})


def test_roadmap_json_point_round_trips() -> None:
    raw = (
        b'{"metric": "cpu_usage", "entity": "server01", "timestamp_ms": 1702645200000,'
        b' "value": 75.5, "tags": {"datacenter": "eu-west-1", "environment": "production"}}'
    )
    point = decode_point_json(raw)
    assert point == DataPoint(
        "cpu_usage",
        "server01",
        1702645200000,
        75.5,
        {"datacenter": "eu-west-1", "environment": "production"},
    )
    assert decode_point_json(point.to_json()) == point


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"metric": "", "entity": "e", "timestamp_ms": 1, "value": 1}', "metric"),
        (b'{"metric": "m", "timestamp_ms": 1, "value": 1}', "entity"),
        (b'{"metric": "m", "entity": "e", "timestamp_ms": 1.5, "value": 1}', "timestamp_ms"),
        (b'{"metric": "m", "entity": "e", "timestamp_ms": true, "value": 1}', "timestamp_ms"),
        (b'{"metric": "m", "entity": "e", "timestamp_ms": 1, "value": "high"}', "value"),
        (b'{"metric": "m", "entity": "e", "timestamp_ms": 1, "value": 1, "tags": [1]}', "tags"),
        (b'{"metric": "m", "entity": "e", "timestamp_ms": 1, "value": 1, "extra": 0}', "extra"),
        (b"[1, 2]", "object"),
        (b"{nope", "JSON"),
    ],
)
def test_invalid_json_point_names_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidRecord, match=field):
        decode_point_json(raw)


def test_nan_cannot_be_sent_as_json() -> None:
    with pytest.raises(ValueError, match="binary batch frame"):
        DataPoint("m", "e", 1, math.nan).to_json()


def test_frame_round_trips_every_bit_pattern() -> None:
    ts = np.array([-5, 0, 2**62], dtype=np.int64)
    vs = np.array([math.nan, -0.0, 5e-324], dtype=np.float64)
    frame = encode_frame([(series_key("a", "b"), ts, vs), (series_key("c", "d"), ts[:1], vs[:1])])
    assert is_frame(frame)
    decoded = decode_frame(frame)
    assert [k for k, _, _ in decoded] == [series_key("a", "b"), series_key("c", "d")]
    assert decoded[0][1].tolist() == ts.tolist()
    assert decoded[0][2].view(np.uint64).tolist() == vs.view(np.uint64).tolist()


@pytest.mark.parametrize("cut", [3, 9, 20, -1])
def test_truncated_frame_is_an_invalid_record(cut: int) -> None:
    frame = encode_frame([(series_key("a", "b"), np.arange(4, dtype=np.int64), np.ones(4))])
    with pytest.raises(InvalidRecord):
        decode_frame(frame[:cut])


def test_frame_with_trailing_bytes_is_rejected() -> None:
    frame = encode_frame([(series_key("a", "b"), np.arange(2, dtype=np.int64), np.ones(2))])
    with pytest.raises(InvalidRecord, match="trailing"):
        decode_frame(frame + b"x")


@pytest.mark.parametrize(
    "key",
    [
        '["m","e",null]',
        '["m","e"]',
        '["m","e",{"a":1}]',
        '["","e",{}]',
        '["m", "e", {}]',
        '["m","e",{"b":"2","a":"1"}]',
        "not json",
        '{"m":"e"}',
    ],
)
def test_a_frame_whose_series_key_is_not_canonical_is_an_invalid_record(key: str) -> None:
    with pytest.raises(InvalidRecord, match="is not a series key"):
        parse_series_key(key)
    frame = encode_frame([(key, np.array([1], np.int64), np.array([1.0]))])
    with pytest.raises(InvalidRecord, match="is not a series key"):
        decode_frame(frame)


def test_a_point_whose_series_key_does_not_fit_a_block_is_an_invalid_record() -> None:
    tags = {f"t{i:03}": "v" * 400 for i in range(200)}
    raw = orjson.dumps({"metric": "m", "entity": "e", "timestamp_ms": 1, "value": 1, "tags": tags})
    size = len(series_key("m", "e", tags).encode())
    assert size > MAX_SERIES_KEY_BYTES
    with pytest.raises(InvalidRecord, match=f"is {size} bytes of UTF-8; at most 65535"):
        decode_point_json(raw)
    with pytest.raises(InvalidRecord, match=f"is {size} bytes of UTF-8; at most 65535"):
        JsonPointDecoder().decode(raw)


@pytest.mark.parametrize(
    ("point", "reason"),
    [
        ({"metric": "m" * 70_000}, "field 'metric' is 70000 bytes of UTF-8; at most 4096"),
        ({"entity": "é" * 2049}, "field 'entity' is 4098 bytes of UTF-8; at most 4096"),
        ({"tags": {f"t{i}": "v" for i in range(257)}}, "has 257 tags; at most 256 (MAX_TAGS)"),
        ({"tags": {"n" * 1025: "v"}}, "a tag name in field 'tags' is 1025 bytes"),
        ({"tags": {"host": "v" * 16_385}}, "tag 'host' is 16385 bytes of UTF-8; at most 16384"),
    ],
)
def test_every_field_over_its_limit_is_refused_by_both_decoders_and_frames(
    point: dict[str, object], reason: str
) -> None:
    fields = {"metric": "m", "entity": "e", "tags": {}} | point
    raw = orjson.dumps({**fields, "timestamp_ms": 1, "value": 1.0})
    with pytest.raises(InvalidRecord, match=re.escape(reason)):
        decode_point_json(raw)
    with pytest.raises(InvalidRecord, match=re.escape(reason)):
        JsonPointDecoder().decode(raw)
    key = series_key(str(fields["metric"]), str(fields["entity"]), fields["tags"])  # type: ignore[arg-type]
    if len(key.encode()) <= MAX_SERIES_KEY_BYTES:
        with pytest.raises(InvalidRecord, match=re.escape(reason)):
            parse_series_key(key)


def test_points_at_every_limit_are_accepted() -> None:
    tags = {f"t{i:03}": "v" * 100 for i in range(MAX_TAGS)}
    point = {"metric": "m" * 4096, "entity": "e" * 4096, "timestamp_ms": 1, "value": 2.5}
    raw = orjson.dumps(point | {"tags": {"a" * 1024: "v" * 16_384}})
    assert decode_point_json(raw).metric == "m" * 4096
    many = orjson.dumps({"metric": "m", "entity": "e", "timestamp_ms": 1, "value": 1, "tags": tags})
    assert len(decode_point_json(many).tags) == MAX_TAGS
