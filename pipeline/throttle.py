"""Token buckets, and failed key checks counted per client address.

A :class:`TokenBucket` holds at most ``capacity`` tokens and refills at ``rate_per_s``.
:class:`FailureThrottle` gives each client address one bucket of failed attempts: each
failure takes a token, and an address whose bucket is empty is refused before its key is
looked at, so guessing keys runs at the configured rate at most. Every door that checks
keys uses it: the facade (both protocols, WAL apply included) and ``themis wal serve``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FailureThrottle", "TokenBucket"]


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
        self.per_minute = per_minute
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
            limit = float(self.per_minute)
            bucket = self._buckets[address] = TokenBucket(limit, limit / 60.0, limit, now)
        bucket.take(now)

    def _prune(self, now: float) -> None:
        full = [a for a, b in self._buckets.items() if b.wait(now, b.capacity) == 0.0]
        for address in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[address]
