"""One replica's replication stats: per WAL partition and in total over its partitions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.replication.link import ReplicaCounters, ReplicaLink
from pipeline.wal.entry import format_lsn

__all__ = ["replica_stats"]


def replica_stats(links: Sequence[ReplicaLink]) -> tuple[dict[str, Any], ReplicaCounters]:
    """``(the replica's entry in /api/v1/replication/stats, its totals)`` from its links.

    The entry keeps the single-partition fields, now over every partition:
    ``last_confirmed_lsn`` the sum of the partitions' confirmed LSNs (the LSN itself
    with one partition), ``lag_bytes`` the sum, ``lag_ms`` the worst, ``is_healthy``
    whether every partition is, ``last_entry_lag_ms`` that of the partition whose entry
    became queryable last; ``partitions`` lists the same per partition with its
    counters (``entries_shipped``, ``bytes_shipped``, ``bytes_uncompressed``,
    ``batches``, ``failed_ships``), which sum to the replica's totals.
    """
    totals = ReplicaCounters()
    partitions: list[dict[str, Any]] = []
    confirmed_sum = lag_bytes_sum = worst_ms = 0
    last_lag, last_lag_at = 0, -1.0
    healthy = bool(links)
    for link in links:
        lag_bytes, lag_ms = link.lag()
        link_healthy = link.healthy()
        with link.lock:
            c = ReplicaCounters(**vars(link.counters))
            confirmed = link.confirmed_lsn
            entry_lag, entry_lag_at = link.last_lag_ms, link.last_lag_at
        totals.add(c)
        confirmed_sum += confirmed
        lag_bytes_sum += lag_bytes
        worst_ms = max(worst_ms, lag_ms)
        healthy = healthy and link_healthy
        if entry_lag_at > last_lag_at:
            last_lag, last_lag_at = entry_lag, entry_lag_at
        partitions.append(
            {
                "partition": link.partition,
                "last_confirmed_lsn": format_lsn(confirmed),
                "lag_bytes": lag_bytes,
                "lag_ms": lag_ms,
                "is_healthy": link_healthy,
                "last_entry_lag_ms": entry_lag,
                "entries_shipped": c.entries_shipped,
                "bytes_shipped": c.bytes_shipped,
                "bytes_uncompressed": c.bytes_uncompressed,
                "batches": c.batches,
                "failed_ships": c.failed_ships,
            }
        )
    first = links[0] if links else None
    entry = {
        "replica_id": first.replica_id if first is not None else "",
        "endpoint": first.endpoint if first is not None else "",
        "last_confirmed_lsn": format_lsn(confirmed_sum),
        "lag_bytes": lag_bytes_sum,
        "lag_ms": worst_ms,
        "is_healthy": healthy,
        "last_entry_lag_ms": last_lag,
        "entries_shipped": totals.entries_shipped,
        "partitions": partitions,
    }
    return entry, totals
