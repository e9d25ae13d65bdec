"""The facade's own latency, read from its ``/metrics`` for the HTTP benchmark.

The facade records every request in the ``facade_request_duration_seconds``
histogram. :func:`histogram_buckets` reads one label set's cumulative bucket counts
out of a scrape (:func:`labelled_buckets` those of any histogram, such as the binary
door's ``facade_binary_handler_seconds``); :func:`bucket_quantile` takes a quantile
of the observations between two scrapes the way Prometheus' ``histogram_quantile`` does.
:func:`gauge_value` reads an unlabelled gauge (``facade_unacked_points``).
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Mapping
from typing import Final

from pipeline.errors import BenchmarkFailed

__all__ = [
    "HISTOGRAM",
    "bucket_quantile",
    "gauge_value",
    "histogram_buckets",
    "labelled_buckets",
    "loopback_get",
    "scrape",
]

HISTOGRAM: Final = "facade_request_duration_seconds"

_BUCKET_LINE: Final = re.compile(r"^(?P<name>\w+)_bucket\{(?P<labels>[^}]*)\} (?P<count>\S+)$")
_LABEL: Final = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def loopback_get(port: int, path: str) -> tuple[int, bytes] | None:
    """``(status, body)`` of a GET on 127.0.0.1, ``None`` while nothing listens."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def scrape(port: int) -> str:
    """The Prometheus exposition at ``/metrics`` on ``port``."""
    answer = loopback_get(port, "/metrics")
    if answer is None or answer[0] != 200:
        raise BenchmarkFailed(f"GET /metrics on port {port} answered {answer}")
    return answer[1].decode()


def histogram_buckets(
    metrics_text: str, route: str, method: str, status: str
) -> dict[float, float]:
    """Cumulative counts by upper bound (seconds; ``inf`` last) of one label set of
    :data:`HISTOGRAM`."""
    labels = {"route": route, "method": method, "status": status}
    return labelled_buckets(metrics_text, HISTOGRAM, labels)


def labelled_buckets(
    metrics_text: str, histogram: str, labels: Mapping[str, str]
) -> dict[float, float]:
    """Cumulative counts by upper bound (``inf`` last) of the series of ``histogram``
    whose labels include ``labels`` (``le`` aside)."""
    buckets: dict[float, float] = {}
    for line in metrics_text.splitlines():
        match = _BUCKET_LINE.match(line)
        if match is None or match["name"] != histogram:
            continue
        found = dict(_LABEL.findall(match["labels"]))
        if all(found.get(name) == value for name, value in labels.items()):
            buckets[float(found["le"])] = float(match["count"])
    return dict(sorted(buckets.items()))


def gauge_value(metrics_text: str, name: str) -> float | None:
    """The value of the unlabelled gauge ``name`` in a scrape, ``None`` if absent."""
    prefix = f"{name} "
    for line in metrics_text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


def bucket_quantile(
    before: Mapping[float, float], after: Mapping[float, float], q: float
) -> tuple[float, float, float]:
    """The ``q`` quantile (seconds) of the observations between two scrapes.

    Linear interpolation inside the bucket holding it, as Prometheus'
    ``histogram_quantile`` does (the first bucket starts at 0; a quantile in the
    ``+Inf`` bucket is the highest finite bound). Returns ``(value, lower, upper)``
    with the bounds of that bucket.
    """
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        raise BenchmarkFailed("the facade's histogram recorded no requests in the run")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower, lower, bound
            inside = cumulative - below
            share = (rank - below) / inside if inside else 1.0
            return lower + (bound - lower) * share, lower, bound
        lower, below = bound, cumulative
    return lower, lower, float("inf")
