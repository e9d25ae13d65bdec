"""The vector endpoints: buffered add/update/remove, direct add, buffer stats and flush, search.

``POST /vectors/add/buffered``, ``POST /vectors/update/buffered``,
``DELETE /vectors/remove/buffered`` (writer, ``vectors_add`` quota)
    One operation to the operations topic, keyed by its pk; a worker buffers it. A
    remove of a pk no worker holds answers 404.
``POST /vectors/add`` (writer, ``vectors_add`` quota)
    An ADD acknowledged on the compacted operations topic (the state shards are rebuilt
    from); the workers are then asked to flush so it becomes searchable.
``GET /vectors/buffer/stats`` (writer), ``POST /vectors/buffer/flush`` (admin, ``flush``)
    The workers' buffers, aggregated (:func:`~pipeline.worker.client.aggregate_vector_stats`).
``POST /vectors/search`` (writer)
    The ``k`` nearest live vectors over every worker, closest first.

The bodies are JSON: a request that declares another ``Content-Type`` is answered 415.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from pipeline.errors import NotFound
from pipeline.facade.auth import Role
from pipeline.facade.middleware import (
    RouteSpec,
    json_bytes_response,
    json_response,
    with_workers,
)
from pipeline.facade.ratelimit import RouteClass
from pipeline.facade.vector_bodies import vector_op_from_body
from pipeline.validation import parse_json, search_request
from pipeline.vectors.ops import OpType, VectorOp, encode_op_json

if TYPE_CHECKING:
    from pipeline.facade.app import Facade

__all__ = ["VectorRoutes"]

_BUFFERED: Final = b'{"success":true,"buffered":true,"buffer_size":'
_JSON: Final = ("application/json",)


class VectorRoutes:
    """The handlers of the ``/vectors/...`` endpoints of one facade."""

    def __init__(self, facade: Facade) -> None:
        self.facade = facade
        self.config = facade.settings.vector_auto_buffer

    def routes(self) -> list[RouteSpec]:
        vec, flush, writer = RouteClass.VECTORS_ADD, RouteClass.FLUSH, Role.WRITER
        return [
            RouteSpec("POST", "/vectors/add/buffered", self.add_buffered, writer, vec, _JSON),
            RouteSpec("POST", "/vectors/update/buffered", self.update_buffered, writer, vec, _JSON),
            RouteSpec(
                "DELETE", "/vectors/remove/buffered", self.remove_buffered, writer, vec, _JSON
            ),
            RouteSpec("POST", "/vectors/add", self.add_direct, writer, vec, _JSON),
            RouteSpec("GET", "/vectors/buffer/stats", self.buffer_stats, writer),
            RouteSpec("POST", "/vectors/buffer/flush", self.buffer_flush, Role.ADMIN, flush),
            RouteSpec("POST", "/vectors/search", self.search, writer, body_types=_JSON),
        ]

    async def _op(self, request: web.Request, op: OpType) -> VectorOp:
        body = await request.read()
        return vector_op_from_body(body, op, self.config.dimension, self.config.max_metadata_bytes)

    def _produce(self, op: VectorOp) -> asyncio.Future[Any]:
        facade = self.facade
        return facade.produce_keyed(facade.ops_topic, encode_op_json(op), op.pk.encode())

    def require_buffer(self) -> None:
        """503 while ``vector_auto_buffer`` is off."""
        self.facade.require_feature(self.config.enabled, "vector_auto_buffer", "/vectors/add")

    async def _buffered(self, request: web.Request, op_type: OpType) -> web.Response:
        self.require_buffer()
        op = await self._op(request, op_type)
        size = await self.accept([op], acked=self.facade.acked_mode(request))
        return json_bytes_response(_BUFFERED + b"%d}" % size)

    async def accept(self, ops: Sequence[VectorOp], *, acked: bool) -> int:
        """Produce checked ``ops`` for the workers to buffer; the buffer size after.

        Both doors' one path: 503 while the buffer is off, 429 while full, 404 for a
        remove of a pk no worker holds (nothing of ``ops`` is produced then); ``acked``
        waits for the broker's acknowledgement (under the write deadline).
        """
        facade = self.facade
        self.require_buffer()
        cap = self.config.max_total_vectors
        facade.check_room(facade.worker_vec_peak, cap, facade.vector_buffer_size)
        for op in ops:
            if op.op is OpType.REMOVE and not await facade.workers.vector_present(op.pk):
                raise NotFound(
                    f"field 'pk': {op.pk!r} not found; nothing to remove", extra={"pk": op.pk}
                )
        delivery = facade.track([self._produce(op) for op in ops], len(ops))
        if acked:
            await facade.durable(delivery)
        return facade.vector_buffer_size()

    async def add_buffered(self, request: web.Request) -> web.Response:
        """An ADD (insert or replace) for a worker to buffer."""
        return await self._buffered(request, OpType.ADD)

    async def update_buffered(self, request: web.Request) -> web.Response:
        """An UPDATE for a worker to buffer."""
        return await self._buffered(request, OpType.UPDATE)

    async def remove_buffered(self, request: web.Request) -> web.Response:
        """A REMOVE of a pk some worker holds (404 otherwise)."""
        return await self._buffered(request, OpType.REMOVE)

    async def add_direct(self, request: web.Request) -> web.Response:
        """An ADD acknowledged on the compacted ops topic, then a flush of every worker."""
        op = await self._op(request, OpType.ADD)
        await self.facade.durable(self.facade.track([self._produce(op)], 0))
        _, answers = await self.facade.workers.flush_vectors(require=False)
        return json_response(
            {"success": True, "durable": True, "flushed_workers": len(answers.pages)}
        )

    async def buffer_stats(self, request: web.Request) -> web.Response:
        """The workers' vector buffer stats, aggregated."""
        return json_response(await self.stats())

    async def stats(self) -> dict[str, Any]:
        """The body of ``GET /vectors/buffer/stats`` (and of VECTOR_BUFFER_STATS)."""
        stats, answers = await self.facade.workers.vector_stats()
        unacked = {"facade_unacked_points": self.facade.unacked_points}
        return with_workers(stats, answers) | unacked

    async def buffer_flush(self, request: web.Request) -> web.Response:
        """Deliver what this facade accepted, then flush every worker's vector buffers."""
        return json_response(await self.flush())

    async def flush(self) -> dict[str, Any]:
        """The body of ``POST /vectors/buffer/flush`` (and of VECTOR_BUFFER_FLUSH)."""
        await self.facade.drain_pending()
        flushed, answers = await self.facade.workers.flush_vectors()
        return with_workers({"success": True, "vectors_flushed": flushed}, answers)

    async def search(self, request: web.Request) -> web.Response:
        """``{"vector", "k"?, "ef"?, "filter"?}`` -> the ``k`` closest hits over all workers."""
        query = search_request(parse_json(await request.read()), self.config.dimension)
        hits, unreachable = await self.facade.workers.search(
            query.vector, query.k, query.ef, query.where
        )
        results = [{"pk": h.pk, "distance": h.distance, "metadata": h.metadata} for h in hits]
        return json_response(
            {"success": True, "results": results, "workers_unreachable": unreachable}
        )
