"""A small asyncio client of the binary protocol (docs/api/BINARY_PROTOCOL_EXTENSIONS.md).

Only asyncio streams and the codec. :meth:`BinaryClient.connect` opens the connection
and runs the session's start (HELLO, then AUTH when an API key is given); then
:meth:`BinaryClient.request` sends one request and waits for its reply. Requests
pipeline: the client allocates the request ids (1 and up, never 0), any number of
requests may be in flight at once (at most the server's ``max_in_flight``), and one
reader task matches each reply to its request by id, in whatever order they come.

An ERROR reply raises :class:`~pipeline.errors.RequestRefused` with the ErrorReply's
fields (``code``, ``retriable``, ``retry_after_ms``, ``items_accepted``). GOAWAY fails
the requests the server will not answer (ids after its ``last_request_id``) with
SHUTTING_DOWN; a closed connection fails the rest with UNAVAILABLE (both retriable, on
a new connection).

:meth:`BinaryClient.submit` is the lower step that :meth:`request` is made of, for a
caller that pipelines without a task per request (a load generator): it queues an
already encoded payload behind a header and returns the reply's future at once; the
queued frames go out in one write at the next :meth:`~BinaryClient.drain` (or once
``_WRITE_BYTES`` are queued), so that many requests cost one system call.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from types import TracebackType
from typing import Final

from pipeline.binary.bodies import (
    AuthOk,
    AuthRequest,
    Body,
    ErrorReply,
    Frame,
    GoAway,
    HelloOk,
    HelloRequest,
)
from pipeline.binary.codes import HEADER, HEADER_BYTES, PROTOCOL_VERSION, ErrorCode, Flags, Opcode
from pipeline.binary.frames import decode_header, decode_payload, encode_frame
from pipeline.errors import ProtocolError, RequestRefused

__all__ = ["BinaryClient", "refusal"]

_READ_BYTES: Final = 256 * 1024  # one read of the reply stream; many replies each
_WRITE_BYTES: Final = 64 * 1024  # queued request bytes that are written without a drain
_MAX_REQUEST_ID: Final = 0xFFFFFFFF


def refusal(opcode: Opcode, request_id: int, reply: ErrorReply) -> RequestRefused:
    """The exception of an ERROR ``reply`` to request ``request_id`` of ``opcode``."""
    try:
        name = ErrorCode(reply.code).name
    except ValueError:
        name = f"code {reply.code}"
    return RequestRefused(
        f"{opcode.name} (request {request_id}): {name}: {reply.message}",
        code=reply.code,
        retriable=reply.retriable,
        retry_after_ms=reply.retry_after_ms,
        items_accepted=reply.items_accepted,
    )


def _local_error(code: ErrorCode, message: str) -> ErrorReply:
    """An ERROR as the server would have sent it, for requests it will not answer."""
    return ErrorReply(int(code), True, 0, 0, message)


class BinaryClient:
    """One binary-protocol connection whose requests pipeline; see the module docstring."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_id = 1
        self._pending: dict[int, tuple[Opcode, asyncio.Future[Frame]]] = {}
        self._queued: list[bytes] = []
        self._queued_bytes = 0
        self._closed: ErrorReply | None = None
        self._read_task: asyncio.Task[None] | None = None
        self.hello: HelloOk | None = None
        """The server's answer to HELLO: version, ``max_frame_bytes``, ``max_in_flight``."""
        self.role: str | None = None
        """The API key's role once AUTH succeeded."""

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        client_id: str,
        api_key: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        timeout_s: float = 10.0,
    ) -> BinaryClient:
        """Open a connection and greet: HELLO, then AUTH with ``api_key`` if one is given.

        ``client_id`` names the client in the server's logs (at most 256 bytes). Raises
        :class:`~pipeline.errors.RequestRefused` if the server refuses HELLO or AUTH,
        ``OSError`` if the connection cannot be made and ``TimeoutError`` after
        ``timeout_s`` seconds.
        """
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port, ssl=ssl)
            client = cls(reader, writer)
            client._read_task = asyncio.create_task(client._read_replies())
            try:
                hello = await client.request(
                    Opcode.HELLO, HelloRequest(PROTOCOL_VERSION, PROTOCOL_VERSION, client_id)
                )
                assert isinstance(hello.body, HelloOk)
                client.hello = hello.body
                if api_key is not None:
                    auth = await client.request(
                        Opcode.AUTH, AuthRequest("api_key", api_key.encode("utf-8"))
                    )
                    assert isinstance(auth.body, AuthOk)
                    client.role = auth.body.role
            except BaseException:
                await client.close()
                raise
        return client

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    def _allocate(self, opcode: Opcode) -> tuple[int, asyncio.Future[Frame]]:
        if self._closed is not None:
            raise refusal(opcode, 0, self._closed)
        request_id = self._next_id
        while request_id in self._pending:  # after wrapping around: skip ids in flight
            request_id = 1 if request_id >= _MAX_REQUEST_ID else request_id + 1
        self._next_id = 1 if request_id >= _MAX_REQUEST_ID else request_id + 1
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (opcode, future)
        return request_id, future

    def submit(
        self, opcode: Opcode, payload: bytes, flags: Flags = Flags.NONE
    ) -> asyncio.Future[Frame]:
        """Queue one request of an encoded ``payload`` (no header); the future of its reply.

        The request is written at the next :meth:`drain` at the latest (earlier once
        64 KiB are queued). The future fails with
        :class:`~pipeline.errors.RequestRefused` on an ERROR reply.
        """
        request_id, future = self._allocate(opcode)
        self._queue(HEADER.pack(opcode, flags, len(payload), request_id) + payload)
        return future

    def _queue(self, data: bytes) -> None:
        self._queued.append(data)
        self._queued_bytes += len(data)
        if self._queued_bytes >= _WRITE_BYTES:
            self._write_queued()

    def _write_queued(self) -> None:
        if self._queued:
            self._writer.write(b"".join(self._queued))
            self._queued.clear()
            self._queued_bytes = 0

    async def drain(self) -> None:
        """Write the queued requests; wait until the transport's buffer is below its
        high-water mark."""
        self._write_queued()
        await self._writer.drain()

    async def request(self, opcode: Opcode, body: Body, flags: Flags = Flags.NONE) -> Frame:
        """Send ``body`` as a request of ``opcode``; its reply frame (REPLY set).

        Raises :class:`~pipeline.errors.RequestRefused` on an ERROR reply
        (``InvalidArgument`` before sending if ``body`` does not fit the opcode).
        """
        request_id, future = self._allocate(opcode)
        try:
            data = encode_frame(Frame(opcode, flags, request_id, body))
        except BaseException:
            self._pending.pop(request_id, None)
            raise
        self._queue(data)
        await self.drain()
        return await future

    async def _read_replies(self) -> None:
        """Resolve each pending future with its reply until the connection closes."""
        buffer = bytearray()
        reason = "the server closed the connection"
        try:
            while True:
                chunk = await self._reader.read(_READ_BYTES)
                if not chunk:
                    break
                buffer += chunk
                consumed = self._dispatch_all(buffer)
                del buffer[:consumed]
        except (ConnectionError, OSError) as exc:
            reason = f"the connection failed: {exc}"
        except ProtocolError as exc:
            reason = f"the server sent a frame this client cannot read: {exc}"
        finally:
            self._fail_all(_local_error(ErrorCode.UNAVAILABLE, reason))

    def _dispatch_all(self, buffer: bytearray) -> int:
        """Resolve every whole frame at the start of ``buffer``; the bytes they took."""
        view = memoryview(buffer)
        offset = 0
        try:
            while len(buffer) - offset >= HEADER_BYTES:
                header = decode_header(view[offset : offset + HEADER_BYTES])
                end = offset + HEADER_BYTES + header.length
                if end > len(buffer):
                    break
                self._resolve(decode_payload(header, bytes(view[offset + HEADER_BYTES : end])))
                offset = end
        finally:
            view.release()
        return offset

    def _resolve(self, frame: Frame) -> None:
        if frame.opcode == Opcode.GOAWAY:
            assert isinstance(frame.body, GoAway)
            self._go_away(frame.body)
            return
        entry = self._pending.pop(frame.request_id, None)
        if entry is None:
            return  # a reply to nothing in flight: nothing waits for it
        opcode, future = entry
        if future.done():
            return
        if frame.opcode == Opcode.ERROR:
            assert isinstance(frame.body, ErrorReply)
            future.set_exception(refusal(opcode, frame.request_id, frame.body))
        else:
            future.set_result(frame)

    def _go_away(self, goaway: GoAway) -> None:
        """No more requests; those after ``last_request_id`` will not be answered."""
        self._closed = _local_error(ErrorCode.SHUTTING_DOWN, f"GOAWAY: {goaway.message}")
        later = [rid for rid in self._pending if rid > goaway.last_request_id]
        for rid in later:
            opcode, future = self._pending.pop(rid)
            if not future.done():
                future.set_exception(refusal(opcode, rid, self._closed))

    def _fail_all(self, error: ErrorReply) -> None:
        if self._closed is None:
            self._closed = error
        pending, self._pending = self._pending, {}
        for rid, (opcode, future) in pending.items():
            if not future.done():
                future.set_exception(refusal(opcode, rid, error))

    async def close(self) -> None:
        """Close the connection; requests still in flight fail with UNAVAILABLE."""
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task
        self._fail_all(_local_error(ErrorCode.UNAVAILABLE, "the client closed the connection"))

    async def __aenter__(self) -> BinaryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
