"""The time-series auto buffer: triggers, ordering, hard cap, counters, threads."""

from __future__ import annotations

import dataclasses
import re
import threading

import numpy as np
import pytest

from pipeline.config import TSAutoBufferSettings
from pipeline.errors import BufferOverflow, ThemisError
from pipeline.ingest.buffer_core import BufferCore, FlushReason
from pipeline.ts.buffer import (
    POINT_BYTES,
    SERIES_OVERHEAD_BYTES,
    SeriesBatch,
    TSAutoBuffer,
    TSBufferStats,
)
from tests.fixtures.support import FakeClock

pytestmark = pytest.mark.unit

KEY = "cpu_usage_percent{host=host-00001}"
OTHER = "mem_free_bytes{host=host-00002}"


def make_buffer(
    clock: FakeClock | None = None,
    *,
    max_points_per_buffer: int = 1000,
    flush_interval_ms: int = 5000,
    max_memory_bytes: int = 64 * 1024 * 1024,
    max_total_points: int = 2_000_000,
) -> TSAutoBuffer:
    settings = TSAutoBufferSettings(
        max_points_per_buffer=max_points_per_buffer,
        flush_interval_ms=flush_interval_ms,
        max_memory_bytes=max_memory_bytes,
        max_total_points=max_total_points,
    )
    return TSAutoBuffer(settings, clock=clock or FakeClock())


def memory_of(*series: tuple[str, int]) -> int:
    return sum(SERIES_OVERHEAD_BYTES + len(k.encode()) + POINT_BYTES * n for k, n in series)


# -- size ---------------------------------------------------------------------


def test_series_reaching_max_points_is_returned_alone_with_reason_size() -> None:
    buffer = make_buffer(max_points_per_buffer=3)
    buffer.add(OTHER, 1, 1.0)
    assert buffer.add(KEY, 10, 1.0) == []
    assert buffer.add(KEY, 20, 2.0) == []

    batches = buffer.add(KEY, 30, 3.0)

    assert [b.series_key for b in batches] == [KEY]
    assert batches[0].timestamps.tolist() == [10, 20, 30]
    assert batches[0].values.tolist() == [1.0, 2.0, 3.0]
    assert batches[0].timestamps.dtype == np.int64
    assert batches[0].values.dtype == np.float64
    assert buffer.series_keys() == [OTHER]
    assert buffer.flush_reason_counts()["size"] == 1
    stats = buffer.stats()
    assert (stats.flush_count, stats.auto_flush_count, stats.manual_flush_count) == (1, 1, 0)
    assert stats.current_buffer_size == 1


def test_add_many_beyond_max_points_drains_the_whole_series() -> None:
    buffer = make_buffer(max_points_per_buffer=100)
    buffer.add(KEY, 0, 0.5)

    batches = buffer.add_many(KEY, np.arange(1, 251), np.ones(250))

    assert len(batches) == 1
    assert batches[0].timestamps.tolist() == list(range(251))
    assert buffer.stats().current_buffer_size == 0


# -- time ---------------------------------------------------------------------


def test_due_drains_series_whose_oldest_point_reached_the_interval() -> None:
    clock = FakeClock()
    buffer = make_buffer(clock, flush_interval_ms=5000)
    buffer.add(KEY, 1, 1.0)
    clock.now += 3.0
    buffer.add(OTHER, 1, 1.0)
    buffer.add(KEY, 2, 2.0)  # a newer point does not make the series younger
    clock.now += 1.999
    assert buffer.due() == []

    clock.now += 0.001  # KEY's first point is now exactly 5 s old
    batches = buffer.due()

    assert [b.series_key for b in batches] == [KEY]
    assert batches[0].timestamps.tolist() == [1, 2]
    assert buffer.series_keys() == [OTHER]
    clock.now += 3.0
    assert [b.series_key for b in buffer.due()] == [OTHER]
    assert buffer.flush_reason_counts()["time"] == 2
    assert buffer.stats().auto_flush_count == 2


def test_age_restarts_when_a_drained_series_gets_a_new_point() -> None:
    clock = FakeClock()
    buffer = make_buffer(clock, flush_interval_ms=1000, max_points_per_buffer=2)
    buffer.add(KEY, 1, 1.0)
    clock.now += 0.9
    assert len(buffer.add(KEY, 2, 2.0)) == 1  # size flush
    buffer.add(KEY, 3, 3.0)
    clock.now += 0.9

    assert buffer.due() == []
    clock.now += 0.1
    assert [b.timestamps.tolist() for b in buffer.due()] == [[3]]


# -- memory -------------------------------------------------------------------


def test_passing_max_memory_drains_every_series_with_reason_memory() -> None:
    # Two series with one point each, then the limit lies within the next point.
    limit = memory_of((KEY, 2), (OTHER, 1)) - 1
    buffer = make_buffer(max_memory_bytes=limit)
    buffer.add(KEY, 1, 1.0)
    assert buffer.add(OTHER, 1, 1.0) == []
    assert buffer.stats().current_buffer_memory == memory_of((KEY, 1), (OTHER, 1))

    batches = buffer.add(KEY, 2, 2.0)

    assert {b.series_key: b.timestamps.tolist() for b in batches} == {KEY: [1, 2], OTHER: [1]}
    assert buffer.flush_reason_counts()["memory"] == 2
    stats = buffer.stats()
    assert (stats.current_buffer_memory, stats.current_buffer_size) == (0, 0)
    assert stats.auto_flush_count == 2


def test_memory_accounting_follows_the_documented_formula() -> None:
    buffer = make_buffer()
    buffer.add_many(KEY, np.arange(10), np.zeros(10))
    buffer.add("säule", 1, 1.0)  # the key counts in UTF-8 bytes

    assert buffer.stats().current_buffer_memory == memory_of((KEY, 10), ("säule", 1))
    buffer.flush([KEY])
    assert buffer.stats().current_buffer_memory == memory_of(("säule", 1))


# -- manual and revoke ----------------------------------------------------------


def test_manual_flush_counts_as_manual_not_auto() -> None:
    buffer = make_buffer()
    buffer.add(KEY, 1, 1.0)
    buffer.add(OTHER, 1, 1.0)

    batches = buffer.flush()

    assert sorted(b.series_key for b in batches) == sorted([KEY, OTHER])
    stats = buffer.stats()
    assert (stats.flush_count, stats.auto_flush_count, stats.manual_flush_count) == (2, 0, 2)
    assert buffer.series_keys() == []


def test_flush_of_given_keys_drains_only_those_and_skips_unknown_ones() -> None:
    buffer = make_buffer()
    buffer.add(KEY, 1, 1.0)
    buffer.add(OTHER, 1, 1.0)

    batches = buffer.flush([KEY, "never-seen", KEY], reason=FlushReason.REVOKE)

    assert [b.series_key for b in batches] == [KEY]
    assert buffer.series_keys() == [OTHER]
    assert buffer.flush_reason_counts() == {
        "size": 0,
        "time": 0,
        "memory": 0,
        "manual": 0,
        "revoke": 1,
    }
    stats = buffer.stats()
    assert (stats.flush_count, stats.auto_flush_count, stats.manual_flush_count) == (1, 0, 0)


def test_flush_that_drains_nothing_counts_nothing() -> None:
    buffer = make_buffer()

    assert buffer.flush() == []
    assert buffer.flush([KEY]) == []
    assert buffer.due() == []

    stats = buffer.stats()
    assert stats.flush_count == 0
    assert stats.last_flush_time is None


# -- hard cap -------------------------------------------------------------------


def test_overflow_raises_with_buffer_size_and_accepts_nothing() -> None:
    buffer = make_buffer(max_total_points=5, max_points_per_buffer=100)
    buffer.add_many(KEY, np.arange(4), np.zeros(4))

    with pytest.raises(BufferOverflow) as caught:
        buffer.add_many(OTHER, np.arange(2), np.zeros(2), token="t")

    assert caught.value.buffer_size == 4
    assert caught.value.retriable
    assert isinstance(caught.value, ThemisError)
    assert "max_total_points=5" in str(caught.value)
    assert buffer.series_keys() == [KEY]
    stats = buffer.stats()
    assert (stats.current_buffer_size, stats.points_buffered) == (4, 4)
    assert stats.current_buffer_memory == memory_of((KEY, 4))


def test_single_add_at_the_cap_raises_and_the_buffer_works_after_a_flush() -> None:
    buffer = make_buffer(max_total_points=3, max_points_per_buffer=100)
    for t in range(3):
        buffer.add(KEY, t, float(t))

    with pytest.raises(BufferOverflow) as caught:
        buffer.add(KEY, 99, 99.0)
    assert caught.value.buffer_size == 3

    (batch,) = buffer.flush()
    assert batch.timestamps.tolist() == [0, 1, 2]  # the refused point is not there
    assert buffer.add(KEY, 99, 99.0) == []
    assert buffer.stats().current_buffer_size == 1


# -- ordering -------------------------------------------------------------------


def test_out_of_order_points_come_out_sorted() -> None:
    buffer = make_buffer()
    for t, v in [(30, 3.0), (10, 1.0), (20, 2.0)]:
        buffer.add(KEY, t, v)
    buffer.add_many(KEY, np.array([25, 5]), np.array([2.5, 0.5]))

    (batch,) = buffer.flush()

    assert batch.timestamps.tolist() == [5, 10, 20, 25, 30]
    assert batch.values.tolist() == [0.5, 1.0, 2.0, 2.5, 3.0]


def test_duplicate_timestamp_keeps_the_last_written_value() -> None:
    buffer = make_buffer()
    buffer.add(KEY, 10, 1.0)
    buffer.add_many(KEY, np.array([20, 10]), np.array([2.0, 1.5]))
    buffer.add(KEY, 20, 2.5)
    buffer.add(KEY, 10, 1.9)

    (batch,) = buffer.flush()

    assert batch.timestamps.tolist() == [10, 20]
    assert batch.values.tolist() == [1.9, 2.5]


# -- tokens ---------------------------------------------------------------------


def test_tokens_follow_append_order_and_calls_without_a_token_are_left_out() -> None:
    buffer = make_buffer()
    buffer.add(KEY, 1, 1.0, token="offset-1")
    buffer.add(KEY, 2, 1.0)  # no token: not listed
    buffer.add_many(KEY, np.array([3, 4, 5]), np.zeros(3), token="offset-2")
    buffer.add(KEY, 6, 1.0, token="offset-3")
    buffer.add(OTHER, 1, 1.0, token="offset-4")

    batches = {b.series_key: b for b in buffer.flush()}

    assert batches[KEY].tokens == [("offset-1", 1), ("offset-2", 3), ("offset-3", 1)]
    assert batches[OTHER].tokens == [("offset-4", 1)]
    assert sum(n for b in batches.values() for _, n in b.tokens) == 7 - 1  # 7 points, 1 untokened


def test_token_counts_equal_points_when_every_call_has_a_token() -> None:
    buffer = make_buffer(max_points_per_buffer=10)
    drained: list[SeriesBatch] = []
    for i in range(4):
        drained += buffer.add_many(KEY, np.arange(i * 3, i * 3 + 3), np.zeros(3), token=i)

    (batch,) = drained
    assert sum(n for _, n in batch.tokens) == batch.timestamps.size == 12


# -- stats ----------------------------------------------------------------------


def test_stats_fields_are_exactly_the_listed_ones_in_order() -> None:
    names = [f.name for f in dataclasses.fields(TSBufferStats)]

    assert names == [
        "points_buffered",
        "points_flushed",
        "flush_count",
        "auto_flush_count",
        "manual_flush_count",
        "current_buffer_size",
        "current_buffer_memory",
        "avg_compression_ratio",
        "last_flush_time",
    ]
    assert list(make_buffer().stats().to_dict()) == names


def test_compression_ratio_is_raw_bytes_over_block_bytes_across_all_blocks() -> None:
    buffer = make_buffer()
    assert buffer.stats().avg_compression_ratio == 0.0

    buffer.record_durable(1000, 1600)  # 16000 raw bytes -> 10x
    assert buffer.stats().avg_compression_ratio == pytest.approx(10.0)
    buffer.record_durable(500, 2000)  # 8000 raw bytes; together 24000 / 3600

    stats = buffer.stats()
    assert stats.avg_compression_ratio == pytest.approx(24000 / 3600)
    assert stats.points_flushed == 1500


def test_record_durable_rejects_empty_blocks() -> None:
    with pytest.raises(ValueError, match="block_bytes"):
        make_buffer().record_durable(10, 0)


def test_last_flush_time_is_iso_utc_after_the_first_flush() -> None:
    buffer = make_buffer()
    buffer.add(KEY, 1, 1.0)
    buffer.flush()

    last = buffer.stats().last_flush_time
    assert last is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", last)


def test_core_formats_last_flush_time_from_its_wall_clock() -> None:
    core = BufferCore(
        what="test buffer",
        unit="items",
        max_total=10,
        cap_setting="test.max",
        wall_clock=lambda: 1_765_801_800.7,  # 2025-12-15T12:30:00.7Z
    )
    core.record_flushes(FlushReason.SIZE, 0)
    assert core.flush_count == 0

    core.record_flushes(FlushReason.SIZE, 2)
    core.record_flushes(FlushReason.MANUAL, 1)

    assert core.last_flush_time == "2025-12-15T12:30:00Z"
    assert (core.flush_count, core.auto_flush_count, core.manual_flush_count) == (3, 2, 1)


# -- queries --------------------------------------------------------------------


def test_buffered_points_returns_the_inclusive_range_sorted_and_deduplicated() -> None:
    buffer = make_buffer()
    buffer.add_many(KEY, np.array([50, 10, 30]), np.array([5.0, 1.0, 3.0]))
    buffer.add(KEY, 20, 2.0)
    buffer.add(KEY, 30, 3.5)
    buffer.add(KEY, 40, 4.0)

    ts, vals = buffer.buffered_points(KEY, 20, 40)

    assert ts.tolist() == [20, 30, 40]
    assert vals.tolist() == [2.0, 3.5, 4.0]
    empty_ts, empty_vals = buffer.buffered_points(OTHER, 0, 100)
    assert (empty_ts.size, empty_vals.size) == (0, 0)
    assert buffer.stats().current_buffer_size == 6  # a query drains nothing


def test_add_many_copies_its_input() -> None:
    buffer = make_buffer()
    ts = np.array([1, 2, 3])
    buffer.add_many(KEY, ts, np.zeros(3))
    ts[0] = 100

    (batch,) = buffer.flush()
    assert batch.timestamps.tolist() == [1, 2, 3]


def test_add_many_rejects_arrays_of_different_length() -> None:
    buffer = make_buffer()
    with pytest.raises(ValueError, match="equal length"):
        buffer.add_many(KEY, np.arange(3), np.zeros(2))
    assert buffer.stats().points_buffered == 0


# -- threads --------------------------------------------------------------------


def test_concurrent_adds_deliver_every_point_exactly_once() -> None:
    threads_n, per_thread, keys = 8, 20_000, [f"s{i}" for i in range(5)]
    buffer = make_buffer(max_points_per_buffer=1000, max_total_points=1_000_000)
    results: list[list[SeriesBatch]] = [[] for _ in range(threads_n)]
    start = threading.Barrier(threads_n)

    def work(n: int) -> None:
        out = results[n]
        start.wait()
        for i in range(per_thread):
            # Unique per thread and point, so nothing is deduplicated away.
            out += buffer.add(keys[i % len(keys)], n * per_thread + i, float(n), token=n)
            if i % 5000 == 0:
                out += buffer.due()

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    auto = [b for out in results for b in out]
    final = buffer.flush()

    seen = [(b.series_key, t) for b in auto + final for t in b.timestamps.tolist()]
    expected = {
        (keys[i % len(keys)], n * per_thread + i)
        for n in range(threads_n)
        for i in range(per_thread)
    }
    assert len(seen) == threads_n * per_thread
    assert set(seen) == expected
    assert sum(n for b in auto + final for _, n in b.tokens) == threads_n * per_thread
    stats = buffer.stats()
    assert stats.points_buffered == threads_n * per_thread
    assert stats.current_buffer_size == 0
    assert stats.auto_flush_count == len(auto)
    assert stats.manual_flush_count == len(final)
    assert stats.flush_count == len(auto) + len(final)


# -- many series at once ---------------------------------------------------------


def test_add_grouped_equals_one_add_per_run_in_order() -> None:
    frame_ts = np.array([15, 5], dtype=np.int64)
    frame_vs = np.array([1.5, 0.5], dtype=np.float64)
    grouped = make_buffer()
    one_by_one = make_buffer()
    assert (
        grouped.add_grouped(
            {
                KEY: [([10, 20], [1.0, 2.0]), (frame_ts, frame_vs), ([20], [9.0])],
                OTHER: [([1], [1.0])],
            },
            token="t",
        )
        == []
    )
    for ts, value in ((10, 1.0), (20, 2.0)):
        one_by_one.add(KEY, ts, value, token="t")
    one_by_one.add_many(KEY, frame_ts, frame_vs, token="t")
    one_by_one.add(KEY, 20, 9.0, token="t")
    one_by_one.add(OTHER, 1, 1.0, token="t")
    got = {b.series_key: b for b in grouped.flush()}
    want = {b.series_key: b for b in one_by_one.flush()}
    assert got.keys() == want.keys() == {KEY, OTHER}
    for key, batch in got.items():
        assert batch.timestamps.tolist() == want[key].timestamps.tolist()
        assert batch.values.tolist() == want[key].values.tolist()
    assert got[KEY].timestamps.tolist() == [5, 10, 15, 20]
    assert got[KEY].values.tolist() == [0.5, 1.0, 1.5, 9.0]  # the last write of 20 wins
    assert got[KEY].tokens == [("t", 5)]
    assert grouped.stats().points_buffered == one_by_one.stats().points_buffered == 6


def test_add_grouped_returns_series_that_reach_the_size_limit() -> None:
    buffer = make_buffer(max_points_per_buffer=3)
    batches = buffer.add_grouped({KEY: [([1, 2, 3], [1.0, 2.0, 3.0])], OTHER: [([1], [1.0])]})
    assert [b.series_key for b in batches] == [KEY]
    assert buffer.flush_reason_counts()["size"] == 1
    assert buffer.stats().current_buffer_size == 1


def test_add_grouped_over_the_hard_cap_keeps_nothing() -> None:
    buffer = make_buffer(max_total_points=3)
    buffer.add(OTHER, 1, 1.0)
    with pytest.raises(BufferOverflow):
        buffer.add_grouped({KEY: [([1, 2], [1.0, 2.0])], OTHER: [([2], [2.0])]})
    assert buffer.stats().current_buffer_size == 1
    assert buffer.series_keys() == [OTHER]
