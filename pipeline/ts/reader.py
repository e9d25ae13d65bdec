"""``query``: the exact points of one series, from durable blocks plus the worker's buffer.

Blocks come from the block store, caught up from the blocks topic first. Points still
in the worker's TSAutoBuffer come from the worker's web server (``worker.web_port``)
when ``include_buffered`` is true and a worker answers there; a worker that is not
running contributes nothing. Where a timestamp appears twice (a replayed range), the
last write wins, and buffered points are newer than any block.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

from pipeline.config import Settings, load_settings
from pipeline.kafka.broker import require_broker
from pipeline.ts.point import series_key
from pipeline.ts.store import BlockStore, merge_last_wins


@dataclass(frozen=True)
class SeriesPoints:
    """Points of one series in timestamp order (int64 milliseconds, float64 values)."""

    series_key: str
    timestamps: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.timestamps.size)

    def to_list(self) -> list[tuple[int, float]]:
        return list(zip(self.timestamps.tolist(), self.values.tolist(), strict=True))


def buffered_from_worker(
    url: str, key: str, start_ms: int, end_ms: int, timeout_s: float = 5.0
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None:
    """The points a worker still buffers for ``key``; ``None`` if no worker answers."""
    query = urllib.parse.urlencode({"series": key, "start": start_ms, "end": end_ms})
    try:
        with urllib.request.urlopen(f"{url}/ts/buffered?{query}", timeout=timeout_s) as resp:  # noqa: S310 - loopback worker URL from settings
            body = orjson.loads(resp.read())
    except (urllib.error.URLError, OSError):
        return None
    ts = np.frombuffer(base64.b64decode(body["timestamps"]), dtype="<i8").astype(np.int64)
    vs = np.frombuffer(base64.b64decode(body["values"]), dtype="<f8").astype(np.float64)
    return ts, vs


def query(
    metric: str,
    entity: str,
    start_ms: int,
    end_ms: int,
    tags: Mapping[str, str] | None = None,
    *,
    settings: Settings | None = None,
    include_buffered: bool = True,
    store_path: Path | None = None,
) -> SeriesPoints:
    """Points of a series with ``start_ms <= timestamp_ms <= end_ms``, in timestamp order."""
    settings = settings or load_settings()
    bootstrap = settings.kafka.bootstrap_servers or require_broker(settings).bootstrap_servers
    key = series_key(metric, entity, tags)
    store = BlockStore(store_path or settings.worker.data_dir / "query-blocks.sqlite")
    try:
        store.catch_up(bootstrap, settings.topic("ts.blocks"))
        parts = [store.query(key, start_ms, end_ms)]
    finally:
        store.close()
    if include_buffered:
        buffered = buffered_from_worker(
            f"http://127.0.0.1:{settings.worker.web_port}", key, start_ms, end_ms
        )
        if buffered is not None:
            parts.append(buffered)
    ts, vs = merge_last_wins(parts)
    return SeriesPoints(key, ts, vs)
