"""Line protocol into points: escapes, precisions, the mapping, and every refusal naming
its line."""

from __future__ import annotations

import gzip
import zlib

import pytest

from pipeline.errors import InvalidRecord, InvalidRequest
from pipeline.facade.line_protocol_routes import _gunzip
from pipeline.ts.line_protocol import parse_lines
from pipeline.ts.point import DataPoint

pytestmark = pytest.mark.unit


def _parse(body: str, precision: str = "ns") -> list[DataPoint]:
    return parse_lines(body.encode(), precision=precision, entity_tag="host", now_ms=42)


def test_escapes_quotes_comments_and_every_field_become_points() -> None:
    body = (
        "# a comment\n\n"
        "we\\,ather\\ x,host=h\\=1,zone=a\\ b temp=21.5,count=3i,big=9007199254740992u,"
        'label="a b,c=d" 1702645200123456789\r\n'
    )
    with pytest.raises(InvalidRecord, match="line 3: field 'label' is a string"):
        _parse(body)
    points = _parse(body.replace(',label="a b,c=d"', ""))
    assert points == [
        DataPoint("we,ather x_temp", "h=1", 1702645200123, 21.5, {"zone": "a b"}),
        DataPoint("we,ather x_count", "h=1", 1702645200123, 3.0, {"zone": "a b"}),
        DataPoint("we,ather x_big", "h=1", 1702645200123, 9007199254740992.0, {"zone": "a b"}),
    ]


@pytest.mark.parametrize(
    ("precision", "stamp", "ms"),
    [("ns", "-1", -1), ("us", "1999", 1), ("ms", "7", 7), ("s", "3", 3000), ("ns", None, 42)],
)
def test_timestamps_become_milliseconds_floored(precision: str, stamp: str | None, ms: int) -> None:
    line = "m,host=h v=1" + (f" {stamp}" if stamp else "")
    assert [p.timestamp_ms for p in _parse(line, precision)] == [ms]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("m,host=h", "line 1: no fields"),
        ("m,host=h v=1 2 3", "more than three"),
        (",host=h v=1", "the measurement is empty"),
        ("m,host v=1", "tag 'host' is not key=value"),
        ("m,zone=a v=1", "tag 'host' (the entity) is missing"),
        ("m,host=h v", "field 'v' is not key=value"),
        ("m,host=h v=T", "field 'v' is a boolean"),
        ("m,host=h v=-1u", "cannot be negative"),
        ("m,host=h v=-9007199254740993i", "beyond +-2^53"),
        ("m,host=h v=1x", "is not a number"),
        ("m,host=h v=1e999", "does not fit a float64"),
        ("m,host=h v=1 12ab", "is not an integer"),
        ("m,host=h v=1 99999999999999999999999", "outside the int64"),
        ("ok,host=h v=1\n" + "m,host=h," + "t=" + "x" * 20_000 + " v=1", "line 2: "),
    ],
)
def test_each_bad_line_is_refused_with_its_reason(body: str, message: str) -> None:
    with pytest.raises(InvalidRecord, match=message.replace("+", r"\+").replace("(", r"\(")
                       .replace(")", r"\)").replace("^", r"\^")):  # fmt: skip
        _parse(body, "ms")


def test_a_bad_precision_or_encoding_is_refused() -> None:
    with pytest.raises(InvalidRecord, match="precision must be one of"):
        parse_lines(b"m,host=h v=1", precision="h", entity_tag="host", now_ms=0)
    with pytest.raises(InvalidRecord, match="not UTF-8"):
        parse_lines(b"m,host=h v=\xff", precision="ns", entity_tag="host", now_ms=0)


def test_gzip_bodies_are_undone_within_the_cap() -> None:
    assert _gunzip(gzip.compress(b"m,host=h v=1")) == b"m,host=h v=1"
    with pytest.raises(InvalidRequest, match="corrupt"):
        _gunzip(b"\x1f\x8b" + b"\x00" * 20)
    huge = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = huge.compress(b"\0" * (300 * 1024 * 1024)) + huge.flush()
    with pytest.raises(InvalidRequest, match="MAX_DECOMPRESSED_BYTES"):
        _gunzip(bomb)
