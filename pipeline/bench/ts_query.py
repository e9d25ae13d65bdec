"""One series read from the worker that owns it, over a large block store; and how long
the store takes to catch up, at start and after a partition moves.

:func:`measure_query`:

1. Builds the store: ``store_series`` devops series (:func:`~pipeline.ts.dataset.devops_dataset`)
   of ``points_per_series`` points each, cut into blocks of ``max_points_per_buffer``
   points and produced straight to the blocks topic (full spec: 6 partitions), each
   to its series' partition as :class:`~pipeline.ts.writer.BlockWriter` puts it.
2. Starts a worker on that topic (no points to consume): it owns every partition and
   catches its stores up from empty files; ``store_catch_up_ms`` is the slowest
   partition's catch-up (assignment to caught up, :class:`~pipeline.ts.owned_blocks.CatchUp`).
3. Times ``queries`` reads of one whole series each (``points_per_series`` points, a
   series picked at random each time) through
   :func:`~pipeline.worker.query.query_series`: the router's cached owner map, one
   ``POST /ts/query`` over HTTP to the owner, which reads the partition's end from the
   broker, its SQLite store and its buffer. Wall clock per call, after ``warm_up``
   untimed calls; p50 and p99.
4. Starts a second worker in the same group (its own data dir): the partitions that
   move to it are caught up from empty files; ``store_move_catch_up_ms`` is the slowest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from pipeline.bench.harness import progress, rounded, worker_running
from pipeline.bench.ts_writes import AckedProducer
from pipeline.config import Settings, with_overrides
from pipeline.errors import BenchmarkFailed
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.ts.block import encode_blocks
from pipeline.ts.dataset import devops_dataset
from pipeline.ts.point import series_key
from pipeline.ts.writer import block_partition
from pipeline.worker import pages
from pipeline.worker.client import WorkerClient, run_with_client
from pipeline.worker.query import query_series

__all__ = ["QUERY_GOAL_MS", "QueryRun", "measure_query"]

QUERY_GOAL_MS: Final = 50.0
"""Goal of ``query_ms_p99`` (milliseconds)."""
_METRIC: Final = "bench.query"
_SEED: Final = 11
_CHUNK_SERIES: Final = 50
_WAIT_S: Final = 300.0


@dataclass(frozen=True)
class QueryRun:
    """What :func:`measure_query` measured."""

    store_series: int
    points_per_series: int
    store_blocks: int
    partitions: int
    latencies_ms: list[float]
    warm_up: int
    catch_up_ms: float
    catch_up_blocks: int
    move_catch_up_ms: float
    moved_partitions: list[int]
    moved_blocks: int

    @property
    def store_points(self) -> int:
        return self.store_series * self.points_per_series

    def quantile_ms(self, q: float) -> float:
        return float(np.quantile(np.asarray(self.latencies_ms), q))

    def details(self) -> dict[str, object]:
        return {
            "store_series": self.store_series,
            "points_per_series": self.points_per_series,
            "store_blocks": self.store_blocks,
            "partitions": self.partitions,
            "queries": len(self.latencies_ms),
            "warm_up_queries": self.warm_up,
            "query_ms_max": rounded(max(self.latencies_ms), 4),
            "catch_up_blocks": self.catch_up_blocks,
            "moved_partitions": self.moved_partitions,
            "moved_blocks": self.moved_blocks,
        }


def _key(index: int) -> str:
    return series_key(_METRIC, f"host-{index:05d}")


def build_store(  # noqa: PLR0917 - where, then how much
    bootstrap: str, topic: str, partitions: int, series: int, points: int, block_points: int
) -> int:
    """Produce the store's blocks (acknowledged on return); returns how many."""
    blocks = 0
    with AckedProducer(bootstrap, topic) as producer:
        for first in range(0, series, _CHUNK_SERIES):
            count = min(_CHUNK_SERIES, series - first)
            for offset, (_, ts, vs) in enumerate(devops_dataset(count, points, _SEED + first)):
                key = _key(first + offset)
                partition = block_partition(key, partitions)
                for start in range(0, points, block_points):
                    end = start + block_points
                    for block in encode_blocks(key, ts[start:end], vs[start:end]):
                        producer.produce(
                            block.block_id.encode(), block.to_bytes(), partition=partition
                        )
                        blocks += 1
        producer.flush_acked(timeout_s=300)
    return blocks


def _partitions_page(url: str) -> dict[str, Any] | None:
    async def ask(client: WorkerClient) -> dict[str, Any] | None:
        return await client.page(url, "GET", pages.TS_PARTITIONS)

    return run_with_client([url], ask)


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float = _WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise BenchmarkFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def _caught_up(url: str, partitions: set[int] | None = None) -> bool:
    page = _partitions_page(url)
    if page is None or not page["owned"]:
        return False
    return page["ready"] == page["owned"] and (
        partitions is None or set(page["owned"]) == partitions
    )


def _slowest(page: dict[str, Any], partitions: list[int]) -> tuple[float, int]:
    """The slowest latest catch-up of ``partitions`` (ms) and their blocks."""
    latest = {c["partition"]: c for c in page["catch_ups"] if c["partition"] in partitions}
    return max(c["ms"] for c in latest.values()), sum(c["blocks"] for c in latest.values())


def _timed_queries(settings: Settings, url: str, series: int, count: int) -> list[float]:
    rng = np.random.default_rng(_SEED)
    picks = rng.integers(0, series, count).tolist()

    async def run(client: WorkerClient) -> list[float]:
        out = []
        for index in picks:
            t0 = time.perf_counter()
            got = await query_series(client, settings, "", _METRIC, f"host-{index:05d}", 0, 2**62)
            out.append((time.perf_counter() - t0) * 1000)
            if not len(got):
                raise BenchmarkFailed(f"the query of {got.series_key} came back empty")
        return out

    return run_with_client([url], run)


def measure_query(
    settings: Settings, work_dir: Path, *, series: int, points: int, queries: int, warm_up: int
) -> QueryRun:
    """The steps of the module docstring on ``settings``' namespace (topics created here)."""
    bootstrap = settings.kafka.bootstrap_servers
    assert bootstrap is not None
    apply_topics(bootstrap, settings)
    topic = settings.topic("ts.blocks")
    partitions = next(spec.partitions for spec in load_specs() if spec.name == "ts.blocks")
    block_points = settings.ts_auto_buffer.max_points_per_buffer
    t0 = time.perf_counter()
    blocks = build_store(bootstrap, topic, partitions, series, points, block_points)
    progress(
        f"query store: {series * points:,} points of {series:,} series in {blocks:,} blocks "
        f"produced in {time.perf_counter() - t0:.1f} s; starting a worker"
    )
    url = f"http://127.0.0.1:{settings.worker.web_port}"
    every = set(range(partitions))
    with worker_running(settings, work_dir / "query-worker.log"):
        _wait_for("the worker's stores caught up", lambda: _caught_up(url, every))
        first = _partitions_page(url) or {}
        catch_up_ms, catch_up_blocks = _slowest(first, sorted(every))
        progress(f"query store caught up in {catch_up_ms:,.0f} ms; {warm_up + queries} queries")
        latencies = _timed_queries(settings, url, series, warm_up + queries)[warm_up:]
        other = with_overrides(
            settings, {"worker": {"web_port": free_port(), "data_dir": work_dir / "query-b"}}
        )
        other_url = f"http://127.0.0.1:{other.worker.web_port}"
        with worker_running(other, work_dir / "query-worker-b.log"):
            _wait_for("partitions moved to a second worker", lambda: _caught_up(other_url))
            moved_page = _partitions_page(other_url) or {}
            moved = sorted(moved_page["owned"])
            move_ms, move_blocks = _slowest(moved_page, moved)
    run = QueryRun(
        store_series=series,
        points_per_series=points,
        store_blocks=blocks,
        partitions=partitions,
        latencies_ms=latencies,
        warm_up=warm_up,
        catch_up_ms=catch_up_ms,
        catch_up_blocks=catch_up_blocks,
        move_catch_up_ms=move_ms,
        moved_partitions=moved,
        moved_blocks=move_blocks,
    )
    progress(
        f"query: p50 {run.quantile_ms(0.5):.2f} ms, p99 {run.quantile_ms(0.99):.2f} ms "
        f"({points:,} points a series, {run.store_points:,}-point store); partitions "
        f"{moved} moved, caught up in {move_ms:,.0f} ms"
    )
    return run
