"""The apply phase of ``themis bench wal``: a replica applying one WAL partition against N.

:func:`measure_apply` takes the mixed stream (Gorilla blocks and vector batches,
:mod:`pipeline.bench.wal_streams`), encodes it twice as TWB2 batches of
:data:`~pipeline.bench.wal_streams.BATCH_ENTRIES` entries at zstd level 3 (outside the
timing) and applies each encoding to a fresh :class:`~pipeline.replication.ReplicaState`:

* one partition: every entry in partition 0, the batches applied one after another;
* N partitions: entry ``i`` in partition ``i mod N`` (each partition with its own LSNs
  and its own vector shard), one thread per partition applying that partition's batches.

Both are timed from the first batch handed over to the last applied, in the same run,
one after the other, best of :data:`APPLY_ROUNDS` each in turn. The ratio is what the
partitioned replica gains on this machine; the threads share one interpreter, so
only the parts that release the GIL (zstd, hnswlib, SQLite) overlap.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pipeline.bench.harness import progress, rounded
from pipeline.bench.wal_streams import BATCH_ENTRIES, entries
from pipeline.config import Settings
from pipeline.errors import BenchmarkFailed
from pipeline.replication import ReplicaState
from pipeline.wal.batch import encode_batch, read_header
from pipeline.wal.entry import EntryType, WalEntry

__all__ = ["APPLY_ROUNDS", "DEFINITIONS", "measure_apply"]

APPLY_ROUNDS: Final = 3
"""Timed applies per layout (the best counts), one layout after the other."""
_LEVEL: Final = 3

DEFINITIONS: Mapping[str, str] = {
    "apply_entries_per_s_1_partition": "WAL entries per second a ReplicaState applies from "
    f"TWB2 batches ({BATCH_ENTRIES} entries, zstd 3) of the mixed stream, all in WAL "
    f"partition 0, one batch after another; best of {APPLY_ROUNDS}",
    "apply_entries_per_s_partitioned": "the same entries spread over apply.partitions WAL "
    "partitions (one per vectors.ops partition; entry i in partition i mod N), one thread "
    "per partition; same run, best "
    f"of {APPLY_ROUNDS} timed in turn with the single partition's",
    "apply_speedup_partitioned": "apply_entries_per_s_partitioned / "
    "apply_entries_per_s_1_partition",
}


def _batches(stream: list[WalEntry], partitions: int) -> list[list[bytes]]:
    """Each partition's batches: entry ``i`` in partition ``i mod partitions``, LSNs 1 on."""
    split: list[list[WalEntry]] = [[] for _ in range(partitions)]
    for i, entry in enumerate(stream):
        mine = split[i % partitions]
        p = i % partitions
        mine.append(WalEntry(len(mine) + 1, entry.type, entry.timestamp_ms, entry.payload, p))
    return [
        [
            encode_batch(part[i : i + BATCH_ENTRIES], "zstd", _LEVEL, "bench", partition=p)
            for i in range(0, len(part), BATCH_ENTRIES)
        ]
        for p, part in enumerate(split)
    ]


def _apply_seconds(
    settings: Settings, per_partition: list[list[bytes]], work_dir: Path | None
) -> float:
    """Seconds a fresh replica takes to apply ``per_partition``, one thread per partition."""
    with tempfile.TemporaryDirectory(dir=work_dir) as directory:
        state = ReplicaState(Path(directory), settings)
        errors: list[BaseException] = []

        def apply(batches: list[bytes]) -> None:
            try:
                for batch in batches:
                    state.apply_batch(batch)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=apply, args=(b,)) for b in per_partition]
        try:
            t0 = time.perf_counter()
            if len(threads) == 1:
                apply(per_partition[0])
            else:
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            seconds = time.perf_counter() - t0
            applied = state.entries_applied_total
        finally:
            state.close()
    if errors:
        raise BenchmarkFailed(f"apply: {errors[0]!r}")
    expected = sum(read_header(b).entry_count for batches in per_partition for b in batches)
    if applied != expected:
        raise BenchmarkFailed(f"apply: {applied} of {expected} entries applied")
    return seconds


def measure_apply(
    settings: Settings,
    payloads: list[tuple[EntryType, bytes]],
    partitions: int,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """The ``apply_*`` figures (module docstring) with ``partitions`` partitions; the
    replicas' state goes to temporary directories under ``work_dir`` (default: the
    system's)."""
    stream = entries(payloads)
    layouts = {1: _batches(stream, 1), partitions: _batches(stream, partitions)}
    progress(f"apply: {len(stream):,} entries, 1 partition against {partitions}, in turn")
    best = dict.fromkeys(layouts, float("inf"))
    for _ in range(APPLY_ROUNDS):
        for count, per_partition in layouts.items():
            best[count] = min(best[count], _apply_seconds(settings, per_partition, work_dir))
    one = len(stream) / best[1]
    many = len(stream) / best[partitions]
    return {
        "apply_entries_per_s_1_partition": rounded(one),
        "apply_entries_per_s_partitioned": rounded(many),
        "apply_speedup_partitioned": rounded(many / one, 3),
        "apply": {
            "partitions": partitions,
            "entries": len(stream),
            "vector_batches": sum(e.type is EntryType.VECTOR_BATCH for e in stream),
            "seconds_1_partition": round(best[1], 3),
            "seconds_partitioned": round(best[partitions], 3),
            "rounds": APPLY_ROUNDS,
        },
    }
