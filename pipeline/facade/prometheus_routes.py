"""Prometheus' remote endpoints on the facade: ``POST /api/v1/write``, ``POST /api/v1/read``.

Remote-write 1.0: a snappy-compressed protobuf ``WriteRequest``
(:mod:`pipeline.ts.prom_remote`, whose mapping ``docs/api/ECOSYSTEM.md`` documents),
``Content-Type: application/x-protobuf``, ``Content-Encoding: snappy``. Remote-write 2.0
(``proto=io.prometheus.write.v2.Request``) answers 415, as its spec asks of a 1.0-only
receiver, so a sender falls back. The request goes through the batch path of
``/ts/put/buffered/batch``: checked whole (one bad series: 400, which Prometheus does not
retry, and nothing written), then sent as frames; the buffers full: 429 with
``Retry-After`` (Prometheus retries it with ``retry_on_http_429``); 204 when written.
Auth as every write route: Prometheus sends ``Authorization: Bearer <key>``.

Remote-read (``SAMPLES`` responses): each query's matchers (``=``, ``!=``, ``=~``,
``!~``, regexes anchored as Prometheus anchors them) over the same mapping; the equality
matchers pick candidates from every worker's series (the series index of the partitions
it owns, and the series it buffers), the others filter them; each series' points in the
range come from the worker that owns it, its blocks plus what it still buffers
(:func:`~pipeline.worker.query.read_matching`). Labels come back sorted, ``__name__``
and the entity label included.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from pipeline.errors import InvalidRecord, InvalidRequest, UnsupportedMediaType
from pipeline.facade.auth import Role
from pipeline.facade.middleware import RouteSpec
from pipeline.facade.ratelimit import RouteClass
from pipeline.facade.ts_routes import THREAD_BODY_BYTES, TimeSeriesRoutes
from pipeline.ts.producer import Frame
from pipeline.ts.prom_remote import (
    decode_read,
    decode_write,
    encode_read_response,
    encode_snappy,
    selector_of,
    series_of_write,
)

__all__ = ["PrometheusRoutes"]

_PROTOBUF: Final = ("application/x-protobuf",)
_V1_PROTO: Final = "prometheus.WriteRequest"


class PrometheusRoutes:
    """The handlers of Prometheus' remote endpoints of one facade."""

    def __init__(self, ts: TimeSeriesRoutes) -> None:
        self.ts = ts
        self.entity_label = ts.settings.facade.remote_write_entity_label

    def routes(self) -> list[RouteSpec]:
        return [
            RouteSpec("POST", "/api/v1/read", self.read, Role.WRITER, body_types=_PROTOBUF),
            RouteSpec(
                "POST", "/api/v1/write", self.write, Role.WRITER, RouteClass.TS_PUT, _PROTOBUF
            ),
        ]

    async def write(self, request: web.Request) -> web.Response:
        proto = request.content_type and _param(request.headers.get("Content-Type", ""), "proto")
        if proto and proto != _V1_PROTO:
            raise UnsupportedMediaType(
                f"remote-write message {proto!r} is not supported; this receiver speaks "
                f"remote-write 1.0 ({_V1_PROTO})"
            )
        encoding = request.headers.get("Content-Encoding", "snappy").lower()
        if encoding != "snappy":
            raise UnsupportedMediaType(f"Content-Encoding {encoding!r}: remote-write is snappy")
        self.ts.facade.require_feature(
            self.ts.settings.ts_auto_buffer.enabled, "ts_auto_buffer", "/ts/put"
        )
        body = await request.read()
        acked = self.ts.facade.acked_mode(request)
        if len(body) > THREAD_BODY_BYTES:
            frames, samples = await asyncio.to_thread(self._frames, body)
        else:
            frames, samples = self._frames(body)
        if samples:
            await self.ts.accept_frames(frames, samples, acked=acked)
        return web.Response(status=204)

    async def read(self, request: web.Request) -> web.Response:
        encoding = request.headers.get("Content-Encoding", "snappy").lower()
        if encoding != "snappy":
            raise UnsupportedMediaType(f"Content-Encoding {encoding!r}: remote-read is snappy")
        try:
            wanted = decode_read(await request.read())
        except InvalidRecord as exc:
            raise InvalidRequest(str(exc)) from None
        results = []
        for query in wanted.queries:
            selector = selector_of(query.matchers, self.entity_label)
            results.append(
                await self.ts.read_series(
                    selector, query.start_timestamp_ms, query.end_timestamp_ms
                )
            )
        body = await asyncio.to_thread(
            lambda: encode_snappy(encode_read_response(results, self.entity_label))
        )
        return web.Response(
            body=body,
            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"},
        )

    def _frames(self, body: bytes) -> tuple[list[Frame], int]:
        try:
            series, samples = series_of_write(decode_write(body).timeseries, self.entity_label)
        except InvalidRecord as exc:
            raise InvalidRequest(str(exc)) from None
        return self.ts.series_frames(series), samples


def _param(content_type: str, name: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == name:
            return value.strip().strip('"')
    return None
