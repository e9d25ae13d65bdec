"""Producer -> Kafka -> ``themis worker`` -> durable blocks, and a bare consumer beside it.

:func:`measure_pipeline` pre-produces points (one JSON point per message with
:func:`produce_json`, or binary batch frames with :func:`produce_frames`), then starts
a worker child process and times it from its first consumed point to every point
durable, reading ``/ts/buffer/stats`` through the worker client. :func:`bare_consume`
drains a points topic with a plain consumer with the stage consumers' fetch settings
(:data:`BARE_FETCH`) and nothing decoded: what Kafka alone delivers to one process.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from pipeline.bench.harness import progress, rounded, time_worker, worker_running
from pipeline.bench.ts_codec import Series, series_tags
from pipeline.bench.ts_writes import AckedProducer
from pipeline.config import Settings
from pipeline.errors import BenchmarkFailed
from pipeline.ingest.batch_consumer import BATCH_SIZE, FETCH_OVERRIDES
from pipeline.kafka.consumer import open_consumer
from pipeline.kafka.topics import apply_topics
from pipeline.ts.point import DataPoint, series_key
from pipeline.ts.producer import TSProducer
from pipeline.worker import pages

__all__ = [
    "BARE_FETCH",
    "BareDrain",
    "PipelineRun",
    "bare_consume",
    "measure_pipeline",
    "produce_frames",
    "produce_json",
]

_STARTUP_TIMEOUT_S: Final = 120.0
_MIN_TIMED_SHARE: Final = 0.1
"""Below this share of the points consumed after the clock started, a run is no measurement."""
_FETCH_QUEUE_BACKOFF_MS: Final = 10
BARE_FETCH: Final[dict[str, Any]] = {"fetch.queue.backoff.ms": _FETCH_QUEUE_BACKOFF_MS} | {
    name: value
    for name, value in FETCH_OVERRIDES.items()
    if name != "partition.assignment.strategy"
}
"""The bare consumer's librdkafka settings: the stage consumers' ``FETCH_OVERRIDES``
without the assignment strategy, which a consumer that assigns its partitions itself
(no group membership) never uses; and, unless ``FETCH_OVERRIDES`` sets it,
``fetch.queue.backoff.ms`` 10. librdkafka postpones a partition's next fetch by that
much (1,000 ms by default) once its local queue holds ``queued.min.messages``
(100,000): a consumer that drains a partition faster than 100,000 messages a second
then sits idle for most of a second, and the drain measures the backoff, not Kafka
(seen here: 0.32-0.35 M instead of 0.8-1.3 M messages/s in about one drain of three).
The worker's stages consume more slowly than that, so at today's rates their queues do
not run dry."""


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


def produce_json(bootstrap: str, topic: str, series: list[Series], *, tagged: bool) -> int:
    """Every point as one JSON message, series interleaved in time; returns the count.

    The records are what ``TSProducer.put`` sends (``DataPoint.to_json``, keyed by the
    series key; series ``i`` tagged with :func:`series_tags` when ``tagged``), encoded
    first and produced with a plain durable producer (``acks=all``, idempotent, the
    ``consistent`` partitioner): ``put`` costs tens of microseconds a point in Python,
    too slow to fill a topic of half a million points quickly. Every record is
    acknowledged on return.
    """
    columns = []
    for i, (metric, entity, ts, vs) in enumerate(series):
        tags = series_tags(i) if tagged else {}
        key = series_key(metric, entity, tags).encode()
        columns.append((key, metric, entity, tags, ts.tolist(), vs.tolist()))
    length = min((len(c[4]) for c in columns), default=0)
    with AckedProducer(bootstrap, topic, partitioner="consistent") as producer:
        produce = producer.produce
        for i in range(length):
            for key, metric, entity, tags, ts, vs in columns:
                produce(key, DataPoint(metric, entity, ts[i], vs[i], tags).to_json())
        producer.flush_acked(timeout_s=300)
    return length * len(columns)


def produce_frames(producer: TSProducer, series: list[Series], slice_points: int) -> int:
    """Binary batch frames: each ``put_arrays`` call carries ``slice_points`` of every series;
    ``producer`` is closed, everything acknowledged, on return."""
    keyed = [(series_key(m, e), ts, vs) for m, e, ts, vs in series]
    length = min(int(ts.size) for _, ts, _ in keyed)
    sent = 0
    for start in range(0, length, slice_points):
        end = start + slice_points
        sent += producer.put_arrays((key, ts[start:end], vs[start:end]) for key, ts, vs in keyed)
    producer.close(timeout_s=300)
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
    produce: Callable[[], int],
    *,
    what: str,
    min_points_per_s: float,
    strict: bool = True,
) -> PipelineRun:
    """Create the topics, pre-produce, start a worker, time it from its first consumed
    point to all durable.

    ``produce`` fills ``settings``' points topic (every record acknowledged) and returns
    the points sent. ``min_points_per_s`` bounds the wait: slower than that is a
    failure, not a result. ``strict`` false (the smoke size, whose figures say nothing
    about speed): a worker that buffered nearly everything before its first stats page
    is timed over all the points instead of failing the run.
    """
    bootstrap = settings.kafka.bootstrap_servers
    assert bootstrap is not None
    apply_topics(bootstrap, settings)
    t0 = time.perf_counter()
    points = produce()
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
    points_timed = points - int(timing.first["points_buffered"])
    seconds = timing.seconds
    if points_timed < points * _MIN_TIMED_SHARE and not strict:
        progress(f"{what}: nearly every point was buffered before the first stats page")
        points_timed, seconds = points, max(seconds, 1e-3)
    if points_timed < points * _MIN_TIMED_SHARE:
        raise BenchmarkFailed(
            f"{what}: the worker's first stats page came after {points - points_timed:,} of "
            f"{points:,} points were buffered (its event loop was busy with one large "
            "batch); too few points were timed for a rate: use more points"
        )
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
        points_timed=points_timed,
        seconds=seconds,
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


@dataclass(frozen=True)
class BareDrain:
    """One drain of a topic by the bare consumer."""

    messages: int
    value_bytes: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def bare_consume(bootstrap: str, topic: str, expected: int) -> BareDrain:
    """A plain consumer draining ``topic`` from the start.

    A new group, the fetch settings of :data:`BARE_FETCH`, every partition assigned
    from the beginning, ``consume`` in batches of the stage consumers' ``BATCH_SIZE``,
    value lengths summed, nothing decoded. The clock runs from ``assign`` to the last
    message; connecting and reading the topic's metadata happen before.
    """
    group = f"{topic}.bare-{uuid.uuid4().hex[:8]}"
    with open_consumer(bootstrap, group, **BARE_FETCH) as consumer:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        started = time.monotonic()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = started + 30 + expected / 10_000
        seen = value_bytes = 0
        while seen < expected:
            if time.monotonic() > deadline:
                raise BenchmarkFailed(
                    f"the bare consumer read {seen:,} of {expected:,} messages of {topic} "
                    "before its deadline"
                )
            for msg in consumer.consume(BATCH_SIZE, timeout=0.5):
                error = msg.error()
                if error is not None:
                    raise BenchmarkFailed(f"the bare consumer got an error from {topic}: {error}")
                value = msg.value()
                if value is not None:
                    seen += 1
                    value_bytes += len(value)
        return BareDrain(seen, value_bytes, time.monotonic() - started)
