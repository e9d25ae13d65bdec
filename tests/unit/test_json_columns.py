"""The compiled column scan takes a subset of what the reference takes, and reads it alike.

Every batch the scan accepts must decode, record by record, through the reference
:func:`~pipeline.ts.point.decode_point_json` to the same series keys, timestamps and
bit-identical values, grouped per partition and series in record order; a batch it
declines (``None``) goes record by record. Hypothesis writes the number literals and
whitespace itself, so the scan sees spellings no encoder produces.
"""

from __future__ import annotations

import json
import struct

import pytest
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidRecord
from pipeline.ts.json_batch import SeriesKeys
from pipeline.ts.json_columns import PointColumns, scan_columns
from pipeline.ts.point import decode_point_json
from tests.fixtures.points import record_values

pytestmark = pytest.mark.unit

_WS = st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n  "])
_PLAIN = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8)
_NAME = st.one_of(st.sampled_from(["cpu", "mem", "h1"]), _PLAIN)
_ODD_NAMES = st.sampled_from(["", 'a"b', "a\\b", "caf\u00e9", "\n"])


@st.composite
def _number(draw: st.DrawFn, *, integer: bool = False, longest: int = 24) -> str:
    """A JSON number literal as a producer might spell it (some beyond float64)."""
    sign = draw(st.sampled_from(["", "", "-"]))
    more = f"[0-9]{{0,{longest}}}"
    digits = draw(st.one_of(st.just("0"), st.from_regex(f"[1-9]{more}", fullmatch=True)))
    if integer or draw(st.booleans()):
        return sign + digits
    frac = draw(st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,20}", fullmatch=True)))
    exp = draw(st.one_of(st.just(""), st.from_regex(r"[eE][+-]?[0-9]{1,3}", fullmatch=True)))
    return sign + digits + frac + exp


@st.composite
def _plain_record(draw: st.DrawFn) -> bytes:
    """A point record in the shape the scan takes, now and then just outside it."""
    odd = draw(st.integers(0, 9)) == 9  # just outside the shape now and then
    fields = {
        "metric": json.dumps(draw(_ODD_NAMES if odd else _NAME)),
        "entity": json.dumps(draw(_NAME)),
        "timestamp_ms": draw(
            st.one_of(*[_number(integer=True, longest=17)] * 8, _number(integer=True), _number())
        ),
        "value": draw(st.one_of(_number(), st.floats(allow_nan=False).map(repr))),
    }
    if draw(st.booleans()):
        tags = draw(st.dictionaries(st.sampled_from("abc"), st.sampled_from("xy"), max_size=3))
        tags = draw(st.one_of(st.just(tags), st.dictionaries(_PLAIN, _PLAIN, max_size=3)))
        # Several spellings of one set of tags: any order, spaces or none.
        order = draw(st.permutations(sorted(tags)))
        separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]))
        spelled = json.dumps({k: tags[k] for k in order}, separators=separators)
        fields["tags"] = draw(st.one_of(*[st.just(spelled)] * 9, st.just("null")))
    names = draw(st.permutations(sorted(fields)))
    if draw(st.integers(0, 19)) == 19:
        names = [*names, names[0]]  # a duplicate field
    ws = [draw(_WS) for _ in range(4)]
    body = ",".join(f'{ws[0]}"{n}"{ws[1]}:{ws[2]}{fields[n]}{ws[3]}' for n in names)
    return f"{draw(_WS)}{{{body}}}{draw(_WS)}".encode()


def _messages(values: list[bytes], partitions: list[int]) -> list[Message]:
    return [
        Message(topic="points", partition=p, offset=100 + i, value=v)
        for i, (v, p) in enumerate(zip(values, partitions, strict=True))
    ]


def _reference(value: bytes) -> tuple[str, int, bytes] | None:
    try:
        point = decode_point_json(value)
    except InvalidRecord:
        return None
    return point.series_key(), point.timestamp_ms, struct.pack("<d", point.value)


def _expected_groups(
    values: list[bytes], partitions: list[int]
) -> dict[tuple[int, str], list[tuple[int, bytes]]]:
    groups: dict[tuple[int, str], list[tuple[int, bytes]]] = {}
    for value, partition in zip(values, partitions, strict=True):
        ref = _reference(value)
        assert ref is not None, f"the scan took a record the reference rejects: {value!r}"
        key, ts, bits = ref
        groups.setdefault((partition, key), []).append((ts, bits))
    return groups


def _scanned_groups(columns: PointColumns) -> dict[tuple[int, str], list[tuple[int, bytes]]]:
    parts, _, _ = columns.grouped()
    out: dict[tuple[int, str], list[tuple[int, bytes]]] = {}
    for partition, series in parts.items():
        for key, runs in series.items():
            out[(partition, key)] = [
                (int(t), struct.pack("<d", float(v)))
                for ts, vs in runs
                for t, v in zip(ts, vs, strict=True)
            ]
    return out


def _check(values: list[bytes], partitions: list[int]) -> PointColumns | None:
    columns = scan_columns(_messages(values, partitions), SeriesKeys())
    if columns is not None:
        assert _scanned_groups(columns) == _expected_groups(values, partitions)
    return columns


@settings(max_examples=800, deadline=None)
@given(st.lists(_plain_record(), min_size=1, max_size=6), st.data())
def test_scanned_batches_group_exactly_like_the_reference_record_by_record(
    values: list[bytes], data: st.DataObject
) -> None:
    partitions = data.draw(st.lists(st.integers(0, 2), min_size=len(values), max_size=len(values)))
    _check(values, partitions)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(record_values(nonfinite=False), _plain_record()), max_size=6))
def test_any_bytes_are_either_declined_or_read_as_the_reference_reads_them(
    values: list[bytes],
) -> None:
    _check(values, [0] * len(values))


@settings(max_examples=600, deadline=None)
@given(_plain_record(), st.integers(0, 400), st.binary(max_size=3))
def test_a_damaged_record_is_declined_or_read_as_the_reference_reads_it(
    value: bytes, at: int, insert: bytes
) -> None:
    at = min(at, len(value))
    _check([value[:at] + insert + value[at + len(insert) :]], [0])


def _point(value: str, ts: str = "5", tags: str = "") -> bytes:
    extra = f',"tags":{tags}' if tags else ""
    return f'{{"metric":"m","entity":"e","timestamp_ms":{ts},"value":{value}{extra}}}'.encode()


@pytest.mark.parametrize(
    ("literal", "bits"),
    [
        ("-0", struct.pack("<d", 0.0)),  # the integer -0 is 0, as float(0)
        ("-0.0", struct.pack("<d", -0.0)),
        ("0.1", struct.pack("<d", 0.1)),
        ("9007199254740993", struct.pack("<d", float(9007199254740993))),  # 2^53 + 1 rounds
        ("123456789012345678901234567890", struct.pack("<d", 1.2345678901234568e29)),
        ("1.7976931348623157e308", struct.pack("<d", 1.7976931348623157e308)),
        ("4.9406564584124654e-324", None),  # an underflow: the reference decides
        ("1e400", None),
        ("1e-400", None),
    ],
)
def test_value_literals_read_as_the_reference_reads_them(literal: str, bits: bytes | None) -> None:
    columns = _check([_point(literal)], [0])
    if bits is None:
        assert columns is None
    else:
        assert columns is not None
        assert struct.pack("<d", float(columns.values[0])) == bits


@pytest.mark.parametrize(
    ("ts", "taken"),
    [("9223372036854775807", True), ("-9223372036854775808", True), ("-0", True),
     ("9223372036854775808", False), ("-9223372036854775809", False), ("5.0", False),
     ("5e3", False), ("05", False)],
)  # fmt: skip
def test_timestamps_outside_int64_or_not_integers_are_declined(ts: str, taken: bool) -> None:
    columns = _check([_point("1", ts=ts)], [0])
    assert (columns is not None) is taken
    if columns is not None:
        assert int(columns.timestamps[0]) == int(ts)


@pytest.mark.parametrize(
    "record",
    [
        b'{"metric":"m","entity":"e","timestamp_ms":5,"value":1,"tags":null}',
        b'{"metric":"m","entity":"e","timestamp_ms":5,"value":1,"extra":1}',
        b'{"metric":"m","metric":"m","entity":"e","timestamp_ms":5,"value":1}',
        b'{"metric":"","entity":"e","timestamp_ms":5,"value":1}',
        b'{"metric":"m\\u00e9","entity":"e","timestamp_ms":5,"value":1}',
        '{"metric":"m\u00e9","entity":"e","timestamp_ms":5,"value":1}'.encode(),
        b'{"metric":"m","entity":"e","timestamp_ms":5}',
        b'{"metric":"m","entity":"e","timestamp_ms":5,"value":1}x',
        b"TSF1\x00\x00\x00\x00",
    ],
)
def test_records_of_another_shape_send_the_batch_record_by_record(record: bytes) -> None:
    good = _point("2.5")
    assert scan_columns(_messages([good, record], [0, 0]), SeriesKeys()) is None
    assert scan_columns(_messages([good], [0]), SeriesKeys()) is not None


def test_a_series_over_a_limit_sends_the_batch_to_the_reference() -> None:
    long_metric = _point("1").replace(b'"m"', b'"' + b"m" * 5000 + b'"', 1)
    assert scan_columns(_messages([long_metric], [0]), SeriesKeys()) is None
    with pytest.raises(InvalidRecord, match="MAX_METRIC_BYTES"):
        decode_point_json(long_metric)


def test_runs_give_each_partition_its_next_offset_and_record_count() -> None:
    values = [_point(str(i), ts=str(i), tags='{"k":"v"}') for i in range(6)]
    columns = scan_columns(_messages(values, [1, 1, 0, 1, 0, 0]), SeriesKeys())
    assert columns is not None
    parts, ends, units = columns.grouped()
    assert ends == {1: (104, 3), 0: (106, 3)}
    assert units == {1: 3, 0: 3}
    key = '["m","e",{"k":"v"}]'
    assert [list(t) for t, _ in parts[1][key]] == [[0, 1, 3]]
    assert [list(v) for _, v in parts[0][key]] == [[2.0, 4.0, 5.0]]


def test_an_empty_batch_scans_to_nothing() -> None:
    columns = scan_columns([], SeriesKeys())
    assert columns is not None
    assert columns.grouped() == ({}, {}, {})


def test_two_spellings_of_one_series_in_a_batch_keep_every_point_in_record_order() -> None:
    spellings = ['{"a":"1","b":"2"}', '{"b":"2","a":"1"}', '{ "a" : "1", "b":"2" }']
    values = [_point(str(i), ts=str(i), tags=spellings[i % 3]) for i in range(9)]
    columns = _check(values, [0] * 9)
    assert columns is not None
    parts, _, _ = columns.grouped()
    assert list(parts[0]) == ['["m","e",{"a":"1","b":"2"}]']
    (runs,) = parts[0].values()
    assert [list(ts) for ts, _ in runs] == [list(range(9))]
