"""``themis bench ts``: how small and how fast the time-series path is.

Run ``themis bench ts [--quick] [--json]`` or ``python -m pipeline.bench.ts [...]``.
The broker is the one of ``KAFKA_BOOTSTRAP_SERVERS``, else one started for the run by
:func:`pipeline.kafka.broker.provide_broker` (Docker, else a local JVM named
``bench-<pid>``) and stopped at the end. Topics live under namespaces of their own,
``bench-<pid>-<random>.<part>`` (deleted at the end on a given broker); each pipeline
measurement runs its own ``themis worker`` child process with a flush interval of
:data:`FLUSH_INTERVAL_MS`, so the time trigger does not dominate the tail.

The result (one JSON object with ``--json``; :data:`DEFINITIONS` is copied into it):

``bytes_per_point``, ``compression_ratio``
    Gorilla blocks (:func:`~pipeline.ts.block.encode_block`, header and checksum
    included) of :func:`~pipeline.ts.dataset.devops_dataset` cut into blocks of
    ``max_points_per_buffer`` (1000) points, as the buffer's size trigger cuts them:
    block bytes per point, and 16 raw bytes per point over block bytes.
``encode_points_per_s``, ``decode_points_per_s``
    :func:`~pipeline.ts.gorilla.encode_chunk` / :func:`~pipeline.ts.gorilla.decode_chunk`
    over the same blocks' chunks, one core, the best of several repetitions.
``pipeline_points_per_s_json``
    Producer -> Kafka -> worker -> durable block with one JSON point per Kafka
    message: the points are produced with ``TSProducer.put`` (series interleaved in
    time order) and flushed *before* the worker starts. The clock starts when the
    worker's ``/ts/buffer/stats`` page first shows a consumed point (so JVM, Faust
    start-up and group join do not count) and stops when its ``points_flushed``
    covers every point; the rate is the points consumed after the clock started
    over that time.
``pipeline_points_per_s_frames``
    The same with binary batch frames (``TSProducer.put_arrays``, each call carrying
    a slice of every series), many more points.
``bare_consume_msgs_per_s``, ``json_vs_bare_consume``
    A plain confluent-kafka ``Consumer`` (new group, every partition assigned from
    the beginning, values touched, nothing decoded) draining the JSON run's points
    topic in the same run, timed from ``assign`` (its connection and the topic's
    metadata are ready by then) to the last message, the best of three drains; and
    the JSON pipeline rate over it.
``buffered_points_per_s``, ``direct_points_per_s``, ``buffered_vs_direct``
    Client-observed durable write rates against the blocks topic, in process.
    Buffered: every point goes through ``TSAutoBuffer.add`` (series interleaved in
    time order); each time ``add`` returns batches they are encoded into blocks as
    the agent encodes them, produced with ``acks=all`` and the producer is flushed,
    so those points are acknowledged before the next point is added; a final manual
    flush drains the rest. Direct: one durable record per point (a one-point block),
    produced with ``acks=all`` and flushed before the next. Same producer settings,
    same topic (``ts.blocks`` spec, a namespace of its own); the direct side takes
    the first points of the same sequence (it pays one broker round trip per point),
    so rates, not totals, are compared.

``points`` has the counts behind every rate; ``pipeline`` each measurement's details:
seconds, worker start-up, flush reasons and the compression ratio of the worker's own
blocks (cut by the time trigger as well as by size, so often smaller than 1000 points);
``broker`` where the broker came from and its start-up seconds; ``machine`` the CPUs
and Python.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from pipeline.bench.harness import (
    WorkerProcess,
    best_rate,
    delete_topics_under,
    machine_info,
    progress,
    rounded,
    run_bench_main,
    wait_for,
)
from pipeline.config import Settings, load_settings
from pipeline.errors import BenchmarkFailed
from pipeline.kafka.broker import BrokerHandle, provide_broker
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.producer import durable_producer_config
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.ts.block import CODEC_VERSION, GorillaBlock, encode_block
from pipeline.ts.buffer import POINT_BYTES, SeriesBatch, TSAutoBuffer
from pipeline.ts.dataset import devops_dataset
from pipeline.ts.gorilla import MAX_POINTS, decode_chunk, encode_chunk
from pipeline.ts.point import DataPoint, series_key
from pipeline.ts.producer import TSProducer

__all__ = ["DEFINITIONS", "FLUSH_INTERVAL_MS", "main", "render_table", "run_ts_bench"]

FLUSH_INTERVAL_MS = 200
"""The workers' ``flush_interval_ms`` (milliseconds): the tail waits at most about this."""
SEED = 0
"""Seed of every :func:`~pipeline.ts.dataset.devops_dataset` the benchmark draws."""

_STATS_PAGE = "/ts/buffer/stats"
_STARTUP_TIMEOUT_S = 120.0
_BARE_REPETITIONS = 3

DEFINITIONS: Mapping[str, str] = {
    "bytes_per_point": "Gorilla block bytes (header and CRC included) per point over the "
    "dataset cut into blocks of max_points_per_buffer points",
    "compression_ratio": "16 raw bytes per point (int64 ms + float64) over block bytes",
    "encode_points_per_s": "encode_chunk over the dataset's blocks, one core, best of N",
    "decode_points_per_s": "decode_chunk over the dataset's blocks, one core, best of N",
    "pipeline_points_per_s_json": "points pre-produced as one JSON point per message; a "
    "themis worker consumes them into durable blocks; clock from the first consumed point "
    "seen on /ts/buffer/stats to points_flushed covering all; rate = points consumed after "
    "the clock started / seconds",
    "pipeline_points_per_s_frames": "the same with TSProducer.put_arrays binary batch frames",
    "bare_consume_msgs_per_s": "a plain confluent-kafka Consumer (new group, all partitions "
    "from the beginning, no decoding) draining the JSON run's points topic, timed from "
    "assign() to the last message; best of 3 drains",
    "json_vs_bare_consume": "pipeline_points_per_s_json / bare_consume_msgs_per_s",
    "buffered_points_per_s": "client-observed, in process: TSAutoBuffer.add per point; "
    "every batch add returns is encoded to blocks, produced with acks=all and flushed "
    "(acknowledged) before the next add; a final manual flush; points / seconds",
    "direct_points_per_s": "one durable record (a one-point block) per point, produced "
    "with acks=all and flushed before the next point; points / seconds",
    "buffered_vs_direct": "buffered_points_per_s / direct_points_per_s (same producer "
    "settings, same blocks topic spec, direct side on the first points of the same sequence)",
}


@dataclass(frozen=True)
class Sizes:
    """How much data each measurement uses (series x points per series)."""

    codec_series: int
    codec_points_per_series: int
    codec_repetitions: int
    json_series: int
    json_points_per_series: int
    frames_series: int
    frames_points_per_series: int
    frame_slice_points: int
    """Points of each series in one ``put_arrays`` call."""
    buffered_series: int
    buffered_points_per_series: int
    direct_points: int


QUICK = Sizes(
    codec_series=200,
    codec_points_per_series=2000,
    codec_repetitions=5,
    json_series=20,
    json_points_per_series=1000,
    frames_series=200,
    frames_points_per_series=10_000,
    frame_slice_points=100,
    buffered_series=100,
    buffered_points_per_series=1000,
    direct_points=300,
)
FULL = Sizes(
    codec_series=1000,
    codec_points_per_series=5000,
    codec_repetitions=7,
    json_series=50,
    json_points_per_series=2000,
    frames_series=500,
    frames_points_per_series=20_000,
    frame_slice_points=100,
    buffered_series=200,
    buffered_points_per_series=5000,
    direct_points=2000,
)

_Int64s = npt.NDArray[np.int64]
_Float64s = npt.NDArray[np.float64]
_Series = tuple[str, str, _Int64s, _Float64s]
"""``(metric, entity, timestamps_ms, values)``."""


def _fleet(series: int, points_per_series: int) -> list[_Series]:
    """:func:`devops_dataset` series as ``(metric, entity, ...)``: the entity is the host."""
    fleet = []
    for name, ts, vs in devops_dataset(series, points_per_series, SEED):
        metric, _, host = name.partition("{host=")
        fleet.append((metric, host.rstrip("}"), ts, vs))
    return fleet


def _interleaved(fleet: list[_Series]) -> Iterator[tuple[str, int, float]]:
    """``(series key, timestamp_ms, value)`` of every point, in time order across series."""
    columns = [(series_key(m, e), ts.tolist(), vs.tolist()) for m, e, ts, vs in fleet]
    length = min((len(ts) for _, ts, _ in columns), default=0)
    for i in range(length):
        for key, ts, vs in columns:
            yield key, ts[i], vs[i]


# -- codec ------------------------------------------------------------------------


@dataclass(frozen=True)
class _CodecResult:
    points: int
    blocks: int
    block_bytes: int
    encode_points_per_s: float
    decode_points_per_s: float


def _measure_codec(sizes: Sizes, block_points: int) -> _CodecResult:
    fleet = _fleet(sizes.codec_series, sizes.codec_points_per_series)
    chunks = [
        (series_key(m, e), ts[i : i + block_points], vs[i : i + block_points])
        for m, e, ts, vs in fleet
        for i in range(0, ts.size, block_points)
    ]
    points = sum(int(ts.size) for _, ts, _ in chunks)
    block_bytes = sum(len(encode_block(key, ts, vs)) for key, ts, vs in chunks)
    encoded = [encode_chunk(ts, vs) for _, ts, vs in chunks]
    for (key, ts, vs), chunk in zip(chunks, encoded, strict=True):
        got_ts, got_vs = decode_chunk(chunk)
        if not (
            np.array_equal(got_ts, ts)
            and np.array_equal(got_vs.view(np.uint64), vs.view(np.uint64))
        ):
            raise BenchmarkFailed(f"a chunk of {key} did not decode to its input")
    reps = sizes.codec_repetitions
    encode_rate = best_rate(lambda: [encode_chunk(ts, vs) for _, ts, vs in chunks], points, reps)
    decode_rate = best_rate(lambda: [decode_chunk(c) for c in encoded], points, reps)
    return _CodecResult(points, len(chunks), block_bytes, encode_rate, decode_rate)


# -- producer -> Kafka -> worker -> durable blocks ----------------------------------


@dataclass(frozen=True)
class _PipelineRun:
    points: int
    messages: int
    produce_seconds: float
    worker_ready_seconds: float
    """From launching the worker to its stats page first showing a consumed point."""
    points_timed: int
    seconds: float
    blocks_written: int
    compression_ratio: float
    """The worker's ``avg_compression_ratio``: its blocks are cut by size *and* time."""
    flush_reasons: dict[str, int]
    worker_exit_code: int

    @property
    def points_per_s(self) -> float:
        return self.points_timed / self.seconds

    def details(self) -> dict[str, object]:
        return {
            "points": self.points,
            "messages": self.messages,
            "produce_seconds": round(self.produce_seconds, 3),
            "worker_ready_seconds": round(self.worker_ready_seconds, 3),
            "points_timed": self.points_timed,
            "seconds": round(self.seconds, 3),
            "blocks_written": self.blocks_written,
            "compression_ratio": rounded(self.compression_ratio, 4),
            "flush_reasons": self.flush_reasons,
            "worker_exit_code": self.worker_exit_code,
        }


def _produce_json(producer: TSProducer, fleet: list[_Series]) -> int:
    columns = [(m, e, ts.tolist(), vs.tolist()) for m, e, ts, vs in fleet]
    length = min(len(ts) for _, _, ts, _ in columns)
    for i in range(length):
        for metric, entity, ts, vs in columns:
            producer.put(DataPoint(metric, entity, ts[i], vs[i]))
    return length * len(columns)


def _produce_frames(producer: TSProducer, fleet: list[_Series], slice_points: int) -> int:
    keyed = [(series_key(m, e), ts, vs) for m, e, ts, vs in fleet]
    length = min(int(ts.size) for _, ts, _ in keyed)
    sent = 0
    for start in range(0, length, slice_points):
        end = start + slice_points
        sent += producer.put_arrays((key, ts[start:end], vs[start:end]) for key, ts, vs in keyed)
    return sent


def _message_count(bootstrap: str, topic: str) -> int:
    """Records in ``topic``: the sum over partitions of high minus low watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}.count"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def _measure_pipeline(
    settings: Settings,
    log_path: Path,
    produce: Callable[[TSProducer], int],
    *,
    what: str,
    min_points_per_s: float,
) -> _PipelineRun:
    """Pre-produce, start a worker, time it from its first consumed point to all durable.

    ``min_points_per_s`` bounds the wait: slower than that is a failure, not a result.
    """
    bootstrap = settings.kafka.bootstrap_servers
    assert bootstrap is not None
    apply_topics(bootstrap, settings)
    producer = TSProducer(settings)
    t0 = time.perf_counter()
    points = produce(producer)
    producer.flush(timeout_s=300)
    produce_s = time.perf_counter() - t0
    messages = _message_count(bootstrap, settings.topic("ts.points"))
    progress(
        f"{what}: {points:,} points in {messages:,} messages produced in {produce_s:.1f} s; "
        "starting a worker"
    )

    def consuming() -> dict[str, Any] | None:
        stats = worker.stats(_STATS_PAGE)
        return stats if stats is not None and stats["points_buffered"] > 0 else None

    def all_durable() -> dict[str, Any] | None:
        stats = worker.stats(_STATS_PAGE)
        return stats if stats is not None and stats["points_flushed"] >= points else None

    worker = WorkerProcess(settings, log_path)
    launched = time.monotonic()
    try:
        first = wait_for(
            consuming,
            timeout_s=_STARTUP_TIMEOUT_S,
            interval_s=0.02,
            what=f"the {what} worker to consume its first point",
        )
        started = time.monotonic()
        final = wait_for(
            all_durable,
            timeout_s=30 + points / min_points_per_s,
            interval_s=0.05,
            what=f"all {points:,} {what} points durable",
        )
        seconds = time.monotonic() - started
    except BenchmarkFailed as exc:
        raise BenchmarkFailed(f"{exc}\nworker log tail:\n{worker.log_tail()}") from None
    finally:
        exit_code = worker.stop()
    if exit_code != 0:
        progress(f"{what}: the worker exited with code {exit_code}; log tail:\n{worker.log_tail()}")
    if final["dead_letters"]:
        raise BenchmarkFailed(
            f"{what}: the worker dead-lettered {final['dead_letters']} records; "
            f"log tail:\n{worker.log_tail()}"
        )
    run = _PipelineRun(
        points=points,
        messages=messages,
        produce_seconds=produce_s,
        worker_ready_seconds=started - launched,
        points_timed=points - int(first["points_buffered"]),
        seconds=seconds,
        blocks_written=int(final["blocks_written"]),
        compression_ratio=float(final["avg_compression_ratio"]),
        flush_reasons={k: v for k, v in final["flush_reasons"].items() if v},
        worker_exit_code=exit_code,
    )
    progress(
        f"{what}: {run.points_per_s:,.0f} points/s ({run.points_timed:,} points in "
        f"{seconds:.2f} s after a {run.worker_ready_seconds:.1f} s start-up)"
    )
    return run


def _bare_consume(bootstrap: str, topic: str, expected: int) -> tuple[int, float]:
    """``(messages, seconds)`` for a plain consumer draining ``topic`` from the start.

    The clock runs from ``assign`` to the last message; connecting and reading the
    topic's metadata happen before.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}.bare-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        started = time.monotonic()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = started + 30 + expected / 10_000
        seen = 0
        while seen < expected:
            if time.monotonic() > deadline:
                raise BenchmarkFailed(
                    f"the bare consumer read {seen:,} of {expected:,} messages of {topic} "
                    "before its deadline"
                )
            batch = consumer.consume(1000, timeout=0.5)
            for msg in batch:
                error = msg.error()
                if error is not None:
                    raise BenchmarkFailed(f"the bare consumer got an error from {topic}: {error}")
                if msg.value() is not None:
                    seen += 1
        return seen, time.monotonic() - started
    finally:
        consumer.close()


# -- auto buffer against one durable write per point --------------------------------


class _AckedProducer:
    """A durable producer (``acks=all``, idempotent) whose flush fails on any failed record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._producer = Producer(durable_producer_config(bootstrap))
        self._failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(err.str())

    def produce(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key=key, on_delivery=self._on_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)

    def flush_acked(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker acknowledged every record produced so far."""
        remaining = self._producer.flush(timeout_s)
        if remaining or self._failures:
            raise BenchmarkFailed(
                f"{remaining} records to {self.topic} unacknowledged after {timeout_s} s, "
                f"{len(self._failures)} failed: {self._failures[:1]}"
            )


def _block_record(key: str, ts: _Int64s, vs: _Float64s) -> tuple[bytes, bytes]:
    """``(Kafka key, value)`` of one block, built the way the agent builds it."""
    chunk = encode_chunk(ts, vs)
    block = GorillaBlock(key, int(ts.size), int(ts[0]), int(ts[-1]), CODEC_VERSION, chunk)
    return block.block_id.encode(), block.to_bytes()


def _measure_buffered(
    producer: _AckedProducer, fleet: list[_Series], settings: Settings
) -> tuple[int, float]:
    """``(points, seconds)`` through TSAutoBuffer with a durable write per returned batch."""
    buffer = TSAutoBuffer(settings.ts_auto_buffer)

    def write(batches: list[SeriesBatch]) -> None:
        raw_points = block_bytes = 0
        for batch in batches:
            n = int(batch.timestamps.size)
            raw_points += n
            for start in range(0, n, MAX_POINTS):
                end = start + MAX_POINTS
                key, value = _block_record(
                    batch.series_key, batch.timestamps[start:end], batch.values[start:end]
                )
                producer.produce(key, value)
                block_bytes += len(value)
        producer.flush_acked()
        buffer.record_durable(raw_points, block_bytes)

    points = 0
    t0 = time.perf_counter()
    for key, t, v in _interleaved(fleet):
        batches = buffer.add(key, t, v)
        points += 1
        if batches:
            write(batches)
    rest = buffer.flush()
    if rest:
        write(rest)
    seconds = time.perf_counter() - t0
    durable = buffer.stats().points_flushed
    if durable != points:
        raise BenchmarkFailed(f"buffered side: {durable:,} of {points:,} points became durable")
    return points, seconds


def _measure_direct(
    producer: _AckedProducer, fleet: list[_Series], count: int
) -> tuple[int, float]:
    """``(points, seconds)`` writing one acknowledged one-point block per point."""
    points = 0
    t0 = time.perf_counter()
    for key, t, v in itertools.islice(_interleaved(fleet), count):
        record_key, value = _block_record(
            key, np.array([t], dtype=np.int64), np.array([v], dtype=np.float64)
        )
        producer.produce(record_key, value)
        producer.flush_acked()
        points += 1
    return points, time.perf_counter() - t0


# -- the run ----------------------------------------------------------------------


def _part_settings(base: Settings, run_id: str, part: str, data_dir: Path) -> Settings:
    """``base`` with the namespace, consumer group, web port and data dir of one part."""
    return replace(
        base,
        kafka=replace(base.kafka, topic_namespace=f"{run_id}.{part}"),
        worker=replace(
            base.worker,
            app_id=f"{run_id}-{part}",
            web_port=free_port(),
            data_dir=data_dir / part,
        ),
    )


def _broker_measurements(
    settings: Settings, broker: BrokerHandle, sizes: Sizes, run_id: str, work_dir: Path
) -> dict[str, object]:
    base = replace(
        settings,
        kafka=replace(settings.kafka, bootstrap_servers=broker.bootstrap_servers),
        ts_auto_buffer=replace(settings.ts_auto_buffer, flush_interval_ms=FLUSH_INTERVAL_MS),
    )
    bootstrap = broker.bootstrap_servers

    json_settings = _part_settings(base, run_id, "json", work_dir)
    json_fleet = _fleet(sizes.json_series, sizes.json_points_per_series)
    json_run = _measure_pipeline(
        json_settings,
        work_dir / "json-worker.log",
        lambda producer: _produce_json(producer, json_fleet),
        what="JSON points",
        min_points_per_s=500,
    )

    progress(f"bare consumer: draining the JSON points topic, best of {_BARE_REPETITIONS}")
    bare_msgs, bare_s = min(
        (
            _bare_consume(bootstrap, json_settings.topic("ts.points"), json_run.messages)
            for _ in range(_BARE_REPETITIONS)
        ),
        key=lambda drain: drain[1] / drain[0],
    )
    bare_rate = bare_msgs / bare_s
    progress(f"bare consumer: {bare_rate:,.0f} messages/s")

    frames_settings = _part_settings(base, run_id, "frames", work_dir)
    frames_fleet = _fleet(sizes.frames_series, sizes.frames_points_per_series)
    frames_run = _measure_pipeline(
        frames_settings,
        work_dir / "frames-worker.log",
        lambda producer: _produce_frames(producer, frames_fleet, sizes.frame_slice_points),
        what="frames",
        min_points_per_s=10_000,
    )

    direct_settings = _part_settings(base, run_id, "direct", work_dir)
    blocks_spec = [spec for spec in load_specs() if spec.name == "ts.blocks"]
    apply_topics(bootstrap, direct_settings, blocks_spec)
    producer = _AckedProducer(bootstrap, direct_settings.topic("ts.blocks"))
    producer.produce(b"warm-up", b"")  # connection and metadata before either clock starts
    producer.flush_acked()
    buffered_fleet = _fleet(sizes.buffered_series, sizes.buffered_points_per_series)
    progress("buffered writes: TSAutoBuffer, one acknowledged flush per returned batch")
    buffered_points, buffered_s = _measure_buffered(producer, buffered_fleet, base)
    progress(f"direct writes: {sizes.direct_points:,} points, one acknowledged record each")
    direct_points, direct_s = _measure_direct(producer, buffered_fleet, sizes.direct_points)
    buffered_rate = buffered_points / buffered_s
    direct_rate = direct_points / direct_s
    progress(f"buffered {buffered_rate:,.0f} points/s, direct {direct_rate:,.0f} points/s")

    points_spec = next(spec for spec in load_specs() if spec.name == "ts.points")
    return {
        "pipeline_points_per_s_json": rounded(json_run.points_per_s),
        "pipeline_points_per_s_frames": rounded(frames_run.points_per_s),
        "bare_consume_msgs_per_s": rounded(bare_rate),
        "json_vs_bare_consume": rounded(json_run.points_per_s / bare_rate),
        "buffered_points_per_s": rounded(buffered_rate),
        "direct_points_per_s": rounded(direct_rate),
        "buffered_vs_direct": rounded(buffered_rate / direct_rate),
        "points": {
            "pipeline_json": json_run.points,
            "pipeline_frames": frames_run.points,
            "bare_consume": bare_msgs,
            "buffered": buffered_points,
            "direct": direct_points,
        },
        "pipeline": {
            "json": json_run.details()
            | {"series": sizes.json_series, "points_per_series": sizes.json_points_per_series},
            "frames": frames_run.details()
            | {
                "series": sizes.frames_series,
                "points_per_series": sizes.frames_points_per_series,
                "points_per_series_per_call": sizes.frame_slice_points,
            },
            "bare_consume": {
                "messages": bare_msgs,
                "seconds": round(bare_s, 4),
                "repetitions": _BARE_REPETITIONS,
            },
            "buffered": {
                "series": sizes.buffered_series,
                "points": buffered_points,
                "seconds": round(buffered_s, 3),
            },
            "direct": {"points": direct_points, "seconds": round(direct_s, 3)},
        },
        "settings": {
            "flush_interval_ms": FLUSH_INTERVAL_MS,
            "max_points_per_buffer": base.ts_auto_buffer.max_points_per_buffer,
            "points_topic_partitions": points_spec.partitions,
            "producer": "acks=all, idempotent, linger.ms=5, lz4 (durable_producer_config)",
        },
    }


def run_ts_bench(quick: bool, *, settings: Settings | None = None) -> dict[str, object]:
    """Run every measurement and return the result described in the module docstring.

    ``quick`` picks :data:`QUICK` sizes (about a minute) over :data:`FULL` (a few
    minutes). ``settings`` defaults to :func:`~pipeline.config.load_settings`; its
    ``kafka.bootstrap_servers`` (``KAFKA_BOOTSTRAP_SERVERS``) chooses a given broker.
    Progress goes to stderr; raises :class:`~pipeline.bench.harness.BenchmarkFailed`
    (or another :class:`~pipeline.errors.ThemisError`) when a step fails.
    """
    settings = settings if settings is not None else load_settings()
    sizes = QUICK if quick else FULL
    begun = time.monotonic()
    block_points = settings.ts_auto_buffer.max_points_per_buffer
    # Nothing but the result may reach stdout (a first broker start prints there).
    with contextlib.redirect_stdout(sys.stderr):
        progress(
            f"codec: devops_dataset({sizes.codec_series}, {sizes.codec_points_per_series}, "
            f"seed={SEED}) in {block_points}-point blocks"
        )
        codec = _measure_codec(sizes, block_points)
        run_id = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        progress("finding a broker (KAFKA_BOOTSTRAP_SERVERS, else Docker, else a local JVM)")
        with (
            provide_broker(settings, local_name=f"bench-{os.getpid()}") as broker,
            tempfile.TemporaryDirectory(prefix="themis-bench-") as work_dir,
        ):
            progress(
                f"broker at {broker.bootstrap_servers} ({broker.source}, "
                f"started in {broker.startup_seconds} s); topics under {run_id}.*"
            )
            try:
                measured = _broker_measurements(settings, broker, sizes, run_id, Path(work_dir))
            finally:
                if broker.source == "environment":  # a broker we started goes away whole
                    left = delete_topics_under(broker.bootstrap_servers, f"{run_id}.")
                    if left:
                        progress(f"could not delete topics {', '.join(left)}")
    points = measured.pop("points")
    assert isinstance(points, dict)
    return {
        "benchmark": "ts",
        "quick": quick,
        "dataset": {
            "generator": "pipeline.ts.dataset.devops_dataset",
            "series": sizes.codec_series,
            "points_per_series": sizes.codec_points_per_series,
            "seed": SEED,
            "block_points": block_points,
            "description": f"{sizes.codec_series} devops series (counters, gauges, "
            f"near-constant) x {sizes.codec_points_per_series} points at 10 s +-200 ms, "
            f"seed {SEED}, cut into {block_points}-point blocks",
        },
        "bytes_per_point": rounded(codec.block_bytes / codec.points, 4),
        "compression_ratio": rounded(POINT_BYTES * codec.points / codec.block_bytes, 4),
        "encode_points_per_s": rounded(codec.encode_points_per_s),
        "decode_points_per_s": rounded(codec.decode_points_per_s),
        **measured,
        "points": {"codec": codec.points} | points,
        "codec": {"blocks": codec.blocks, "repetitions": sizes.codec_repetitions},
        "topic_prefix": f"{run_id}.",
        "broker": {
            "source": broker.source,
            "bootstrap_servers": broker.bootstrap_servers,
            "startup_seconds": broker.startup_seconds,
        },
        "machine": machine_info(),
        "seconds_total": round(time.monotonic() - begun, 1),
        "definitions": dict(DEFINITIONS),
    }


# -- output and command line ----------------------------------------------------------


def _rate(value: object, unit: str) -> str:
    number = float(value)  # type: ignore[arg-type]
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if number >= scale:
            return f"{number / scale:.3g} {prefix} {unit}/s"
    return f"{number:.3g} {unit}/s"


def render_table(result: Mapping[str, object]) -> str:
    """The result as a readable table (the JSON has every detail)."""
    r: Any = result
    pipe = r["pipeline"]
    machine, broker, dataset = r["machine"], r["broker"], r["dataset"]
    rows = [
        (
            "compression",
            f"{r['bytes_per_point']} bytes/point",
            f"ratio {r['compression_ratio']} (16 raw bytes per point)",
        ),
        (
            "Gorilla encode",
            _rate(r["encode_points_per_s"], "points"),
            f"one core, best of {r['codec']['repetitions']}",
        ),
        ("Gorilla decode", _rate(r["decode_points_per_s"], "points"), ""),
        (
            "pipeline, JSON points",
            _rate(r["pipeline_points_per_s_json"], "points"),
            f"{pipe['json']['points']:,} points, one message each; "
            f"its blocks' ratio {pipe['json']['compression_ratio']}",
        ),
        (
            "pipeline, frames",
            _rate(r["pipeline_points_per_s_frames"], "points"),
            f"{pipe['frames']['points']:,} points in {pipe['frames']['messages']:,} messages; "
            f"its blocks' ratio {pipe['frames']['compression_ratio']}",
        ),
        (
            "bare consumer",
            _rate(r["bare_consume_msgs_per_s"], "msgs"),
            "the JSON points topic, no decoding",
        ),
        ("JSON pipeline / bare", f"{r['json_vs_bare_consume']}", ""),
        (
            "buffered writes",
            _rate(r["buffered_points_per_s"], "points"),
            f"{pipe['buffered']['points']:,} points, TSAutoBuffer + acked flush per batch",
        ),
        (
            "direct writes",
            _rate(r["direct_points_per_s"], "points"),
            f"{pipe['direct']['points']:,} points, one acked record each",
        ),
        ("buffered / direct", f"{r['buffered_vs_direct']}", ""),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [
        f"time-series benchmark ({'quick' if r['quick'] else 'full'} run): "
        f"{machine['nproc']} CPUs, Python {machine['python']}; broker {broker['source']} "
        f"(started in {broker['startup_seconds']} s)",
        f"dataset: {dataset['description']}",
        "",
        *(f"  {name:<{width}}  {value:<20}  {note}".rstrip() for name, value, note in rows),
        "",
        f"worker flush interval {r['settings']['flush_interval_ms']} ms; "
        f"{r['seconds_total']} s in all; definitions: --json",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.bench.ts [--quick] [--json]``; returns the exit code."""
    return run_bench_main(
        "ts", "How small and how fast the time-series path is.", run_ts_bench, render_table, argv
    )


if __name__ == "__main__":
    sys.exit(main())
