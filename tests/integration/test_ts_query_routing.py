"""Series queries answered by the worker that owns the series' partition.

Real workers and the session broker: the owner's answer equals what was written (blocks
and buffered points), a partition that moves to another worker is caught up by the new
owner from its part of the blocks topic alone and answered exactly, and a worker asked
for a series it does not own answers 421, after which the router finds the owner.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings, with_overrides
from pipeline.errors import InvalidRequest, WorkerUnavailable
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics
from pipeline.ts.point import series_key
from pipeline.ts.producer import TSProducer
from pipeline.ts.store import SeriesSelector
from pipeline.ts.writer import block_partition
from pipeline.worker import pages
from pipeline.worker.client import WorkerClient, run_with_client
from pipeline.worker.query import query, query_series, read_matching
from pipeline.worker.routing import SeriesRouter
from tests.fixtures.broker import MakeSettings
from tests.fixtures.support import settings_as_env, start_themis_worker, stop_process, wait_until

pytestmark = pytest.mark.integration

SERIES = 12
POINTS = 300
T0 = 1_700_000_000_000


def _series() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(17)
    out = []
    for i in range(SERIES):
        ts = T0 + np.arange(POINTS, dtype=np.int64) * 1000
        out.append((series_key("cpu", f"host-{i}", {"dc": "eu"}), ts, rng.normal(0, 1, POINTS)))
    return out


def _worker_settings(settings: Settings, data_dir: Path) -> Settings:
    """``settings`` for another worker of the same group: its own port and data dir."""
    return with_overrides(settings, {"worker": {"web_port": free_port(), "data_dir": data_dir}})


def _url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.worker.web_port}"


def _ask(urls: list[str], method: str, path: str, body: object = None) -> tuple[int, Any] | None:
    async def call(client: WorkerClient) -> tuple[int, Any] | None:
        return await client.exchange(urls[0], method, path, body=body)

    return run_with_client(urls, call)


def _owned(url: str) -> list[int]:
    got = _ask([url], "GET", pages.TS_PARTITIONS)
    return [] if got is None or got[0] != 200 else list(got[1]["owned"])


@pytest.fixture
def points_settings(make_settings: MakeSettings) -> Settings:
    settings = make_settings(ts_auto_buffer={"flush_interval_ms": 60_000})
    assert settings.kafka.bootstrap_servers
    apply_topics(settings.kafka.bootstrap_servers, settings, partitions_override=2)
    return settings


@pytest.fixture
def worker(points_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_themis_worker(settings_as_env(points_settings), tmp_path / "worker-a.log")
    try:
        wait_until(lambda: _owned(_url(points_settings)) == [0, 1], timeout_s=60, what="worker a's")
        yield proc
    finally:
        assert stop_process(proc) == 0, (tmp_path / "worker-a.log").read_text()[-3000:]


def _write(settings: Settings, series: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    with TSProducer(settings) as producer:
        producer.put_arrays(series)


def _durable(settings: Settings, entity: str) -> Any:
    return query("cpu", entity, 0, 2**62, {"dc": "eu"}, settings=settings, include_buffered=False)


def _flush(urls: list[str]) -> int:
    flushed, _ = run_with_client(urls, lambda client: client.flush_ts())
    return flushed


def test_a_series_is_answered_by_its_owner_exactly_as_written_blocks_and_buffer_merged(
    points_settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    settings = points_settings
    written = _series()
    half = POINTS // 2
    _write(settings, [(k, ts[:half], vs[:half]) for k, ts, vs in written])

    def first_half_durable() -> bool:
        _flush([_url(settings)])
        got = query(
            "cpu", "host-0", 0, 2**62, {"dc": "eu"}, settings=settings, include_buffered=False
        )
        return len(got) == half

    wait_until(first_half_durable, timeout_s=30, what="the first half durable")
    # The first half durable; the second half (and a rewrite of one point) still buffered.
    rewritten = [(k, ts[half:], vs[half:]) for k, ts, vs in written]
    key0, ts0, _ = written[0]
    rewritten.append((key0, ts0[:1], np.array([42.0])))
    _write(settings, rewritten)

    def answered() -> bool:
        got = query("cpu", "host-0", 0, 2**62, {"dc": "eu"}, settings=settings)
        return len(got) == POINTS

    wait_until(answered, timeout_s=30, what="every point of host-0 readable")
    # The buffer pages the owner merges from: the second half and the rewrite of host-0.
    # host-0 readable says nothing of the other series, consumed from other partitions.
    url = _url(settings)
    wait_until(
        lambda: (
            run_with_client([url], lambda c: c.buffered_series())
            == sorted(k for k, _, _ in written)
        ),
        timeout_s=30,
        what="every series' second half buffered",
    )
    (buffered,) = run_with_client([url], lambda c: c.buffered_points(key0, 0, 2**62))
    assert buffered[0].tolist() == [int(ts0[0]), *ts0[half:].tolist()]
    for i, (key, ts, vs) in enumerate(written):
        got = query("cpu", f"host-{i}", 0, 2**62, {"dc": "eu"}, settings=settings)
        want = vs.copy()
        if i == 0:
            want[0] = 42.0  # the last write wins over the block
        assert got.series_key == key
        assert got.timestamps.tolist() == ts.tolist()
        assert got.values.tolist() == want.tolist()
    durable = query(
        "cpu", "host-3", 0, 2**62, {"dc": "eu"}, settings=settings, include_buffered=False
    )
    assert durable.timestamps.tolist() == written[3][1][:half].tolist()
    window = query("cpu", "host-5", T0 + 10_000, T0 + 12_000, {"dc": "eu"}, settings=settings)
    assert window.timestamps.tolist() == [T0 + 10_000, T0 + 11_000, T0 + 12_000]

    # Remote-read's path: every host of metric cpu whose entity ends in 1, from the owner.
    selector = SeriesSelector("cpu", None, {"dc": "eu"}, lambda m, e, t: e.endswith("1"))

    async def matching(client: WorkerClient) -> list[str]:
        found = await read_matching(client, settings, "", selector, start_ms=0, end_ms=2**62)
        return [s.series_key for s in found if len(s) == POINTS]

    assert run_with_client([_url(settings)], matching) == [written[1][0], written[11][0]]

    url = _url(settings)
    status, page = _ask([url], "GET", pages.TS_PARTITIONS) or (0, {})
    assert (status, page["owned"], page["ready"], page["partition_count"]) == (
        200,
        [0, 1],
        [0, 1],
        2,
    )
    assert {c["partition"] for c in page["catch_ups"]} == {0, 1}
    for bad in (
        {"series": 5, "start": 0, "end": 1},
        {"series": "k"},
        {"series": "k", "start": "x", "end": 1},
    ):
        assert (_ask([url], "POST", pages.TS_QUERY, bad) or (0,))[0] == 400, bad
    assert (_ask([url], "POST", pages.TS_SERIES, {"tags": ["x"]}) or (0,))[0] == 400
    with pytest.raises(InvalidRequest):
        run_with_client([url], lambda c: SeriesRouter(c).points([key0], 5, "x"))  # type: ignore[arg-type]


def test_a_partition_that_moves_is_caught_up_by_its_new_owner_and_queries_follow_it(
    points_settings: Settings, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    settings = points_settings
    written = _series()
    _write(settings, written)
    a = _url(settings)

    def all_durable() -> bool:
        _flush([a])
        got = query(
            "cpu", "host-0", 0, 2**62, {"dc": "eu"}, settings=settings, include_buffered=False
        )
        return len(got) == POINTS

    wait_until(all_durable, timeout_s=30, what="every point durable on worker a")
    other = _worker_settings(settings, tmp_path / "data-b")
    b = _url(other)
    proc = start_themis_worker(settings_as_env(other), tmp_path / "worker-b.log")
    try:
        wait_until(
            lambda: sorted(_owned(a) + _owned(b)) == [0, 1] and bool(_owned(b)),
            timeout_s=60,
            what="a partition moved to worker b",
        )
        (moved,) = _owned(b)

        def caught_up() -> bool:
            got = _ask([b], "GET", pages.TS_PARTITIONS)
            return got is not None and moved in got[1]["ready"]

        wait_until(caught_up, timeout_s=30, what="worker b's store of the moved partition")
        status, page = _ask([b], "GET", pages.TS_PARTITIONS) or (0, {})
        (catch_up,) = [c for c in page["catch_ups"] if c["partition"] == moved]
        assert catch_up["from_offset"] == 0  # b's file was empty: all from the topic
        assert catch_up["blocks"] > 0
        assert catch_up["ms"] > 0
        on_b = [(k, ts, vs) for k, ts, vs in written if block_partition(k, 2) == moved]
        on_a = [(k, ts, vs) for k, ts, vs in written if block_partition(k, 2) != moved]
        assert on_a
        assert on_b

        # The owner answers; the other worker answers 421 and names the series moved.
        key, _, vs = on_b[0]
        body = {"series": key, "start": 0, "end": 2**62}
        status, refused = _ask([a], "POST", pages.TS_QUERY, body) or (0, {})
        assert (status, refused["moved"], refused["results"], refused["owned"]) == (
            421, [key], [], _owned(a)
        )  # fmt: skip

        # A router whose map is out of date: sent to a first, moved, asks again, gets b.
        async def stale_route(client: WorkerClient) -> tuple[list[float], int]:
            router = SeriesRouter(client)
            await router.refresh()
            router.owners = dict.fromkeys(range(2), a)
            got = await router.points([key], 0, 2**62)
            return got[key][1].tolist(), router.refreshes

        values, refreshes = run_with_client([a, b], stale_route)
        assert (values, refreshes) == (vs.tolist(), 2)

        async def every_series(client: WorkerClient) -> list[tuple[str, list[int], list[float]]]:
            found = []
            for i in range(SERIES):
                got = await query_series(
                    client, settings, "", "cpu", f"host-{i}", 0, 2**62, {"dc": "eu"}
                )
                found.append((got.series_key, got.timestamps.tolist(), got.values.tolist()))
            return found

        want = [(k, ts.tolist(), vs.tolist()) for k, ts, vs in written]
        assert run_with_client([a, b], every_series) == want
    finally:
        assert stop_process(proc) == 0, (tmp_path / "worker-b.log").read_text()[-3000:]
    # b left: a owns both again, its file of the moved partition resumes where it stopped.
    wait_until(lambda: _owned(a) == [0, 1], timeout_s=60, what="the partition back on worker a")
    assert run_with_client([a, b], every_series) == want
    status, page = _ask([a], "GET", pages.TS_PARTITIONS) or (0, {})
    back = [c for c in page["catch_ups"] if c["partition"] == moved][-1]
    assert back["from_offset"] > 0  # resumed from its own file, not from the beginning


def test_a_query_without_any_worker_gives_up_at_its_deadline_naming_the_workers() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def ask(client: WorkerClient) -> None:
        await SeriesRouter(client, deadline_s=0.3).points(["k"], 0, 1)

    with pytest.raises(WorkerUnavailable, match=f"no worker answers at {url}"):
        run_with_client([url], ask)
    selector = SeriesSelector(None, None, {}, lambda m, e, t: True)
    with pytest.raises(WorkerUnavailable, match="no worker answers at"):
        run_with_client([url], lambda c: SeriesRouter(c, deadline_s=0.3).series(selector))
