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
    aiohttp answers those itself, before the application sees the request (a line or a
    header field over :data:`MAX_HTTP_FIELD_BYTES`, more than :data:`MAX_HTTP_HEADERS` fields, a
    byte HTTP does not allow), with the parser's message as the body and a traceback in
    the log, and that message quotes up to 100 bytes of the offending line: an
    ``Authorization`` header over the limit put the key into the 400 and the log.
    :class:`FacadeRunner` serves connections that answer such a head with a fixed JSON
    error instead (431 for a line or field too long, 400 otherwise) and log one line with
    the error's class and the peer's address, never the bytes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from pipeline.config import FacadeSettings
from pipeline.errors import HeaderTooLarge, InvalidRequest
from pipeline.facade.middleware import error_response
from pipeline.limits import MAX_HTTP_FIELD_BYTES, MAX_HTTP_HEADERS

__all__ = [
    "FacadeConnection",
    "FacadeRunner",
    "handler_args",
    "serve",
]

_LOG = logging.getLogger(__name__)


_TOO_LARGE: Final = HeaderTooLarge(
    f"the request line or a header field is over {MAX_HTTP_FIELD_BYTES} bytes; nothing of it "
    "was read (a long series key goes in the body of POST /ts/query)"
)
_MALFORMED: Final = InvalidRequest(
    f"the request head is not valid HTTP/1.1 (or has over {MAX_HTTP_HEADERS} header fields)"
)


def handler_args(config: FacadeSettings) -> dict[str, Any]:
    """What every connection of the facade is created with (``web.Application(handler_args=)``)."""
    return {
        "keepalive_timeout": config.header_timeout_s,
        "max_line_size": MAX_HTTP_FIELD_BYTES,
        "max_field_size": MAX_HTTP_FIELD_BYTES,
        "max_headers": MAX_HTTP_HEADERS,
    }


class FacadeConnection(web.RequestHandler):
    """aiohttp's connection, except that a head it cannot parse is answered without a
    byte of it (see the module docstring)."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        _LOG.info("refused a malformed request from %s: %s", request.remote, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was sent already; closing the connection")
        response = error_response(_TOO_LARGE if isinstance(exc, LineTooLong) else _MALFORMED)
        response.force_close()
        return response


class _FacadeServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return FacadeConnection(self, loop=self._loop, **self._kwargs)


class FacadeRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections are :class:`FacadeConnection`.

    aiohttp offers no option for the connection class; the server the runner built is
    given the class that makes them (``tests/integration/test_facade_hardening.py`` checks
    the answers, so an aiohttp upgrade that changes this shows there).
    """

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _FacadeServer
        return server


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
