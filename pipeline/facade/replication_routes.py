"""The facade's replication endpoints: WAL apply (replica side) and shipper control.

``POST /api/v1/wal/apply``
    The WAL issue's applier (:func:`pipeline.replication.handle_wal_apply`) into a replica
    state under ``<data_dir>/replica-facade``, for a shipper presenting a key of role
    ``replicator`` or, with ``themis facade --tls-client-ca``, a client certificate.
    With neither it answers 401 to everyone, whether or not ``facade.auth_enabled``:
    applying a WAL rewrites the replica's state, so it is never open.
``GET /api/v1/replication/stats`` (writer)
    The roadmap's shape: ``{"replicas": [...], "stats": {...}}`` from the shipper this
    facade runs (empty until a replica is added).
``POST /api/v1/replication/config`` (admin)
    ``{"compression_type": "zstd" | "none", "compression_level": 1-22}``, applied at once.
``POST /api/v1/replication/replicas`` (admin)
    ``{"replica_id": str, "endpoint": "kafka://host:port" | "https://..."}`` adds a replica.
``DELETE /api/v1/replication/replicas`` (admin)
    ``{"replica_id": str}`` removes one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from pipeline.config import Settings
from pipeline.errors import Conflict, InvalidArgument, InvalidRequest, NotFound, ThemisError
from pipeline.facade.app import BINARY_SERVER, FACADE_STATE
from pipeline.facade.auth import Role
from pipeline.facade.middleware import RouteSpec
from pipeline.metrics import WalShipperMetrics
from pipeline.replication import (
    APPLY_AUTH,
    REPLICA_STATE,
    ApplyAuth,
    ReplicaState,
    WalShipper,
    handle_wal_apply,
)
from pipeline.validation import parse_json

__all__ = [
    "SHIPPER",
    "ReplicationControl",
    "install_replication",
    "replication_routes",
]

_EMPTY_STATS = {
    "total_entries_shipped": 0,
    "total_bytes_shipped": 0,
    "total_bytes_uncompressed": 0,
    "avg_compression_ratio": 0.0,
    "total_batches": 0,
    "failed_ships": 0,
    "wal_partitions": 0,
}
"""The stats before the first replica is added (no shipper, WAL partitions not read yet)."""


class ReplicationControl:
    """The shipper a facade runs, created when the first replica is added."""

    def __init__(self, settings: Settings, bootstrap: str | None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.shipper: WalShipper | None = None
        self.metrics = WalShipperMetrics()
        wal = settings.compressed_wal_shipping
        self.compression = (wal.compression_type, wal.compression_level)

    def _ensure(self) -> WalShipper:
        if self.shipper is None:
            self.shipper = WalShipper(self.settings, bootstrap=self.bootstrap, metrics=self.metrics)
            self.shipper.configure_compression(*self.compression)
        return self.shipper

    def stats(self) -> dict[str, Any]:
        if self.shipper is None:
            return {"replicas": [], "stats": dict(_EMPTY_STATS)}
        return self.shipper.stats()

    def configure(self, compression_type: str, level: int) -> None:
        self.compression = (compression_type, level)
        if self.shipper is not None:
            self.shipper.configure_compression(compression_type, level)

    def apply_config(self, body: Any) -> dict[str, Any]:
        """Apply a ``POST /api/v1/replication/config`` body (either door); the answer."""
        kind = _field(body, "compression_type", str)
        level = _field(body, "compression_level", int)
        if kind not in ("zstd", "none"):
            raise InvalidRequest("field 'compression_type' must be 'zstd' or 'none'")
        if not 1 <= level <= 22:
            raise InvalidRequest("field 'compression_level' must be between 1 and 22")
        self.configure(kind, level)
        return {"success": True, "compression_type": kind, "compression_level": level}

    def close(self) -> None:
        if self.shipper is not None:
            self.shipper.close()


SHIPPER = web.AppKey("themis_replication", ReplicationControl)
"""Where the application keeps its :class:`ReplicationControl`."""


def _field(body: Any, name: str, kind: type) -> Any:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise InvalidRequest(f"field {name!r} must be a {kind.__name__}")
    return value


def _control(request: web.Request) -> ReplicationControl:
    return request.app[SHIPPER]


async def replication_stats(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(_control(request).stats))


async def replication_config(request: web.Request) -> web.Response:
    body = parse_json(await request.read())
    return web.json_response(_control(request).apply_config(body))


async def add_replica(request: web.Request) -> web.Response:
    body = parse_json(await request.read())
    replica_id = _field(body, "replica_id", str)
    endpoint = _field(body, "endpoint", str)
    if not replica_id:
        raise InvalidRequest("field 'replica_id' must not be empty")
    if not endpoint.startswith(("kafka://", "http://", "https://", "themis://", "themis+tls://")):
        raise InvalidRequest(
            "field 'endpoint' must start with kafka://, http://, https://, themis:// "
            "or themis+tls://"
        )
    try:
        await asyncio.to_thread(_control(request)._ensure().add_replica, replica_id, endpoint)
    except InvalidArgument as exc:  # the id or the endpoint
        raise InvalidRequest(f"replica {replica_id!r} not added: {exc}") from None
    except ThemisError as exc:  # already configured
        raise Conflict(f"replica {replica_id!r} not added: {exc}") from None
    return web.json_response({"success": True, "replica_id": replica_id, "endpoint": endpoint})


async def remove_replica(request: web.Request) -> web.Response:
    body = parse_json(await request.read())
    replica_id = _field(body, "replica_id", str)
    shipper = _control(request).shipper
    known = shipper is not None and any(
        r["replica_id"] == replica_id for r in shipper.stats()["replicas"]
    )
    if shipper is None or not known:
        raise NotFound(f"field 'replica_id': {replica_id!r} is not a replica")
    await asyncio.to_thread(shipper.remove_replica, replica_id)
    return web.json_response({"success": True, "replica_id": replica_id})


def replication_routes() -> list[RouteSpec]:
    """The endpoints of the module docstring, for ``create_facade(extra_routes=...)``."""
    return [
        RouteSpec("POST", "/api/v1/wal/apply", handle_wal_apply, None),
        RouteSpec("GET", "/api/v1/replication/stats", replication_stats, Role.WRITER),
        RouteSpec("POST", "/api/v1/replication/config", replication_config, Role.ADMIN),
        RouteSpec("POST", "/api/v1/replication/replicas", add_replica, Role.ADMIN),
        RouteSpec("DELETE", "/api/v1/replication/replicas", remove_replica, Role.ADMIN),
    ]


def install_replication(
    app: web.Application,
    settings: Settings,
    bootstrap: str | None,
    *,
    client_certificates: bool = False,
) -> None:
    """Mount the replication routes' state on ``app`` (routes via ``replication_routes``).

    ``client_certificates``: the facade's TLS verifies client certificates, so WAL apply
    trusts a connection that presented one.
    """
    control = ReplicationControl(settings, bootstrap)
    guard = app[FACADE_STATE].guard
    app[APPLY_AUTH] = ApplyAuth(
        guard.keyring.keys_of(Role.REPLICATOR),
        client_certificates=client_certificates,
        failures=guard.auth_failures,  # one count of failed key checks per address
        failures_setting="facade.rate_auth_failures_per_min",
    )
    app[SHIPPER] = control
    app[FACADE_STATE].extra_registries.append(control.metrics.registry)
    state = ReplicaState(settings.worker.data_dir / "replica-facade", settings)
    app[REPLICA_STATE] = state
    binary = app.get(BINARY_SERVER)
    if binary is not None:
        binary.serve_replication(control, state)

    async def close(app: web.Application) -> None:
        await asyncio.to_thread(control.close)
        state.close()

    app.on_cleanup.append(close)
