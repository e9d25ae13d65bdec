"""Reads over the workers: one series' exact points (durable blocks plus buffers), k-NN.

Blocks come from a local :class:`~pipeline.ts.store.BlockStore`, caught up from the
blocks topic first (:func:`~pipeline.ts.store.read_durable`). Points still in a
worker's TSAutoBuffer come from the workers' ``/ts/buffered`` pages when
``include_buffered`` is true; a worker that does not answer contributes nothing.
Where a timestamp appears twice (a replayed range) the last write wins, and buffered
points are newer than any block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.kafka.broker import require_broker
from pipeline.ts.point import parse_series_key, series_key
from pipeline.ts.store import (
    BlockStore,
    SeriesPoints,
    SeriesSelector,
    merge_last_wins,
    read_durable,
)
from pipeline.worker.client import Hit, WorkerClient, run_with_client, worker_urls

__all__ = ["query", "query_series", "read_matching", "search"]


async def query_series(  # noqa: PLR0917 - the series and its range, as the roadmap's query
    client: WorkerClient,
    settings: Settings,
    bootstrap: str,
    metric: str,
    entity: str,
    start_ms: int,
    end_ms: int,
    tags: Mapping[str, str] | None = None,
    *,
    include_buffered: bool = True,
    store_path: Path | None = None,
) -> SeriesPoints:
    """Points of a series with ``start_ms <= timestamp_ms <= end_ms``, in timestamp order.

    ``store_path`` is the SQLite file of this process's block store (default
    ``<data_dir>/query-blocks.sqlite``; one file per process that queries).
    """
    key = series_key(metric, entity, tags)
    path = store_path or settings.worker.data_dir / "query-blocks.sqlite"
    durable = await asyncio.to_thread(
        read_durable, bootstrap, settings.topic("ts.blocks"), path, key, start_ms, end_ms
    )
    parts = [durable]
    if include_buffered:
        parts += await client.buffered_points(key, start_ms, end_ms)
    ts, vs = merge_last_wins(parts)
    return SeriesPoints(key, ts, vs)


async def read_matching(
    client: WorkerClient,
    settings: Settings,
    bootstrap: str,
    selector: SeriesSelector,
    *,
    start_ms: int,
    end_ms: int,
    store_path: Path,
) -> list[SeriesPoints]:
    """Every stored series the selector picks, with its points in ``start_ms..end_ms``
    (blocks, then what the workers still buffer; last write wins), series without points
    left out. The block store is caught up first; its series index picks the candidates,
    with the series only the workers' buffers hold so far (``/ts/buffered/series``)."""

    buffered_only = await client.buffered_series()

    def durable() -> list[tuple[str, Any]]:
        store = BlockStore(store_path)
        try:
            store.catch_up(bootstrap, settings.topic("ts.blocks"))
            keys = set(store.series_matching(selector.metric, selector.entity, selector.tags))
            keys |= {key for key in buffered_only if _exactly(selector, key)}
            kept = sorted(key for key in keys if selector.keep(*parse_series_key(key)))
            return [(key, store.query(key, start_ms, end_ms)) for key in kept]
        finally:
            store.close()

    found = []
    for key, points in await asyncio.to_thread(durable):
        buffered = await client.buffered_points(key, start_ms, end_ms)
        ts, vs = merge_last_wins([points, *buffered])
        if len(ts):
            found.append(SeriesPoints(key, ts, vs))
    return found


def _exactly(selector: SeriesSelector, key: str) -> bool:
    """Whether ``key`` has the selector's exact parts (what the series index would answer)."""
    metric, entity, tags = parse_series_key(key)
    return (
        selector.metric in (None, metric)
        and selector.entity in (None, entity)
        and all(tags.get(name) == value for name, value in selector.tags.items())
    )


def query(
    metric: str,
    entity: str,
    start_ms: int,
    end_ms: int,
    tags: Mapping[str, str] | None = None,
    *,
    settings: Settings,
    include_buffered: bool = True,
    store_path: Path | None = None,
) -> SeriesPoints:
    """:func:`query_series` for synchronous callers, asking the workers ``settings`` name."""
    bootstrap = settings.kafka.bootstrap_servers or require_broker(settings).bootstrap_servers
    return run_with_client(
        worker_urls(settings),
        lambda client: query_series(
            client,
            settings,
            bootstrap,
            metric,
            entity,
            start_ms,
            end_ms,
            tags,
            include_buffered=include_buffered,
            store_path=store_path,
        ),
        page_key=settings.worker.page_key,
    )


def search(
    vector: Sequence[float] | Any,
    k: int,
    ef: int | None = None,
    filter: Mapping[str, Any] | None = None,
    *,
    settings: Settings,
) -> list[Hit]:
    """The ``k`` nearest live vectors on the workers ``settings`` name, closest first.

    ``filter`` keeps hits whose metadata has those values (equality match).
    """
    hits, _ = run_with_client(
        worker_urls(settings),
        lambda client: client.search(vector, k, ef, filter),
        page_key=settings.worker.page_key,
    )
    return hits
