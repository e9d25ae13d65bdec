"""The HTTP ingest facade (``themis facade``): the roadmap's REST API in front of Kafka."""

from pipeline.facade.app import (
    FACADE_STATE,
    Facade,
    RecordProducer,
    RequestRejected,
    RouteSpec,
    create_facade,
    mount_routes,
)
from pipeline.facade.auth import ApiKeyring, Role
from pipeline.facade.ratelimit import RateLimiter, RouteClass

__all__ = [
    "FACADE_STATE",
    "ApiKeyring",
    "Facade",
    "RateLimiter",
    "RecordProducer",
    "RequestRejected",
    "Role",
    "RouteClass",
    "RouteSpec",
    "create_facade",
    "mount_routes",
]
