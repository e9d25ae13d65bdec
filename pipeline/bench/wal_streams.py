"""The WAL benchmark's two streams of entries, built from real payloads.

* **JSON points** (:func:`json_point_payloads`): one entry per JSON point as the
  roadmap's clients send them (``{"metric", "entity", "timestamp_ms", "value",
  "tags"}``), from :func:`pipeline.ts.dataset.devops_dataset`.
* **mixed** (:func:`mixed_payloads`): Gorilla blocks (1000 points, devops_dataset)
  and vector batches as op frames (:data:`DIMENSION`-dim clustered float32 with four
  metadata fields), one vector batch per three blocks.

:func:`entries` numbers payloads as WAL entries; :func:`chunks` cuts them into
batches of :data:`BATCH_ENTRIES`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

import numpy as np

from pipeline.ts.block import encode_block
from pipeline.ts.dataset import devops_dataset
from pipeline.ts.point import DataPoint
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.entry import EntryType, WalEntry

__all__ = [
    "BATCH_ENTRIES",
    "DIMENSION",
    "SEED",
    "chunks",
    "entries",
    "json_point_payloads",
    "mixed_payloads",
]

BATCH_ENTRIES: Final = 1000
DIMENSION: Final = 128
SEED: Final = 7


def _metric_entity(key: str) -> tuple[str, str, dict[str, str]]:
    """``metric{host=h}`` (devops_dataset's key) as the fields of a client's JSON point."""
    metric, _, rest = key.partition("{")
    host = rest.rstrip("}").partition("=")[2]
    return metric, host, {"env": "prod", "dc": "eu-west-1"}


def json_point_payloads(series: int, points: int) -> list[tuple[EntryType, bytes]]:
    """One entry per JSON point, interleaved across series as they arrive."""
    data = devops_dataset(series, points, seed=SEED)
    parsed = [(_metric_entity(key), ts, vs) for key, ts, vs in data]
    out: list[tuple[EntryType, bytes]] = []
    for i in range(points):
        for (metric, entity, tags), ts, vs in parsed:
            point = DataPoint(metric, entity, int(ts[i]), float(vs[i]), tags)
            out.append((EntryType.TS_BLOCK, point.to_json()))
    return out


def _vector_frame(rng: np.random.Generator, centers: Any, n: int, start: int) -> bytes:
    ops = []
    for j in range(n):
        c = int(rng.integers(0, len(centers)))
        vector = (centers[c] + rng.normal(0, 0.05, DIMENSION)).astype(np.float32)
        metadata = {
            "category": f"cat-{c}",
            "source": "crawler" if j % 2 else "upload",
            "lang": "en",
            "created_ms": 1_700_000_000_000 + start + j,
        }
        ops.append(VectorOp(OpType.ADD, f"doc-{start + j}", vector, metadata))
    return encode_op_frame(ops, DIMENSION)


def mixed_payloads(
    series: int, points: int, vectors_per_batch: int, seed: int = SEED
) -> list[tuple[EntryType, bytes]]:
    """Gorilla blocks of 1000 points and, after every three, one vector batch."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (16, DIMENSION))
    out: list[tuple[EntryType, bytes]] = []
    pk = 0
    data = devops_dataset(series, points, seed=seed)
    for start in range(0, points, 1000):
        for key, ts, vs in data:
            out.append(
                (
                    EntryType.TS_BLOCK,
                    encode_block(key, ts[start : start + 1000], vs[start : start + 1000]),
                )
            )
            if len(out) % 4 == 3:
                out.append(
                    (EntryType.VECTOR_BATCH, _vector_frame(rng, centers, vectors_per_batch, pk))
                )
                pk += vectors_per_batch
    return out


def entries(payloads: Sequence[tuple[EntryType, bytes]]) -> list[WalEntry]:
    """The payloads as WAL entries, LSNs from 1, one millisecond apart."""
    return [
        WalEntry(lsn, t, 1_700_000_000_000 + lsn, p) for lsn, (t, p) in enumerate(payloads, start=1)
    ]


def chunks(stream: list[WalEntry]) -> Iterator[list[WalEntry]]:
    """``stream`` cut into batches of :data:`BATCH_ENTRIES` entries."""
    for start in range(0, len(stream), BATCH_ENTRIES):
        yield stream[start : start + BATCH_ENTRIES]
