"""One WAL partition's share of a replica: its positions and its vector shard.

A replica applies each WAL partition on its own (:class:`PartitionState.lock`): its
own last applied LSN, its own gaps, its own vector shard, like the primary's shard of
the same input partition. Positions live in the replica's block store under the
partition's number; the shard's snapshots under::

    <dir>/vectors/      partition 0 (the single-partition layout, so a replica state
                        written before issue 17 opens as partition 0's)
    <dir>/vectors.<p>/  partition p >= 1
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pipeline.config import VectorAutoBufferSettings
from pipeline.errors import CorruptBatch
from pipeline.limits import MAX_LSN, MAX_LSN_HOLES
from pipeline.ts.store import BlockStore
from pipeline.vectors.buffer import VectorBatch
from pipeline.vectors.index import VectorIndex
from pipeline.vectors.ops import OpType, VectorOp, decode_op_frame
from pipeline.vectors.shard import new_index
from pipeline.wal.entry import format_lsn

__all__ = [
    "LSN",
    "TS_ENTRIES",
    "VECTOR_NEEDED",
    "PartitionState",
    "check_range",
    "open_partition",
    "vector_batch",
]

LSN: Final = "wal.lsn"
"""Position name: the partition's last LSN whose blocks are stored."""
TS_ENTRIES: Final = "wal.ts.entries"
VECTOR_NEEDED: Final = "wal.vector.last_entry_lsn"
"""Position name: the LSN of the partition's last vector entry applied."""


@dataclass
class PartitionState:
    """What a replica applied of one WAL partition; guarded by ``lock``."""

    partition: int
    lsn: int
    ts_entries: int
    vector_lsn: int
    vector_entries: int
    index: VectorIndex
    vector_dir: Path
    dirty: bool = False
    """Vectors changed since the last snapshot."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    """One batch of this partition at a time (other partitions apply meanwhile)."""

    @property
    def last_applied(self) -> int:
        """Every entry of the partition up to this LSN is applied."""
        return min(self.lsn, self.vector_lsn)

    def snapshot_extra(self) -> dict[str, Any]:
        return {"lsn": self.vector_lsn, "entries": self.vector_entries}

    def status(self) -> dict[str, Any]:
        last = self.last_applied
        return {
            "last_applied_lsn": format_lsn(last),
            "expected_lsn": format_lsn(last + 1),
            "entries_applied_total": self.ts_entries + self.vector_entries,
            "vectors": self.index.live_count(),
        }


def vector_directory(data_dir: Path, partition: int) -> Path:
    return data_dir / "vectors" if partition == 0 else data_dir / f"vectors.{partition}"


def open_partition(
    store: BlockStore, data_dir: Path, partition: int, settings: VectorAutoBufferSettings
) -> PartitionState:
    """Partition ``partition``'s state: positions from ``store``, the shard's snapshot.

    After a crash its last applied LSN is the older of the store's and the snapshot's
    (see :mod:`pipeline.replication.replica`).
    """
    lsn = store.position(LSN, partition) or 0
    ts_entries = store.position(TS_ENTRIES, partition) or 0
    vector_needed = store.position(VECTOR_NEEDED, partition) or 0
    directory = vector_directory(data_dir, partition)
    if VectorIndex.has_snapshot(directory):
        index, extra = VectorIndex.load(
            directory,
            dimension=settings.dimension,
            space=settings.space,
            ef_search=settings.ef_search,
        )
        vector_lsn, vector_entries = int(extra["lsn"]), int(extra["entries"])
    else:
        index = new_index(settings, initial_capacity=1024)
        vector_lsn = vector_entries = 0
    if vector_lsn >= vector_needed:
        # No vector entry after the snapshot: the shard is complete through the store's LSN.
        vector_lsn = max(vector_lsn, lsn)
    return PartitionState(partition, lsn, ts_entries, vector_lsn, vector_entries, index, directory)


def check_range(first: int, last: int, entries: int) -> None:
    """A batch may skip few LSNs (WAL records that could not be read), never jump far."""
    if last > MAX_LSN:
        raise CorruptBatch(
            f"WAL batch ends at LSN {last}, beyond {MAX_LSN} (MAX_LSN); nothing applied"
        )
    holes = last - first + 1 - entries
    if holes > MAX_LSN_HOLES:
        raise CorruptBatch(
            f"WAL batch claims LSNs {format_lsn(first)}..{format_lsn(last)} but carries "
            f"{entries} entries; at most {MAX_LSN_HOLES} LSNs of a batch may be empty "
            "(MAX_LSN_HOLES)"
        )


def vector_batch(payload: bytes, settings: VectorAutoBufferSettings) -> VectorBatch:
    """The coalesced batch of a vector entry's op frame; ``InvalidRecord`` if malformed."""
    ops = decode_op_frame(
        payload,
        dimension=settings.dimension,
        max_metadata_bytes=settings.max_metadata_bytes,
    )
    last: dict[str, VectorOp] = {}
    for op in ops:  # a frame from the primary lists each pk once; last wins otherwise
        last.pop(op.pk, None)
        last[op.pk] = op
    upserts = [op for op in last.values() if op.op is not OpType.REMOVE]
    removes = [op.pk for op in last.values() if op.op is OpType.REMOVE]
    return VectorBatch(upserts, removes, [], len(ops))
