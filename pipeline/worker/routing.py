"""Sending a series query to the worker that owns the series' partition.

A series lives in one partition of the points and blocks topics
(:func:`~pipeline.ts.writer.block_partition`); the worker the consumer group assigned
that partition to holds its blocks and buffered points and answers for it alone (Kafka
Streams' interactive queries). :class:`SeriesRouter` keeps a map of partition to
worker, built from every worker's ``/ts/partitions``:

1. The series' partition is its key's CRC-32 modulo the partition count the workers
   report; the query goes to that partition's owner (``POST /ts/query``), the series of
   one owner in one request.
2. An owner that moved answers **421** (or names the series in ``moved``); a worker
   that does not answer (none yet: they are starting), or a partition no worker owns
   yet (a rebalance), leaves the series pending. The map is asked again and the
   pending series retried, waiting 20 ms, then twice as long each time (at most 500
   ms), until every series is answered or ``deadline_s`` passes
   (:class:`~pipeline.errors.WorkerUnavailable`).
3. A store still catching up after a move answers 503 ``behind``: retried the same way.

Selectors (Prometheus remote-read) ask every worker for its series with the exact parts
(``POST /ts/series``), go on only once the answering workers own every partition
between them, keep what the selector's other matchers keep, and fetch the points as
above. Nothing is merged here beyond collecting the owners' answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Sequence
from typing import Any, Final

from pipeline.errors import InvalidRequest, WorkerUnavailable
from pipeline.ts.store import Points, SeriesSelector
from pipeline.ts.writer import block_partition
from pipeline.worker import pages
from pipeline.worker.client import WorkerClient, decode_points

__all__ = ["ROUTE_DEADLINE_S", "SeriesRouter", "router_of"]

ROUTE_DEADLINE_S: Final = 20.0
"""How long a query keeps looking for the owners of its series (seconds): a worker that
died is replaced in the group after its session times out (6 s), then its successor's
stores catch up."""
_FIRST_WAIT_S: Final = 0.02
_LONGEST_WAIT_S: Final = 0.5
_STORE_WAIT_MS: Final = 5_000
"""How long an owner may wait for its store to catch up before answering 503."""

_ROUTERS: weakref.WeakKeyDictionary[WorkerClient, SeriesRouter] = weakref.WeakKeyDictionary()


def router_of(client: WorkerClient) -> SeriesRouter:
    """The router of ``client``'s workers, one per client (its owner map is kept)."""
    router = _ROUTERS.get(client)
    if router is None:
        router = _ROUTERS[client] = SeriesRouter(client)
    return router


class SeriesRouter:
    """Routes series queries over ``client``'s workers to their partitions' owners."""

    def __init__(self, client: WorkerClient, *, deadline_s: float = ROUTE_DEADLINE_S) -> None:
        self.client = client
        self.deadline_s = deadline_s
        self.partition_count = 0
        self.owners: dict[int, str] = {}
        """Partition -> the URL of the worker that owned it when last asked."""
        self.refreshes = 0
        """How often the owner map was asked for (a moved answer asks again)."""

    async def refresh(self) -> None:
        """Ask every worker which partitions it owns; ``WorkerUnavailable`` if none answers."""
        answers = await asyncio.gather(
            *(self.client.page(url, "GET", pages.TS_PARTITIONS) for url in self.client.urls)
        )
        self.refreshes += 1
        owners: dict[int, str] = {}
        for url, page in zip(self.client.urls, answers, strict=True):
            if page is not None:
                self.partition_count = int(page["partition_count"]) or self.partition_count
                owners |= dict.fromkeys((int(p) for p in page["owned"]), url)
        if all(page is None for page in answers):
            raise WorkerUnavailable(
                f"no worker answers at {', '.join(self.client.urls)} ({pages.TS_PARTITIONS}): "
                "start one with `themis worker` or set THEMIS_FACADE_WORKER_URLS"
            )
        self.owners = owners

    def owner(self, series_key: str) -> str | None:
        """The URL of the worker last known to own the series' partition."""
        if not self.partition_count:
            return None
        return self.owners.get(block_partition(series_key, self.partition_count))

    async def points(
        self, keys: Sequence[str], start_ms: int, end_ms: int, *, buffered: bool = True
    ) -> dict[str, Points]:
        """Each series' points in ``start_ms..end_ms`` from its owner (blocks and, with
        ``buffered``, what it buffers; the last write winning)."""
        deadline = time.monotonic() + self.deadline_s
        pending = list(dict.fromkeys(keys))
        found: dict[str, Points] = {}
        wait = _FIRST_WAIT_S
        if pending and any(self.owner(key) is None for key in pending):
            await self._refresh_quietly()
        while pending:
            by_owner: dict[str, list[str]] = {}
            for key in pending:
                url = self.owner(key)
                if url is not None:
                    by_owner.setdefault(url, []).append(key)
            body = {"start": start_ms, "end": end_ms, "buffered": buffered,
                    "wait_ms": _STORE_WAIT_MS}  # fmt: skip
            replies = await asyncio.gather(
                *(
                    self.client.exchange(url, "POST", pages.TS_QUERY, body=body | {"series": ks})
                    for url, ks in by_owner.items()
                )
            )
            for reply in replies:
                if reply is not None and reply[0] == 400:  # the query itself is wrong
                    raise InvalidRequest(f"a worker refused the query: {reply[1].get('error')}")
                found |= _answered(reply)
            pending = [key for key in pending if key not in found]
            if not pending:
                break
            if time.monotonic() + wait > deadline:
                await self.refresh()  # no worker answers at all: says so
                raise WorkerUnavailable(self._unanswered(pending))
            await asyncio.sleep(wait)
            wait = min(2 * wait, _LONGEST_WAIT_S)
            await self._refresh_quietly()
        return found

    async def series(self, selector: SeriesSelector) -> list[str]:
        """The keys of every series (stored or buffered) with the selector's exact parts,
        once the workers that answer own every partition between them; sorted."""
        deadline = time.monotonic() + self.deadline_s
        body = {"metric": selector.metric, "entity": selector.entity, "tags": dict(selector.tags)}
        wait = _FIRST_WAIT_S
        while True:
            if not self.partition_count:
                await self._refresh_quietly()
            answers = await self.client.ask_all("POST", pages.TS_SERIES, body=body, require=False)
            owned = {int(p) for page in answers.pages for p in page["owned"]}
            missing = set(range(self.partition_count)) - owned
            if self.partition_count and not missing:
                return sorted({key for page in answers.pages for key in page["series"]})
            if time.monotonic() + wait > deadline:
                await self.refresh()  # no worker answers at all: says so
                raise WorkerUnavailable(
                    f"no worker that answers owns partition(s) {sorted(missing)} after "
                    f"{self.deadline_s} s (a rebalance, or a worker down); retry"
                )
            await asyncio.sleep(wait)
            wait = min(2 * wait, _LONGEST_WAIT_S)
            await self._refresh_quietly()

    async def _refresh_quietly(self) -> None:
        """:meth:`refresh`, keeping the old map while no worker answers (one restarting):
        the caller's deadline decides when to give up."""
        with contextlib.suppress(WorkerUnavailable):
            await self.refresh()

    def _unanswered(self, keys: list[str]) -> str:
        partitions = sorted({block_partition(key, self.partition_count or 1) for key in keys})
        return (
            f"no worker answered for partition(s) {partitions} within {self.deadline_s} s "
            f"(workers: {', '.join(self.client.urls)}; a rebalance, or the partition's "
            "owner is down or still catching up); retry"
        )


def _answered(reply: tuple[int, dict[str, Any]] | None) -> dict[str, Points]:
    """The series an owner answered (moved, behind and failed ones are left out)."""
    if reply is None or reply[0] not in (200, 421, 503):
        return {}
    return {r["series"]: decode_points(r) for r in reply[1].get("results", [])}
