"""A binary-protocol server (docs/api/BINARY_PROTOCOL_EXTENSIONS.md), whatever it serves.

:class:`BinaryListener` accepts connections for a :class:`SessionHost` (the facade's
door, ``themis wal serve``'s); each runs a :class:`BinarySession`:

1. read the 10-byte header and judge it (:func:`~pipeline.binary.check_header`: size,
   opcode, flags) before reading a payload byte; a refused frame is answered with ERROR
   and its payload discarded through a fixed scratch buffer (FRAME_TOO_LARGE: within the
   host's ``body_timeout_s``, else the connection is closed);
2. HELLO first (else ERROR, close), then AUTH with one of the host's ``auth_methods``,
   unless the host's ``open_principal`` already names the caller; before that only
   HELLO, AUTH and PING (``BEFORE_AUTH``);
3. requests run concurrently, at most :data:`MAX_IN_FLIGHT` per connection, each by
   the host's handler of its opcode with the caller's :class:`Principal`; each reply
   carries its request id and is written under the connection's lock;
4. errors are answered by :func:`code_of` (one table from error classes to codes);
5. on shutdown: no new requests, in-flight ones answered, GOAWAY, close.

:class:`BinaryMetrics` counts what a door did for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from ssl import SSLContext
from typing import Final, Protocol

from pipeline.binary import (
    BEFORE_AUTH,
    HEADER_BYTES,
    PROTOCOL_VERSION,
    RETRIABLE,
    AuthOk,
    AuthRequest,
    Body,
    ErrorCode,
    ErrorReply,
    Flags,
    Frame,
    GoAway,
    HelloOk,
    HelloRequest,
    Opcode,
    Ping,
    RawPayload,
    check_header,
    decode_header,
    decode_payload,
    encode_frame,
)
from pipeline.binary.door_metrics import BinaryMetrics
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
    UnknownDictionary,
    WalGap,
    WorkerUnavailable,
)
from pipeline.limits import MAX_BINARY_MESSAGE_BYTES

__all__ = [
    "CODE_OF",
    "MAX_IN_FLIGHT",
    "BinaryListener",
    "BinaryMetrics",
    "BinarySession",
    "Handler",
    "Principal",
    "SessionHost",
    "code_of",
    "error_frame",
    "reply",
]

_LOG = logging.getLogger(__name__)

MAX_IN_FLIGHT: Final = 1024
"""Unanswered requests one connection may have; more are TOO_MANY_IN_FLIGHT."""
_SCRATCH_BYTES: Final = 64 * 1024  # the discard buffer of a refused payload
_HIGH_WATER_BYTES: Final = 256 * 1024  # replies queued before a sender waits for the peer
_DRAIN_S: Final = 10.0  # how long shutdown waits for in-flight requests (seconds)

CODE_OF: Final[Mapping[type[ThemisError], ErrorCode]] = {
    InvalidRequest: ErrorCode.INVALID_REQUEST,
    InvalidRecord: ErrorCode.INVALID_REQUEST,
    InvalidArgument: ErrorCode.INVALID_REQUEST,
    CorruptBatch: ErrorCode.CORRUPT_BATCH,
    UnknownDictionary: ErrorCode.NEED_DICTIONARY,
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


def error_frame(request_id: int, code: ErrorCode, message: str, retry_after_ms: int = 0) -> bytes:
    """The encoded ERROR reply (the message cut to its bound on a character boundary)."""
    text = message.encode("utf-8")[:MAX_BINARY_MESSAGE_BYTES].decode("utf-8", "ignore")
    body = ErrorReply(int(code), code in RETRIABLE, retry_after_ms, 0, text)
    return encode_frame(Frame(Opcode.ERROR, Flags.REPLY, request_id, body))


def reply(opcode: Opcode, request_id: int, body: Body) -> bytes:
    """The encoded reply ``body`` to request ``request_id`` of ``opcode``."""
    return encode_frame(Frame(opcode, Flags.REPLY, request_id, body))


@dataclass(frozen=True)
class Principal:
    """Who a session speaks for: a role name (AuthOk's) and the id quotas are kept under."""

    role: str
    caller: str


Handler = Callable[[Principal, Frame], Awaitable[Body]]
"""Answers one request of a caller; raises a ``ThemisError`` to answer ERROR."""


class SessionHost(Protocol):
    """What a session needs of its server."""

    @property
    def max_frame_bytes(self) -> int:
        """The largest payload taken (advertised in HelloOk)."""
        ...

    @property
    def body_timeout_s(self) -> float:
        """How long a payload may take to arrive (seconds)."""
        ...

    @property
    def auth_methods(self) -> tuple[str, ...]:
        """Advertised in HelloOk, the methods AUTH takes."""
        ...

    @property
    def raw_opcodes(self) -> frozenset[int]:
        """Opcodes whose payload the handler gets undecoded (:class:`RawPayload`)."""
        ...

    @property
    def operations(self) -> Mapping[Opcode, Handler]:
        """The handler of each served opcode (others are UNKNOWN_OPCODE)."""
        ...

    @property
    def metrics(self) -> BinaryMetrics: ...

    def open_principal(self, writer: asyncio.StreamWriter) -> Principal | None:
        """The caller of a connection from HELLO on, before any AUTH (auth off, a
        verified client certificate), or ``None``: AUTH first."""
        ...

    def authenticate(self, address: str, method: str, credential: bytes) -> Principal:
        """The caller ``credential`` proves; raises a ``ThemisError`` (AUTHENTICATION_FAILED...)."""
        ...


class BinaryListener:
    """Accepts connections for ``host``; :meth:`stop` sends each GOAWAY."""

    def __init__(self, host: SessionHost) -> None:
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[BinarySession] = set()

    async def start(self, address: str, port: int, ssl: SSLContext | None = None) -> int:
        """Listen on ``address``:``port`` (0 picks a free port); the port."""
        self._server = await asyncio.start_server(self._serve, address, port, ssl=ssl)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening; every session answers its in-flight requests, sends GOAWAY, closes."""
        if self._server is None:
            return
        self._server.close()
        await asyncio.gather(*(s.go_away() for s in list(self._sessions)))
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = BinarySession(self.host, reader, writer)
        self._sessions.add(session)
        try:
            await session.run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._sessions.discard(session)
            await session.close()


class BinarySession:
    """One connection: its state (opened, greeted, ready, draining) and its requests."""

    def __init__(
        self, server: SessionHost, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        self.greeted = False
        self.principal: Principal | None = None
        self.draining = False
        self.last_request_id = 0
        self._out: list[bytes] = []  # replies queued in this turn of the event loop
        self._flush_scheduled = False
        self._reading: tuple[float, int] | None = None  # (since, request id) of a payload
        self._watchdog: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, data: bytes) -> None:
        """Queue ``data``: the replies of one turn of the event loop go out in one write,
        and a sender waits for the peer only while over :data:`_HIGH_WATER_BYTES`."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        if self.writer.transport.get_write_buffer_size() > _HIGH_WATER_BYTES:
            async with self._lock:
                await self.writer.drain()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and not self.writer.is_closing():
            self.writer.write(b"".join(self._out))
        self._out.clear()

    async def run(self) -> None:
        timeout_s = self.server.body_timeout_s
        self._watchdog = asyncio.create_task(self._watch_payloads(timeout_s))
        loop = asyncio.get_running_loop()
        while not self.draining:
            raw = await self.reader.readexactly(HEADER_BYTES)
            header = decode_header(raw)
            self.server.metrics.bytes_in.inc(HEADER_BYTES + header.length)
            try:
                check_header(header, max_payload=self.server.max_frame_bytes)
            except ProtocolError as exc:
                await self.send(self._error_bytes(header.request_id, code_of(exc), str(exc)))
                if not await self._discard(header.length, timeout_s):
                    return
                continue
            self._reading = (loop.time(), header.request_id)
            payload = await self.reader.readexactly(header.length)
            self._reading = None
            if not self.greeted and header.opcode != Opcode.HELLO:
                message = "the first frame must be HELLO"
                await self.send(
                    self._error_bytes(header.request_id, ErrorCode.NOT_AUTHENTICATED, message)
                )
                return
            try:
                if header.opcode in self.server.raw_opcodes:
                    opcode, flags = Opcode(header.opcode), Flags(header.flags)
                    frame = Frame(opcode, flags, header.request_id, RawPayload(header, payload))
                else:
                    frame = decode_payload(header, payload)
            except ProtocolError as exc:
                await self.send(self._error_bytes(header.request_id, code_of(exc), str(exc)))
                if not self.greeted:
                    return
                continue
            if not await self._dispatch(frame):
                return

    async def _watch_payloads(self, timeout_s: float) -> None:
        """Answer TIMEOUT and close when a payload takes over ``timeout_s`` to arrive (one
        timer per connection, not one per frame)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, timeout_s / 4))
            reading = self._reading
            if reading is not None and loop.time() - reading[0] > timeout_s:
                message = f"the payload did not arrive within {timeout_s:g} s"
                await self.send(self._error_bytes(reading[1], ErrorCode.TIMEOUT, message))
                self._flush()
                self.writer.close()  # the read in run() ends
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
            await self.send(reply(Opcode.PING, frame.request_id, frame.body))
        else:
            self._start(frame)
        return True

    def _start(self, frame: Frame) -> None:
        """Run ``frame`` as a task of its own, or answer ERROR at once."""
        operation = self.server.operations.get(frame.opcode)
        refusal: tuple[ErrorCode, str] | None = None
        if self.principal is None and frame.opcode not in BEFORE_AUTH:
            refusal = ErrorCode.NOT_AUTHENTICATED, "send AUTH first"
        elif operation is None:
            refusal = ErrorCode.UNKNOWN_OPCODE, f"{frame.opcode.name} is not served here yet"
        elif len(self._tasks) >= MAX_IN_FLIGHT:
            message = f"more than {MAX_IN_FLIGHT} requests in flight on this connection"
            refusal = ErrorCode.TOO_MANY_IN_FLIGHT, message
        if refusal is not None or operation is None:
            code, message = refusal or (ErrorCode.INTERNAL, "")
            coro = self.send(self._error_bytes(frame.request_id, code, message))
        else:
            self.last_request_id = frame.request_id
            coro = self._answer(operation, frame)
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hello(self, frame: Frame) -> bool:
        rid = frame.request_id
        if self.greeted:
            await self.send(self._error_bytes(rid, ErrorCode.INVALID_REQUEST, "a second HELLO"))
            return True
        assert isinstance(frame.body, HelloRequest)
        hello = frame.body
        if not hello.min_version <= PROTOCOL_VERSION <= hello.max_version:
            message = f"this server speaks version {PROTOCOL_VERSION} only"
            await self.send(self._error_bytes(rid, ErrorCode.UNSUPPORTED_VERSION, message))
            return False
        self.greeted = True
        methods = self.server.auth_methods
        self.principal = self.server.open_principal(self.writer)
        ok = HelloOk(PROTOCOL_VERSION, self.server.max_frame_bytes, MAX_IN_FLIGHT, methods)
        await self.send(reply(Opcode.HELLO, rid, ok))
        return True

    async def _auth(self, frame: Frame) -> None:
        assert isinstance(frame.body, AuthRequest)
        body = frame.body
        try:
            if body.method not in self.server.auth_methods:
                offered = ", ".join(self.server.auth_methods) or "none: this server needs no AUTH"
                raise AuthenticationFailed(f"unknown auth method {body.method!r}; use {offered}")
            principal = self.server.authenticate(self.address, body.method, body.credential)
        except ThemisError as exc:
            await self.send(self._error_of(frame.request_id, exc))
            return
        self.principal = principal
        await self.send(reply(Opcode.AUTH, frame.request_id, AuthOk(principal.role)))

    async def _answer(self, handler: Handler, frame: Frame) -> None:
        begun = time.perf_counter()
        try:
            assert self.principal is not None
            body = await handler(self.principal, frame)
            data = reply(frame.opcode, frame.request_id, body)
        except Exception as exc:  # every error is answered, by class
            if code_of(exc) is ErrorCode.INTERNAL:
                _LOG.error("unexpected error on binary %s", frame.opcode.name, exc_info=exc)
            data = self._error_of(frame.request_id, exc)
        with contextlib.suppress(ConnectionError):
            await self.send(data)
        self.server.metrics.answered(frame.opcode, time.perf_counter() - begun)

    def _error_bytes(
        self, request_id: int, code: ErrorCode, message: str, retry_after_ms: int = 0
    ) -> bytes:
        self.server.metrics.error(code)
        return error_frame(request_id, code, message, retry_after_ms)

    def _error_of(self, request_id: int, exc: BaseException) -> bytes:
        code = code_of(exc)
        message = str(exc) if code is not ErrorCode.INTERNAL else "internal error; see the log"
        retry_ms = 0
        if isinstance(exc, RateLimited):
            retry_ms = exc.retry_after_s * 1000
        elif isinstance(exc, ServiceUnavailable):
            retry_ms = math.ceil(1000 * float(exc.headers.get("Retry-After", "0")))
        return self._error_bytes(request_id, code, message, retry_ms)

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
        self._flush()  # what was answered goes out before the connection closes
        if self._watchdog is not None:
            self._watchdog.cancel()
        for task in list(self._tasks):
            task.cancel()
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
