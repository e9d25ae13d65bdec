"""The replica's HTTP door: ``POST /api/v1/wal/apply`` and ``GET /api/v1/replica/status``.

``POST /api/v1/wal/apply``
    Only for a caller the replica trusts (:class:`ApplyAuth`): one that presented a
    client certificate the server verified (mutual TLS), or one of the replica's
    replicator keys as ``Authorization: Bearer <key>`` or ``X-API-Key``. With neither
    configured the endpoint is closed: every request answers 401. It is never open.

    Body: one WAL batch (:mod:`pipeline.wal.batch`), ``Content-Encoding: zstd`` when
    its codec is zstd (the batch is passed through as is, never decoded by HTTP), and
    ``X-Primary-ID`` (required, must equal the batch's primary id).

    * 200 ``{"success": true, "entries_applied": 500, "compression_ratio": 5.2,
      "decompression_time_ms": 12}``
    * 400 ``{"success": false, "error": reason}``: corrupt or undecompressable batch,
      missing or wrong ``X-Primary-ID``; nothing applied. A batch compressed with a
      dictionary the replica lacks adds ``"need_dictionary": <id>``.
    * 401 ``{"success": false, "error": reason}``: no trusted certificate or key.
    * 429 ``{"success": false, "error": reason, "retry_after_s": 3}`` with ``Retry-After``:
      this address failed too many key checks (:class:`ApplyAuth`); no key is compared.
    * 408: the body did not arrive within ``BODY_TIMEOUT_S`` (60 s); the connection is
      closed. A head must arrive within ``HEAD_TIMEOUT_S`` (10 s), else it is closed.
    * 409 ``{"success": false, "error": reason, "expected_lsn": "0000000000000043"}``:
      the batch starts after the next LSN the replica needs; nothing applied.

``GET /api/v1/replica/status``
    ``{"last_applied_lsn": ..., "expected_lsn": ..., "entries_applied_total": ...,
    "wal_partitions": 2, "partitions": {"0": {"last_applied_lsn": ..., ...}, ...}, ...}``
    (:meth:`~pipeline.replication.replica.ReplicaState.status`).

    A 409's ``expected_lsn`` is in the WAL partition of the batch refused.

Reads (``/ts/query``, ``/vectors/search``): :mod:`pipeline.replication.read_routes`.

Mounting elsewhere: :func:`add_wal_routes` adds both handlers to any
``web.Application``; that application must allow large bodies (``client_max_size``)
and its runner must not decompress request bodies (``AppRunner(app,
auto_decompress=False)``), because aiohttp would otherwise try to undo
``Content-Encoding: zstd`` itself.
"""

from __future__ import annotations

import asyncio
import hmac
import ssl
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from aiohttp import web

from pipeline.config import WalSettings
from pipeline.errors import (
    AuthenticationFailed,
    CorruptBatch,
    ForeignPrimary,
    RateLimited,
    RequestTimeout,
    UnknownDictionary,
    WalGap,
)
from pipeline.http_heads import QuietRunner
from pipeline.limits import MAX_WAL_BODY_BYTES
from pipeline.replication.binary_door import BODY_TIMEOUT_S, WalApplyDoor
from pipeline.replication.read_routes import add_read_routes
from pipeline.replication.replica import ReplicaState
from pipeline.throttle import FailureThrottle
from pipeline.wal.batch import read_header
from pipeline.wal.entry import format_lsn

__all__ = [
    "APPLY_AUTH",
    "MAX_BODY_BYTES",
    "REPLICA_STATE",
    "ApplyAuth",
    "ReplicaServer",
    "add_wal_routes",
    "handle_replica_status",
    "handle_wal_apply",
    "make_replica_app",
    "server_ssl_context",
]

MAX_BODY_BYTES: Final = MAX_WAL_BODY_BYTES
"""Largest request body the replica app accepts (bytes)."""
HEAD_TIMEOUT_S: Final = 10.0
"""Seconds a connection of the replica app may take to send a whole request head (from
its opening or the previous answer; aiohttp's keep-alive timer), then it is closed. A
body must arrive within :data:`~pipeline.replication.binary_door.BODY_TIMEOUT_S` (408)."""

REPLICA_STATE: Final = web.AppKey("replica_state", ReplicaState)
BODY_TIMEOUT: Final = web.AppKey("wal_body_timeout_s", float)
"""Seconds a WAL batch body may take to arrive (default :data:`BODY_TIMEOUT_S`)."""

_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="themis-wal"'}


class ApplyAuth:
    """Who may apply WAL batches: a verified client certificate, or one of ``keys``.

    ``client_certificates`` says the server's TLS context verifies client certificates
    (``CERT_REQUIRED`` with a client CA), so a connection's peer certificate proves the
    caller. Keys are compared with every configured key in constant time and never
    shown. With no keys and no client certificates nobody may apply.

    Failed key checks are counted per client address in ``failures`` (on the facade its
    own throttle, shared with every other key check there); an address that failed
    too often is refused (429 / RATE_LIMITED) before its key is compared.
    ``failures_setting`` is the setting that sets the rate, named in that refusal.
    """

    def __init__(
        self,
        keys: Iterable[str] = (),
        *,
        client_certificates: bool = False,
        failures: FailureThrottle | None = None,
        failures_setting: str = "compressed_wal_shipping.apply_auth_failures_per_min",
    ) -> None:
        self._keys = [key.encode() for key in keys if key]
        self.client_certificates = client_certificates
        self.failures = failures or FailureThrottle(WalSettings.apply_auth_failures_per_min)
        self.failures_setting = failures_setting

    def __repr__(self) -> str:  # never show the keys themselves
        return f"ApplyAuth({len(self._keys)} keys, client_certificates={self.client_certificates})"

    @property
    def closed(self) -> bool:
        """No caller can be trusted: every apply answers 401."""
        return not self._keys and not self.client_certificates

    def refusal(self, request: web.Request) -> web.Response | None:
        """The answer refusing ``request`` (401, or 429 for an address that failed too
        often), or ``None`` when it may apply."""
        transport = request.transport
        if self.certified(transport.get_extra_info("peercert") if transport else None):
            return None
        try:
            self.check_key(
                request.remote or "unknown",
                _presented_key(request),
                "Authorization: Bearer <key>",
            )
        except RateLimited as exc:
            return _failure(429, str(exc), headers=exc.headers, **exc.extra)
        except AuthenticationFailed as exc:
            return _failure(401, str(exc), headers=exc.headers)
        return None

    def certified(self, peercert: object) -> bool:
        """A connection with this (verified) peer certificate may apply."""
        return self.client_certificates and bool(peercert)

    def check_key(self, address: str, presented: str | None, how: str = "AUTH") -> None:
        """Return when a caller at ``address`` presenting ``presented`` (``how`` it is
        sent) may apply; else :class:`RateLimited` while the address is throttled (no key
        is compared then), :class:`AuthenticationFailed` for no key or an unknown one,
        each counted against the address."""
        wait = self.failures.retry_after(address)
        if wait:
            raise RateLimited(
                f"too many failed replicator key checks from this address (at most "
                f"{self.failures.per_minute} a minute, {self.failures_setting}); "
                f"retry after {wait} s",
                retry_after_s=wait,
            )
        refusal = self._key_refusal(presented, how)
        if refusal is not None:
            self.failures.failed(address)
            raise AuthenticationFailed(refusal, headers=_CHALLENGE)

    def _key_refusal(self, presented: str | None, how: str) -> str | None:
        if self.closed:
            return (
                "WAL apply is closed: configure replicator keys (THEMIS_WAL_APPLY_KEYS, or "
                "a facade key with role replicator) or client certificates (--tls-client-ca)"
            )
        if presented is None:
            return f"WAL apply needs a replicator key ({how}) or a client certificate"
        candidate = presented.encode("utf-8", "surrogateescape")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return None if matched else "unknown replicator key"


APPLY_AUTH: Final = web.AppKey("wal_apply_auth", ApplyAuth)
"""The :class:`ApplyAuth` of an application serving WAL apply; none = closed."""


def _presented_key(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-API-Key", "").strip() or None


def _failure(
    status: int, error: str, *, headers: dict[str, str] | None = None, **extra: object
) -> web.Response:
    return web.json_response(
        {"success": False, "error": error, **extra}, status=status, headers=headers
    )


async def handle_wal_apply(request: web.Request) -> web.Response:
    """``POST /api/v1/wal/apply`` (see the module docstring)."""
    auth = request.app.get(APPLY_AUTH)
    refused = (
        _failure(401, "WAL apply is closed: no ApplyAuth configured", headers=_CHALLENGE)
        if auth is None
        else auth.refusal(request)
    )
    if refused is not None:
        return refused
    state = request.app[REPLICA_STATE]
    primary = request.headers.get("X-Primary-ID")
    if not primary:
        return _failure(400, "the X-Primary-ID header is required")
    try:
        body = await _read_batch(request)
        header = read_header(body)
        if header.primary_id != primary:
            return _failure(
                400,
                f"X-Primary-ID is {primary!r} but the batch was written by {header.primary_id!r}",
            )
        result = await asyncio.to_thread(state.apply_batch, body)
    except RequestTimeout as exc:
        slow = _failure(408, str(exc))
        slow.force_close()
        return slow
    except (CorruptBatch, WalGap, ForeignPrimary) as exc:
        return _apply_failure(exc)
    return web.json_response(result.to_json())


async def _read_batch(request: web.Request) -> bytes:
    """The whole body within the application's body timeout (:data:`BODY_TIMEOUT`);
    :class:`RequestTimeout` otherwise."""
    timeout_s = request.app.get(BODY_TIMEOUT, BODY_TIMEOUT_S)
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the batch did not arrive within {timeout_s:g} s; send it at once"
        ) from None


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


def add_wal_routes(app: web.Application, state: ReplicaState, auth: ApplyAuth) -> None:
    """Mount both handlers on ``app``, applying into ``state`` for callers ``auth`` trusts."""
    app[REPLICA_STATE] = state
    app[APPLY_AUTH] = auth
    app.router.add_post("/api/v1/wal/apply", handle_wal_apply)
    app.router.add_get("/api/v1/replica/status", handle_replica_status)


def make_replica_app(
    state: ReplicaState,
    auth: ApplyAuth,
    *,
    head_timeout_s: float = HEAD_TIMEOUT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> web.Application:
    """An application serving only the replica's routes: WAL apply, status and reads;
    a request head must arrive within ``head_timeout_s``, a body within
    ``body_timeout_s`` (seconds)."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES, handler_args={"keepalive_timeout": head_timeout_s}
    )
    app[BODY_TIMEOUT] = body_timeout_s
    add_wal_routes(app, state, auth)
    add_read_routes(app, state, auth)
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
    With ``binary_port`` (0 picks one, kept in it) the same loop also serves
    WAL_APPLY_COMPRESSED over the binary protocol (:class:`WalApplyDoor`), same TLS.
    ``head_timeout_s`` and ``body_timeout_s``: :func:`make_replica_app`'s.
    """

    def __init__(
        self,
        state: ReplicaState,
        *,
        auth: ApplyAuth,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        binary_port: int | None = None,
        head_timeout_s: float = HEAD_TIMEOUT_S,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self.state = state
        self.timeouts = {"head_timeout_s": head_timeout_s, "body_timeout_s": body_timeout_s}
        self.auth = auth
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.binary_port = binary_port
        self._door: WalApplyDoor | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wal-http", daemon=True)
        self._runner: web.AppRunner | None = None

    async def _start(self) -> int:
        app = make_replica_app(self.state, self.auth, **self.timeouts)
        self._runner = QuietRunner(app, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        if self.binary_port is not None:
            self._door = WalApplyDoor(self.state, self.auth)
            self.binary_port = await self._door.listener.start(
                self.host, self.binary_port, self.ssl_context
            )
        server = site._server  # the bound socket tells the port chosen for 0
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self.port

    def start(self, timeout_s: float = 30.0) -> int:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout_s)
        return self.port

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._door is not None:
            stopping = self._door.listener.stop()
            asyncio.run_coroutine_threadsafe(stopping, self._loop).result(timeout_s)
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        self._loop.close()
