"""The binary front door (docs/api/BINARY_PROTOCOL_EXTENSIONS.md): one TCP server beside
the facade's HTTP app, sharing its keyring, rate limits, validation and producer.

The session (header judged before the payload, HELLO, AUTH, pipelining, GOAWAY) is
:mod:`pipeline.binary.session`'s; this module is its host for the facade:

1. AUTH takes a facade API key (``api_key``), checked by the facade's
   :meth:`~pipeline.facade.middleware.RequestGuard.check_key` (its keyring, its back-off
   after failed checks); with auth off every connection is ``admin``;
2. every opcode runs the same function as its REST route
   (:class:`~pipeline.facade.ts_routes.TimeSeriesRoutes`,
   :class:`~pipeline.facade.vector_routes.VectorRoutes`, the replication routes when the
   facade serves them), with the route's role and quota; stats and flush answer with
   the REST body; errors map to codes in ``CODE_OF`` (as ``STATUS_OF`` maps them to
   statuses).

WAL_APPLY_COMPRESSED needs a key with role ``replicator``, as ``POST /api/v1/wal/apply``.
With the facade's TLS (``--tls-cert``) the door speaks TLS too, and requires client
certificates when the HTTP side does (``--tls-client-ca``); AUTH is still needed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from pipeline.binary import (
    Body,
    Empty,
    ErrorCode,
    Frame,
    JsonBody,
    Opcode,
    RawPayload,
    TsBatch,
    TsPoint,
    VectorBatch,
    VectorRemove,
    VectorWrite,
    WalApply,
    WriteAck,
    decode_payload,
)
from pipeline.binary.codes import Flags
from pipeline.binary.columns import ts_batch_columns
from pipeline.binary.session import BinaryListener, BinaryMetrics, Handler, Principal
from pipeline.errors import InvalidRequest, PermissionDenied, ProtocolError
from pipeline.facade.auth import Role
from pipeline.facade.middleware import RouteSpec
from pipeline.facade.ratelimit import RouteClass
from pipeline.facade.ts_bodies import group_columns, group_points
from pipeline.facade.ts_routes import TimeSeriesRoutes
from pipeline.facade.vector_bodies import vector_op_from_parts
from pipeline.facade.vector_routes import VectorRoutes
from pipeline.limits import MAX_FRAME_BYTES
from pipeline.replication.binary_door import apply_wal_frame
from pipeline.ts.point import SeriesArrays
from pipeline.validation import point_from_json
from pipeline.vectors.ops import OpType, VectorOp

if TYPE_CHECKING:
    from aiohttp import web

    from pipeline.facade.app import Facade
    from pipeline.facade.replication_routes import ReplicationControl
    from pipeline.replication import ReplicaState

__all__ = ["BinaryServer"]

_LOG = logging.getLogger(__name__)
_KNOWN_SERIES: Final = 65_536  # checked series keys kept (the cache starts over beyond)


class BinaryServer:
    """The binary protocol's TCP server of one facade, on ``facade.binary_port``."""

    def __init__(
        self, facade: Facade, port: int | None = None, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.facade = facade
        self.ssl_context = ssl_context
        self.config = facade.config
        self.guard = facade.guard
        self.metrics = BinaryMetrics(facade.metrics.registry)
        self.port = self.config.binary_port if port is None else port
        self.max_frame_bytes = min(MAX_FRAME_BYTES, self.config.max_body_bytes)
        self.body_timeout_s = self.config.body_timeout_s
        self.auth_methods: tuple[str, ...] = ("api_key",) if self.config.auth_enabled else ()
        self.raw_opcodes = frozenset({int(Opcode.TS_PUT_BUFFERED_BATCH)})  # read as columns
        self.ts = TimeSeriesRoutes(facade)
        self.vectors = VectorRoutes(facade)
        self.vector_config = facade.settings.vector_auto_buffer
        self._listener = BinaryListener(self)
        self.operations: dict[Opcode, Handler] = {}
        ts, vec, flush = RouteClass.TS_PUT, RouteClass.VECTORS_ADD, RouteClass.FLUSH
        writer, admin = Role.WRITER, Role.ADMIN
        self._add(Opcode.TS_PUT_BUFFERED, self._put_point, writer, ts)
        self._add(Opcode.TS_PUT_BUFFERED_BATCH, self._put_batch, writer, ts)
        self._add(Opcode.TS_BUFFER_STATS, self._ts_stats, writer)
        self._add(Opcode.TS_BUFFER_FLUSH, self._ts_flush, admin, flush)
        self._add(Opcode.VECTOR_ADD_BUFFERED, self._vector_write, writer, vec)
        self._add(Opcode.VECTOR_UPDATE_BUFFERED, self._vector_write, writer, vec)
        self._add(Opcode.VECTOR_REMOVE_BUFFERED, self._vector_remove, writer, vec)
        self._add(Opcode.VECTOR_ADD_BUFFERED_BATCH, self._vector_batch, writer, vec)
        self._add(Opcode.VECTOR_UPDATE_BUFFERED_BATCH, self._vector_batch, writer, vec)
        self._add(Opcode.VECTOR_BUFFER_STATS, self._vector_stats, writer)
        self._add(Opcode.VECTOR_BUFFER_FLUSH, self._vector_flush, admin, flush)
        self._control: ReplicationControl | None = None
        self._known_series: dict[tuple[str, ...], str] = {}
        self._replica: ReplicaState | None = None

    def _add(
        self,
        opcode: Opcode,
        handler: Callable[[Frame], Awaitable[Body]],
        role: Role,
        rate: RouteClass | None = None,
    ) -> None:
        """Serve ``opcode`` by ``handler`` for callers of ``role``, under quota ``rate``."""
        spec = RouteSpec("BINARY", opcode.name, _no_http, role, rate)

        async def checked(principal: Principal, frame: Frame) -> Body:
            if not Role(principal.role).allows(role):
                raise PermissionDenied(
                    f"{opcode.name} needs role {role.value}; the key has role {principal.role}"
                )
            self.guard.rate_limit(principal.caller, spec)
            return await handler(frame)

        self.operations[opcode] = checked

    def open_principal(self, writer: asyncio.StreamWriter) -> Principal | None:
        """With auth off every connection may do everything, as on HTTP; else AUTH first."""
        return None if self.auth_methods else Principal(Role.ADMIN.value, "open")

    def authenticate(self, address: str, method: str, credential: bytes) -> Principal:
        """The role and caller id of an API key (the facade's keyring and back-off)."""
        key = credential.decode("utf-8", "surrogateescape")
        role, caller = self.guard.check_key(
            address, key or None, missing="AUTH carries an empty credential"
        )
        return Principal(role.value, caller)

    def serve_replication(self, control: ReplicationControl, replica: ReplicaState) -> None:
        """Serve the replication opcodes too, on the state of the facade's replication routes."""
        self._control, self._replica = control, replica
        self._add(Opcode.WAL_APPLY_COMPRESSED, self._wal_apply, Role.REPLICATOR)
        self._add(Opcode.REPLICATION_STATS, self._replication_stats, Role.WRITER)
        self._add(Opcode.REPLICATION_CONFIG, self._replication_config, Role.ADMIN)

    async def start(self, app: web.Application | None = None) -> None:
        """Listen on ``facade.host`` and :attr:`port` (0 picks a free port, kept in it)."""
        self.port = await self._listener.start(self.config.host, self.port, self.ssl_context)
        _LOG.info("binary protocol listening on %s:%s", self.config.host, self.port)

    async def stop(self, app: web.Application | None = None) -> None:
        """Stop listening; every session answers its in-flight requests, sends GOAWAY, closes."""
        await self._listener.stop()

    # -- time series ----------------------------------------------------------

    async def _put_point(self, frame: Frame) -> Body:
        assert isinstance(frame.body, TsPoint)
        sent = frame.body
        parts = (sent.metric, sent.entity, *(text for tag in sent.tags for text in tag))
        key = self._known_series.get(parts)
        if key is None or not math.isfinite(sent.value):  # the checks name what is wrong
            key = point_from_json(_point_json(sent)).series_key()
            self._remember(parts, key)
        acked = not frame.flags & Flags.ACK_QUEUED
        await self.ts.accept_point(key, sent.timestamp_ms, sent.value, acked=acked)
        return WriteAck(1, _u32(self.facade.ts_buffer_size()))

    def _remember(self, parts: tuple[str, ...], key: str) -> None:
        if len(self._known_series) >= _KNOWN_SERIES:
            self._known_series.clear()
        self._known_series[parts] = key

    async def _put_batch(self, frame: Frame) -> Body:
        assert isinstance(frame.body, RawPayload)
        if len(self._known_series) >= _KNOWN_SERIES:
            self._known_series.clear()
        series, count = _batch_series(frame.body, self._known_series)
        frames = self.ts.series_frames(series)
        acked = not frame.flags & Flags.ACK_QUEUED
        await self.ts.accept_frames(frames, count, acked=acked)
        return WriteAck(count, _u32(self.facade.ts_buffer_size()))

    async def _ts_stats(self, frame: Frame) -> Body:
        _require_empty(frame)
        return JsonBody(await self.ts.stats())

    async def _ts_flush(self, frame: Frame) -> Body:
        _require_empty(frame)
        return JsonBody(await self.ts.flush())

    # -- vectors --------------------------------------------------------------

    def _op(self, op: OpType, write: VectorWrite | VectorRemove, where: str = "") -> VectorOp:
        config = self.vector_config
        vector, metadata = (
            (write.vector, write.metadata) if isinstance(write, VectorWrite) else (None, None)
        )
        try:
            return vector_op_from_parts(
                op,
                write.pk,
                vector=vector,
                metadata=metadata,
                dimension=config.dimension,
                max_metadata_bytes=config.max_metadata_bytes,
            )
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}{exc}") from None

    async def _accept(self, frame: Frame, ops: list[VectorOp]) -> Body:
        acked = not frame.flags & Flags.ACK_QUEUED
        size = await self.vectors.accept(ops, acked=acked)
        return WriteAck(len(ops), _u32(size))

    async def _vector_write(self, frame: Frame) -> Body:
        assert isinstance(frame.body, VectorWrite)
        self.vectors.require_buffer()
        return await self._accept(frame, [self._op(_UPSERT_OF[frame.opcode], frame.body)])

    async def _vector_remove(self, frame: Frame) -> Body:
        assert isinstance(frame.body, VectorRemove)
        self.vectors.require_buffer()
        return await self._accept(frame, [self._op(OpType.REMOVE, frame.body)])

    async def _vector_batch(self, frame: Frame) -> Body:
        assert isinstance(frame.body, VectorBatch)
        self.vectors.require_buffer()
        batch, op = frame.body, _UPSERT_OF[frame.opcode]
        if not batch.pks:
            raise InvalidRequest("the batch holds no vectors")
        ops = [
            self._op(op, VectorWrite(pk, batch.vectors[i], meta), f"vector {i}: ")
            for i, (pk, meta) in enumerate(zip(batch.pks, batch.metadata_per_pk(), strict=True))
        ]
        return await self._accept(frame, ops)

    async def _vector_stats(self, frame: Frame) -> Body:
        _require_empty(frame)
        return JsonBody(await self.vectors.stats())

    async def _vector_flush(self, frame: Frame) -> Body:
        _require_empty(frame)
        return JsonBody(await self.vectors.flush())

    # -- replication ----------------------------------------------------------

    async def _wal_apply(self, frame: Frame) -> Body:
        assert isinstance(frame.body, WalApply)
        assert self._replica is not None
        return await apply_wal_frame(self._replica, frame.body)

    async def _replication_stats(self, frame: Frame) -> Body:
        _require_empty(frame)
        assert self._control is not None
        return JsonBody(await asyncio.to_thread(self._control.stats))

    async def _replication_config(self, frame: Frame) -> Body:
        assert isinstance(frame.body, JsonBody)
        assert self._control is not None
        return JsonBody(self._control.apply_config(frame.body.document))


_UPSERT_OF = {
    Opcode.VECTOR_ADD_BUFFERED: OpType.ADD,
    Opcode.VECTOR_UPDATE_BUFFERED: OpType.UPDATE,
    Opcode.VECTOR_ADD_BUFFERED_BATCH: OpType.ADD,
    Opcode.VECTOR_UPDATE_BUFFERED_BATCH: OpType.UPDATE,
}


def _batch_series(
    raw: RawPayload, known: dict[tuple[str, ...], str]
) -> tuple[list[SeriesArrays], int]:
    """A TS batch grouped by series, and its point count: read as columns when it can be,
    else decoded and checked point by point (whose errors name the point)."""
    columns = ts_batch_columns(raw.data)
    if columns is not None:
        series = group_columns(columns, known)
        if series is not None:
            return series, len(columns.values)
    batch = decode_payload(raw.header, raw.data).body
    assert isinstance(batch, TsBatch)
    points = [point_from_json(_point_json(p), f"point {i}: ") for i, p in enumerate(batch.points)]
    if not points:
        raise InvalidRequest("the batch holds no points")
    return group_points(points), len(points)


def _no_http(request: web.Request) -> Awaitable[web.StreamResponse]:
    raise AssertionError("a binary operation has no HTTP handler")


def _point_json(point: TsPoint) -> dict[str, object]:
    """The point as REST's JSON body, so that both doors run one validation."""
    return {
        "metric": point.metric,
        "entity": point.entity,
        "timestamp_ms": point.timestamp_ms,
        "value": point.value,
        "tags": dict(point.tags),  # the decoders refuse a tag name given twice
    }


def _require_empty(frame: Frame) -> None:
    if not isinstance(frame.body, Empty):
        raise ProtocolError(f"{frame.opcode.name} takes no payload", code=ErrorCode.MALFORMED_FRAME)


def _u32(value: int) -> int:
    return max(0, min(value, 0xFFFFFFFF))
