"""The replica's reads: what it applied, asked as the facade is asked.

``GET /ts/query`` and ``POST /ts/query``
    The facade's query (``metric``, ``entity``, ``tag=k:v``, ``start``/``end``; or the
    JSON body), answered from the replica's own blocks with the facade's answer
    (:func:`~pipeline.validation.query_answer`).

``POST /vectors/search``
    ``{"vector", "k"?, "ef"?}`` -> ``{"success": true, "results": [{"pk", "distance",
    "metadata"}]}`` over the replica's index. A ``filter`` is refused (400): the replica
    serves unfiltered nearest-neighbour reads only.

Reads need the trust that applying needs (:class:`~pipeline.replication.server.ApplyAuth`:
a verified client certificate or a replicator key): a replica holds the primary's data.
A bad request answers 400 naming the parameter or field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from pipeline.errors import InvalidRequest
from pipeline.ts.point import series_key
from pipeline.validation import (
    SeriesQuery,
    parse_json,
    query_answer,
    search_request,
    series_query,
    series_query_body,
)

if TYPE_CHECKING:
    from pipeline.replication.replica import ReplicaState
    from pipeline.replication.server import ApplyAuth

__all__ = ["add_read_routes"]

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
    )


def add_read_routes(app: web.Application, state: ReplicaState, auth: ApplyAuth) -> None:
    """Mount the replica's query and search on ``app``, for callers ``auth`` trusts."""

    def guarded(handler: Callable[[web.Request], Awaitable[Any]]) -> Handler:
        async def run(request: web.Request) -> web.Response:
            refused = auth.refusal(request)
            if refused is not None:
                return refused
            try:
                return _json(await handler(request))
            except InvalidRequest as exc:
                return _json({"success": False, "error": str(exc)}, 400)

        return run

    async def points(q: SeriesQuery) -> dict[str, Any]:
        key = series_key(q.metric, q.entity, q.tags)
        ts, vs = await asyncio.to_thread(state.query_ts, key, q.start_ms, q.end_ms)
        return query_answer(q, ts.tolist(), vs.tolist())

    async def query(request: web.Request) -> dict[str, Any]:
        return await points(series_query(request.query))

    async def query_body(request: web.Request) -> dict[str, Any]:
        return await points(series_query_body(parse_json(await request.read())))

    async def search(request: web.Request) -> dict[str, Any]:
        wanted = search_request(parse_json(await request.read()), state.dimension)
        if wanted.where:
            raise InvalidRequest("field 'filter' is not served by a replica's search")
        hits = await asyncio.to_thread(state.search, wanted.vector, wanted.k, wanted.ef)
        results = [{"pk": h.pk, "distance": h.distance, "metadata": h.metadata} for h in hits]
        return {"success": True, "results": results}

    app.router.add_get("/ts/query", guarded(query))
    app.router.add_post("/ts/query", guarded(query_body))
    app.router.add_post("/vectors/search", guarded(search))
