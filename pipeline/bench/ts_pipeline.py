"""Producer -> Kafka -> ``themis worker`` -> durable blocks, and a bare consumer beside it.

:func:`measure_pipeline` pre-produces points (one JSON point per message, or binary
batch frames), then starts a worker child process and times it from its first
consumed point to every point durable, reading ``/ts/buffer/stats`` through the
worker client. :func:`bare_consume` drains a points topic with a plain consumer and
nothing decoded: what Kafka alone delivers to one process.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from pipeline.bench.harness import progress, rounded, time_worker, worker_running
from pipeline.bench.ts_codec import Series
from pipeline.config import Settings
from pipeline.errors import BenchmarkFailed
from pipeline.kafka.consumer import open_consumer
from pipeline.kafka.topics import apply_topics
from pipeline.ts.point import DataPoint, series_key
from pipeline.ts.producer import TSProducer
from pipeline.worker import pages

__all__ = ["PipelineRun", "bare_consume", "measure_pipeline", "produce_frames", "produce_json"]

_STARTUP_TIMEOUT_S: Final = 120.0


@dataclass(frozen=True)
class PipelineRun:
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


def produce_json(producer: TSProducer, series: list[Series]) -> int:
    """Every point as one JSON message (``TSProducer.put``), series interleaved in time."""
    columns = [(m, e, ts.tolist(), vs.tolist()) for m, e, ts, vs in series]
    length = min(len(ts) for _, _, ts, _ in columns)
    for i in range(length):
        for metric, entity, ts, vs in columns:
            producer.put(DataPoint(metric, entity, ts[i], vs[i]))
    return length * len(columns)


def produce_frames(producer: TSProducer, series: list[Series], slice_points: int) -> int:
    """Binary batch frames: each ``put_arrays`` call carries ``slice_points`` of every series."""
    keyed = [(series_key(m, e), ts, vs) for m, e, ts, vs in series]
    length = min(int(ts.size) for _, ts, _ in keyed)
    sent = 0
    for start in range(0, length, slice_points):
        end = start + slice_points
        sent += producer.put_arrays((key, ts[start:end], vs[start:end]) for key, ts, vs in keyed)
    return sent


def _message_count(bootstrap: str, topic: str) -> int:
    """Records in ``topic``: the sum over partitions of high minus low watermark."""
    with open_consumer(bootstrap, f"{topic}.count") as consumer:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total


def measure_pipeline(
    settings: Settings,
    log_path: Path,
    produce: Callable[[TSProducer], int],
    *,
    what: str,
    min_points_per_s: float,
) -> PipelineRun:
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
    with worker_running(settings, log_path) as worker:
        timing = time_worker(
            worker,
            pages.TS_STATS,
            launched=time.monotonic(),
            consumed=lambda page: page["points_buffered"] > 0,
            done=lambda page: page["points_flushed"] >= points,
            startup_timeout_s=_STARTUP_TIMEOUT_S,
            done_timeout_s=30 + points / min_points_per_s,
            done_interval_s=0.05,
            what=what,
            done_what=f"all {points:,} {what} points durable",
        )
    exit_code = worker.stop()  # stopped when the block ended: this reads its exit code
    if exit_code != 0:
        progress(f"{what}: the worker exited with code {exit_code}; log tail:\n{worker.log_tail()}")
    final = timing.final
    if final["dead_letters"]:
        raise BenchmarkFailed(
            f"{what}: the worker dead-lettered {final['dead_letters']} records; "
            f"log tail:\n{worker.log_tail()}"
        )
    run = PipelineRun(
        points=points,
        messages=messages,
        produce_seconds=produce_s,
        worker_ready_seconds=timing.ready_seconds,
        points_timed=points - int(timing.first["points_buffered"]),
        seconds=timing.seconds,
        blocks_written=int(final["blocks_written"]),
        compression_ratio=float(final["avg_compression_ratio"]),
        flush_reasons={k: v for k, v in final["flush_reasons"].items() if v},
        worker_exit_code=exit_code,
    )
    progress(
        f"{what}: {run.points_per_s:,.0f} points/s ({run.points_timed:,} points in "
        f"{run.seconds:.2f} s after a {run.worker_ready_seconds:.1f} s start-up)"
    )
    return run


def bare_consume(bootstrap: str, topic: str, expected: int) -> tuple[int, float]:
    """``(messages, seconds)`` for a plain consumer draining ``topic`` from the start.

    A new group, every partition assigned from the beginning, values touched, nothing
    decoded. The clock runs from ``assign`` to the last message; connecting and
    reading the topic's metadata happen before.
    """
    group = f"{topic}.bare-{uuid.uuid4().hex[:8]}"
    with open_consumer(bootstrap, group) as consumer:
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
            for msg in consumer.consume(1000, timeout=0.5):
                error = msg.error()
                if error is not None:
                    raise BenchmarkFailed(f"the bare consumer got an error from {topic}: {error}")
                if msg.value() is not None:
                    seen += 1
        return seen, time.monotonic() - started
