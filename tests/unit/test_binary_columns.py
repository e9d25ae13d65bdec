"""The columnar reading of a TS batch agrees with the point-by-point reading, or defers to it."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from pipeline.binary import (
    HEADER_BYTES,
    Flags,
    Frame,
    Header,
    Opcode,
    RawPayload,
    TsBatch,
    TsPoint,
    decode_header,
    decode_payload,
    encode_frame,
)
from pipeline.binary.columns import ts_batch_columns
from pipeline.errors import InvalidRequest, ProtocolError
from pipeline.facade.ts_bodies import group_columns, group_points
from pipeline.limits import MAX_METRIC_BYTES
from pipeline.ts.point import SeriesArrays
from pipeline.validation import point_from_json

pytestmark = pytest.mark.unit


def _payload(points: list[TsPoint]) -> tuple[RawPayload, bytes]:
    frame = encode_frame(Frame(Opcode.TS_PUT_BUFFERED_BATCH, Flags.NONE, 1, TsBatch(tuple(points))))
    return RawPayload(decode_header(frame), frame[HEADER_BYTES:]), frame[HEADER_BYTES:]


def _reference(raw: RawPayload) -> list[SeriesArrays]:
    batch = decode_payload(raw.header, raw.data).body
    assert isinstance(batch, TsBatch)
    checked = []
    for i, p in enumerate(batch.points):
        body = {"metric": p.metric, "entity": p.entity, "timestamp_ms": p.timestamp_ms}
        checked.append(point_from_json(body | {"value": p.value, "tags": dict(p.tags)}, f"{i}"))
    return group_points(checked)


def _same(got: list[SeriesArrays], want: list[SeriesArrays]) -> None:
    assert [key for key, _, _ in got] == [key for key, _, _ in want]
    for (_, ts, vs), (_, want_ts, want_vs) in zip(got, want, strict=True):
        np.testing.assert_array_equal(ts, want_ts)
        assert vs.tobytes() == want_vs.tobytes()


def _points(rng: random.Random, n: int, tags: int) -> list[TsPoint]:
    metrics = ["cpu", "mem", "disk.io", "ünïcode"]
    names = ["dc", "host", "rack", "zone"][:tags]
    return [
        TsPoint(
            rng.choice(metrics),
            f"e{rng.randrange(5)}",
            rng.randrange(-(2**40), 2**40),
            rng.uniform(-1e6, 1e6),
            tuple((name, f"v{rng.randrange(3)}") for name in rng.sample(names, len(names))),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", range(40))
def test_a_uniform_batch_is_read_as_columns_and_grouped_exactly_as_point_by_point(
    seed: int,
) -> None:
    rng = random.Random(seed)
    raw, payload = _payload(_points(rng, rng.choice((1, 2, 17, 500)), rng.randrange(4)))
    columns = ts_batch_columns(payload)
    assert columns is not None
    got = group_columns(columns)
    if got is None:  # tags sent in two orders spell one series twice: the reference decides
        rows = {tuple(row) for row in columns.series.tolist()}
        assert len({key for key, _, _ in _reference(raw)}) < len(rows)
        return
    _same(got, _reference(raw))


def test_shapes_the_columns_do_not_take_are_left_to_the_reference_reading() -> None:
    mixed = [TsPoint("m", "e", 1, 1.0), TsPoint("m", "e", 2, 2.0, (("dc", "eu"),))]
    raw, payload = _payload(mixed)
    assert ts_batch_columns(payload) is None
    _same(
        _reference(raw),
        [
            ('["m","e",{}]', np.array([1]), np.array([1.0])),
            ('["m","e",{"dc":"eu"}]', np.array([2]), np.array([2.0])),
        ],
    )
    assert ts_batch_columns(b"") is None
    assert ts_batch_columns(_payload([])[1]) is None  # no points: the reference refuses
    for bad in (math.nan, math.inf):
        columns = ts_batch_columns(_payload([TsPoint("m", "e", 1, bad)])[1])
        assert columns is not None
        assert group_columns(columns) is None
    long = ts_batch_columns(_payload([TsPoint("m" * (MAX_METRIC_BYTES + 1), "e", 1, 1.0)])[1])
    assert long is not None
    assert group_columns(long) is None
    with pytest.raises(InvalidRequest, match="MAX_METRIC_BYTES"):
        _reference(_payload([TsPoint("m" * (MAX_METRIC_BYTES + 1), "e", 1, 1.0)])[0])


@pytest.mark.parametrize("seed", range(30))
def test_a_damaged_payload_is_read_as_columns_only_when_the_reference_reads_it_the_same(
    seed: int,
) -> None:
    rng = random.Random(1000 + seed)
    raw, payload = _payload(_points(rng, 20, rng.randrange(3)))
    damaged = bytearray(payload)
    for _ in range(rng.randrange(1, 4)):
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
    if rng.random() < 0.3:
        damaged = damaged[: rng.randrange(len(damaged))]
    data = bytes(damaged)
    columns = ts_batch_columns(data)
    header = Header(raw.header.opcode, raw.header.flags, len(data), raw.header.request_id)
    try:
        reference = _reference(RawPayload(header, data))
    except (ProtocolError, InvalidRequest):
        reference = None
    if columns is None:
        return
    got = group_columns(columns)
    if got is not None:
        assert reference is not None
        _same(got, reference)
