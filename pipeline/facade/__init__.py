"""The HTTP ingest facade (``themis facade``): the roadmap's REST API in front of Kafka.

``app`` (:func:`create_facade` wiring, :class:`Facade` state and lifecycle),
``middleware`` (auth, body limit, rate limit, request metrics, errors to HTTP statuses),
``validation`` (request bodies and query parameters, the reference checks),
``ts_bodies`` and ``vector_bodies`` (the write bodies decoded in C, the reference behind),
``deliveries`` (what is in flight; single points sent together), ``ts_routes`` and
``vector_routes`` (the roadmap's endpoints), ``replication_routes`` (WAL apply and
shipper control), ``auth`` (API keys and roles), ``ratelimit`` (token buckets),
``connections`` (header and body timeouts, malformed heads answered without echo, the
runner), ``cli`` (``themis facade``).
"""

from pipeline.facade.app import Facade, create_facade
from pipeline.facade.auth import ApiKeyring, Role
from pipeline.facade.ratelimit import RateLimiter, RouteClass

__all__ = [
    "ApiKeyring",
    "Facade",
    "RateLimiter",
    "Role",
    "RouteClass",
    "create_facade",
]
