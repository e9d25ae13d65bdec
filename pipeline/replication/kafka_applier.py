"""The Kafka applier: applies batches from the replica cluster's topic into a ReplicaState.

:func:`run_kafka_applier` (``themis wal apply``) reads ``<namespace>.wal.replica`` on
the replica cluster (created by :func:`~pipeline.replication.topics.ensure_replica_topics`
with ``<namespace>.deadletter`` and ``<namespace>.wal.replica.status``) and commits its
consumer offset (group ``<app_id>-wal-apply-<replica>``) only after a batch applied
(without waiting for the broker's answer, and once more, waited for, on the way out):

* a corrupt batch is dead-lettered on the replica cluster with the reason, and its
  offset committed (sending the same bytes again cannot repair it);
* a gap (per WAL partition: a batch of partition 2 beyond its last applied LSN) is
  skipped without committing (the missing range comes later, re-sent by the shipper);
  batches of the other partitions apply meanwhile;
* after each batch applied, at least every ``status_interval_s`` seconds while idle,
  and at once after a gap, the applier writes a status record to the status topic,
  where the shipper's Kafka target reads the LSN applied (what is queryable, for its
  lag) and any gap (to re-send a missing range)::

      key    replica name, UTF-8
      value  {"replica": "r1", "last_applied_lsn": "00000000000000f0",
              "expected_lsn": "00000000000000f1", "gap": false, "at_ms": 1700000000000,
              "partitions": {"0": {"last_applied_lsn": "00000000000000f0",
                                   "expected_lsn": "00000000000000f1", "gap": false},
                             "1": {...}}}

  Each WAL partition has its own positions and gap under ``partitions``; the
  top-level positions are partition 0's (what a shipper built before issue 17 reads).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from pipeline.config import Settings
from pipeline.errors import CorruptBatch, ForeignPrimary, WalGap
from pipeline.ingest.deadletter import DeadLetter
from pipeline.kafka.clients import Producer
from pipeline.kafka.consumer import (
    LARGE_FETCH,
    commit_offset,
    commit_offsets,
    committed_offset,
    open_consumer,
)
from pipeline.kafka.producer import durable_producer_config
from pipeline.replication.replica import ApplyResult, ReplicaState
from pipeline.replication.topics import REPLICA_STATUS_TOPIC, REPLICA_TOPIC, ensure_replica_topics
from pipeline.wal.batch import read_header
from pipeline.wal.entry import format_lsn

__all__ = ["ApplierStats", "run_kafka_applier"]

_LOG = logging.getLogger(__name__)


@dataclass
class ApplierStats:
    """Counters of one :func:`run_kafka_applier` run."""

    batches_applied: int = 0
    entries_applied: int = 0
    corrupt_batches: int = 0
    gaps: int = 0
    duplicate_batches: int = 0
    errors: list[str] = field(default_factory=list)


def _status_record(name: str, state: ReplicaState, gaps: set[int]) -> bytes:
    """The status topic's value for replica ``name`` (see the module docstring)."""
    applied = state.applied_lsns()
    partitions = {
        str(p): {
            "last_applied_lsn": format_lsn(lsn),
            "expected_lsn": format_lsn(lsn + 1),
            "gap": p in gaps,
        }
        for p, lsn in applied.items()
    }
    first = applied.get(0, 0)
    return orjson.dumps(
        {
            "replica": name,
            "last_applied_lsn": format_lsn(first),
            "expected_lsn": format_lsn(first + 1),
            "gap": 0 in gaps,
            "at_ms": int(time.time() * 1000),
            "partitions": partitions,
        }
    )


def run_kafka_applier(
    state: ReplicaState,
    bootstrap: str,
    settings: Settings,
    replica_name: str,
    *,
    stop: threading.Event,
    until_caught_up: bool = False,
    on_result: Callable[[ApplyResult], None] | None = None,
    status_interval_s: float = 0.5,
) -> ApplierStats:
    """Apply batches from ``<namespace>.wal.replica`` on ``bootstrap`` until ``stop`` is set.

    ``until_caught_up`` returns once the topic's end is reached and nothing is
    missing. ``on_result`` sees every successful apply. ``status_interval_s`` is in
    seconds. See the module docstring for offsets, dead letters and gaps.
    """
    ensure_replica_topics(bootstrap, settings)
    topic = settings.topic(REPLICA_TOPIC)
    group = f"{settings.worker.app_id}-wal-apply-{replica_name}"
    producer = Producer(durable_producer_config(bootstrap))
    stats = ApplierStats()
    with producer, open_consumer(bootstrap, group, **LARGE_FETCH) as consumer:
        committed = committed_offset(consumer, TopicPartition(topic, 0))
        start = committed if committed >= 0 else OFFSET_BEGINNING
        consumer.assign([TopicPartition(topic, 0, start)])
        last_status = 0.0
        gaps: set[int] = set()
        applied_offset: int | None = None
        while not stop.is_set():
            msg = consumer.poll(0.2)
            now = time.monotonic()
            if msg is None:
                if until_caught_up and not gaps:
                    position = consumer.position([TopicPartition(topic, 0)])[0].offset
                    if position < 0:  # nothing fetched yet: still where this run started
                        position = max(start, 0)
                    _, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, 0), timeout=10, cached=False
                    )
                    if position >= high:
                        break
                if now - last_status > status_interval_s:
                    _send_status(producer, settings, replica_name, state, gaps)
                    last_status = now
                continue
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    _LOG.warning("WAL applier %s: %s", replica_name, error.str())
                continue
            value = msg.value() or b""
            offset = msg.offset()
            assert offset is not None
            try:
                result = state.apply_batch(value)
            except WalGap as gap:
                stats.gaps += 1
                partition = read_header(value).partition
                if partition not in gaps:
                    _LOG.warning("WAL applier %s: %s; waiting for the range", replica_name, gap)
                gaps.add(partition)
                _send_status(producer, settings, replica_name, state, gaps)
                last_status = now
                continue
            except (CorruptBatch, ForeignPrimary) as exc:
                stats.corrupt_batches += 1
                _LOG.error(
                    "WAL applier %s: batch at offset %d dead-lettered: %s",
                    replica_name,
                    offset,
                    exc,
                )
                letter = DeadLetter(
                    msg.key(), value, str(exc), type(exc).__name__, topic, 0, offset
                )
                dead_headers: list[tuple[str, str | bytes | None]] = list(letter.headers())
                producer.produce(
                    settings.topic("deadletter"), value, key=msg.key(), headers=dead_headers
                )
                producer.flush(30)
                commit_offset(consumer, TopicPartition(topic, 0, offset + 1))
                continue
            gaps.discard(result.partition)
            if result.entries_applied == 0 and result.entries_rejected == 0:
                stats.duplicate_batches += 1
            else:
                stats.batches_applied += 1
                stats.entries_applied += result.entries_applied
            if on_result is not None:
                on_result(result)
            # Every applied batch is reported at once: the shipper's lag waits for it.
            _send_status(producer, settings, replica_name, state, gaps)
            last_status = now
            # Not awaited: a synchronous commit per batch (a broker round trip) capped
            # the applier at a few hundred batches a second and queued the rest. A lost
            # commit re-reads batches the replica skips as applied.
            applied_offset = offset + 1
            commit_offsets(consumer, [TopicPartition(topic, 0, applied_offset)], asynchronous=True)
        if applied_offset is not None:
            commit_offset(consumer, TopicPartition(topic, 0, applied_offset))
        _send_status(producer, settings, replica_name, state, gaps)
        producer.flush(10)
    return stats


def _send_status(
    producer: Producer, settings: Settings, name: str, state: ReplicaState, gaps: set[int]
) -> None:
    producer.produce(
        settings.topic(REPLICA_STATUS_TOPIC), _status_record(name, state, gaps), key=name.encode()
    )
    producer.poll(0)
