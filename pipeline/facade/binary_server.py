"""The binary front door (docs/api/BINARY_PROTOCOL_EXTENSIONS.md): one TCP server beside
the facade's HTTP app, sharing its keyring, rate limits, validation and producer.

Per connection, in order:

1. read the 10-byte header and judge it (:func:`~pipeline.binary.check_header`: size,
   opcode, flags) before reading a payload byte; a refused frame is answered with ERROR
   and its payload discarded through a fixed scratch buffer (FRAME_TOO_LARGE: within
   ``facade.body_timeout_s``, else the connection is closed);
2. the session: HELLO first (else ERROR, close), then AUTH with a facade API key; before
   AUTH only HELLO, AUTH and PING (``BEFORE_AUTH``);
3. requests run concurrently, at most :data:`MAX_IN_FLIGHT` per connection; each reply
   carries its request id and is written under the connection's lock;
4. writes go through the same functions as ``POST /ts/put/buffered[/batch]``
   (:class:`~pipeline.facade.ts_routes.TimeSeriesRoutes`), stats answer with the REST
   body; errors map to codes in :data:`CODE_OF` (as :data:`~pipeline.facade.middleware.STATUS_OF`
   maps them to statuses);
5. on shutdown: no new requests, in-flight ones answered, GOAWAY, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pipeline.binary import (
    BEFORE_AUTH,
    HEADER_BYTES,
    PROTOCOL_VERSION,
    RETRIABLE,
    AuthOk,
    AuthRequest,
    Body,
    Empty,
    ErrorCode,
    ErrorReply,
    Flags,
    Frame,
    GoAway,
    HelloOk,
    HelloRequest,
    JsonBody,
    Opcode,
    Ping,
    TsBatch,
    TsPoint,
    WriteAck,
    check_header,
    decode_header,
    decode_payload,
    encode_frame,
)
from pipeline.errors import (
    AuthenticationFailed,
    BufferOverflow,
    Conflict,
    CorruptBatch,
    DeliveryFailed,
    ForeignPrimary,
    InvalidArgument,
    InvalidRecord,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    ThemisError,
    WalGap,
    WorkerUnavailable,
)
from pipeline.facade.auth import Role
from pipeline.facade.middleware import RouteSpec
from pipeline.facade.ratelimit import RouteClass
from pipeline.facade.ts_bodies import group_points
from pipeline.facade.ts_routes import TimeSeriesRoutes
from pipeline.facade.validation import point_from_json
from pipeline.limits import MAX_BINARY_MESSAGE_BYTES, MAX_FRAME_BYTES

if TYPE_CHECKING:
    from aiohttp import web

    from pipeline.facade.app import Facade

__all__ = ["CODE_OF", "MAX_IN_FLIGHT", "BinaryServer", "code_of"]

_LOG = logging.getLogger(__name__)

MAX_IN_FLIGHT: Final = 1024
"""Unanswered requests one connection may have; more are TOO_MANY_IN_FLIGHT."""
_SCRATCH_BYTES: Final = 64 * 1024  # the discard buffer of a refused payload
_DRAIN_S: Final = 10.0  # how long shutdown waits for in-flight requests (seconds)

CODE_OF: Final[Mapping[type[ThemisError], ErrorCode]] = {
    InvalidRequest: ErrorCode.INVALID_REQUEST,
    InvalidRecord: ErrorCode.INVALID_REQUEST,
    InvalidArgument: ErrorCode.INVALID_REQUEST,
    CorruptBatch: ErrorCode.CORRUPT_BATCH,
    AuthenticationFailed: ErrorCode.AUTHENTICATION_FAILED,
    PermissionDenied: ErrorCode.PERMISSION_DENIED,
    NotFound: ErrorCode.NOT_FOUND,
    RequestTimeout: ErrorCode.TIMEOUT,
    Conflict: ErrorCode.CONFLICT,
    WalGap: ErrorCode.WAL_GAP,
    ForeignPrimary: ErrorCode.FOREIGN_PRIMARY,
    PayloadTooLarge: ErrorCode.FRAME_TOO_LARGE,
    RateLimited: ErrorCode.RATE_LIMITED,
    BufferOverflow: ErrorCode.BUFFER_FULL,
    ServiceUnavailable: ErrorCode.UNAVAILABLE,
    WorkerUnavailable: ErrorCode.UNAVAILABLE,
    DeliveryFailed: ErrorCode.UNAVAILABLE,
}
"""The ERROR code of each error class a request can end in (subclasses inherit it)."""


def code_of(exc: BaseException) -> ErrorCode:
    """The code of ``exc``: a ProtocolError's own, else :data:`CODE_OF`'s, else INTERNAL."""
    if isinstance(exc, ProtocolError):
        return ErrorCode(exc.code)
    for cls in type(exc).__mro__:
        code = CODE_OF.get(cls)
        if code is not None:
            return code
    return ErrorCode.INTERNAL


def _error_frame(request_id: int, code: ErrorCode, message: str, retry_after_ms: int = 0) -> bytes:
    text = message.encode("utf-8")[:MAX_BINARY_MESSAGE_BYTES].decode("utf-8", "ignore")
    body = ErrorReply(int(code), code in RETRIABLE, retry_after_ms, 0, text)
    return encode_frame(Frame(Opcode.ERROR, Flags.REPLY, request_id, body))


def _reply(opcode: Opcode, request_id: int, body: Body) -> bytes:
    return encode_frame(Frame(opcode, Flags.REPLY, request_id, body))


Handler = Callable[[Frame], Awaitable[Body]]


@dataclass(frozen=True)
class _Operation:
    """An opcode's handler and what it needs: a role and a quota, as its REST route."""

    handler: Handler
    spec: RouteSpec


class BinaryServer:
    """The binary protocol's TCP server of one facade, on ``facade.binary_port``."""

    def __init__(self, facade: Facade, port: int | None = None) -> None:
        self.facade = facade
        self.config = facade.config
        self.port = self.config.binary_port if port is None else port
        self.max_frame_bytes = min(MAX_FRAME_BYTES, self.config.max_body_bytes)
        self.ts = TimeSeriesRoutes(facade)
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self.operations: dict[Opcode, _Operation] = {}
        ts, writer = RouteClass.TS_PUT, Role.WRITER
        for opcode, handler, rate in (
            (Opcode.TS_PUT_BUFFERED, self._put_point, ts),
            (Opcode.TS_PUT_BUFFERED_BATCH, self._put_batch, ts),
            (Opcode.TS_BUFFER_STATS, self._ts_stats, None),
        ):
            spec = RouteSpec("BINARY", opcode.name, _no_http, writer, rate)
            self.operations[opcode] = _Operation(handler, spec)

    async def start(self, app: web.Application | None = None) -> None:
        """Listen on ``facade.host`` and :attr:`port` (0 picks a free port, kept in it)."""
        self._server = await asyncio.start_server(self._serve, self.config.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        _LOG.info("binary protocol listening on %s:%s", self.config.host, self.port)

    async def stop(self, app: web.Application | None = None) -> None:
        """Stop listening; every session answers its in-flight requests, sends GOAWAY, closes."""
        if self._server is None:
            return
        self._server.close()
        await asyncio.gather(*(s.go_away() for s in list(self._sessions)))
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        self._sessions.add(session)
        try:
            await session.run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._sessions.discard(session)
            await session.close()

    # -- operations -----------------------------------------------------------

    async def _put_point(self, frame: Frame) -> Body:
        assert isinstance(frame.body, TsPoint)
        point = point_from_json(_point_json(frame.body))
        acked = not frame.flags & Flags.ACK_QUEUED
        await self.ts.accept_point(point.series_key(), point.timestamp_ms, point.value, acked=acked)
        return WriteAck(1, _u32(self.facade.ts_buffer_size()))

    async def _put_batch(self, frame: Frame) -> Body:
        assert isinstance(frame.body, TsBatch)
        points = [
            point_from_json(_point_json(p), f"point {i}: ") for i, p in enumerate(frame.body.points)
        ]
        if not points:
            raise InvalidRequest("the batch holds no points")
        frames = self.ts.series_frames(group_points(points))
        acked = not frame.flags & Flags.ACK_QUEUED
        await self.ts.accept_frames(frames, len(points), acked=acked)
        return WriteAck(len(points), _u32(self.facade.ts_buffer_size()))

    async def _ts_stats(self, frame: Frame) -> Body:
        _require_empty(frame)
        return JsonBody(await self.ts.stats())


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


class _Session:
    """One connection: its state (opened, greeted, ready, draining) and its requests."""

    def __init__(
        self, server: BinaryServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        self.greeted = False
        self.role: Role | None = None
        self.caller = f"peer:{self.address}"
        self.draining = False
        self.last_request_id = 0
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, data: bytes) -> None:
        async with self._lock:
            self.writer.write(data)
            await self.writer.drain()

    async def run(self) -> None:
        config = self.server.config
        while not self.draining:
            raw = await self.reader.readexactly(HEADER_BYTES)
            header = decode_header(raw)
            try:
                check_header(header, max_payload=self.server.max_frame_bytes)
            except ProtocolError as exc:
                await self.send(_error_frame(header.request_id, code_of(exc), str(exc)))
                if not await self._discard(header.length, config.body_timeout_s):
                    return
                continue
            try:
                async with asyncio.timeout(config.body_timeout_s):
                    payload = await self.reader.readexactly(header.length)
            except TimeoutError:
                message = "the payload did not arrive within facade.body_timeout_s"
                await self.send(_error_frame(header.request_id, ErrorCode.TIMEOUT, message))
                return
            if not self.greeted and header.opcode != Opcode.HELLO:
                message = "the first frame must be HELLO"
                await self.send(
                    _error_frame(header.request_id, ErrorCode.NOT_AUTHENTICATED, message)
                )
                return
            try:
                frame = decode_payload(header, payload)
            except ProtocolError as exc:
                await self.send(_error_frame(header.request_id, code_of(exc), str(exc)))
                if not self.greeted:
                    return
                continue
            if not await self._dispatch(frame):
                return

    async def _discard(self, length: int, timeout_s: float) -> bool:
        """Read ``length`` payload bytes into nothing, in bounded chunks; False if too slow."""
        try:
            async with asyncio.timeout(timeout_s):
                while length:
                    chunk = await self.reader.read(min(length, _SCRATCH_BYTES))
                    if not chunk:
                        return False
                    length -= len(chunk)
        except TimeoutError:
            return False
        return True

    async def _dispatch(self, frame: Frame) -> bool:
        """Answer or start ``frame``; False when the connection must close."""
        if frame.opcode == Opcode.HELLO:
            return await self._hello(frame)
        if frame.opcode == Opcode.AUTH:
            await self._auth(frame)
        elif frame.opcode == Opcode.PING:
            assert isinstance(frame.body, Ping)
            await self.send(_reply(Opcode.PING, frame.request_id, frame.body))
        else:
            self._start(frame)
        return True

    def _start(self, frame: Frame) -> None:
        """Run ``frame`` as a task of its own, or answer ERROR at once."""
        operation = self.server.operations.get(frame.opcode)
        refusal: tuple[ErrorCode, str] | None = None
        if self.role is None and frame.opcode not in BEFORE_AUTH:
            refusal = ErrorCode.NOT_AUTHENTICATED, "send AUTH first"
        elif operation is None:
            refusal = ErrorCode.UNKNOWN_OPCODE, f"{frame.opcode.name} is not served here yet"
        elif len(self._tasks) >= MAX_IN_FLIGHT:
            message = f"more than {MAX_IN_FLIGHT} requests in flight on this connection"
            refusal = ErrorCode.TOO_MANY_IN_FLIGHT, message
        if refusal is not None or operation is None:
            code, message = refusal or (ErrorCode.INTERNAL, "")
            coro = self.send(_error_frame(frame.request_id, code, message))
        else:
            self.last_request_id = frame.request_id
            coro = self._answer(operation, frame)
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hello(self, frame: Frame) -> bool:
        rid = frame.request_id
        if self.greeted:
            await self.send(_error_frame(rid, ErrorCode.INVALID_REQUEST, "a second HELLO"))
            return True
        assert isinstance(frame.body, HelloRequest)
        hello = frame.body
        if not hello.min_version <= PROTOCOL_VERSION <= hello.max_version:
            message = f"this server speaks version {PROTOCOL_VERSION} only"
            await self.send(_error_frame(rid, ErrorCode.UNSUPPORTED_VERSION, message))
            return False
        self.greeted = True
        config = self.server.config
        if not config.auth_enabled:
            self.role = Role.ADMIN
        methods = ("api_key",) if config.auth_enabled else ()
        ok = HelloOk(PROTOCOL_VERSION, self.server.max_frame_bytes, MAX_IN_FLIGHT, methods)
        await self.send(_reply(Opcode.HELLO, rid, ok))
        return True

    async def _auth(self, frame: Frame) -> None:
        assert isinstance(frame.body, AuthRequest)
        try:
            if frame.body.method != "api_key":
                raise AuthenticationFailed(
                    f"unknown auth method {frame.body.method!r}; use api_key"
                )
            key = frame.body.credential.decode("utf-8", "surrogateescape")
            self.role, self.caller = self.server.facade.guard.check_key(
                self.address, key or None, missing="AUTH carries an empty credential"
            )
        except ThemisError as exc:
            await self.send(self._error_of(frame.request_id, exc))
            return
        await self.send(_reply(Opcode.AUTH, frame.request_id, AuthOk(self.role.value)))

    async def _answer(self, operation: _Operation, frame: Frame) -> None:
        try:
            spec = operation.spec
            assert self.role is not None
            assert spec.role is not None
            if not self.role.allows(spec.role):
                raise PermissionDenied(
                    f"{frame.opcode.name} needs role {spec.role.value}; "
                    f"the key has role {self.role.value}"
                )
            self.server.facade.guard.rate_limit(self.caller, spec)
            body = await operation.handler(frame)
            data = _reply(frame.opcode, frame.request_id, body)
        except Exception as exc:  # every error is answered, by class
            if code_of(exc) is ErrorCode.INTERNAL:
                _LOG.error("unexpected error on binary %s", frame.opcode.name, exc_info=exc)
            data = self._error_of(frame.request_id, exc)
        with contextlib.suppress(ConnectionError):
            await self.send(data)

    @staticmethod
    def _error_of(request_id: int, exc: BaseException) -> bytes:
        code = code_of(exc)
        message = str(exc) if code is not ErrorCode.INTERNAL else "internal error; see the log"
        retry_ms = 0
        if isinstance(exc, RateLimited):
            retry_ms = exc.retry_after_s * 1000
        elif isinstance(exc, ServiceUnavailable):
            retry_ms = math.ceil(1000 * float(exc.headers.get("Retry-After", "0")))
        return _error_frame(request_id, code, message, retry_ms)

    async def go_away(self) -> None:
        """Take no more requests, answer those in flight (bounded), send GOAWAY, close."""
        self.draining = True
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=_DRAIN_S)
        goaway = GoAway(
            self.last_request_id, int(ErrorCode.SHUTTING_DOWN), "the server is stopping"
        )
        with contextlib.suppress(ConnectionError):
            await self.send(encode_frame(Frame(Opcode.GOAWAY, Flags.REPLY, 0, goaway)))
        await self.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
