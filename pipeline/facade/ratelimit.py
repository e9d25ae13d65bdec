"""Token buckets per API key and route class.

A bucket holds at most ``per_minute`` tokens and refills at ``per_minute / 60`` tokens
per second; a request takes one token. So a key may burst up to one minute's quota and
then continues at the configured rate. An empty bucket answers with the seconds until
the next token (the ``Retry-After`` header, rounded up to whole seconds).

:class:`FailureThrottle` uses the same buckets for failed key checks per client address:
each failure takes a token, and an address whose bucket is empty is refused before its
key is looked at, so guessing keys runs at the configured rate at most.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from pipeline.config import FacadeSettings

__all__ = ["FailureThrottle", "RateLimiter", "RouteClass", "TokenBucket", "limits_from_settings"]


class RouteClass(StrEnum):
    """The routes that share one quota (the roadmap's recommended limits)."""

    TS_PUT = "ts_put"
    VECTORS_ADD = "vectors_add"
    FLUSH = "flush"


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate_per_s``; times are monotonic seconds."""

    capacity: float
    rate_per_s: float
    tokens: float
    updated: float

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; returns 0.0 on success, else the seconds until there are enough."""
        wait = self.wait(now, cost)
        if wait == 0.0:
            self.tokens -= cost
        return wait

    def wait(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are there (0.0: now), taking none."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= cost:
            return 0.0
        return (cost - self.tokens) / self.rate_per_s


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


class FailureThrottle:
    """Failed attempts per client address: ``per_minute`` of them in a burst, then that
    many a minute. :meth:`retry_after` says whether an address may try at all.

    At most ``max_addresses`` buckets are kept; when full, the buckets that refilled
    (addresses that stopped failing) are dropped, and if none did, the oldest half.
    """

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 100_000,
    ) -> None:
        self._per_minute = float(per_minute)
        self._clock = clock
        self._max = max_addresses
        self._buckets: dict[str, TokenBucket] = {}

    def retry_after(self, address: str) -> int:
        """0 if ``address`` may try (nothing is taken), else whole seconds to wait (>= 1)."""
        bucket = self._buckets.get(address)
        if bucket is None:
            return 0
        wait = bucket.wait(self._clock())
        return 0 if wait == 0.0 else max(1, math.ceil(wait))

    def failed(self, address: str) -> None:
        """Count one failure of ``address``."""
        now = self._clock()
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._prune(now)
            limit = self._per_minute
            bucket = self._buckets[address] = TokenBucket(limit, limit / 60.0, limit, now)
        bucket.take(now)

    def _prune(self, now: float) -> None:
        full = [a for a, b in self._buckets.items() if b.wait(now, b.capacity) == 0.0]
        for address in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[address]
