"""The two transports behind every client, both asyncio: the REST API (httpx) and the binary
protocol (one pipelined connection). Same calls, same answers, same typed errors."""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
from collections.abc import Sequence
from typing import Any, Final

import httpx

from themisdb import protocol as wire
from themisdb.config import ClientConfig
from themisdb.errors import (
    AuthenticationError,
    BufferOverflowError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerUnavailableError,
    ThemisError,
    ValidationError,
)

__all__ = [
    "BinaryTransport",
    "HttpTransport",
    "Point",
    "Series",
    "Transport",
    "VectorItem",
    "open_transport",
]

Point = tuple[str, str, int, float, "dict[str, str] | None"]
"""``(metric, entity, timestamp_ms, value, tags)``."""
Series = tuple[str, str, tuple[tuple[str, str], ...]]
"""``(metric, entity, tags as (name, value) pairs)``."""
VectorItem = tuple[str, bytes, "dict[str, Any] | None"]
"""``(pk, float32 little-endian bytes, metadata)``."""

_RETRIABLE_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
_JSON_OPS: Final = {
    "ts_stats": ("GET", "/ts/buffer/stats", wire.Opcode.TS_BUFFER_STATS),
    "ts_flush": ("POST", "/ts/buffer/flush", wire.Opcode.TS_BUFFER_FLUSH),
    "vector_stats": ("GET", "/vectors/buffer/stats", wire.Opcode.VECTOR_BUFFER_STATS),
    "vector_flush": ("POST", "/vectors/buffer/flush", wire.Opcode.VECTOR_BUFFER_FLUSH),
    "replication_stats": ("GET", "/api/v1/replication/stats", wire.Opcode.REPLICATION_STATS),
    "replication_config": ("POST", "/api/v1/replication/config", wire.Opcode.REPLICATION_CONFIG),
}


_FIELDS: Final = frozenset({"metric", "entity", "timestamp_ms", "value", "tags", "pk", "vector",
                             "metadata", "k", "ef", "filter"})  # fmt: skip


def _field_of(message: str) -> str | None:
    """The field a server's message names (``field 'vector' must ...``, ``vector has ...``)."""
    for quote in ("'", '"'):
        start = message.find(quote)
        end = message.find(quote, start + 1) if start >= 0 else -1
        if start >= 0 and end > start:
            return message[start + 1 : end]
    words = message.replace(":", " ").split()
    return next((word for word in words[:3] if word in _FIELDS), None)


def _retry_after(header: str | None) -> float | None:
    try:
        return float(header) if header else None
    except ValueError:
        return None


def http_error(  # noqa: PLR0911 - one answer per status class
    status: int, body: dict[str, Any], retry_after: str | None
) -> ThemisError:
    """The typed error of a REST answer with ``status``."""
    message = str(body.get("error") or f"HTTP {status}")
    after = _retry_after(retry_after)
    if status == 429 and "buffer_size" in body:
        return BufferOverflowError(
            message, buffer_size=int(body["buffer_size"]), retriable=True, status=status
        )
    if status == 429:
        return RateLimitedError(message, retry_after=after or 1.0, status=status)
    if status == 401:
        return AuthenticationError(message, status=status)
    if status == 403:
        return PermissionDeniedError(message, status=status)
    if status == 404:
        return NotFoundError(message, status=status)
    if status in (400, 413, 415, 422):
        return ValidationError(message, field=_field_of(message), status=status)
    if status in _RETRIABLE_STATUS:
        return ServerUnavailableError(message, retry_after=after, status=status)
    return ThemisError(message, status=status)


def frame_error(reply: wire.ErrorReply) -> ThemisError:  # noqa: PLR0911 - one per code class
    """The typed error of an ERROR frame."""
    name, message = reply.name, reply.message or reply.name
    after = reply.retry_after_ms / 1000 if reply.retry_after_ms else None
    if name == "BUFFER_FULL":
        return BufferOverflowError(message, buffer_size=0, retriable=True, code=name)
    if name == "RATE_LIMITED":
        return RateLimitedError(message, retry_after=after or 1.0, code=name)
    if name in ("AUTHENTICATION_FAILED", "NOT_AUTHENTICATED"):
        return AuthenticationError(message, code=name)
    if name == "PERMISSION_DENIED":
        return PermissionDeniedError(message, code=name)
    if name == "NOT_FOUND":
        return NotFoundError(message, code=name)
    if name in ("INVALID_REQUEST", "FRAME_TOO_LARGE", "MALFORMED_FRAME"):
        return ValidationError(message, field=_field_of(message), code=name)
    if reply.retriable:
        return ServerUnavailableError(message, retry_after=after, code=name)
    return ThemisError(message, code=name)


def _ssl_context(config: ClientConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.tls_ca)
    if config.tls_cert and config.tls_key:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    if not config.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class HttpTransport:
    """The REST API over one pooled ``httpx.AsyncClient``."""

    def __init__(self, config: ClientConfig, addr: str | None = None, tls: bool | None = None):
        host, port = config.host_port if addr is None else ClientConfig(addr=addr).host_port
        secure = config.tls if tls is None else tls
        self.base = f"{'https' if secure else 'http'}://{host}:{port}"
        self.max_batch_bytes = config.max_batch_bytes
        headers = {"X-API-Key": config.api_key} if config.api_key else {}
        timeout = config.request_timeout_ms / 1000
        self._http = httpx.AsyncClient(
            base_url=self.base,
            headers=headers,
            timeout=timeout,
            verify=_ssl_context(config) if secure else True,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )
        self._vector_slots = asyncio.Semaphore(16)

    async def start(self) -> None:
        """Nothing to open ahead: connections are made as requests need them."""

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        params: Any = None,
    ) -> dict[str, Any]:
        """One REST call; its JSON answer, or the typed error of its status."""
        content = raw if raw is not None else (None if body is None else wire.encode_json(body))
        headers = {"Content-Type": content_type} if content is not None else {}
        try:
            resp = await self._http.request(
                method, path, content=content, headers=headers, params=params
            )
        except httpx.TimeoutException as exc:
            raise ServerUnavailableError(f"{method} {path}: timed out ({exc})") from exc
        except httpx.TransportError as exc:
            raise ServerUnavailableError(f"{method} {path}: {exc!r}") from exc
        try:
            answer = resp.json() if resp.content else {}
        except ValueError:
            answer = {"error": resp.text[:500]}
        if not isinstance(answer, dict):
            answer = {"value": answer}
        if resp.status_code >= 400:
            raise http_error(resp.status_code, answer, resp.headers.get("Retry-After"))
        return answer

    async def ts_columns(
        self, series: Sequence[Series], sids: Sequence[int], ts: Sequence[int],
        values: Sequence[float],
    ) -> int:  # fmt: skip
        """One NDJSON batch: each series' fields encoded once, then per point its time and
        value (``repr`` of a finite float is valid JSON)."""
        heads: dict[int, str] = {}
        lines = []
        for sid, t, v in zip(sids, ts, values, strict=True):
            head = heads.get(sid)
            if head is None:
                metric, entity, tags = series[sid]
                fields = {"metric": metric, "entity": entity, "tags": dict(tags)}
                head = heads[sid] = wire.encode_json(fields).decode()[:-1]
            lines.append(f'{head},"timestamp_ms":{t},"value":{v!r}}}')
        raw = "\n".join(lines).encode()
        answer = await self.request(
            "POST", "/ts/put/buffered/batch", raw=raw, content_type="application/x-ndjson"
        )
        return int(answer.get("buffer_size", 0))

    async def vector_batch(self, op: str, items: Sequence[VectorItem], dimension: int) -> int:
        """Vector writes one request each (REST has no vector batch), 16 at a time."""
        import array

        async def one(pk: str, vector: bytes, metadata: dict[str, Any] | None) -> int:
            values = array.array("f")
            values.frombytes(vector)
            body: dict[str, Any] = {"pk": pk, "vector": values.tolist()}
            if metadata is not None:
                body["metadata"] = metadata
            async with self._vector_slots:
                answer = await self.request("POST", f"/vectors/{op}/buffered", body)
            return int(answer.get("buffer_size", 0))

        sizes = await asyncio.gather(*(one(*item) for item in items))
        return max(sizes, default=0)

    async def vector_remove(self, pk: str) -> int:
        answer = await self.request("DELETE", "/vectors/remove/buffered", {"pk": pk})
        return int(answer.get("buffer_size", 0))

    async def json_call(self, name: str, body: Any = None) -> dict[str, Any]:
        method, path, _ = _JSON_OPS[name]
        if method == "POST" and body is None:
            body = {}
        return await self.request(method, path, body)


class BinaryTransport:
    """The binary protocol over one connection: HELLO, AUTH, then pipelined requests matched
    to their replies by id. REST-only calls go to ``http_addr``. A lost connection fails
    what was in flight (``ServerUnavailableError``, retriable) and is opened again on the
    next request."""

    def __init__(self, config: ClientConfig):
        self.config = config
        host, _ = config.host_port
        self.rest = HttpTransport(config, addr=config.http_addr or f"{host}:8080",
                                  tls=config.schema == "themis+tls")  # fmt: skip
        self.max_batch_bytes = config.max_batch_bytes
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        await self._connection()

    async def _connection(self) -> asyncio.StreamWriter:
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            host, port = self.config.host_port
            timeout = self.config.request_timeout_ms / 1000
            context = _ssl_context(self.config) if self.config.tls else None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=context, limit=1 << 22), timeout
                )
            except (TimeoutError, OSError) as exc:
                raise ServerUnavailableError(f"cannot connect to {host}:{port}: {exc!r}") from exc
            self._writer = writer
            self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
            hello = await self._send(wire.Opcode.HELLO, wire.encode_hello(self.config.client_id),
                                     handshake=True)  # fmt: skip
            ok = wire.decode_hello_ok(hello)
            self.max_batch_bytes = min(self.config.max_batch_bytes, ok.max_frame_bytes)
            self._slots = asyncio.Semaphore(max(1, ok.max_in_flight))
            if self.config.api_key:
                await self._send(wire.Opcode.AUTH, wire.encode_auth(self.config.api_key),
                                 handshake=True)  # fmt: skip
            return writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        failure: BaseException = ServerUnavailableError("the connection was closed")
        try:
            while True:
                head = await reader.readexactly(wire.HEADER.size)
                opcode, _flags, length, request_id = wire.HEADER.unpack(head)
                payload = await reader.readexactly(length) if length else b""
                if opcode == wire.Opcode.GOAWAY:
                    failure = ServerUnavailableError("the server is shutting down (GOAWAY)")
                    continue
                future = self._pending.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result((opcode, payload))
        except (asyncio.IncompleteReadError, OSError) as exc:
            failure = ServerUnavailableError(f"the connection was lost: {exc!r}")
        finally:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(failure)
            self._pending.clear()

    async def _send(self, opcode: int, payload: bytes = b"", *, handshake: bool = False) -> bytes:
        writer = self._writer if handshake else await self._connection()
        if writer is None:
            raise ServerUnavailableError("the connection was lost")
        slots = self._slots
        if slots is not None and not handshake:
            await slots.acquire()
        try:
            request_id = next(self._ids) & 0xFFFFFFFF or next(self._ids)
            future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
            self._pending[request_id] = future
            writer.write(wire.encode_frame(opcode, request_id, payload))
            timeout = self.config.request_timeout_ms / 1000
            try:
                reply_op, reply = await asyncio.wait_for(future, timeout)
            except TimeoutError as exc:
                self._pending.pop(request_id, None)
                raise ServerUnavailableError(f"no answer within {timeout} s") from exc
        finally:
            if slots is not None and not handshake:
                slots.release()
        if reply_op == wire.Opcode.ERROR:
            raise frame_error(wire.decode_error(reply))
        return reply

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)
        await self.rest.aclose()

    async def request(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        return await self.rest.request(method, path, body, **kw)

    async def ts_columns(
        self, series: Sequence[Series], sids: Sequence[int], ts: Sequence[int],
        values: Sequence[float],
    ) -> int:  # fmt: skip
        payload = wire.encode_ts_columns(series, sids, ts, values)
        reply = await self._send(wire.Opcode.TS_PUT_BUFFERED_BATCH, payload)
        return wire.decode_write_ack(reply)[1]

    async def vector_batch(self, op: str, items: Sequence[VectorItem], dimension: int) -> int:
        opcode = (
            wire.Opcode.VECTOR_ADD_BUFFERED_BATCH if op == "add"
            else wire.Opcode.VECTOR_UPDATE_BUFFERED_BATCH
        )  # fmt: skip
        reply = await self._send(opcode, wire.encode_vector_batch(items, dimension))
        return wire.decode_write_ack(reply)[1]

    async def vector_remove(self, pk: str) -> int:
        reply = await self._send(wire.Opcode.VECTOR_REMOVE_BUFFERED, wire.encode_vector_remove(pk))
        return wire.decode_write_ack(reply)[1]

    async def json_call(self, name: str, body: Any = None) -> dict[str, Any]:
        _, _, opcode = _JSON_OPS[name]
        reply = await self._send(opcode, wire.encode_json(body) if body is not None else b"")
        answer: dict[str, Any] = json.loads(reply) if reply else {}
        return answer


Transport = HttpTransport | BinaryTransport


def open_transport(config: ClientConfig) -> Transport:
    return BinaryTransport(config) if config.binary else HttpTransport(config)
