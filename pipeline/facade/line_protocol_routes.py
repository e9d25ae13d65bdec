"""InfluxDB's write endpoints on the facade: line protocol from Telegraf and every InfluxDB
client library, through the same batch path as ``POST /ts/put/buffered/batch``.

``POST /api/v2/write?bucket=...&precision=ns|us|ms|s`` (v2) and ``POST /write?db=...&
precision=n|u|ms|s`` (v1): the body is line protocol (:mod:`pipeline.ts.line_protocol`,
whose mapping ``docs/api/ECOSYSTEM.md`` documents), ``Content-Encoding: gzip`` accepted up
to ``MAX_DECOMPRESSED_BYTES``. The whole body is checked first: one bad line answers 400
naming it and nothing is written. Success is InfluxDB's 204 (no body). ``bucket`` / ``db``
are accepted and not used: the points go to the one points topic. Auth as every write
route; InfluxDB clients send ``Authorization: Token <key>``, which the facade accepts.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Final

from aiohttp import web

from pipeline.errors import InvalidRecord, InvalidRequest
from pipeline.facade.auth import Role
from pipeline.facade.middleware import RouteSpec
from pipeline.facade.ratelimit import RouteClass
from pipeline.facade.ts_routes import THREAD_BODY_BYTES, TimeSeriesRoutes
from pipeline.limits import MAX_DECOMPRESSED_BYTES
from pipeline.ts.line_protocol import parse_series
from pipeline.ts.producer import Frame

__all__ = ["LineProtocolRoutes"]

_V1_PRECISION: Final = {"n": "ns", "ns": "ns", "u": "us", "us": "us", "ms": "ms", "s": "s"}
_TEXT: Final = ("text/plain",)


def _gunzip(body: bytes) -> bytes:
    """A gzip body, decompressed up to the cap (400 beyond it or when corrupt)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, MAX_DECOMPRESSED_BYTES)
    except zlib.error as exc:
        raise InvalidRequest(f"the gzip body is corrupt: {exc}") from None
    if inflater.unconsumed_tail:
        raise InvalidRequest(
            f"the gzip body decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes "
            "(MAX_DECOMPRESSED_BYTES)"
        )
    return out


class LineProtocolRoutes:
    """The handlers of ``/api/v2/write`` and ``/write`` of one facade."""

    def __init__(self, ts: TimeSeriesRoutes) -> None:
        self.ts = ts
        self.entity_tag = ts.settings.ts_auto_buffer.line_protocol_entity_tag

    def routes(self) -> list[RouteSpec]:
        writer, ts = Role.WRITER, RouteClass.TS_PUT
        return [
            RouteSpec("POST", "/api/v2/write", self.write_v2, writer, ts, _TEXT),
            RouteSpec("POST", "/write", self.write_v1, writer, ts, _TEXT),
        ]

    async def write_v2(self, request: web.Request) -> web.Response:
        return await self._write(request, request.query.get("precision", "ns"))

    async def write_v1(self, request: web.Request) -> web.Response:
        precision = request.query.get("precision", "n")
        if precision not in _V1_PRECISION:
            raise InvalidRequest(
                f"query parameter 'precision' must be n, u, ms or s; got {precision!r}"
            )
        return await self._write(request, _V1_PRECISION[precision])

    async def _write(self, request: web.Request, precision: str) -> web.Response:
        self.ts.facade.require_feature(
            self.ts.settings.ts_auto_buffer.enabled, "ts_auto_buffer", "/ts/put"
        )
        body = await request.read()
        if body[:2] == b"\x1f\x8b":  # gzip that the server did not undo itself
            body = _gunzip(body)
        acked = self.ts.facade.acked_mode(request)
        if len(body) > THREAD_BODY_BYTES:
            frames, points = await asyncio.to_thread(self._frames, body, precision)
        else:
            frames, points = self._frames(body, precision)
        await self.ts.accept_frames(frames, points, acked=acked)
        return web.Response(status=204)

    def _frames(self, body: bytes, precision: str) -> tuple[list[Frame], int]:
        now_ms = time.time_ns() // 1_000_000
        try:
            series = parse_series(body, precision=precision, entity_tag=self.entity_tag,
                                  now_ms=now_ms)  # fmt: skip
        except InvalidRecord as exc:
            raise InvalidRequest(str(exc)) from None
        return self.ts.series_frames(series), sum(int(ts.size) for _, ts, _ in series)
