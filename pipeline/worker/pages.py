"""The worker's web pages (Faust's web server on ``worker.web_port``), all JSON but metrics.

=========================  ======  ======================================================
path                       method  answer
=========================  ======  ======================================================
``/metrics``               GET     Prometheus exposition of :class:`PipelineMetrics`
``/ts/buffer/stats``       GET     the roadmap's TS buffer stats + ``flush_reasons``,
                                   ``blocks_written``, ``dead_letters``,
                                   ``pending_records``, ``assigned_partitions``
``/ts/buffer/flush``       POST    ``{"success", "points_flushed"}`` once durable
``/ts/buffered``           GET     ``?series=KEY&start=MS&end=MS``: buffered points as
                                   base64 little-endian int64 / float64 arrays
``/ts/buffered``           POST    the same with ``{"series", "start", "end"}`` as the
                                   body (series keys too long for a URL)
``/ts/buffered/series``    GET     ``{"series": [KEY, ...]}``: every series with points
                                   buffered now (remote-read finds unflushed series)
``/ts/partitions``         GET     ``{"topic", "partition_count", "owned", "ready",
                                   "catch_ups"}``: the blocks-topic partitions whose
                                   series this worker answers for
``/ts/query``              POST    ``{"series": KEY | [KEY, ...], "start", "end",
                                   "buffered"?, "wait_ms"?}`` -> ``{"results":
                                   [{series, timestamps, values}], "moved", "behind",
                                   "partition_count", "owned"}``; **421** when every
                                   series asked for is another worker's (moved),
                                   503 when their stores are still catching up
``/ts/series``             POST    ``{"metric"?, "entity"?, "tags"?}`` -> ``{"series",
                                   "owned"}``: the series of the owned partitions
                                   with those exact parts (stored or buffered)
``/vectors/buffer/stats``  GET     the roadmap's vector buffer stats + ``live_vectors``,
                                   ``shards``, ``pending_records``, ``dead_letters``
``/vectors/buffer/flush``  POST    ``{"success", "vectors_flushed"}`` once snapshotted
``/vectors/search``        POST    ``{"vector", "k", "ef"?, "filter"?}`` ->
                                   ``{"success", "results": [{pk, distance, metadata}]}``
``/vectors/get``           GET     ``?pk=PK``: ``{"pk", "present", "pending", "metadata"}``
``/vectors/dump``          GET     every live pk with its metadata (checks, small indexes)
=========================  ======  ======================================================

:class:`pipeline.worker.client.WorkerClient` is the one client of these pages. With
``worker.page_key`` set, every page but ``/metrics`` answers 401 unless the request
carries ``Authorization: Bearer <page_key>``; a worker bound beyond loopback refuses to
start without one (:func:`pipeline.worker.app.create_app`).

A series is answered by the worker that owns its partition (docs/operations.md, "Queries
routed to the owner"): the points and blocks of partition ``p`` are the consumer group's
assignment of ``p``. Asked for a series of a partition it does not own, ``/ts/query``
answers 421 Misdirected Request with the same body (``moved`` names the series, ``owned``
its partitions); the caller asks ``/ts/partitions`` again and retries at the owner.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
from typing import Any, Final, cast

import numpy as np
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline.errors import InvalidRecord
from pipeline.http_heads import QuietRunner
from pipeline.ingest.buffer_core import FlushReason
from pipeline.ts.owned_blocks import Readiness
from pipeline.ts.point import parse_series_key
from pipeline.ts.writer import block_partition
from pipeline.worker.context import WorkerApp, context_of

__all__ = [
    "METRICS",
    "TS_BUFFERED",
    "TS_BUFFERED_SERIES",
    "TS_FLUSH",
    "TS_PARTITIONS",
    "TS_QUERY",
    "TS_SERIES",
    "TS_STATS",
    "VECTORS_DUMP",
    "VECTORS_FLUSH",
    "VECTORS_GET",
    "VECTORS_SEARCH",
    "VECTORS_STATS",
    "install_pages",
]

METRICS: Final = "/metrics"
TS_STATS: Final = "/ts/buffer/stats"
TS_FLUSH: Final = "/ts/buffer/flush"
TS_BUFFERED: Final = "/ts/buffered"
TS_BUFFERED_SERIES: Final = "/ts/buffered/series"
TS_PARTITIONS: Final = "/ts/partitions"
TS_QUERY: Final = "/ts/query"
TS_SERIES: Final = "/ts/series"
MAX_WAIT_MS: Final = 30_000
"""The longest ``wait_ms`` a ``/ts/query`` may ask for (milliseconds)."""
VECTORS_STATS: Final = "/vectors/buffer/stats"
VECTORS_FLUSH: Final = "/vectors/buffer/flush"
VECTORS_SEARCH: Final = "/vectors/search"
VECTORS_GET: Final = "/vectors/get"
VECTORS_DUMP: Final = "/vectors/dump"


class _Page(View):
    """A page that needs ``worker.page_key`` when one is set (every page but metrics)."""

    async def dispatch(self, request: Any) -> Any:
        context = context_of(self.app)
        key = context.settings.worker.page_key
        if key:
            address = str(request.remote or "unknown")
            failures = context.page_failures
            if wait := failures.retry_after(address):
                error = (
                    f"too many wrong page keys from this address (at most "
                    f"{failures.per_minute} a minute, worker.page_auth_failures_per_min); "
                    f"retry after {wait} s"
                )
                return self._refuse(429, error, {"Retry-After": str(wait)})
            presented = request.headers.get("Authorization", "")
            expected = f"Bearer {key}"
            if not hmac.compare_digest(
                presented.encode("utf-8", "surrogateescape"), expected.encode()
            ):
                failures.failed(address)
                return self._refuse(401, _NEEDS_KEY)
        if request.method in {"POST", "PUT"}:
            timeout_s = context.settings.worker.body_timeout_s
            try:
                async with asyncio.timeout(timeout_s):
                    await request.read()  # kept by aiohttp: the page's json() reads it again
            except TimeoutError:
                refused = self._refuse(
                    408,
                    f"the body did not arrive within {timeout_s:g} s (worker.body_timeout_s); "
                    "send it at once",
                )
                refused.force_close()
                return refused
        return await super().dispatch(request)

    def _refuse(self, status: int, error: str, headers: dict[str, str] | None = None) -> Any:
        return self.json({"success": False, "error": error}, status=status, headers=headers)


_NEEDS_KEY: Final = (
    "this worker page needs 'Authorization: Bearer <worker.page_key>' (THEMIS_WORKER_PAGE_KEY)"
)


def _b64(array: Any, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype).tobytes()).decode()


class MetricsPage(View):
    async def get(self, request: Request) -> Response:
        body = context_of(self.app).metrics.exposition()
        # aiohttp wants the charset apart from the media type.
        return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])


class TSStatsPage(_Page):
    async def get(self, request: Request) -> Response:
        stage = context_of(self.app).require_ts()
        body = stage.buffer.stats().to_dict() | {
            "flush_reasons": stage.buffer.flush_reason_counts(),
            "blocks_written": stage.blocks_written,
            "dead_letters": stage.dead_letters.count,
            "pending_records": stage.offsets.pending_records(),
            "assigned_partitions": stage.assigned_partitions(),
        }
        return self.json(body)


class TSFlushPage(_Page):
    async def post(self, request: Request) -> Response:
        stage = context_of(self.app).require_ts()
        before = stage.buffer.stats().points_flushed
        await stage.flush(FlushReason.MANUAL)
        flushed = stage.buffer.stats().points_flushed - before
        return self.json({"success": True, "points_flushed": flushed})


class TSBufferedPage(_Page):
    async def get(self, request: Request) -> Response:
        return self._points(request.query)

    async def post(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        return self._points(body if isinstance(body, dict) else {})

    def _points(self, given: Any) -> Response:
        stage = context_of(self.app).require_ts()
        try:
            key = given["series"]
            start, end = int(given["start"]), int(given["end"])
            if not isinstance(key, str):
                raise TypeError(key)
        except (KeyError, TypeError, ValueError):
            return self.json(
                {
                    "success": False,
                    "error": "'series' (a string), 'start' and 'end' (integer milliseconds) "
                    "are required",
                },
                status=400,
            )
        ts, vs = stage.buffer.buffered_points(key, start, end)
        return self.json({"timestamps": _b64(ts, "<i8"), "values": _b64(vs, "<f8")})


class TSBufferedSeriesPage(_Page):
    async def get(self, request: Request) -> Response:
        stage = context_of(self.app).require_ts()
        return self.json({"series": stage.buffer.buffered_series()})


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {}


class TSPartitionsPage(_Page):
    async def get(self, request: Request) -> Response:
        stage = context_of(self.app).require_ts()
        count = await asyncio.to_thread(stage.partition_count)
        store = stage.store
        return self.json(
            {
                "topic": stage.blocks_topic,
                "partition_count": count,
                "owned": store.owned(),
                "ready": store.ready(),
                "catch_ups": [c.to_dict() for c in store.catch_ups],
            }
        )


class TSQueryPage(_Page):
    async def post(self, request: Request) -> Response:
        """Points of series this worker owns; the others named in ``moved`` (421 if all)."""
        stage = context_of(self.app).require_ts()
        body = await _json_body(request)
        try:
            keys = body["series"]
            keys = [keys] if isinstance(keys, str) else keys
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise TypeError(keys)
            start, end = int(body["start"]), int(body["end"])
            wait_ms = min(MAX_WAIT_MS, max(0, int(body.get("wait_ms", 5000))))
        except (KeyError, TypeError, ValueError):
            return cast(Response, self._refuse(400, _QUERY_FIELDS))
        got = await stage.series_points(
            keys, start, end, buffered=body.get("buffered", True) is not False,
            wait_s=wait_ms / 1000,
        )  # fmt: skip
        results, moved, behind = [], [], []
        for key, answer in got.items():
            if answer is Readiness.NOT_OWNED:
                moved.append(key)
            elif answer is Readiness.BEHIND:
                behind.append(key)
            elif not isinstance(answer, Readiness):
                ts, vs = answer
                results.append({"series": key, "timestamps": _b64(ts, "<i8"),
                                "values": _b64(vs, "<f8")})  # fmt: skip
        reply: dict[str, Any] = {
            "success": True, "results": results, "moved": moved, "behind": behind,
            "partition_count": stage.partition_count(), "owned": stage.store.owned(),
        }  # fmt: skip
        if keys and not results:
            status = 421 if moved and not behind else 503
            error = _MOVED if status == 421 else _BEHIND
            return self.json(reply | {"success": False, "error": error}, status=status)
        return self.json(reply)


class TSSeriesPage(_Page):
    async def post(self, request: Request) -> Response:
        """The owned partitions' series with the exact parts asked for (any, when absent)."""
        stage = context_of(self.app).require_ts()
        body = await _json_body(request)
        metric, entity, tags = body.get("metric"), body.get("entity"), body.get("tags") or {}
        if not (
            all(isinstance(v, str | None) for v in (metric, entity))
            and isinstance(tags, dict)
            and all(isinstance(v, str) for v in tags.values())
        ):
            return cast(Response, self._refuse(400, _SERIES_FIELDS))
        owned = stage.store.owned()
        stored = await asyncio.to_thread(stage.store.series_matching, metric, entity, tags)
        count = await asyncio.to_thread(stage.partition_count)
        buffered = [
            key for key in stage.buffer.buffered_series()
            if block_partition(key, count) in owned and _exact(key, metric, entity, tags)
        ]  # fmt: skip
        return self.json({"series": sorted({*stored, *buffered}), "owned": owned})


def _exact(key: str, metric: str | None, entity: str | None, tags: dict[str, str]) -> bool:
    """Whether ``key`` has these exact parts (what the series index answers for a store)."""
    try:
        got_metric, got_entity, got_tags = parse_series_key(key)
    except InvalidRecord:
        return False  # no key the index can read
    return (
        metric in (None, got_metric)
        and entity in (None, got_entity)
        and all(got_tags.get(name) == value for name, value in tags.items())
    )


_QUERY_FIELDS: Final = (
    "'series' (a string or an array of strings), 'start' and 'end' (integer milliseconds) "
    "are required; 'wait_ms' is an integer"
)
_SERIES_FIELDS: Final = "'metric', 'entity' (strings) and 'tags' (an object of strings)"
_MOVED: Final = (
    "this worker does not own the partition of the series asked for (421: ask "
    "/ts/partitions of the workers and retry at the owner)"
)
_BEHIND: Final = "the block store of this series' partition is still catching up; retry"


class VectorStatsPage(_Page):
    async def get(self, request: Request) -> Response:
        stage = context_of(self.app).require_vectors()
        shards = list(stage.shards.values())
        # live_count waits for an apply in progress: off the event loop.
        live = await asyncio.to_thread(lambda: sum(s.index.live_count() for s in shards))
        body = stage.stats() | {
            "live_vectors": live,
            "shards": sorted(stage.shards),
            "pending_records": stage.offsets.pending_records(),
            "dead_letters": stage.dead_letters.count,
            "assigned_partitions": stage.assigned_partitions(),
        }
        return self.json(body)


class VectorFlushPage(_Page):
    async def post(self, request: Request) -> Response:
        applied = await context_of(self.app).require_vectors().flush()
        return self.json({"success": True, "vectors_flushed": applied})


class VectorSearchPage(_Page):
    async def post(self, request: Request) -> Response:
        stage = context_of(self.app).require_vectors()
        body = await request.json()
        try:
            vector = np.asarray(body["vector"], dtype=np.float32)
            k = int(body.get("k", 10))
            ef = body.get("ef")
            hits = await asyncio.to_thread(
                stage.search, vector, k, None if ef is None else int(ef), body.get("filter")
            )
        except (KeyError, TypeError, ValueError, InvalidRecord) as exc:
            return self.json({"success": False, "error": str(exc)}, status=400)
        results = [{"pk": h.pk, "distance": h.distance, "metadata": h.metadata} for h in hits]
        return self.json({"success": True, "results": results})


class VectorDumpPage(_Page):
    async def get(self, request: Request) -> Response:
        stage = context_of(self.app).require_vectors()
        out: dict[str, Any] = {}
        for shard in list(stage.shards.values()):
            for pk in shard.index.pks():
                got = shard.index.get(pk)
                if got is not None:
                    out[pk] = got[1]
        return self.json(out)


class VectorGetPage(_Page):
    async def get(self, request: Request) -> Response:
        """One pk: ``{"pk", "present", "pending", "metadata"}`` (pending: a buffered op)."""
        stage = context_of(self.app).require_vectors()
        pk = request.query.get("pk", "")
        for shard in list(stage.shards.values()):
            pending = shard.buffer.pending(pk)
            got = shard.index.get(pk)
            if pending is not None or got is not None:
                present = got is not None if pending is None else pending.op != "remove"
                return self.json(
                    {
                        "pk": pk,
                        "present": present,
                        "pending": None if pending is None else str(pending.op),
                        "metadata": None if got is None else got[1],
                    }
                )
        return self.json({"pk": pk, "present": False, "pending": None, "metadata": None})


def install_pages(app: WorkerApp) -> None:
    """Serve the pages of the stages ``app.context`` holds (and ``/metrics``)."""
    _quiet_heads(app)
    app.page(METRICS)(MetricsPage)
    context = app.context
    if context.ts is not None:
        app.page(TS_STATS)(TSStatsPage)
        app.page(TS_FLUSH)(TSFlushPage)
        app.page(TS_BUFFERED)(TSBufferedPage)
        app.page(TS_BUFFERED_SERIES)(TSBufferedSeriesPage)
        app.page(TS_PARTITIONS)(TSPartitionsPage)
        app.page(TS_QUERY)(TSQueryPage)
        app.page(TS_SERIES)(TSSeriesPage)
    if context.vectors is not None:
        app.page(VECTORS_GET)(VectorGetPage)
        app.page(VECTORS_DUMP)(VectorDumpPage)
        app.page(VECTORS_STATS)(VectorStatsPage)
        app.page(VECTORS_FLUSH)(VectorFlushPage)
        app.page(VECTORS_SEARCH)(VectorSearchPage)


def _quiet_heads(app: WorkerApp) -> None:
    """Serve the pages on a :class:`~pipeline.http_heads.QuietRunner`, so a head aiohttp
    cannot parse (a NUL byte after the page key, an ``Authorization`` header over 8,190
    bytes) is never echoed into the 400 or the log. Faust builds its runner in its web
    driver's constructor and offers no option for it: it is replaced before it starts,
    with ``worker.header_timeout_s`` as its connections' head timeout."""
    web = cast("AiohttpWeb", app.web)  # the worker's web driver: aiohttp, Faust's default
    web._runner = QuietRunner(
        web.web_app,
        access_log=None,
        # aiohttp's keep-alive timer runs while a connection waits for a head: a client
        # that sends half a head is cut off then, however slowly it keeps sending.
        keepalive_timeout=app.context.settings.worker.header_timeout_s,
    )
