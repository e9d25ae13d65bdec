"""The replica's HTTP door: ``POST /api/v1/wal/apply`` and ``GET /api/v1/replica/status``.

``POST /api/v1/wal/apply``
    Body: one WAL batch (:mod:`pipeline.wal.batch`), ``Content-Encoding: zstd`` when
    its codec is zstd (the batch is passed through as is, never decoded by HTTP), and
    ``X-Primary-ID`` (required, must equal the batch's primary id).

    * 200 ``{"success": true, "entries_applied": 500, "compression_ratio": 5.2,
      "decompression_time_ms": 12}``
    * 400 ``{"success": false, "error": reason}``: corrupt or undecompressable batch,
      missing or wrong ``X-Primary-ID``; nothing applied. A batch compressed with a
      dictionary the replica lacks adds ``"need_dictionary": <id>``.
    * 409 ``{"success": false, "error": reason, "expected_lsn": "0000000000000043"}``:
      the batch starts after the next LSN the replica needs; nothing applied.

``GET /api/v1/replica/status``
    ``{"last_applied_lsn": ..., "expected_lsn": ..., "entries_applied_total": ..., ...}``.

Mounting elsewhere: :func:`add_wal_routes` adds both handlers to any
``web.Application``; that application must allow large bodies (``client_max_size``)
and its runner must not decompress request bodies (``AppRunner(app,
auto_decompress=False)``), because aiohttp would otherwise try to undo
``Content-Encoding: zstd`` itself.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path
from typing import Final

from aiohttp import web

from pipeline.errors import CorruptBatch, ForeignPrimary, UnknownDictionary, WalGap
from pipeline.replication.replica import ReplicaState
from pipeline.wal.batch import read_header
from pipeline.wal.entry import format_lsn

__all__ = [
    "MAX_BODY_BYTES",
    "REPLICA_STATE",
    "ReplicaServer",
    "add_wal_routes",
    "handle_replica_status",
    "handle_wal_apply",
    "make_replica_app",
    "server_ssl_context",
]

MAX_BODY_BYTES: Final = 128 * 1024 * 1024
"""Largest request body the replica app accepts (bytes)."""

REPLICA_STATE: Final = web.AppKey("replica_state", ReplicaState)


def _failure(status: int, error: str, **extra: object) -> web.Response:
    return web.json_response({"success": False, "error": error, **extra}, status=status)


async def handle_wal_apply(request: web.Request) -> web.Response:
    """``POST /api/v1/wal/apply`` (see the module docstring)."""
    state = request.app[REPLICA_STATE]
    primary = request.headers.get("X-Primary-ID")
    if not primary:
        return _failure(400, "the X-Primary-ID header is required")
    body = await request.read()
    try:
        header = read_header(body)
        if header.primary_id != primary:
            return _failure(
                400,
                f"X-Primary-ID is {primary!r} but the batch was written by {header.primary_id!r}",
            )
        result = await asyncio.to_thread(state.apply_batch, body)
    except (CorruptBatch, WalGap, ForeignPrimary) as exc:
        return _apply_failure(exc)
    return web.json_response(result.to_json())


def _apply_failure(exc: CorruptBatch | WalGap | ForeignPrimary) -> web.Response:
    """400 for a batch that cannot be applied as sent, 409 for a gap, 403 for another primary."""
    if isinstance(exc, UnknownDictionary):
        return _failure(400, str(exc), need_dictionary=exc.dictionary_id)
    if isinstance(exc, WalGap):
        return _failure(409, str(exc), expected_lsn=format_lsn(exc.expected_lsn))
    return _failure(403 if isinstance(exc, ForeignPrimary) else 400, str(exc))


async def handle_replica_status(request: web.Request) -> web.Response:
    """``GET /api/v1/replica/status``."""
    state = request.app[REPLICA_STATE]
    return web.json_response(await asyncio.to_thread(state.status))


def add_wal_routes(app: web.Application, state: ReplicaState) -> None:
    """Mount both handlers on ``app``, applying into ``state``."""
    app[REPLICA_STATE] = state
    app.router.add_post("/api/v1/wal/apply", handle_wal_apply)
    app.router.add_get("/api/v1/replica/status", handle_replica_status)


def make_replica_app(state: ReplicaState) -> web.Application:
    """An application serving only the replica's routes."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    add_wal_routes(app, state)
    return app


def server_ssl_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS for the server; with ``client_ca``, mutual TLS (a client certificate is required)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class ReplicaServer:
    """The replica app on its own event loop in a background thread.

    ``start()`` returns the bound port (``port=0`` picks a free one); ``stop()`` ends it.
    """

    def __init__(
        self,
        state: ReplicaState,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wal-http", daemon=True)
        self._runner: web.AppRunner | None = None

    async def _start(self) -> int:
        self._runner = web.AppRunner(make_replica_app(self.state), auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        server = site._server  # the bound socket tells the port chosen for 0
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self.port

    def start(self, timeout_s: float = 30.0) -> int:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout_s)
        return self.port

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        self._loop.close()
