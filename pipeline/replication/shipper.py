"""``WalShipper``: ships the primary's WAL, batched and compressed, to every replica.

Each replica has one thread per WAL partition
(:class:`~pipeline.replication.link.ReplicaLink`), each with its own position (LSNs
count per partition) and its own consumer on that partition of ``<namespace>.wal``
(the primary cluster), so a replica's partitions ship in parallel; a replica that is
down retries with bounded exponential backoff and jitter while the others carry on.
Partitions added to the WAL topic are picked up within :data:`PARTITION_REFRESH_S`
seconds (their links start from LSN 1). Endpoints and what confirms a batch:
:mod:`pipeline.replication.targets`.

Batching (defaults below): a batch closes at :data:`MAX_BATCH_ENTRIES` entries,
:data:`MAX_BATCH_BYTES` bytes of entry records, :data:`MAX_BATCH_INTERVAL_MS` after its
first entry was read, or as soon as no more records are fetched: an entry ships as soon
as it is read, and what arrives while one batch is on its way makes the next. Every
batch is compressed with the current ``compression_type``/``compression_level``
(:meth:`WalShipper.configure_compression` changes them while running).

Confirmations are persisted as committed offsets of the consumer group
``<app_id>-wal-<replica_id>`` on the primary cluster, one offset per WAL partition
(committed offset = last confirmed LSN, because LSN = offset + 1), after every
confirmed batch.
After a crash each replica resumes from there; a batch confirmed but not yet
committed is sent again and the replica skips the entries it already applied.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import threading
from collections.abc import Callable
from typing import Any, Final

from pipeline.config import Settings
from pipeline.errors import ConfigError, Conflict, InvalidArgument, NotFound, ThemisError
from pipeline.metrics import WalShipperMetrics
from pipeline.replication.link import ReplicaCounters, ReplicaLink
from pipeline.replication.link_stats import replica_stats
from pipeline.replication.targets import open_target
from pipeline.wal.batch import BatchHeader, Codec, Dictionary
from pipeline.wal.writer import topic_partition_count

_LOG = logging.getLogger(__name__)

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ENTRIES",
    "MAX_BATCH_INTERVAL_MS",
    "PARALLEL_SHIPS",
    "PARTITION_REFRESH_S",
    "WalShipper",
]

MAX_BATCH_ENTRIES: Final = 1000
"""A batch holds at most this many entries."""
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024
"""A batch closes once its entry records reach this many bytes (uncompressed)."""
MAX_BATCH_INTERVAL_MS: Final = 50
"""A batch closes this many milliseconds after its first entry was read."""
PARTITION_REFRESH_S: Final = 5.0
"""The WAL topic's partition count is read again this often (seconds)."""
PARALLEL_SHIPS: Final = os.cpu_count() or 2
"""Batches to one replica encoded and shipped at once at most (one per core): more
partitions than cores take turns, so their batches grow instead of time-slicing the
cores (and one interpreter) in short, slower pieces."""


class WalShipper:
    """Ships the primary's WAL to replicas (see the module docstring).

    ``bootstrap`` is the primary cluster, ``primary_id`` names this primary in
    every batch. ``dictionary`` (optional) is a trained zstd dictionary used for
    zstd batches. ``max_batch_*`` override :data:`MAX_BATCH_ENTRIES`,
    :data:`MAX_BATCH_BYTES` and :data:`MAX_BATCH_INTERVAL_MS`. ``on_queryable`` (optional,
    called from the replica's shipping thread) gets ``(replica_id, lags_ms)`` whenever
    entries became queryable on a replica: each entry's lag in milliseconds, as
    ``lag_ms`` in :meth:`stats` counts it. ``parallel_ships`` bounds how many of a
    replica's partitions encode and ship a batch at once (:data:`PARALLEL_SHIPS`).
    Call :meth:`close` to stop every replica's threads.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: str | None = None,
        primary_id: str | None = None,
        metrics: WalShipperMetrics | None = None,
        dictionary: Dictionary | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_batch_entries: int = MAX_BATCH_ENTRIES,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        max_batch_interval_ms: int = MAX_BATCH_INTERVAL_MS,
        on_queryable: Callable[[str, list[int]], None] | None = None,
        parallel_ships: int = PARALLEL_SHIPS,
    ) -> None:
        if max_batch_entries < 1 or max_batch_bytes < 1 or max_batch_interval_ms < 0:
            raise InvalidArgument(
                "batch limits: max_batch_entries and max_batch_bytes must be >= 1 and "
                f"max_batch_interval_ms >= 0; got {max_batch_entries}, {max_batch_bytes}, "
                f"{max_batch_interval_ms}"
            )
        self.max_batch_entries = max_batch_entries
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_interval_ms = max_batch_interval_ms
        if parallel_ships < 1:
            raise InvalidArgument(f"parallel_ships must be >= 1; got {parallel_ships}")
        self.parallel_ships = parallel_ships
        self._slots: dict[str, threading.Semaphore] = {}
        self._on_queryable = on_queryable
        resolved = bootstrap or settings.kafka.bootstrap_servers
        if not resolved:
            raise ConfigError(
                "the WAL shipper needs the primary cluster: set KAFKA_BOOTSTRAP_SERVERS"
            )
        self.settings = settings
        self.bootstrap = resolved
        self.primary_id = primary_id or settings.worker.app_id
        self.metrics = metrics
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        self._links: dict[str, list[ReplicaLink]] = {}
        """Each replica's links, one per WAL partition (index = partition)."""
        self._endpoints: dict[str, str] = {}
        self._removed = ReplicaCounters()
        self._partitions = 0
        """The WAL topic's partition count as last read (0: not read yet)."""
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        wal = settings.compressed_wal_shipping
        self._codec = Codec.from_name(wal.compression_type)
        self._level = wal.compression_level
        self._dictionary = dictionary
        if dictionary is None and wal.dictionary_file:
            self._dictionary = Dictionary.from_file(
                wal.dictionary_file, "compressed_wal_shipping.dictionary_file"
            )
        self._total_uncompressed = 0
        self._total_shipped = 0

    # -- configuration ----------------------------------------------------

    def configure_compression(self, compression_type: str, level: int) -> None:
        """Compress the following batches with ``compression_type`` (zstd|none) at ``level``."""
        codec = Codec.from_name(compression_type)  # InvalidArgument names the allowed codecs
        if not 1 <= level <= 22:
            raise InvalidArgument(f"compression level must be 1..22 (zstd's range); got {level}")
        with self._lock:
            self._codec, self._level = codec, level

    def compression(self) -> tuple[Codec, int, Dictionary | None]:
        """The codec, level and dictionary the next batch is compressed with."""
        with self._lock:
            return self._codec, self._level, self._dictionary

    def add_replica(self, replica_id: str, endpoint: str) -> None:
        """Start shipping to ``endpoint`` (``kafka://host:port`` or ``http(s)://...``).

        One link per WAL partition, each resuming from the LSN this replica confirmed
        last in that partition (a new replica: from the start). Raises
        :class:`~pipeline.errors.InvalidArgument` for a malformed id or endpoint and
        :class:`~pipeline.errors.Conflict` if ``replica_id`` is already configured.
        """
        if not replica_id.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument(f"replica id {replica_id!r} must be letters, digits, '-' or '_'")
        with self._lock:
            if replica_id in self._links:
                raise Conflict(
                    f"replica {replica_id!r} is already configured; remove it first "
                    "or choose another id"
                )
        partitions = self.wal_partitions()
        links: list[ReplicaLink] = []
        try:
            for partition in range(partitions):
                links.append(self._open_link(replica_id, endpoint, partition))
        except BaseException:
            for link in links:
                link.close_unstarted()
            raise
        with self._lock:
            self._links[replica_id] = links
            self._endpoints[replica_id] = endpoint
        if self.metrics is not None:  # at 0 before the first failure, for rate() to answer
            self.metrics.wal_shipper_failures_total.labels(replica_id)
        for link in links:
            link.start()
        self._start_watcher()

    def _open_link(self, replica_id: str, endpoint: str, partition: int) -> ReplicaLink:
        target = open_target(endpoint, self.settings, self.ssl_context, partition=partition)
        try:
            return ReplicaLink(self, replica_id, endpoint, target, partition)
        except BaseException:
            target.close()
            raise

    def wal_partitions(self) -> int:
        """The WAL topic's partition count (read from the primary cluster, never less
        than the count seen before)."""
        count = topic_partition_count(self.bootstrap, self.settings.topic("wal"))
        with self._lock:
            self._partitions = max(self._partitions, count)
            return self._partitions

    def refresh_partitions(self) -> int:
        """Start links for WAL partitions added since; returns how many were started."""
        partitions = self.wal_partitions()
        started = 0
        with self._lock:
            wanted = [
                (replica_id, self._endpoints[replica_id], p)
                for replica_id, links in self._links.items()
                for p in range(len(links), partitions)
            ]
        for replica_id, endpoint, partition in wanted:
            link = self._open_link(replica_id, endpoint, partition)
            with self._lock:
                links = self._links.get(replica_id)
                if links is None or len(links) != partition:  # removed or raced meanwhile
                    link.close_unstarted()
                    continue
                links.append(link)
            link.start()
            started += 1
        return started

    def _start_watcher(self) -> None:
        with self._lock:
            if self._watcher is not None:
                return
            self._watcher = threading.Thread(
                target=self._watch_partitions, name="wal-ship-partitions", daemon=True
            )
        self._watcher.start()

    def _watch_partitions(self) -> None:
        while not self._closing.wait(PARTITION_REFRESH_S):
            try:
                self.refresh_partitions()
            except Exception:  # the primary cluster: the next round tries again
                _LOG.exception("reading the WAL topic's partitions failed")

    def remove_replica(self, replica_id: str, timeout_s: float = 30.0) -> None:
        """Stop shipping to ``replica_id``; its confirmed positions stay committed.

        Waits up to ``timeout_s`` seconds for its threads. Raises
        :class:`~pipeline.errors.NotFound` if ``replica_id`` is not configured.
        """
        with self._lock:
            links = self._links.pop(replica_id, None)
            self._endpoints.pop(replica_id, None)
            self._slots.pop(replica_id, None)
        if links is None:
            raise self._not_found(replica_id)
        for link in links:
            link.stop.set()
        for link in links:
            link.join(timeout_s)
            with link.lock:
                self._removed.add(link.counters)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop every replica's threads (positions are committed after each batch anyway)."""
        self._closing.set()
        with self._lock:
            replica_ids = list(self._links)
            watcher = self._watcher
        for replica_id in replica_ids:
            with contextlib.suppress(NotFound):  # removed meanwhile by another thread
                self.remove_replica(replica_id, timeout_s)
        if watcher is not None:
            watcher.join(timeout_s)

    # -- progress ---------------------------------------------------------

    def _all_links(self) -> list[ReplicaLink]:
        with self._lock:
            return [link for links in self._links.values() for link in links]

    def caught_up(self) -> bool:
        """Whether every replica confirmed every WAL partition's end (as last seen) and
        none failed."""
        for link in self._all_links():
            if link.error is not None:
                raise ThemisError(f"shipping to {link.replica_id} stopped: {link.error}")
            with link.lock:
                if not link.end_known or link.confirmed_lsn < link.wal_end_lsn:
                    return False
        return True

    def confirmed_lsns(self, replica_id: str) -> dict[int, int]:
        """The last LSN ``replica_id`` confirmed in each WAL partition (0: none)."""
        out: dict[int, int] = {}
        for link in self._replica_links(replica_id):
            with link.lock:
                out[link.partition] = link.confirmed_lsn
        return out

    def confirmed_lsn(self, replica_id: str) -> int:
        """The entries ``replica_id`` confirmed: the sum of its partitions' confirmed
        LSNs (with one partition, its last confirmed LSN); ``NotFound`` if not configured."""
        return sum(self.confirmed_lsns(replica_id).values())

    def _replica_links(self, replica_id: str) -> list[ReplicaLink]:
        with self._lock:
            links = self._links.get(replica_id)
        if links is None:
            raise self._not_found(replica_id)
        return list(links)

    def _not_found(self, replica_id: str) -> NotFound:
        with self._lock:
            known = ", ".join(sorted(self._links)) or "none"
        return NotFound(f"replica {replica_id!r} is not configured (configured: {known})")

    def record_confirmed(self, header: BatchHeader) -> None:
        """Count a batch a replica confirmed (totals and metrics)."""
        with self._lock:
            self._total_uncompressed += header.uncompressed_bytes
            self._total_shipped += header.batch_bytes
            ratio = self._total_uncompressed / self._total_shipped
        if self.metrics is not None:
            self.metrics.wal_shipper_bytes_uncompressed_total.inc(header.uncompressed_bytes)
            self.metrics.wal_shipper_bytes_shipped_total.inc(header.batch_bytes)
            self.metrics.wal_shipper_batches_total.inc()
            self.metrics.wal_shipper_compression_ratio.set(ratio)

    def record_queryable(self, replica_id: str, lags_ms: list[int]) -> None:
        """Entries became queryable on ``replica_id`` this many ms after their WAL timestamps."""
        if self._on_queryable is not None:
            self._on_queryable(replica_id, lags_ms)

    def record_failure(self, replica_id: str, bytes_sent: int) -> None:
        """Count a failed ship to ``replica_id``; ``bytes_sent`` reached it anyway."""
        if self.metrics is not None:
            self.metrics.wal_shipper_failures_total.labels(replica_id).inc()
            if bytes_sent:
                self.metrics.wal_shipper_bytes_shipped_total.inc(bytes_sent)

    def ship_slot(self, replica_id: str) -> threading.Semaphore:
        """The semaphore bounding ``replica_id``'s partitions shipping at once."""
        with self._lock:
            slot = self._slots.get(replica_id)
            if slot is None:
                slot = self._slots[replica_id] = threading.Semaphore(self.parallel_ships)
            return slot

    def publish_lag(self, replica_id: str) -> None:
        """Set the replica's lag gauges: bytes summed over its partitions, the worst ms."""
        if self.metrics is None:
            return
        with self._lock:
            links = list(self._links.get(replica_id, ()))
        lags = [link.lag() for link in links]
        self.metrics.wal_shipper_lag_bytes.labels(replica_id).set(sum(b for b, _ in lags))
        worst_ms = max((ms for _, ms in lags), default=0)
        self.metrics.wal_shipper_lag_seconds.labels(replica_id).set(worst_ms / 1000.0)

    def stats(self) -> dict[str, Any]:
        """The roadmap's replication stats: ``{"replicas": [...], "stats": {...}}``.

        Per replica, totals over its WAL partitions plus ``partitions``: the same
        figures per partition (:func:`~pipeline.replication.link_stats.replica_stats`).
        ``last_confirmed_lsn`` is the sum of the partitions' confirmed LSNs (with one
        partition, the last confirmed LSN), ``lag_bytes`` the sum, ``lag_ms`` the worst
        partition's, ``is_healthy`` whether every partition is healthy,
        ``last_entry_lag_ms`` that of the entry that became queryable last in any
        partition. ``stats.wal_partitions`` is the WAL topic's partition count.

        ``total_bytes_shipped`` counts batch bytes sent (retries of a batch the replica
        received but refused included); ``avg_compression_ratio`` is
        ``total_bytes_uncompressed / total_bytes_shipped``. ``lag_bytes`` is exact for
        entries the shipper read and estimated at the average entry size beyond.

        ``lag_ms`` is end to end: milliseconds from the WAL timestamp of the oldest entry
        not yet queryable on the replica (stamped when the primary appended it, just
        before the broker acknowledged it) to now; 0 when every entry the WAL holds is
        queryable there. Queryable means applied by the replica: confirmed by an HTTP or
        binary replica (they answer after applying), reported applied by a Kafka
        replica's applier (``last_applied_lsn``, sent after every batch). An entry not
        read yet counts from when the shipper first saw the WAL's end beyond the
        replica (read every half second). ``last_entry_lag_ms`` is the same time for the
        entry that became queryable last, measured when it did: the figure
        ``themis bench wal`` reports as ``lag_under_load_ms``.
        """
        with self._lock:
            per_replica = {rid: list(links) for rid, links in self._links.items()}
            totals = ReplicaCounters(**vars(self._removed))
            partitions = self._partitions
        replicas = []
        for links in per_replica.values():
            entry, counters = replica_stats(links)
            totals.add(counters)
            replicas.append(entry)
        ratio = totals.bytes_uncompressed / totals.bytes_shipped if totals.bytes_shipped else 0.0
        return {
            "replicas": replicas,
            "stats": {
                "total_entries_shipped": totals.entries_shipped,
                "total_bytes_shipped": totals.bytes_shipped,
                "total_bytes_uncompressed": totals.bytes_uncompressed,
                "avg_compression_ratio": round(ratio, 3),
                "total_batches": totals.batches,
                "failed_ships": totals.failed_ships,
                "wal_partitions": partitions,
            },
        }
