"""HTTP connections that answer a request head they cannot parse without a byte of it.

aiohttp answers such a head itself, before the application sees the request (a line or
a header field over :data:`MAX_HTTP_FIELD_BYTES`, more than :data:`MAX_HTTP_HEADERS`
fields, a byte HTTP does not allow), with the parser's message as the body and a
traceback in the log, and that message quotes up to 100 bytes of the offending line: an
``Authorization`` header over the limit, or with a NUL byte after the key, put the key
into the 400 and the log. Every server of the project that checks keys (the facade, the
worker's pages, ``themis wal serve``) runs on a :class:`QuietRunner`, whose connections
answer such a head with a fixed JSON error instead (431 for a line or field too long, 400
otherwise) and log one line with the error's class and the peer's address, never the
bytes.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from pipeline.errors import HeaderTooLarge, InvalidRequest, RequestError
from pipeline.limits import MAX_HTTP_FIELD_BYTES, MAX_HTTP_HEADERS

__all__ = ["QuietConnection", "QuietRunner"]

_LOG = logging.getLogger(__name__)

_TOO_LARGE: Final = HeaderTooLarge(
    f"the request line or a header field is over {MAX_HTTP_FIELD_BYTES} bytes; nothing of it "
    "was read (a long series key goes in the body of POST /ts/query)"
)
_MALFORMED: Final = InvalidRequest(
    f"the request head is not valid HTTP/1.1 (or has over {MAX_HTTP_HEADERS} header fields)"
)


class QuietConnection(web.RequestHandler):
    """aiohttp's connection, except that a head it cannot parse is answered without a
    byte of it (see the module docstring); :meth:`answer` makes that answer."""

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
        response = self.answer(_TOO_LARGE if isinstance(exc, LineTooLong) else _MALFORMED)
        response.force_close()
        return response

    def answer(self, error: RequestError) -> web.Response:
        """The answer to a head refused with ``error``: 431 or 400, the project's JSON."""
        status = 431 if isinstance(error, HeaderTooLarge) else 400
        return web.json_response({"success": False, "error": str(error)}, status=status)


class _QuietServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return QuietConnection(self, loop=self._loop, **self._kwargs)


class QuietRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections are :class:`QuietConnection`
    (``server_class`` makes them; a subclass may make a subclass of it).

    aiohttp offers no option for the connection class; the server the runner built is
    given the class that makes them (the tests send such heads to every server and check
    the answers, so an aiohttp upgrade that changes this shows there).
    """

    server_class: ClassVar[type[web.Server]] = _QuietServer

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = self.server_class
        return server
