"""Prometheus remote-read answers: the vectorised sample encoder parses, through the
``protobuf`` library, to exactly the samples and labels given; matchers select as
Prometheus' do."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import InvalidRecord
from pipeline.ts.block import encode_block
from pipeline.ts.point import series_key
from pipeline.ts.prom_remote import (
    READ_RESPONSE,
    WRITE_REQUEST,
    decode_write,
    encode_read_response,
    encode_snappy,
    selector_of,
    series_of_write,
)
from pipeline.ts.store import BlockStore, SeriesPoints

pytestmark = pytest.mark.unit

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


def test_the_encoded_response_parses_to_every_sample_bit_for_bit() -> None:
    ts = np.array([0, 1, 127, 128, 2**21, 1_702_645_200_000, 2**63 - 1, -1, -(2**63)],
                  dtype=np.int64)  # fmt: skip
    vs = np.array([0.0, -0.0, 1.5, np.inf, -np.inf, STALE, np.nan, 1e-300, 7.0])
    one = SeriesPoints(series_key("cpu", "h1", {"job": "n", "a": "x"}), ts, vs)
    empty = SeriesPoints(series_key("m", "e"), np.array([], dtype=np.int64), np.array([]))
    parsed = READ_RESPONSE()
    parsed.ParseFromString(encode_read_response([[one, empty], []], "instance"))
    assert len(parsed.results) == 2
    assert len(parsed.results[1].timeseries) == 0
    first, second = parsed.results[0].timeseries
    assert [(label.name, label.value) for label in first.labels] == [
        ("__name__", "cpu"), ("a", "x"), ("instance", "h1"), ("job", "n"),
    ]  # fmt: skip
    assert [s.timestamp for s in first.samples] == ts.tolist()
    assert [struct.pack("<d", s.value) for s in first.samples] == [
        struct.pack("<d", v) for v in vs.tolist()
    ]
    assert [(label.name, label.value) for label in second.labels] == [
        ("__name__", "m"), ("instance", "e"),
    ]  # fmt: skip
    assert len(second.samples) == 0


class _M:
    def __init__(self, type_: int, name: str, value: str) -> None:
        self.type, self.name, self.value = type_, name, value


def test_matchers_select_as_prometheus_matchers_do() -> None:
    selector = selector_of(
        [_M(0, "__name__", "up"), _M(1, "job", "b"), _M(2, "instance", "h.*"), _M(3, "dc", "eu"),
         _M(0, "zone", "")],
        "instance",
    )  # fmt: skip
    assert (selector.metric, selector.entity, dict(selector.tags)) == ("up", None, {})
    keep = selector.keep
    assert keep("up", "h1", {"job": "a"})
    assert keep("up", "h1", {"job": "a", "dc": "us"})
    assert not keep("up", "h1", {"job": "b"})
    assert not keep("up", "x-h1", {})  # regexes are anchored
    assert not keep("up", "h1", {"dc": "eu"})
    assert not keep("up", "h1", {"zone": "z"})  # =="" means absent or empty
    with pytest.raises(InvalidRecord, match="matcher"):
        selector_of([_M(2, "job", "(")], "instance")
    with pytest.raises(InvalidRecord, match="not one of"):
        selector_of([_M(7, "job", "x")], "instance")


def test_a_write_request_maps_and_refuses_as_documented() -> None:
    request = WRITE_REQUEST()
    for instance in ("i1", "i1", "i2"):
        series = request.timeseries.add()
        for name, value in (("__name__", "up"), ("instance", instance), ("job", "j")):
            series.labels.add(name=name, value=value)
        series.samples.add(timestamp=len(request.timeseries), value=STALE)
    decoded = decode_write(encode_snappy(request.SerializeToString()))
    arrays, count = series_of_write(decoded.timeseries, "instance")
    assert count == 3
    assert [(key, ts.tolist()) for key, ts, _ in arrays] == [
        (series_key("up", "i1", {"job": "j"}), [1, 2]),
        (series_key("up", "i2", {"job": "j"}), [3]),
    ]
    assert struct.pack("<d", arrays[1][2][0]) == struct.pack("<d", STALE)
    with pytest.raises(InvalidRecord, match="not a snappy block"):
        decode_write(b"\xff\xff\xff\xff\xff")
    with pytest.raises(InvalidRecord, match="not a remote-write WriteRequest"):
        decode_write(encode_snappy(b"\xff\xff"))
    nameless = WRITE_REQUEST()
    nameless.timeseries.add().labels.add(name="instance", value="i")
    with pytest.raises(InvalidRecord, match="series 0: no __name__"):
        series_of_write(nameless.timeseries, "instance")


def test_the_series_index_takes_every_key_and_indexes_the_readable_ones(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks.sqlite")
    ts = np.array([1, 2], dtype=np.int64)
    odd = ["not json", "123", "[1, 2]", '["m", "e", {"n": 1}]']
    good = [series_key("up", "i1", {"job": "a"}), series_key("up", "i2", {"job": "b"})]
    store.insert_blocks([encode_block(key, ts, ts * 1.0) for key in odd + good])
    assert store.series_matching() == sorted([*good, odd[3]])
    assert store.series_matching("up", tags={"job": "b"}) == [good[1]]
    assert store.series_matching(entity="i1") == [good[0]]
    assert store.query("not json", 0, 9)[0].tolist() == [1, 2]  # stored and read as ever
    store._db.execute("DELETE FROM series_labels")  # a store from before the index
    store.close()
    reopened = BlockStore(tmp_path / "blocks.sqlite")
    assert reopened.series_matching("up") == good
    reopened.close()
