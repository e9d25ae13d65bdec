"""``WorkerClient``: the one client of the workers' web pages (:mod:`pipeline.worker.pages`).

A client knows every worker (``facade.worker_urls``, else the local worker on
``worker.web_port``), asks one or all of them, and merges their answers: stats are
aggregated (counts summed, the compression ratio recomputed over durable points),
search hits merged by distance, buffered points collected per worker. A worker that
does not answer is reported in ``unreachable``; when none answers,
:class:`~pipeline.errors.WorkerUnavailable` is raised.

The client is asynchronous (aiohttp). Synchronous callers (``themis ts query``,
``themis vectors search``, benchmarks) use :func:`run_with_client`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar

import aiohttp
import numpy as np
import orjson

from pipeline.config import Settings
from pipeline.errors import InvalidRequest, WorkerUnavailable
from pipeline.ts.store import Points
from pipeline.worker import pages

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Hit",
    "WorkerAnswers",
    "WorkerClient",
    "aggregate_ts_stats",
    "aggregate_vector_stats",
    "decode_points",
    "run_with_client",
    "worker_urls",
]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_TIMEOUT_S: Final = 10.0
"""Timeout of one request to a worker (seconds); flushes may take this long."""

_TS_SUM_FIELDS: Final = (
    "points_buffered",
    "points_flushed",
    "flush_count",
    "auto_flush_count",
    "manual_flush_count",
    "current_buffer_size",
    "current_buffer_memory",
)
_TS_EXTRA_SUM_FIELDS: Final = ("blocks_written", "dead_letters", "pending_records")
_VEC_SUM_FIELDS: Final = (
    "vectors_buffered",
    "vectors_flushed",
    "flush_count",
    "current_buffer_size",
    "current_buffer_memory",
)
_VEC_EXTRA_SUM_FIELDS: Final = ("live_vectors", "pending_records", "dead_letters")


def worker_urls(settings: Settings) -> list[str]:
    """``facade.worker_urls`` (comma-separated), else the local worker's URL."""
    configured = [u.strip().rstrip("/") for u in settings.facade.worker_urls.split(",")]
    urls = [u for u in configured if u]
    return urls or [f"http://127.0.0.1:{settings.worker.web_port}"]


@dataclass(frozen=True)
class Hit:
    """One search result: pk, distance (smaller is closer) and metadata."""

    pk: str
    distance: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class WorkerAnswers:
    """The JSON pages of the workers that answered, and the URLs that did not."""

    pages: list[dict[str, Any]]
    unreachable: list[str]


def aggregate_ts_stats(pages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The roadmap's TS buffer stats over workers: counts summed, latest flush time,
    and the compression ratio recomputed over all durable points (16 raw bytes each)."""
    out: dict[str, Any] = {name: sum(int(p.get(name, 0)) for p in pages) for name in _TS_SUM_FIELDS}
    raw_bytes = 0.0
    block_bytes = 0.0
    for page in pages:
        ratio = float(page.get("avg_compression_ratio", 0.0))
        flushed = int(page.get("points_flushed", 0))
        if ratio > 0 and flushed > 0:
            raw_bytes += 16.0 * flushed
            block_bytes += 16.0 * flushed / ratio
    out["avg_compression_ratio"] = raw_bytes / block_bytes if block_bytes else 0.0
    times = [p["last_flush_time"] for p in pages if p.get("last_flush_time")]
    out["last_flush_time"] = max(times) if times else None
    reasons: dict[str, int] = defaultdict(int)
    for page in pages:
        for reason, count in (page.get("flush_reasons") or {}).items():
            reasons[reason] += int(count)
    out["flush_reasons"] = dict(reasons)
    for name in _TS_EXTRA_SUM_FIELDS:
        out[name] = sum(int(p.get(name, 0)) for p in pages)
    return out


def aggregate_vector_stats(pages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The roadmap's vector buffer stats over workers (counts summed, latest flush time)."""
    out: dict[str, Any] = {
        name: sum(int(p.get(name, 0)) for p in pages) for name in _VEC_SUM_FIELDS
    }
    out["compression_type"] = "none"
    times = [p["last_flush_time"] for p in pages if p.get("last_flush_time")]
    out["last_flush_time"] = max(times) if times else None
    for name in _VEC_EXTRA_SUM_FIELDS:
        out[name] = sum(int(p.get(name, 0)) for p in pages)
    return out


def decode_points(body: Mapping[str, Any]) -> Points:
    """The ``timestamps`` and ``values`` of a worker page's answer (base64, little-endian)."""
    ts = np.frombuffer(base64.b64decode(body["timestamps"]), dtype="<i8").astype(np.int64)
    vs = np.frombuffer(base64.b64decode(body["values"]), dtype="<f8").astype(np.float64)
    return ts, vs


class WorkerClient:
    """Asks the workers at ``urls``; use ``async with`` or call :meth:`close`."""

    def __init__(
        self, urls: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S, page_key: str = ""
    ) -> None:
        if not urls:
            raise InvalidRequest("a worker client needs at least one worker URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json"}
        if page_key:
            self._headers["Authorization"] = f"Bearer {page_key}"
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> WorkerClient:
        """A client of every worker the settings name (:func:`worker_urls`), with their key."""
        return cls(worker_urls(settings), page_key=settings.worker.page_key, **kwargs)

    async def __aenter__(self) -> WorkerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return self._session

    # -- one page, one or all workers ----------------------------------------

    async def page(
        self,
        url: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
    ) -> dict[str, Any] | None:
        """One worker's JSON answer to ``path``, or ``None`` if it does not answer (200)."""
        got = await self.exchange(url, method, path, params=params, body=body)
        if got is None:
            return None
        status, answer = got
        if status == 400:  # the request itself is wrong: no other worker helps
            raise InvalidRequest(f"worker {url} refused {path}: {_error_of(answer)}")
        if status != 200:
            _LOG.warning("worker %s answered %s to %s", url, status, path)
            return None
        return answer

    async def exchange(
        self,
        url: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
    ) -> tuple[int, dict[str, Any]] | None:
        """One worker's status and JSON object (``{}`` if the body is none), whatever the
        status; ``None`` if it does not answer."""
        data = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            async with self._client().request(
                method,
                url + path,
                params=dict(params) if params else None,
                data=data,
                headers=self._headers,
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            _LOG.info("worker %s does not answer %s: %s", url, path, exc)
            return None
        try:
            loaded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if status == 200:
                _LOG.info("worker %s answered %s with no JSON", url, path)
                return None
            loaded = {"error": raw[:200].decode("utf-8", "replace")}
        return status, loaded if isinstance(loaded, dict) else {"value": loaded}

    async def ask_all(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        require: bool = True,
    ) -> WorkerAnswers:
        """Every worker's answer; with ``require``, ``WorkerUnavailable`` when none answers."""
        answers = await asyncio.gather(
            *(self.page(u, method, path, params=params, body=body) for u in self.urls)
        )
        got = [a for a in answers if a is not None]
        down = [u for u, a in zip(self.urls, answers, strict=True) if a is None]
        if require and not got:
            raise WorkerUnavailable(
                f"no worker answers at {', '.join(self.urls)}: start one with "
                "`themis worker` or set THEMIS_FACADE_WORKER_URLS"
            )
        return WorkerAnswers(got, down)

    # -- the pages -----------------------------------------------------------

    async def ts_stats(self) -> tuple[dict[str, Any], WorkerAnswers]:
        """Aggregated TS buffer stats, and the pages they came from."""
        answers = await self.ask_all("GET", pages.TS_STATS)
        return aggregate_ts_stats(answers.pages), answers

    async def vector_stats(self) -> tuple[dict[str, Any], WorkerAnswers]:
        """Aggregated vector buffer stats, and the pages they came from."""
        answers = await self.ask_all("GET", pages.VECTORS_STATS)
        return aggregate_vector_stats(answers.pages), answers

    async def buffer_sizes(self) -> dict[str, tuple[int | None, int | None]]:
        """Per worker URL: ``(ts current_buffer_size, vector current_buffer_size)``."""
        out: dict[str, tuple[int | None, int | None]] = {}
        for url in self.urls:
            ts, vec = await asyncio.gather(
                self.page(url, "GET", pages.TS_STATS), self.page(url, "GET", pages.VECTORS_STATS)
            )
            out[url] = (
                None if ts is None else int(ts.get("current_buffer_size", 0)),
                None if vec is None else int(vec.get("current_buffer_size", 0)),
            )
        return out

    async def flush_ts(self, *, require: bool = True) -> tuple[int, WorkerAnswers]:
        """Flush every worker's TS buffer; points made durable, summed."""
        answers = await self.ask_all("POST", pages.TS_FLUSH, body={}, require=require)
        return sum(int(p.get("points_flushed", 0)) for p in answers.pages), answers

    async def flush_vectors(self, *, require: bool = True) -> tuple[int, WorkerAnswers]:
        """Flush every worker's vector buffers; vectors applied, summed."""
        answers = await self.ask_all("POST", pages.VECTORS_FLUSH, body={}, require=require)
        return sum(int(p.get("vectors_flushed", 0)) for p in answers.pages), answers

    async def buffered_points(self, series_key: str, start_ms: int, end_ms: int) -> list[Points]:
        """The points each answering worker still buffers for ``series_key``."""
        # In the body: a series key may be longer than a URL may be.
        body = {"series": series_key, "start": start_ms, "end": end_ms}
        answers = await self.ask_all("POST", pages.TS_BUFFERED, body=body, require=False)
        return [decode_points(page) for page in answers.pages]

    async def buffered_series(self) -> list[str]:
        """The keys of every series some answering worker buffers points of, sorted."""
        answers = await self.ask_all("GET", pages.TS_BUFFERED_SERIES, require=False)
        return sorted({key for page in answers.pages for key in page.get("series", [])})

    async def search(
        self,
        vector: Sequence[float] | Any,
        k: int,
        ef: int | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> tuple[list[Hit], list[str]]:
        """The ``k`` nearest live vectors over every worker, closest first; and the
        workers that did not answer."""
        body: dict[str, Any] = {"vector": vector, "k": k}
        if ef is not None:
            body["ef"] = ef
        if where:
            body["filter"] = dict(where)
        answers = await self.ask_all("POST", pages.VECTORS_SEARCH, body=body)
        hits = [
            Hit(r["pk"], float(r["distance"]), r["metadata"])
            for page in answers.pages
            for r in page.get("results", [])
        ]
        hits.sort(key=lambda hit: hit.distance)
        return hits[:k], answers.unreachable

    async def vector_present(self, pk: str) -> bool:
        """Whether some worker holds ``pk`` (in its index or as a buffered upsert)."""
        answers = await self.ask_all("GET", pages.VECTORS_GET, params={"pk": pk})
        return any(page.get("present") for page in answers.pages)

    async def vector_dump(self) -> dict[str, Any]:
        """Every live pk with its metadata, over all workers."""
        answers = await self.ask_all("GET", pages.VECTORS_DUMP)
        merged: dict[str, Any] = {}
        for page in answers.pages:
            merged.update(page)
        return merged


def run_with_client(
    urls: Sequence[str],
    call: Callable[[WorkerClient], Awaitable[_T]],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    page_key: str = "",
) -> _T:
    """Run ``call(client)`` on a fresh event loop with a client of ``urls`` (sync callers)."""

    async def run() -> _T:
        async with WorkerClient(urls, timeout_s=timeout_s, page_key=page_key) as client:
            return await call(client)

    return asyncio.run(run())


def _error_of(reply: Mapping[str, Any]) -> str:
    """The ``error`` of a worker's JSON answer, else the start of it."""
    if isinstance(reply.get("error"), str):
        return str(reply["error"])
    return orjson.dumps(reply)[:200].decode("utf-8", "replace")
