"""A replica that crashes between vector snapshots resumes from what is durable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_settings
from pipeline.errors import WalGap
from pipeline.replication import ReplicaState
from pipeline.replication import replica as replica_module
from pipeline.ts.block import encode_block
from pipeline.ts.point import series_key
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.batch import encode_batch
from pipeline.wal.entry import EntryType, WalEntry

pytestmark = pytest.mark.unit

DIM = 8


def _entries() -> list[WalEntry]:
    rng = np.random.default_rng(4)
    entries = []
    for lsn in range(1, 31):
        if lsn % 3:
            ops = [
                VectorOp(OpType.ADD, f"v{lsn}-{i}", rng.normal(size=DIM).astype(np.float32), {})
                for i in range(3)
            ]
            payload = encode_op_frame(ops, DIM)
            entries.append(WalEntry(lsn, EntryType.VECTOR_BATCH, 1_700_000_000_000, payload))
        else:
            ts = np.arange(lsn * 100, lsn * 100 + 10, dtype=np.int64)
            block = encode_block(series_key("m", "e"), ts, ts.astype(np.float64) / 7)
            entries.append(WalEntry(lsn, EntryType.TS_BLOCK, 1_700_000_000_000, block))
    return entries


def test_crash_between_snapshots_refuses_the_next_batch_as_a_gap_then_converges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(
        path=Path("/dev/null"), env={}, overrides={"vector_auto_buffer": {"dimension": DIM}}
    )
    entries = _entries()
    batches = [entries[i : i + 5] for i in range(0, 30, 5)]
    first = ReplicaState(tmp_path, settings)
    first.apply_batch(encode_batch(batches[0], "zstd", 3, "p1"))
    first.close()  # clean close: snapshot taken
    monkeypatch.setattr(replica_module, "SNAPSHOT_INTERVAL_S", 3600.0)
    crashed = ReplicaState(tmp_path, settings)
    for batch in batches[1:4]:
        crashed.apply_batch(encode_batch(batch, "zstd", 3, "p1"))
    expected = crashed.vector_dump()
    # A crash: no close, so the vector index of batches 2-4 never reached a snapshot.
    restarted = ReplicaState(tmp_path, settings)
    assert restarted.last_applied_lsn == 5
    with pytest.raises(WalGap) as gap:
        restarted.apply_batch(encode_batch(batches[4], "zstd", 3, "p1"))
    assert gap.value.expected_lsn == 6
    for batch in batches[1:]:  # the shipper resends from the expected LSN
        restarted.apply_batch(encode_batch(batch, "zstd", 3, "p1"))
    everything = {
        f"v{e.lsn}-{i}" for e in entries if e.type is EntryType.VECTOR_BATCH for i in range(3)
    }
    assert set(restarted.vector_dump()) == everything
    assert set(expected) <= everything
    assert restarted.entries_applied_total == 30
    ts, _ = restarted.query_ts(series_key("m", "e"), 0, 10**9)
    assert ts.size == 10 * 10
    restarted.close()
