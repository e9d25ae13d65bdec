"""Prometheus metrics of the pipeline, with the roadmap's names.

One :class:`PipelineMetrics` per process, on its own registry, served by the worker's
web server at ``/metrics``. Durations are in seconds.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["LATENCY_BUCKETS", "PipelineMetrics", "WalShipperMetrics"]

LATENCY_BUCKETS: Final = (
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Histogram buckets of request and handler times at the front doors (seconds)."""
_FLUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PipelineMetrics:
    """Every metric the worker exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ts_points_buffered = Counter(
            "ts_auto_buffer_points_buffered", "Points accepted into the TS auto buffer.", registry=r
        )
        self.ts_points_flushed = Counter(
            "ts_auto_buffer_points_flushed",
            "Points written durably as Gorilla blocks.",
            registry=r,
        )
        self.ts_flush_count = Counter(
            "ts_auto_buffer_flush_count",
            "Flushes of the TS auto buffer, by trigger (size, time, memory, manual, revoke).",
            ["reason"],
            registry=r,
        )
        self.ts_compression_ratio = Gauge(
            "ts_auto_buffer_compression_ratio",
            "Average compression ratio: 16 raw bytes per point over block bytes.",
            registry=r,
        )
        self.ts_current_size = Gauge(
            "ts_auto_buffer_current_size", "Points buffered now, not yet durable.", registry=r
        )
        self.ts_flush_duration = Histogram(
            "ts_auto_buffer_flush_duration_seconds",
            "Time to encode a flush into blocks and have the broker acknowledge them.",
            buckets=_FLUSH_BUCKETS,
            registry=r,
        )
        self.vec_buffered = Counter(
            "vector_auto_buffer_vectors_buffered",
            "Vector operations accepted into the vector auto buffer.",
            registry=r,
        )
        self.vec_flushed = Counter(
            "vector_auto_buffer_vectors_flushed",
            "Vectors (after coalescing) applied to the HNSW index.",
            registry=r,
        )
        self.vec_current_size = Gauge(
            "vector_auto_buffer_current_size", "Vector operations buffered now.", registry=r
        )
        self.vec_flush_duration = Histogram(
            "vector_auto_buffer_flush_duration_seconds",
            "Time to apply one coalesced batch to the HNSW index.",
            buckets=_FLUSH_BUCKETS,
            registry=r,
        )
        self.vec_search_latency = Histogram(
            "vector_search_latency_seconds",
            "Time of one k-NN search over the shards a worker holds.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.vec_snapshot_duration = Histogram(
            "vector_index_snapshot_duration_seconds",
            "Time to write one index shard snapshot.",
            buckets=_FLUSH_BUCKETS,
            registry=r,
        )
        self.vec_snapshot_failures = Counter(
            "vector_index_snapshot_failures",
            "Shard snapshots that could not be written (a full or failing disk); retried.",
            registry=r,
        )
        self.dead_letters = Counter(
            "pipeline_dead_letters",
            "Records sent to the dead-letter topic, by source topic.",
            ["source_topic"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)


class WalShipperMetrics:
    """The WAL shipper's metrics, on a registry of their own (served by the process that
    ships: ``themis wal ship --metrics-port`` or the facade)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.wal_shipper_bytes_uncompressed_total = Counter(
            "wal_shipper_bytes_uncompressed",
            "WAL batch bodies confirmed by replicas, before compression (bytes).",
            registry=r,
        )
        self.wal_shipper_bytes_shipped_total = Counter(
            "wal_shipper_bytes_shipped",
            "WAL batch bytes sent to replicas, compressed, headers included (bytes).",
            registry=r,
        )
        self.wal_shipper_compression_ratio = Gauge(
            "wal_shipper_compression_ratio",
            "Uncompressed bytes over shipped bytes of all confirmed WAL batches.",
            registry=r,
        )
        self.wal_shipper_batches_total = Counter(
            "wal_shipper_batches", "WAL batches confirmed by replicas.", registry=r
        )
        self.wal_shipper_failures_total = Counter(
            "wal_shipper_failures",
            "Failed attempts to ship a WAL batch, by replica.",
            ["replica"],
            registry=r,
        )
        self.wal_shipper_lag_seconds = Gauge(
            "wal_shipper_lag_seconds",
            "Age of the oldest WAL entry not yet queryable on a replica, from its WAL timestamp "
            "(0 when every entry is).",
            ["replica"],
            registry=r,
        )
        self.wal_shipper_lag_bytes = Gauge(
            "wal_shipper_lag_bytes",
            "WAL entry bytes after the replica's confirmed LSN (0 when caught up).",
            ["replica"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
