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
from pipeline.ts.point import series_key
from pipeline.ts.store import SeriesPoints, merge_last_wins, read_durable
from pipeline.worker.client import Hit, WorkerClient, run_with_client, worker_urls

__all__ = ["query", "query_series", "search"]


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
