"""The facade's HTTP connections: how long a client may take, and how a request aiohttp
cannot parse is answered.

Header timeout (``facade.header_timeout_s``)
    aiohttp's keep-alive timer runs whenever a connection waits for a request head: from
    the moment it opens, and again from each answer. When it fires before a whole head
    arrived, aiohttp closes the connection. :func:`handler_args` sets it to the header
    timeout, so a client that sends half a head is cut off then, however slowly it keeps
    sending, and an idle keep-alive connection closes after as long.
Body timeout (``facade.body_timeout_s``)
    :meth:`~pipeline.facade.middleware.RequestGuard.read_body`: 408, and the connection
    is closed.
Heads aiohttp cannot parse
    :class:`FacadeRunner` is a :class:`~pipeline.http_heads.QuietRunner`: such a head is
    answered without a byte of it (431 or 400), through the facade's one error map.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from typing import Any

from aiohttp import web

from pipeline.config import FacadeSettings
from pipeline.errors import RequestError
from pipeline.facade.middleware import error_response
from pipeline.http_heads import QuietConnection, QuietRunner
from pipeline.limits import MAX_HTTP_FIELD_BYTES, MAX_HTTP_HEADERS

__all__ = [
    "FacadeConnection",
    "FacadeRunner",
    "handler_args",
    "serve",
]


def handler_args(config: FacadeSettings) -> dict[str, Any]:
    """What every connection of the facade is created with (``web.Application(handler_args=)``)."""
    return {
        "keepalive_timeout": config.header_timeout_s,
        "max_line_size": MAX_HTTP_FIELD_BYTES,
        "max_field_size": MAX_HTTP_FIELD_BYTES,
        "max_headers": MAX_HTTP_HEADERS,
    }


class FacadeConnection(QuietConnection):
    """A :class:`~pipeline.http_heads.QuietConnection` answering through the facade's
    error map (:func:`~pipeline.facade.middleware.error_response`)."""

    __slots__ = ()

    def answer(self, error: RequestError) -> web.Response:
        return error_response(error)


class _FacadeServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return FacadeConnection(self, loop=self._loop, **self._kwargs)


class FacadeRunner(QuietRunner):
    """A :class:`~pipeline.http_heads.QuietRunner` whose connections are
    :class:`FacadeConnection`."""

    server_class = _FacadeServer


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout_s: float = 30.0,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT; then stop accepting connections, let requests
    in flight finish (up to ``shutdown_timeout_s`` seconds) and run the app's cleanup."""
    # WAL batches arrive with Content-Encoding: zstd; the applier decompresses them.
    runner = FacadeRunner(
        app, shutdown_timeout=shutdown_timeout_s, access_log=None, auto_decompress=False
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
