"""What every facade request passes through: auth, body limit, rate limit, request metrics,
and the one table that turns an exception into an HTTP status and JSON error body.

Order per request: the client address's failed key checks (429, without looking at the
key: ``facade.rate_auth_failures_per_min``), the caller's key and role (401 / 403), the
declared body size (413), the key's quota for the route class (429), the declared body
type (415: a route with :attr:`RouteSpec.body_types` takes those or none declared), the
body itself within ``facade.body_timeout_s`` (408, the connection is closed), then the
handler. Whatever the handler or a check raises is answered here, as
``{"success": false, "error": message, ...}``:

=====  ============================================================  =================
code   exception classes (:mod:`pipeline.errors`)                    added to the body
=====  ============================================================  =================
400    InvalidRequest, InvalidRecord, InvalidArgument, CorruptBatch  ``need_dictionary``
                                                                     (UnknownDictionary)
401    AuthenticationFailed (``WWW-Authenticate`` header)
403    PermissionDenied
404    NotFound
408    RequestTimeout
409    Conflict, WalGap                                              ``expected_lsn``
                                                                     (WalGap, 16 hex)
413    PayloadTooLarge
415    UnsupportedMediaType
429    RateLimited, BufferOverflow (``Retry-After`` header)          ``retry_after_s``,
                                                                     ``buffer_size``
431    HeaderTooLarge (answered by :mod:`~pipeline.facade.connections`)
503    ServiceUnavailable, WorkerUnavailable, DeliveryFailed         ``retry_after_s``
       (``Retry-After`` header after ``facade.write_deadline_s``)    (deadline)
=====  ============================================================  =================

A :class:`~pipeline.errors.RequestError` adds its ``extra`` fields to the body and its
``headers`` to the response. Anything else is logged and answered 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from pipeline.config import FacadeSettings
from pipeline.errors import (
    AuthenticationFailed,
    BufferOverflow,
    ConfigError,
    Conflict,
    CorruptBatch,
    DeliveryFailed,
    HeaderTooLarge,
    InvalidArgument,
    InvalidRecord,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RequestError,
    RequestTimeout,
    ServiceUnavailable,
    ThemisError,
    UnknownDictionary,
    UnsupportedMediaType,
    WalGap,
    WorkerUnavailable,
)
from pipeline.facade.auth import ApiKeyring, Role, load_keyring, presented_key
from pipeline.facade.ratelimit import RateLimiter, RouteClass, limits_from_settings
from pipeline.facade.request_timing import RequestHistogram
from pipeline.throttle import FailureThrottle
from pipeline.wal.entry import format_lsn
from pipeline.worker.client import WorkerAnswers

__all__ = [
    "STATUS_OF",
    "FacadeMetrics",
    "Handler",
    "RequestGuard",
    "RouteSpec",
    "error_response",
    "json_bytes_response",
    "json_response",
    "status_of",
    "with_workers",
]

_LOG = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS_OF: Final[Mapping[type[ThemisError], int]] = {
    InvalidRequest: 400,
    InvalidRecord: 400,
    InvalidArgument: 400,
    CorruptBatch: 400,
    AuthenticationFailed: 401,
    PermissionDenied: 403,
    NotFound: 404,
    RequestTimeout: 408,
    Conflict: 409,
    WalGap: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    RateLimited: 429,
    BufferOverflow: 429,
    HeaderTooLarge: 431,
    ServiceUnavailable: 503,
    WorkerUnavailable: 503,
    DeliveryFailed: 503,
}
"""The HTTP status of each error class a request can end in (subclasses inherit it)."""

_INTERNAL: Final = "internal error; see the facade's log"
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="themis"'}


@dataclass(frozen=True)
class RouteSpec:
    """One endpoint: ``role`` ``None`` means no key is needed; ``rate_class`` picks a quota;
    ``body_types`` are the media types its body may be declared as (empty: any; a body
    with no ``Content-Type``, or ``application/octet-stream``, is taken too)."""

    method: str
    path: str
    handler: Handler
    role: Role | None = Role.WRITER
    rate_class: RouteClass | None = None
    body_types: tuple[str, ...] = ()


class FacadeMetrics:
    """The facade's Prometheus metrics, on a registry of its own (durations in seconds).

    Nothing here takes a lock on a request's path: the two gauges read plain counters
    when scraped (:attr:`requests_in_flight` here, the unacknowledged points through
    :meth:`count_unacked`), and a request's duration goes to the
    :class:`~pipeline.facade.request_timing.RequestHistogram` observer kept per
    ``(route, method, status)``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_duration = RequestHistogram(
            "facade_request_duration_seconds",
            "Time from receiving a request to answering it, by route, method and status.",
            ("route", "method", "status"),
        )
        self.registry.register(self.request_duration)
        self.requests_in_flight = 0
        """Requests being handled now."""
        self.in_flight = Gauge(
            "facade_requests_in_flight", "Requests being handled now.", registry=self.registry
        )
        self.in_flight.set_function(lambda: self.requests_in_flight)
        self.unacked = Gauge(
            "facade_unacked_points",
            "Points and vector operations accepted but not yet acknowledged by the broker.",
            registry=self.registry,
        )
        self._observers: dict[tuple[str, str, int], Callable[[float], None]] = {}

    def count_unacked(self, read: Callable[[], int]) -> None:
        """``facade_unacked_points`` reads ``read()`` when scraped."""
        self.unacked.set_function(read)

    def observer(self, route: str, method: str, status: int) -> Callable[[float], None]:
        """Records one duration (seconds) of ``route``, ``method``, ``status``."""
        observe = self._observers.get((route, method, status))
        if observe is None:
            observe = self.request_duration.observer(route, method, str(status))
            self._observers[(route, method, status)] = observe
        return observe


_JSON_TYPE: Final = "application/json"
_MEDIA_TYPES_KEPT: Final = 64
"""Distinct ``Content-Type`` headers whose parsed media type is remembered."""
_UNTYPED: Final = "application/octet-stream"  # also what aiohttp reports for no Content-Type


def with_workers(body: dict[str, Any], answers: WorkerAnswers) -> dict[str, Any]:
    """``body`` and how many workers answered, and the URLs of those that did not."""
    return body | {"workers": len(answers.pages), "workers_unreachable": answers.unreachable}


def json_response(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``body`` as JSON (numpy values included)."""
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type=_JSON_TYPE,
        headers=headers,
    )


def json_bytes_response(body: bytes) -> web.Response:
    """A 200 with ``body``, already encoded JSON (answers built from constant parts)."""
    return web.Response(body=body, content_type=_JSON_TYPE)


def status_of(exc: ThemisError) -> int | None:
    """The HTTP status :data:`STATUS_OF` gives ``exc``'s class or nearest base, else ``None``."""
    for cls in type(exc).__mro__:
        status = STATUS_OF.get(cls)
        if status is not None:
            return status
    return None


def error_response(exc: ThemisError) -> web.Response:
    """The JSON error answer to ``exc``; 500 if :data:`STATUS_OF` has no status for it."""
    status = status_of(exc)
    if status is None:
        return _error(500, _INTERNAL)
    extra: dict[str, object] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, RequestError):
        extra.update(exc.extra)
        headers.update(exc.headers)
    if isinstance(exc, UnknownDictionary):
        extra["need_dictionary"] = exc.dictionary_id
    if isinstance(exc, WalGap):
        extra["expected_lsn"] = format_lsn(exc.expected_lsn)
    if isinstance(exc, BufferOverflow):
        extra["buffer_size"] = exc.buffer_size
        headers["Retry-After"] = "1"
    return _error(status, str(exc), extra, headers)


def _error(
    status: int,
    message: str,
    extra: Mapping[str, object] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return json_response({"success": False, "error": message} | dict(extra or {}), status, headers)


class RequestGuard:
    """The middleware of one facade: checks every mounted route's requests, times them,
    and answers their errors (:data:`STATUS_OF`).

    :meth:`mount` records the :class:`RouteSpec` of each route; a request whose route
    was not mounted (e.g. a 404) is answered without checks.
    """

    def __init__(self, config: FacadeSettings, metrics: FacadeMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.keyring: ApiKeyring = load_keyring(config)
        if config.auth_enabled and not len(self.keyring):
            raise ConfigError(
                "facade.auth_enabled is true but no API keys are configured: set "
                "THEMIS_FACADE_API_KEYS='key:admin,...' or THEMIS_FACADE_API_KEYS_FILE"
            )
        self.limiter = RateLimiter(limits_from_settings(config))
        self.auth_failures = FailureThrottle(config.rate_auth_failures_per_min)
        """Failed key checks per client address."""
        self.routes: dict[tuple[str, str], RouteSpec] = {}
        """``(method, path)`` -> the spec it was mounted with."""
        self._checks: dict[web.AbstractRoute, _RouteChecks] = {}
        self._media_types: dict[str | None, str] = {}  # Content-Type header -> media type

    def mount(self, route: web.AbstractRoute, spec: RouteSpec) -> None:
        """Check, time and answer the requests of ``route`` as ``spec`` says."""
        self.routes[(spec.method, spec.path)] = spec
        needs_key = self.config.auth_enabled and spec.role is not None
        allowed = frozenset(r for r in Role if spec.role is not None and r.allows(spec.role))
        self._checks[route] = _RouteChecks(spec, needs_key, allowed)

    def authorize(self, request: web.Request, spec: RouteSpec) -> str:
        """The caller id for rate limits; 401 without a known key, 403 for too weak a role."""
        address = request.remote or "unknown"
        if not self.config.auth_enabled or spec.role is None:
            return f"peer:{address}"
        role, caller = self._caller(request, address)
        if not role.allows(spec.role):
            raise _denied(spec, role)
        return caller

    def _caller(self, request: web.Request, address: str) -> tuple[Role, str]:
        return self.check_key(
            address,
            presented_key(request.headers),
            missing="send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers=_CHALLENGE,
        )

    def check_key(
        self,
        address: str,
        key: str | None,
        *,
        missing: str,
        headers: dict[str, str] | None = None,
    ) -> tuple[Role, str]:
        """The role and caller id of ``key``, presented from ``address`` (either door).

        429 while the address is throttled for failed checks (no key is compared then);
        401 for no key (``missing`` says how to send one) or an unknown one, each counted
        against the address.
        """
        wait = self.auth_failures.retry_after(address)
        if wait:
            raise RateLimited(
                f"too many failed key checks from this address (at most "
                f"{self.config.rate_auth_failures_per_min} a minute, "
                f"facade.rate_auth_failures_per_min); retry after {wait} s",
                retry_after_s=wait,
            )
        found = None if key is None else self.keyring.caller_of(key)
        if found is None:
            self.auth_failures.failed(address)
            reason = "unknown API key" if key is not None else f"missing API key: {missing}"
            raise AuthenticationFailed(reason, headers=headers)
        return found

    def check_body_size(self, request: web.Request) -> None:
        """413 when the declared ``Content-Length`` is over ``facade.max_body_bytes``."""
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            raise PayloadTooLarge(
                f"the body is {length} bytes; at most {self.config.max_body_bytes} "
                "(facade.max_body_bytes)"
            )

    def check_body_type(self, request: web.Request, spec: RouteSpec) -> None:
        """415 when the route reads :attr:`RouteSpec.body_types` and another type is declared.

        No ``Content-Type`` is taken, and so is ``application/octet-stream``, which is
        what no type means (RFC 9110) and what clients such as aiohttp send for bytes.
        Refused are in particular the types a browser sends across origins without
        asking first (``text/plain``, forms).
        """
        if not spec.body_types:
            return
        # aiohttp parses the header anew for each request; a client sends the same few.
        raw = request.headers.get("Content-Type")
        declared = self._media_types.get(raw)
        if declared is None:
            declared = request.content_type
            if len(self._media_types) < _MEDIA_TYPES_KEPT:
                self._media_types[raw] = declared
        if declared != _UNTYPED and declared not in spec.body_types:
            raise UnsupportedMediaType(
                f"Content-Type {declared!r} is not read here; send "
                f"{' or '.join(spec.body_types)} (or no Content-Type)"
            )

    async def read_body(self, request: web.Request) -> None:
        """Receive the whole body (kept for the handler's ``read()``) within
        ``facade.body_timeout_s``; 408 otherwise. A body already received costs nothing."""
        if not request.body_exists or request.content.is_eof():
            return
        try:
            async with asyncio.timeout(self.config.body_timeout_s):
                await request.read()
        except TimeoutError:
            raise RequestTimeout(
                f"the body did not arrive within {self.config.body_timeout_s:g} s "
                "(facade.body_timeout_s); send it at once"
            ) from None

    def rate_limit(self, caller: str, spec: RouteSpec) -> None:
        """429 when ``caller`` used up the quota of the route's class."""
        if spec.rate_class is None:
            return
        wait = self.limiter.retry_after(caller, spec.rate_class)
        if wait:
            per_min = limits_from_settings(self.config)[spec.rate_class]
            raise RateLimited(
                f"rate limit of {per_min} requests per minute for {spec.rate_class.value} "
                f"reached; retry after {wait} s",
                retry_after_s=wait,
            )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The aiohttp middleware: checks, answers errors, times by route, method, status."""
        t0 = time.perf_counter()
        checks = self._checks.get(request.match_info.route)
        spec = None if checks is None else checks.spec
        status = 500
        metrics = self.metrics
        metrics.requests_in_flight += 1
        try:
            try:
                if checks is not None:
                    self._check(request, checks)
                    await self.read_body(request)
                response = await handler(request)
            except Exception as exc:  # every error is answered here, by class
                response = self._answer_error(request, exc)
                if isinstance(exc, RequestTimeout):
                    response.force_close()  # the rest of the body may still trickle in
            status = response.status
            return response
        finally:
            metrics.requests_in_flight -= 1
            route = spec.path if spec is not None else _route_name(request)
            metrics.observer(route, request.method, status)(time.perf_counter() - t0)

    def _check(self, request: web.Request, checks: _RouteChecks) -> None:
        """:meth:`authorize`, :meth:`check_body_size`, :meth:`rate_limit` and
        :meth:`check_body_type`, in that order, with what the route's spec decides
        worked out at :meth:`mount`."""
        spec = checks.spec
        address = request.remote or "unknown"
        if checks.needs_key:
            role, caller = self._caller(request, address)
            if role not in checks.allowed:
                raise _denied(spec, role)
        else:
            caller = f"peer:{address}"
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            self.check_body_size(request)
        if spec.rate_class is not None:
            self.rate_limit(caller, spec)
        self.check_body_type(request, spec)

    def _answer_error(self, request: web.Request, exc: Exception) -> web.Response:
        if isinstance(exc, ThemisError):
            if status_of(exc) is None:
                _LOG.error("unmapped error on %s %s", request.method, request.path, exc_info=exc)
            return error_response(exc)
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            return error_response(
                PayloadTooLarge(
                    f"the body is larger than {self.config.max_body_bytes} bytes "
                    "(facade.max_body_bytes)"
                )
            )
        if isinstance(exc, web.HTTPException):
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
            return _error(exc.status, exc.reason, headers=headers)
        _LOG.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
        return _error(500, _INTERNAL)


@dataclass(frozen=True, slots=True)
class _RouteChecks:
    """What :meth:`RequestGuard.mount` decided for one route's requests."""

    spec: RouteSpec
    needs_key: bool
    """Auth is on and the route needs a role."""
    allowed: frozenset[Role]
    """The roles whose keys may call it."""


def _denied(spec: RouteSpec, role: Role) -> PermissionDenied:
    needed = spec.role.value if spec.role is not None else "none"
    return PermissionDenied(f"this endpoint needs role {needed}; the key has role {role.value}")


def _route_name(request: web.Request) -> str:
    """The canonical path of a route mounted without a spec, else ``unmatched``."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
