"""Reads over the workers: one series' exact points (durable blocks plus buffers), k-NN.

A series is read from the worker that owns its partition
(:class:`~pipeline.worker.routing.SeriesRouter`): that worker keeps the blocks of its
partitions in a local store, caught up from those partitions of the blocks topic alone,
and merges them with the points it still buffers or is writing (the last write wins;
buffered points are newer than any block). No query reads the whole blocks topic, and
no process but the owner keeps a copy of a series' blocks. A selector (remote-read) asks
every worker for its series, keeps what the selector keeps, and reads each series from
its owner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.errors import InvalidRecord
from pipeline.ts.point import parse_series_key, series_key
from pipeline.ts.store import SeriesPoints, SeriesSelector
from pipeline.worker.client import Hit, WorkerClient, run_with_client, worker_urls
from pipeline.worker.routing import router_of

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
    """Points of a series with ``start_ms <= timestamp_ms <= end_ms``, in timestamp order,
    from the worker that owns the series' partition.

    ``include_buffered`` false: its durable blocks only. ``settings``, ``bootstrap`` and
    ``store_path`` are not used any more (the owner reads its own store); they stay for
    callers of the earlier signature. Raises
    :class:`~pipeline.errors.WorkerUnavailable` when no owner answers in time.
    """
    del settings, bootstrap, store_path
    key = series_key(metric, entity, tags)
    got = await router_of(client).points([key], start_ms, end_ms, buffered=include_buffered)
    ts, vs = got[key]
    return SeriesPoints(key, ts, vs)


async def read_matching(
    client: WorkerClient,
    settings: Settings,
    bootstrap: str,
    selector: SeriesSelector,
    *,
    start_ms: int,
    end_ms: int,
    store_path: Path | None = None,
) -> list[SeriesPoints]:
    """Every series the selector picks, with its points in ``start_ms..end_ms`` (blocks,
    then what the owner still buffers; last write wins), series without points left out,
    sorted by key. Each worker names its series with the selector's exact parts (stored
    or only buffered so far); ``selector.keep`` decides on the rest. ``settings``,
    ``bootstrap`` and ``store_path`` are not used any more."""
    del settings, bootstrap, store_path
    router = router_of(client)
    kept = [key for key in await router.series(selector) if _keeps(selector, key)]
    got = await router.points(kept, start_ms, end_ms)
    return [SeriesPoints(key, *got[key]) for key in kept if len(got[key][0])]


def _keeps(selector: SeriesSelector, key: str) -> bool:
    try:
        return selector.keep(*parse_series_key(key))
    except InvalidRecord:
        return False  # a key no matcher can read (the series index holds none)


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
    """:func:`query_series` for synchronous callers, asking the workers ``settings`` name
    (``store_path`` is not used any more)."""
    return run_with_client(
        worker_urls(settings),
        lambda client: query_series(
            client,
            settings,
            "",
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
