"""ThemisDB client (``themisdb-client``): buffered time-series and vector writes that are
never silently lost, direct writes, queries, k-NN search and replication control, over
HTTP or the binary protocol. See ``docs/clients/PYTHON_AUTO_BUFFER.md``."""

from themisdb.aio import (
    AsyncThemisClient,
    AsyncThemisReplicationClient,
    AsyncThemisTimeSeriesClient,
    AsyncThemisVectorClient,
)
from themisdb.client import (
    ThemisClient,
    ThemisReplicationClient,
    ThemisTimeSeriesClient,
    ThemisVectorClient,
)
from themisdb.config import ClientConfig, parse_conf
from themisdb.errors import (
    AuthenticationError,
    BufferOverflowError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerUnavailableError,
    ThemisError,
    ValidationError,
    WriteError,
)
from themisdb.writer import Counters

__version__ = "1.2.0"

__all__ = [
    "AsyncThemisClient",
    "AsyncThemisReplicationClient",
    "AsyncThemisTimeSeriesClient",
    "AsyncThemisVectorClient",
    "AuthenticationError",
    "BufferOverflowError",
    "ClientConfig",
    "ConfigurationError",
    "Counters",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ServerUnavailableError",
    "ThemisClient",
    "ThemisError",
    "ThemisReplicationClient",
    "ThemisTimeSeriesClient",
    "ThemisVectorClient",
    "ValidationError",
    "WriteError",
    "parse_conf",
]
