"""``themis bench wal``: how much compressed WAL shipping saves, how fast, how far behind.

Two WAL streams, built from real payloads:

* **JSON points**: one entry per JSON point as the roadmap's clients send them
  (``{"metric", "entity", "timestamp_ms", "value", "tags"}``), from
  :func:`pipeline.ts.dataset.devops_dataset`.
* **mixed**: Gorilla blocks (1000 points, devops_dataset) and vector batches as op
  frames (128-dim clustered float32 with four metadata fields), one vector batch per
  three blocks.

Both are cut into batches of :data:`BATCH_ENTRIES` entries. The result (one JSON
object with ``--json``; :data:`DEFINITIONS` is copied into it) has for the JSON-points
stream ``bytes_uncompressed``, ``bytes_shipped_none``, ``bytes_shipped_kafka_zstd``,
``bytes_shipped_batch_zstd`` and ``bandwidth_reduction``, the same under ``mixed``
plus ``bandwidth_reduction_mixed``, codec speeds at zstd level 3 and replication
lag percentiles at a stated load.

Brokers: the primary is ``KAFKA_BOOTSTRAP_SERVERS`` if given, else Docker or a local
JVM; the replica is always a local cluster started here (its log segments on disk
are measured), stopped at the end.

Wiring (one line in ``pipeline/bench/common.py``'s ``add_bench_parser``)::

    add_wal_bench_arguments(kinds.add_parser("wal", help="compressed WAL shipping"))
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
from confluent_kafka import Producer

from pipeline.bench.harness import (
    best_rate,
    machine_info,
    progress,
    rounded,
    run_bench_main,
    wait_for,
)
from pipeline.config import Settings, load_settings
from pipeline.errors import BenchmarkFailed
from pipeline.kafka.broker import provide_broker
from pipeline.kafka.local_broker import LocalKafka
from pipeline.kafka.topics import TopicSpec, apply_topics, load_specs
from pipeline.replication.replica import ApplyResult, ReplicaState, run_kafka_applier
from pipeline.replication.shipper import WalShipper
from pipeline.ts.block import encode_block
from pipeline.ts.dataset import devops_dataset
from pipeline.ts.point import DataPoint
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.batch import decode_batch, encode_batch
from pipeline.wal.entry import EntryType, WalEntry, encode_entry_record

BATCH_ENTRIES: Final = 1000
LEVEL: Final = 3
DIMENSION: Final = 128
SEED: Final = 7

DEFINITIONS: Mapping[str, str] = {
    "bytes_uncompressed": "sum of the WAL entry records (the bytes on the primary's WAL topic)",
    "bytes_shipped_none": f"sum of our batches ({BATCH_ENTRIES} entries) with codec none",
    "bytes_shipped_kafka_zstd": "the codec-none batches produced through a producer with "
    "compression.type=zstd (level 3) to the replica cluster: size of the topic's log "
    "segment files on the replica broker's disk (record batch overhead included)",
    "bytes_shipped_batch_zstd": f"sum of our batches, zstd level {LEVEL}",
    "bandwidth_reduction": "1 - bytes_shipped_batch_zstd / bytes_uncompressed, JSON-points stream",
    "bandwidth_reduction_mixed": "the same for the mixed stream",
    "compress_mb_per_s": f"uncompressed MB (1e6 bytes) per second through encode_batch at "
    f"zstd level {LEVEL}, mixed stream, best of 3, one core",
    "decompress_mb_per_s": "the same through decode_batch",
    "replication_lag_ms_p50": "entry appended on the primary (its WAL timestamp) -> applied on "
    "the replica (ReplicaState.apply_batch returned), through WalShipper to a Kafka replica "
    "and the Kafka applier, at lag_load_entries_per_s",
}


@dataclass(frozen=True)
class Sizes:
    json_series: int
    json_points_per_series: int
    ts_series: int
    ts_points_per_series: int
    vectors_per_batch: int
    lag_entries_per_s: int
    lag_seconds: float
    lag_vectors_per_batch: int


QUICK = Sizes(50, 400, 40, 4000, 100, 100, 10.0, 10)
FULL = Sizes(200, 1000, 100, 10000, 100, 200, 30.0, 10)


# -- streams ----------------------------------------------------------------------------


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


def _entries(payloads: Sequence[tuple[EntryType, bytes]]) -> list[WalEntry]:
    return [
        WalEntry(lsn, t, 1_700_000_000_000 + lsn, p) for lsn, (t, p) in enumerate(payloads, start=1)
    ]


def _chunks(entries: list[WalEntry]) -> Iterator[list[WalEntry]]:
    for start in range(0, len(entries), BATCH_ENTRIES):
        yield entries[start : start + BATCH_ENTRIES]


# -- bytes --------------------------------------------------------------------------------


def _segment_bytes(cluster: LocalKafka, topic: str) -> int:
    folder = cluster.cluster_dir / "data" / f"{topic}-0"
    return sum(p.stat().st_size for p in folder.glob("*.log"))


def _kafka_zstd_bytes(cluster: LocalKafka, bootstrap: str, topic: str, batches: list[bytes]) -> int:
    """Segment bytes of ``batches`` produced with compression.type=zstd (level 3)."""
    apply_topics(
        bootstrap,
        Settings(),
        [
            TopicSpec(
                topic.removeprefix("themis."),
                "bench",
                1,
                1,
                "-",
                "-",
                {"max.message.bytes": "67108864"},
            )
        ],
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "compression.type": "zstd",
            "compression.level": LEVEL,
            "linger.ms": 20,
            "message.max.bytes": 64 * 1024 * 1024,
        }
    )
    for data in batches:
        producer.produce(topic, data, partition=0)
        producer.poll(0)
    if producer.flush(60):
        raise BenchmarkFailed(f"records to {topic} unacknowledged after 60 s")
    return wait_for(
        lambda: _segment_bytes(cluster, topic) or None,
        timeout_s=30,
        interval_s=0.2,
        what=f"log segments of {topic}",
    )


def _measure_bytes(
    name: str,
    payloads: list[tuple[EntryType, bytes]],
    cluster: LocalKafka,
    bootstrap: str,
    run_id: str,
) -> dict[str, Any]:
    entries = _entries(payloads)
    uncompressed = sum(len(encode_entry_record(e.type, e.timestamp_ms, e.payload)) for e in entries)
    plain = [encode_batch(c, "none", LEVEL, "bench") for c in _chunks(entries)]
    packed = [encode_batch(c, "zstd", LEVEL, "bench") for c in _chunks(entries)]
    progress(f"{name}: {len(entries):,} entries, {uncompressed:,} bytes; producing to the replica")
    kafka_zstd = _kafka_zstd_bytes(cluster, bootstrap, f"themis.{run_id}{name}", plain)
    ours = sum(map(len, packed))
    return {
        "entries": len(entries),
        "batches": len(packed),
        "bytes_uncompressed": uncompressed,
        "bytes_shipped_none": sum(map(len, plain)),
        "bytes_shipped_kafka_zstd": kafka_zstd,
        "bytes_shipped_batch_zstd": ours,
        "bandwidth_reduction": rounded(1 - ours / uncompressed, 4),
        "compression_ratio": rounded(uncompressed / ours, 4),
    }


def _measure_codec(payloads: list[tuple[EntryType, bytes]]) -> tuple[float, float]:
    entries = _entries(payloads)
    chunks = list(_chunks(entries))
    body = sum(len(encode_entry_record(e.type, e.timestamp_ms, e.payload)) for e in entries)
    packed = [encode_batch(c, "zstd", LEVEL, "bench") for c in chunks]
    compress = best_rate(lambda: [encode_batch(c, "zstd", LEVEL, "bench") for c in chunks], body, 3)
    decompress = best_rate(lambda: [decode_batch(b) for b in packed], body, 3)
    return compress / 1e6, decompress / 1e6


# -- lag -----------------------------------------------------------------------------------


def _measure_lag(
    settings: Settings, primary: str, replica: str, sizes: Sizes, work_dir: Path
) -> dict[str, Any]:
    wal_spec = [spec for spec in load_specs() if spec.name == "wal"]
    apply_topics(primary, settings, wal_spec)
    count = int(sizes.lag_entries_per_s * sizes.lag_seconds)
    payloads = mixed_payloads(10, 1000 * (count // 12 + 1), sizes.lag_vectors_per_batch, seed=11)
    # Blocks of 1000 points: cut the stream to `count` entries, one vector batch in four.
    payloads = payloads[:count]
    state = ReplicaState(work_dir / "replica", settings)
    lags: list[float] = []
    lock = threading.Lock()

    def record(result: ApplyResult) -> None:
        now = time.time() * 1000
        with lock:
            lags.extend(now - t for t in result.applied_timestamps_ms)

    stop = threading.Event()
    applier = threading.Thread(
        target=run_kafka_applier,
        args=(state, replica, settings, "bench"),
        kwargs={"stop": stop, "on_result": record},
        daemon=True,
    )
    applier.start()
    shipper = WalShipper(settings, bootstrap=primary, primary_id="bench-primary")
    shipper.add_replica("bench", f"kafka://{replica}")
    producer = Producer(
        {"bootstrap.servers": primary, "acks": "all", "linger.ms": 0, "enable.idempotence": True}
    )
    topic = settings.topic("wal")
    progress(f"lag: {count:,} entries at {sizes.lag_entries_per_s} entries/s")
    try:
        t0 = time.monotonic()
        for i, (entry_type, payload) in enumerate(payloads):
            due = t0 + i / sizes.lag_entries_per_s
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            value = encode_entry_record(entry_type, int(time.time() * 1000), payload)
            producer.produce(topic, value, partition=0)
            producer.poll(0)
        producer.flush(30)
        wait_for(
            lambda: True if state.last_applied_lsn >= count else None,
            timeout_s=120,
            interval_s=0.1,
            what="the replica to apply every entry",
        )
        stats = shipper.stats()
    finally:
        shipper.close()
        stop.set()
        applier.join(30)
        state.close()
    values = np.array(lags)
    if values.size != count:
        raise BenchmarkFailed(f"lag: {values.size} of {count} entries were seen applied")
    return {
        "replication_lag_ms_p50": rounded(float(np.percentile(values, 50))),
        "replication_lag_ms_p99": rounded(float(np.percentile(values, 99))),
        "lag_load_entries_per_s": sizes.lag_entries_per_s,
        "lag": {
            "entries": count,
            "seconds": sizes.lag_seconds,
            "max_ms": rounded(float(values.max())),
            "shipper": stats["stats"],
            "vectors_per_batch": sizes.lag_vectors_per_batch,
        },
    }


# -- the run -------------------------------------------------------------------------------


def run_wal_bench(quick: bool, *, settings: Settings | None = None) -> dict[str, object]:
    """Run every measurement; returns the result described in the module docstring."""
    settings = settings if settings is not None else load_settings()
    sizes = QUICK if quick else FULL
    begun = time.monotonic()
    run_id = f"benchwal{os.getpid()}{uuid.uuid4().hex[:6]}"
    with contextlib.redirect_stdout(sys.stderr):
        progress("building the streams (devops_dataset, 128-dim clustered vectors)")
        json_payloads = json_point_payloads(sizes.json_series, sizes.json_points_per_series)
        mixed = mixed_payloads(sizes.ts_series, sizes.ts_points_per_series, sizes.vectors_per_batch)
        progress(f"codec speed, zstd level {LEVEL}")
        compress, decompress = _measure_codec(mixed)
        replica_cluster = LocalKafka(f"bench-wal-replica-{os.getpid()}")
        with (
            provide_broker(settings, local_name=f"bench-wal-{os.getpid()}") as broker,
            tempfile.TemporaryDirectory(prefix="themis-bench-wal-") as work_dir,
        ):
            progress(
                f"primary at {broker.bootstrap_servers} ({broker.source}); starting the replica"
            )
            replica = replica_cluster.up().bootstrap_servers
            try:
                json_bytes = _measure_bytes("json", json_payloads, replica_cluster, replica, run_id)
                mixed_bytes = _measure_bytes("mixed", mixed, replica_cluster, replica, run_id)
                lag_settings = replace(
                    settings,
                    kafka=replace(
                        settings.kafka,
                        bootstrap_servers=broker.bootstrap_servers,
                        topic_namespace=run_id,
                    ),
                    worker=replace(settings.worker, app_id=run_id),
                    vector_auto_buffer=replace(settings.vector_auto_buffer, dimension=DIMENSION),
                )
                lag = _measure_lag(
                    lag_settings, broker.bootstrap_servers, replica, sizes, Path(work_dir)
                )
            finally:
                replica_cluster.down()
    return {
        "benchmark": "wal",
        "quick": quick,
        "bytes_uncompressed": json_bytes["bytes_uncompressed"],
        "bytes_shipped_none": json_bytes["bytes_shipped_none"],
        "bytes_shipped_kafka_zstd": json_bytes["bytes_shipped_kafka_zstd"],
        "bytes_shipped_batch_zstd": json_bytes["bytes_shipped_batch_zstd"],
        "bandwidth_reduction": json_bytes["bandwidth_reduction"],
        "bandwidth_reduction_mixed": mixed_bytes["bandwidth_reduction"],
        "compress_mb_per_s": rounded(compress),
        "decompress_mb_per_s": rounded(decompress),
        "replication_lag_ms_p50": lag.pop("replication_lag_ms_p50"),
        "replication_lag_ms_p99": lag.pop("replication_lag_ms_p99"),
        "lag_load_entries_per_s": lag.pop("lag_load_entries_per_s"),
        "json_points": json_bytes,
        "mixed": mixed_bytes,
        **lag,
        "dataset": {
            "json_points": f"devops_dataset({sizes.json_series}, {sizes.json_points_per_series}, "
            f"seed={SEED}), one JSON point per entry",
            "mixed": f"devops_dataset({sizes.ts_series}, {sizes.ts_points_per_series}, "
            f"seed={SEED}) in 1000-point Gorilla blocks + one batch of {sizes.vectors_per_batch} "
            f"{DIMENSION}-dim clustered float32 vectors with 4 metadata fields per 3 blocks",
            "batch_entries": BATCH_ENTRIES,
            "zstd_level": LEVEL,
        },
        "broker": {"primary": broker.source, "replica": "local"},
        "machine": machine_info(),
        "seconds_total": round(time.monotonic() - begun, 1),
        "definitions": dict(DEFINITIONS),
    }


def render_table(result: Mapping[str, object]) -> str:
    """The headline figures as lines (the JSON has every detail)."""
    r: Any = result
    rows = [
        ("JSON points, uncompressed", f"{r['bytes_uncompressed']:,} B"),
        ("  shipped, codec none", f"{r['bytes_shipped_none']:,} B"),
        ("  shipped, Kafka zstd", f"{r['bytes_shipped_kafka_zstd']:,} B"),
        ("  shipped, batch zstd", f"{r['bytes_shipped_batch_zstd']:,} B"),
        ("  bandwidth reduction", f"{r['bandwidth_reduction']:.1%}"),
        ("mixed, bandwidth reduction", f"{r['bandwidth_reduction_mixed']:.1%}"),
        ("compress (zstd 3)", f"{r['compress_mb_per_s']} MB/s"),
        ("decompress", f"{r['decompress_mb_per_s']} MB/s"),
        (
            f"lag at {r['lag_load_entries_per_s']} entries/s",
            f"p50 {r['replication_lag_ms_p50']} ms, p99 {r['replication_lag_ms_p99']} ms",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.bench.wal [--quick] [--json]``; returns the exit code."""
    return run_bench_main("wal", "Compressed WAL shipping.", run_wal_bench, render_table, argv)


if __name__ == "__main__":
    sys.exit(main())
