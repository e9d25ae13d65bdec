"""The facade's request-duration histogram, counted in plain integers.

``prometheus_client``'s ``Histogram`` takes a lock and walks its buckets one by one for
each observation, a few microseconds on the path of every request. The facade's requests
are all timed on its one event loop, so :class:`RequestHistogram` keeps per label set a
list of bucket counts and a sum, adds to them with one binary search, and hands them to
Prometheus only when ``/metrics`` is scraped (a custom collector): the exposition is
the one a ``Histogram`` gives (``_bucket``, ``_count``, ``_sum``), without ``_created``.

The buckets (:data:`REQUEST_BUCKETS`) resolve microseconds where a facade answers in
them: 10 µs steps up to 100 µs, 25 µs steps up to 300 µs, 100 µs steps up to 1 ms, then
the project's usual latency buckets (:data:`~pipeline.metrics.LATENCY_BUCKETS`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from pipeline.metrics import LATENCY_BUCKETS

__all__ = ["REQUEST_BUCKETS", "RequestHistogram"]

_le_label: Callable[[float], str] = floatToGoString  # how a Histogram spells its bounds

REQUEST_BUCKETS: Final = (
    *(round(n * 10e-6, 6) for n in range(1, 10)),  # 10-90 µs
    *(round(n * 25e-6, 6) for n in range(4, 12)),  # 100-275 µs
    *(round(n * 100e-6, 6) for n in range(3, 10)),  # 300-900 µs
    *(b for b in LATENCY_BUCKETS if b >= 0.001),  # 1 ms and up
)
"""Upper bounds of the buckets, in seconds (``+Inf`` is added)."""


class RequestHistogram(Collector):
    """Durations (seconds) by label values, counted for a scrape to read.

    Observe from one thread only (the facade's event loop); a scrape on that loop
    reads a consistent state.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...] = REQUEST_BUCKETS,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = tuple(sorted(buckets))
        self._le = [_le_label(b) for b in self.bounds] + ["+Inf"]
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observer(self, *labels: str) -> Callable[[float], None]:
        """A function recording one duration (seconds) under ``labels``; keep it."""
        counts, total = self._series.setdefault(labels, ([0] * (len(self.bounds) + 1), [0.0]))
        bounds = self.bounds

        def observe(seconds: float) -> None:
            counts[bisect_left(bounds, seconds)] += 1
            total[0] += seconds

        return observe

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (counts, total) in self._series.items():
            cumulative, buckets = 0, []
            for le, count in zip(self._le, counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(list(labels), buckets, total[0])
        yield family
