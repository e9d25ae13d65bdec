"""confluent-kafka consumers with the project's defaults, and offset calls that retry.

Every consumer the pipeline creates comes from :func:`make_consumer` (or the
:func:`open_consumer` context manager, which closes it): offsets are committed
explicitly, never automatically (``enable.auto.commit`` false), because an offset
may only move once what it covers is durable; a partition's end raises no event;
a group without a committed offset starts at the beginning.

:func:`committed_offset` and :func:`commit_offset` turn librdkafka's errors into
:class:`~pipeline.errors.KafkaOperationFailed` and retry them through
:func:`~pipeline.errors.call_with_retries` while the error is retriable (a fresh
broker answers ``NOT_COORDINATOR`` while its group coordinator loads).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.errors import KafkaOperationFailed, call_with_retries
from pipeline.kafka import clients

__all__ = [
    "LARGE_FETCH",
    "commit_offset",
    "commit_offsets",
    "committed_offset",
    "committed_offsets",
    "consumer_config",
    "make_consumer",
    "open_consumer",
    "partition_count",
    "watermark_offsets",
]

_LOG = logging.getLogger(__name__)

LARGE_FETCH: Final = {
    "fetch.max.bytes": 128 * 1024 * 1024,
    "max.partition.fetch.bytes": 64 * 1024 * 1024,
}
"""Fetch sizes for consumers that read whole topics of large records (blocks, batches)."""

_COORDINATOR_MOVING: Final = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._WAIT_COORD,
        KafkaError._TIMED_OUT,
    }
)


def consumer_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """librdkafka settings: the project's defaults, then ``overrides`` (librdkafka names)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
    }
    config.update(overrides)
    return config


def make_consumer(bootstrap: str, group_id: str, **overrides: Any) -> Consumer:
    """A consumer with :func:`consumer_config` (registered until closed); the caller closes it."""
    return clients.Consumer(consumer_config(bootstrap, group_id, **overrides))


@contextlib.contextmanager
def open_consumer(bootstrap: str, group_id: str, **overrides: Any) -> Iterator[Consumer]:
    """:func:`make_consumer` as a context manager that always closes the consumer."""
    consumer = make_consumer(bootstrap, group_id, **overrides)
    try:
        yield consumer
    finally:
        consumer.close()


def _kafka_failure(
    what: str, exc: KafkaException, transient: frozenset[int] = _COORDINATOR_MOVING
) -> KafkaOperationFailed:
    """``exc`` as the project's error: retriable if librdkafka says so or its code is in
    ``transient``."""
    error = exc.args[0] if exc.args else None
    retriable = isinstance(error, KafkaError) and (error.retriable() or error.code() in transient)
    return KafkaOperationFailed(f"{what} failed: {exc}", retriable=retriable)


def committed_offsets(
    consumer: Consumer, partitions: list[TopicPartition], timeout_s: float = 60.0
) -> list[int]:
    """The group's committed offsets of ``partitions`` (negative where none), in order."""

    def ask() -> list[int]:
        try:
            return [int(tp.offset) for tp in consumer.committed(partitions, timeout=10)]
        except KafkaException as exc:
            raise _kafka_failure("reading committed offsets", exc) from exc

    return call_with_retries(ask, timeout_s=timeout_s)


def committed_offset(consumer: Consumer, tp: TopicPartition, timeout_s: float = 60.0) -> int:
    """The group's committed offset of ``tp`` (negative: none)."""
    return committed_offsets(consumer, [tp], timeout_s)[0]


def commit_offset(consumer: Consumer, tp: TopicPartition, timeout_s: float = 60.0) -> None:
    """Commit ``tp`` synchronously, retrying while the error is retriable."""
    commit_offsets(consumer, [tp], timeout_s=timeout_s)


def commit_offsets(
    consumer: Consumer,
    partitions: list[TopicPartition],
    *,
    asynchronous: bool = False,
    timeout_s: float = 60.0,
) -> None:
    """Commit ``partitions`` (their ``offset`` is the next record to read).

    Synchronously: retried while the error is retriable, raised otherwise.
    ``asynchronous``: queued and not awaited; a commit that fails is only logged,
    because a later one covers it (a crash in between means a replay).
    """
    if asynchronous:
        try:
            consumer.commit(offsets=partitions, asynchronous=True)
        except KafkaException as exc:
            _LOG.warning("queueing an offset commit failed (a later one covers it): %s", exc)
        return

    def commit() -> None:
        try:
            consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:
            raise _kafka_failure(f"committing {partitions[0].topic}", exc) from exc

    call_with_retries(commit, timeout_s=timeout_s)


_NOT_KNOWN_YET: Final = _COORDINATOR_MOVING | {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
}
"""What a broker just resumed, a topic just created (its leader not elected yet) or a
client that has not refreshed its metadata answers; librdkafka does not mark the
leader codes retriable on a watermark read."""


def partition_count(bootstrap: str, topic: str, timeout_s: float = 10.0) -> int:
    """The partition count of ``topic`` on ``bootstrap`` (0 while it does not exist)."""
    with open_consumer(bootstrap, "themis-metadata") as consumer:  # metadata only
        described = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    return 0 if described is None or described.error else len(described.partitions)


def watermark_offsets(
    consumer: Consumer, tp: TopicPartition, timeout_s: float = 30.0
) -> tuple[int, int]:
    """``(low, high)`` offsets of ``tp``, retried while the broker cannot tell yet (a
    broker just resumed answers "not leader" or "unknown partition" for a moment)."""

    def ask() -> tuple[int, int]:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
        except KafkaException as exc:
            what = f"reading the offsets of {tp.topic} [{tp.partition}]"
            raise _kafka_failure(what, exc, _NOT_KNOWN_YET) from exc
        return int(low), int(high)

    return call_with_retries(ask, timeout_s=timeout_s)
