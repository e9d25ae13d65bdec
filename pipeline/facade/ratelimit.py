"""Token buckets per API key and route class.

A bucket holds at most ``per_minute`` tokens and refills at ``per_minute / 60`` tokens
per second; a request takes one token. So a key may burst up to one minute's quota and
then continues at the configured rate. An empty bucket answers with the seconds until
the next token (the ``Retry-After`` header, rounded up to whole seconds). The buckets,
and the throttle of failed key checks per address, are :mod:`pipeline.throttle`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from enum import StrEnum

from pipeline.config import FacadeSettings
from pipeline.throttle import TokenBucket

__all__ = ["RateLimiter", "RouteClass", "limits_from_settings"]


class RouteClass(StrEnum):
    """The routes that share one quota (the roadmap's recommended limits)."""

    TS_PUT = "ts_put"
    VECTORS_ADD = "vectors_add"
    FLUSH = "flush"


def limits_from_settings(settings: FacadeSettings) -> dict[RouteClass, int]:
    """Requests per minute for each route class."""
    return {
        RouteClass.TS_PUT: settings.rate_ts_put_per_min,
        RouteClass.VECTORS_ADD: settings.rate_vectors_add_per_min,
        RouteClass.FLUSH: settings.rate_flush_per_min,
    }


class RateLimiter:
    """One bucket per ``(caller, route class)``, created full on first use."""

    def __init__(
        self,
        per_minute: Mapping[RouteClass, int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_minute = dict(per_minute)
        self._clock = clock
        self._buckets: dict[tuple[str, RouteClass], TokenBucket] = {}

    def retry_after(self, caller: str, route_class: RouteClass) -> int:
        """0 if the request may go ahead (a token is taken), else whole seconds to wait (>= 1)."""
        now = self._clock()
        bucket = self._buckets.get((caller, route_class))
        if bucket is None:
            limit = float(self._per_minute[route_class])
            bucket = TokenBucket(limit, limit / 60.0, limit, now)
            self._buckets[(caller, route_class)] = bucket
        wait = bucket.take(now)
        return 0 if wait == 0.0 else max(1, math.ceil(wait))
