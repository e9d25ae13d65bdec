"""``themis bench wal [--quick|--smoke] [--json]``: how much compressed WAL shipping saves,
how fast, how far behind.

This module holds the benchmark's definitions, sizes, measurements and table; its
two streams (JSON points, and mixed blocks and vector batches) are built in
:mod:`pipeline.bench.wal_streams`. Both are cut into batches of
:data:`~pipeline.bench.wal_streams.BATCH_ENTRIES` entries. The figures
(:data:`DEFINITIONS` is copied into the result) are, for the JSON-points stream,
``bytes_uncompressed``, ``bytes_shipped_none``, ``bytes_shipped_kafka_zstd``,
``bytes_shipped_batch_zstd`` and ``bandwidth_reduction``, the same under ``mixed``
plus ``bandwidth_reduction_mixed``, codec speeds at zstd level 3 and replication
lag percentiles at a stated load and under load (:mod:`pipeline.bench.wal_load`, on a
broker of its own), apply throughput with one WAL partition against one per input
partition (:mod:`pipeline.bench.wal_apply`); then the shared envelope
(:mod:`pipeline.bench.harness`), whose ``broker`` here names both brokers.

Brokers: the primary comes from :func:`pipeline.bench.harness.bench_broker`
(``KAFKA_BOOTSTRAP_SERVERS``, else Docker, else a local JVM started for the run;
the run's topics on a given primary are deleted at the end); the replica is
always a local cluster started here (its log segments on disk are measured),
stopped at the end.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import numpy as np

from pipeline.bench import wal_apply, wal_load
from pipeline.bench.harness import (
    BenchBroker,
    BenchSize,
    bench_broker,
    best_rate,
    progress,
    rounded,
    wait_for,
)
from pipeline.bench.wal_streams import (
    BATCH_ENTRIES,
    DIMENSION,
    SEED,
    chunks,
    entries,
    json_point_payloads,
    mixed_payloads,
)
from pipeline.config import Settings, with_overrides
from pipeline.errors import BenchmarkFailed
from pipeline.kafka.clients import Producer
from pipeline.kafka.local_broker import LocalKafka
from pipeline.kafka.topics import TopicSpec, apply_topics, load_specs
from pipeline.replication import ApplyResult, ReplicaState, WalShipper, run_kafka_applier
from pipeline.wal.batch import decode_batch, encode_batch, train_dictionary
from pipeline.wal.columns import meta_of
from pipeline.wal.entry import EntryType, encode_entry_record

__all__ = ["DEFINITIONS", "FULL", "LEVEL", "QUICK", "SIZES", "SMOKE", "Sizes", "render", "run"]

LEVEL: Final = 3
"""The zstd level of every compressed batch."""
CODEC_ROUNDS: Final = 5
"""Timed encodes and decodes of the mixed stream per format (the best counts)."""
SMALL_BATCH_ENTRIES: Final = 10
"""Entries per batch of the small-batch figures (a shipper that keeps up ships few)."""

DEFINITIONS: Mapping[str, str] = {
    "bytes_uncompressed": "sum of the WAL entry records (the bytes on the primary's WAL topic)",
    "bytes_shipped_none": f"sum of our batches ({BATCH_ENTRIES} entries) with codec none",
    "bytes_shipped_kafka_zstd": "the codec-none batches produced through a producer with "
    "compression.type=zstd (level 3) to the replica cluster: size of the topic's log "
    "segment files on the replica broker's disk (record batch overhead included)",
    "bytes_shipped_batch_zstd": f"sum of our batches (TWB2), zstd level {LEVEL}",
    "bytes_shipped_batch_zstd_mixed": "the same for the mixed stream",
    "bytes_shipped_kafka_zstd_mixed": "bytes_shipped_kafka_zstd for the mixed stream",
    "batch_vs_kafka_zstd_mixed": "bytes_shipped_batch_zstd_mixed / bytes_shipped_kafka_zstd_mixed",
    "bytes_shipped_twb1_zstd": "under each stream: the same entries as TWB1 batches (one zstd "
    "frame per batch, the format before TWB2), same run, same level",
    "bandwidth_reduction": "1 - bytes_shipped_batch_zstd / bytes_uncompressed, JSON-points stream",
    "bandwidth_reduction_mixed": "the same for the mixed stream",
    "compress_mb_per_s": f"uncompressed MB (1e6 bytes) per second through encode_batch at "
    f"zstd level {LEVEL}, mixed stream, best of {CODEC_ROUNDS} timed in turn with TWB1's, "
    "one core",
    "decompress_mb_per_s": "the same through decode_batch",
    "compress_mb_per_s_twb1": "compress_mb_per_s for TWB1 batches of the same entries, same run",
    "decompress_mb_per_s_twb1": "decompress_mb_per_s for TWB1 batches, same run",
    "small_batches": f"JSON-points stream, second half, in batches of {SMALL_BATCH_ENTRIES} "
    "entries: TWB1, TWB2, and TWB2 with a 16 KiB dictionary trained on the first half's meta "
    "bytes (not carried in the batches: a replica holds it after the first)",
    "replication_lag_ms_p50": "entry appended on the primary (its WAL timestamp) -> applied on "
    "the replica (ReplicaState.apply_batch returned), through WalShipper to a Kafka replica "
    "and the Kafka applier, at lag_load_entries_per_s, after one warm-up entry (not counted)",
    **wal_load.DEFINITIONS,
    **wal_apply.DEFINITIONS,
}


@dataclass(frozen=True)
class Sizes:
    """How big each stream is, and the load of the lag measurement (entries per second)."""

    json_series: int
    json_points_per_series: int
    ts_series: int
    ts_points_per_series: int
    vectors_per_batch: int
    lag_entries_per_s: int
    lag_seconds: float
    lag_vectors_per_batch: int


QUICK: Final = Sizes(50, 400, 40, 4000, 100, 100, 10.0, 10)
FULL: Final = Sizes(200, 1000, 100, 10000, 100, 200, 30.0, 10)
SMOKE: Final = Sizes(10, 200, 10, 1000, 20, 100, 3.0, 10)
SIZES: Final[Mapping[BenchSize, Sizes]] = {"smoke": SMOKE, "quick": QUICK, "full": FULL}


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
    with producer:
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
    """Bytes of one stream: entry records, our batches (none, zstd) and Kafka's zstd."""
    stream = entries(payloads)
    uncompressed = sum(len(encode_entry_record(e.type, e.timestamp_ms, e.payload)) for e in stream)
    plain = [encode_batch(c, "none", LEVEL, "bench", format_version=1) for c in chunks(stream)]
    packed = [encode_batch(c, "zstd", LEVEL, "bench") for c in chunks(stream)]
    twb1 = [encode_batch(c, "zstd", LEVEL, "bench", format_version=1) for c in chunks(stream)]
    progress(f"{name}: {len(stream):,} entries, {uncompressed:,} bytes; producing to the replica")
    kafka_zstd = _kafka_zstd_bytes(cluster, bootstrap, f"themis.{run_id}{name}", plain)
    ours = sum(map(len, packed))
    return {
        "entries": len(stream),
        "batches": len(packed),
        "bytes_uncompressed": uncompressed,
        "bytes_shipped_none": sum(map(len, plain)),
        "bytes_shipped_kafka_zstd": kafka_zstd,
        "bytes_shipped_batch_zstd": ours,
        "bytes_shipped_twb1_zstd": sum(map(len, twb1)),
        "batch_vs_kafka_zstd": rounded(ours / kafka_zstd, 4),
        "bandwidth_reduction": rounded(1 - ours / uncompressed, 4),
        "compression_ratio": rounded(uncompressed / ours, 4),
    }


def _measure_codecs(payloads: list[tuple[EntryType, bytes]]) -> dict[int, tuple[float, float]]:
    """``{format version: (compress, decompress)}``, MB (1e6 bytes) of entry records per
    second, best of :data:`CODEC_ROUNDS`; TWB2 and TWB1 are timed in turn, round by round,
    so that a change of load on a shared machine reaches both."""
    stream = entries(payloads)
    batches = list(chunks(stream))
    body = sum(len(encode_entry_record(e.type, e.timestamp_ms, e.payload)) for e in stream)

    def encode(version: int) -> list[bytes]:
        return [encode_batch(c, "zstd", LEVEL, "bench", format_version=version) for c in batches]

    def decode(packed: list[bytes]) -> None:
        for batch in packed:
            decode_batch(batch)

    packed = {version: encode(version) for version in (2, 1)}
    best = {version: [0.0, 0.0] for version in packed}
    for _ in range(CODEC_ROUNDS):
        for version, rates in best.items():
            rates[0] = max(rates[0], best_rate(partial(encode, version), body, 1) / 1e6)
            rates[1] = max(rates[1], best_rate(partial(decode, packed[version]), body, 1) / 1e6)
    return {version: (rates[0], rates[1]) for version, rates in best.items()}


def _measure_small_batches(payloads: list[tuple[EntryType, bytes]]) -> dict[str, Any]:
    """Bytes of the stream's second half in batches of :data:`SMALL_BATCH_ENTRIES`: TWB1,
    TWB2, and TWB2 with a dictionary trained on the first half's meta bytes."""
    stream = entries(payloads)
    half = len(stream) // 2
    dictionary = train_dictionary([meta_of(e.payload) for e in stream[:half]], 16 * 1024)
    rest = stream[half:]
    batches = [rest[i : i + SMALL_BATCH_ENTRIES] for i in range(0, len(rest), SMALL_BATCH_ENTRIES)]

    def shipped(version: int, with_dictionary: bool = False) -> int:
        chosen = dictionary if with_dictionary else None
        return sum(
            len(
                encode_batch(
                    c,
                    "zstd",
                    LEVEL,
                    "bench",
                    chosen,
                    carry_dictionary=False,
                    format_version=version,
                )
            )
            for c in batches
        )

    return {
        "batch_entries": SMALL_BATCH_ENTRIES,
        "entries": len(rest),
        "dictionary_bytes": len(dictionary.data),
        "bytes_shipped_twb1_zstd": shipped(1),
        "bytes_shipped_batch_zstd": shipped(2),
        "bytes_shipped_batch_zstd_dictionary": shipped(2, True),
    }


# -- lag -----------------------------------------------------------------------------------


def _append_at_rate(
    producer: Producer, topic: str, payloads: list[tuple[EntryType, bytes]], per_s: int
) -> None:
    """Append ``payloads`` to the WAL ``topic``, ``per_s`` entries a second, each stamped
    with the wall clock when appended; then flush."""
    t0 = time.monotonic()
    for i, (entry_type, payload) in enumerate(payloads):
        delay = t0 + i / per_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        value = encode_entry_record(entry_type, int(time.time() * 1000), payload)
        producer.produce(topic, value, partition=0)
        producer.poll(0)
    producer.flush(30)


def _measure_lag(
    settings: Settings, primary: str, replica: str, sizes: Sizes, work_dir: Path
) -> dict[str, Any]:
    """Ship a WAL at a steady load to a Kafka replica; lag from append to apply (ms)."""
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
    progress(f"lag: {count:,} entries at {sizes.lag_entries_per_s} entries/s")
    try:  # LSN 1 warms up the producer's id and the first fetches of link and applier
        _append_at_rate(producer, settings.topic("wal"), payloads[:1], 1)
        wait_for(
            lambda: state.last_applied_lsn or None,
            timeout_s=60,
            interval_s=0.05,
            what="LSN 1 applied",
        )
        with lock:
            lags.clear()
        _append_at_rate(producer, settings.topic("wal"), payloads, sizes.lag_entries_per_s)
        wait_for(
            lambda: True if state.last_applied_lsn > count else None,
            timeout_s=120,
            interval_s=0.1,
            what="the replica to apply every entry",
        )
        stats = shipper.stats()
    finally:
        producer.close()
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


def _lag_settings(settings: Settings, broker: BenchBroker) -> Settings:
    return with_overrides(
        settings,
        {
            "kafka": {"bootstrap_servers": broker.bootstrap, "topic_namespace": broker.run_id},
            "worker": {"app_id": broker.run_id},
            "vector_auto_buffer": {"dimension": DIMENSION},
        },
    )


def _broker_figures(
    settings: Settings,
    sizes: Sizes,
    streams: Mapping[str, list[tuple[EntryType, bytes]]],
    replica_cluster: LocalKafka,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
    """``(json bytes, mixed bytes, lag, primary source)``: every figure that needs a broker."""
    with bench_broker(settings, "wal") as broker:
        progress(f"primary at {broker.bootstrap} ({broker.handle.source}); starting the replica")
        replica = replica_cluster.up().bootstrap_servers
        try:
            json_bytes = _measure_bytes(
                "json", streams["json"], replica_cluster, replica, broker.run_id
            )
            mixed_bytes = _measure_bytes(
                "mixed", streams["mixed"], replica_cluster, replica, broker.run_id
            )
            lag_settings = _lag_settings(settings, broker)
            lag = _measure_lag(lag_settings, broker.bootstrap, replica, sizes, broker.work_dir)
        finally:
            replica_cluster.down()
    return json_bytes, mixed_bytes, lag, broker.handle.source


def run(size: BenchSize, settings: Settings) -> dict[str, object]:
    """Measure everything; the figures described in the module docstring.

    ``size`` picks :data:`FULL`, :data:`QUICK` or :data:`SMOKE` (the test suite's);
    ``settings`` are the ones ``themis`` loaded (``kafka.bootstrap_servers`` chooses a
    given primary). Raises :class:`~pipeline.errors.BenchmarkFailed` when a step fails.
    """
    sizes = SIZES[size]
    progress("building the streams (devops_dataset, 128-dim clustered vectors)")
    streams = {
        "json": json_point_payloads(sizes.json_series, sizes.json_points_per_series),
        "mixed": mixed_payloads(
            sizes.ts_series, sizes.ts_points_per_series, sizes.vectors_per_batch
        ),
    }
    progress(f"codec speed, zstd level {LEVEL}, TWB2 and TWB1 in turn")
    speeds = _measure_codecs(streams["mixed"])
    (compress, decompress), (compress_v1, decompress_v1) = speeds[2], speeds[1]
    small_batches = _measure_small_batches(streams["json"])
    [inputs] = [spec for spec in load_specs() if spec.name == "vectors.ops"]
    apply_settings = with_overrides(settings, {"vector_auto_buffer": {"dimension": DIMENSION}})
    applied = wal_apply.measure_apply(apply_settings, streams["mixed"], inputs.partitions)
    replica_cluster = LocalKafka(f"bench-wal-replica-{os.getpid()}")
    json_bytes, mixed_bytes, lag, primary = _broker_figures(
        settings, sizes, streams, replica_cluster
    )
    load = wal_load.measure_load(size, settings)
    return {
        **{name: json_bytes[name] for name in _HEADLINE_BYTES},
        "bandwidth_reduction_mixed": mixed_bytes["bandwidth_reduction"],
        "bytes_shipped_batch_zstd_mixed": mixed_bytes["bytes_shipped_batch_zstd"],
        "bytes_shipped_kafka_zstd_mixed": mixed_bytes["bytes_shipped_kafka_zstd"],
        "batch_vs_kafka_zstd_mixed": mixed_bytes["batch_vs_kafka_zstd"],
        "compress_mb_per_s": rounded(compress),
        "decompress_mb_per_s": rounded(decompress),
        "compress_mb_per_s_twb1": rounded(compress_v1),
        "decompress_mb_per_s_twb1": rounded(decompress_v1),
        "replication_lag_ms_p50": lag.pop("replication_lag_ms_p50"),
        "replication_lag_ms_p99": lag.pop("replication_lag_ms_p99"),
        "lag_load_entries_per_s": lag.pop("lag_load_entries_per_s"),
        "json_points": json_bytes,
        "mixed": mixed_bytes,
        "small_batches": small_batches,
        **lag,
        **load,
        **applied,
        "dataset": {
            "json_points": f"devops_dataset({sizes.json_series}, {sizes.json_points_per_series}, "
            f"seed={SEED}), one JSON point per entry",
            "mixed": f"devops_dataset({sizes.ts_series}, {sizes.ts_points_per_series}, "
            f"seed={SEED}) in 1000-point Gorilla blocks + one batch of {sizes.vectors_per_batch} "
            f"{DIMENSION}-dim clustered float32 vectors with 4 metadata fields per 3 blocks",
            "batch_entries": BATCH_ENTRIES,
            "zstd_level": LEVEL,
        },
        "broker": {"primary": primary, "replica": "local"},
    }


_HEADLINE_BYTES: Final = (
    "bytes_uncompressed",
    "bytes_shipped_none",
    "bytes_shipped_kafka_zstd",
    "bytes_shipped_batch_zstd",
    "bandwidth_reduction",
)
"""The JSON-points stream's byte figures, also at the top of the result."""


def render(result: Mapping[str, object]) -> str:
    """The headline figures as lines (the JSON has every detail)."""
    r: Any = result
    rows = [
        ("JSON points, uncompressed", f"{r['bytes_uncompressed']:,} B"),
        ("  shipped, codec none", f"{r['bytes_shipped_none']:,} B"),
        ("  shipped, Kafka zstd", f"{r['bytes_shipped_kafka_zstd']:,} B"),
        ("  shipped, batch zstd", f"{r['bytes_shipped_batch_zstd']:,} B"),
        ("  bandwidth reduction", f"{r['bandwidth_reduction']:.1%}"),
        ("mixed, bandwidth reduction", f"{r['bandwidth_reduction_mixed']:.1%}"),
        ("mixed, batch / Kafka zstd", f"{r['batch_vs_kafka_zstd_mixed']:.3f}x"),
        (
            "compress (zstd 3)",
            f"{r['compress_mb_per_s']} MB/s (TWB1 {r['compress_mb_per_s_twb1']})",
        ),
        ("decompress", f"{r['decompress_mb_per_s']} MB/s (TWB1 {r['decompress_mb_per_s_twb1']})"),
        (
            f"lag at {r['lag_load_entries_per_s']} entries/s",
            f"p50 {r['replication_lag_ms_p50']} ms, p99 {r['replication_lag_ms_p99']} ms",
        ),
        (
            f"lag at {r['load_points_per_s']:,.0f} points/s",
            f"p50 {r['lag_under_load_ms_p50']} ms, p99 {r['lag_under_load_ms_p99']} ms",
        ),
        (
            f"apply, 1 / {r['apply']['partitions']} partitions",
            f"{r['apply_entries_per_s_1_partition']:,} / "
            f"{r['apply_entries_per_s_partitioned']:,} entries/s "
            f"({r['apply_speedup_partitioned']}x)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
