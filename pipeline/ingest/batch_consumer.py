"""The one ingest-stage loop: a confluent-kafka consumer that hands whole batches to a stage.

Faust runs every event through its per-event machinery (~245 µs each on a small
machine); a batch of 1,000 records from ``Consumer.consume`` costs one call. So the
worker's input topics are read here, inside the Faust worker (its web pages, timers and
lifecycle stay), by one consumer per stage in its own group ``<app_id>-<stage>``:

1. ``consume(batch_size, poll_timeout)`` runs on a thread; the event loop stays free.
   The next batch is consumed while the stage works on this one (the two share the GIL
   only while they build or read Python objects; a compiled decoder releases it).
2. The stage's :meth:`BatchStage.on_batch` decodes and buffers the batch, holding one
   :class:`~pipeline.ingest.offsets.BatchToken` per partition in the stage's
   :class:`~pipeline.ingest.offsets.OffsetTracker`, released as flushes become durable.
3. After each batch the offsets that became committable are committed (asynchronously;
   a lost commit only means a replay, and replays are idempotent).

Rebalance (``cooperative-sticky`` assignment: only partitions that move are revoked):
on revoke the stage flushes what it holds and waits until it is durable, the
committable offsets are committed synchronously, then the partitions are forgotten;
on lost (the session expired, another member may own them already) the stage drops
what it holds for them uncommitted: the new owner replays it, and replays yield the
same blocks and the same vector state. Rebalance callbacks run on the consumer's
thread, so they wait for the stage's coroutines on the event loop; they take the stage
lock that each batch holds while it is buffered, so a revoke never overtakes a batch
consumed before it (the batch is buffered, then flushed with the rest).

Stopping (:meth:`BatchConsumer.run` returns when ``stop`` is set): everything held is
flushed and committed, then the consumer is closed (leaving the group at once). A batch
consumed ahead but not yet handed to the stage is dropped uncommitted: the next owner
reads it again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, Final, Protocol

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from pipeline.ingest.offsets import OffsetTracker
from pipeline.kafka.consumer import commit_offsets, make_consumer

__all__ = ["BATCH_SIZE", "FETCH_OVERRIDES", "BatchConsumer", "BatchStage"]

_LOG = logging.getLogger(__name__)

BATCH_SIZE: Final = 1000
"""Records asked of ``Consumer.consume`` at a time."""
POLL_TIMEOUT_S: Final = 0.1
"""How long one ``consume`` waits for the first record (seconds)."""
FETCH_OVERRIDES: Final = {
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "partition.assignment.strategy": "cooperative-sticky",
    "session.timeout.ms": 6_000,
    # librdkafka waits 1 s before refilling a partition queue that reached its limit;
    # a stage that drains 100k records a second would starve on that.
    "fetch.queue.backoff.ms": 10,
    "heartbeat.interval.ms": 1_000,
}
"""librdkafka settings of the stage consumers (larger fetches than the default 1 MiB)."""


class BatchStage(Protocol):
    """What :class:`BatchConsumer` drives: one ingest stage of the worker."""

    topic: str
    """The input topic."""
    offsets: OffsetTracker
    """Tokens the stage holds and releases; the consumer commits what they allow."""

    async def on_batch(self, messages: list[Message]) -> None:
        """Decode and buffer one batch (records of any assigned partitions, in order)."""

    async def on_assigned(self, partitions: set[int]) -> None:
        """``partitions`` are now this worker's (open what they need)."""

    async def on_revoked(self, partitions: set[int]) -> None:
        """``partitions`` move away: make what they carried durable before returning."""

    async def on_lost(self, partitions: set[int]) -> None:
        """``partitions`` were lost: drop what they carried; do not write it."""


class BatchConsumer:
    """Feeds ``stage`` from its topic in batches, in consumer group ``group``."""

    def __init__(
        self,
        stage: BatchStage,
        *,
        bootstrap: str,
        group: str,
        batch_size: int = BATCH_SIZE,
        poll_timeout_s: float = POLL_TIMEOUT_S,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.stage = stage
        self.bootstrap = bootstrap
        self.group = group
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.overrides = FETCH_OVERRIDES | (overrides or {})
        self._assigned: set[int] = set()
        self._assigned_lock = threading.Lock()
        self._stage_lock = asyncio.Lock()
        """Held while a batch is buffered and while a rebalance callback runs."""
        self.batches = 0
        self.records = 0

    @property
    def assigned(self) -> set[int]:
        """Partitions of the topic this consumer holds now."""
        with self._assigned_lock:
            return set(self._assigned)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then flush, commit and leave the group."""
        loop = asyncio.get_running_loop()
        consumer = make_consumer(self.bootstrap, self.group, **self.overrides)
        topic = self.stage.topic

        def wait(coro: Coroutine[Any, Any, None]) -> None:
            asyncio.run_coroutine_threadsafe(self._locked(coro), loop).result()

        def partitions(tps: list[TopicPartition]) -> set[int]:
            return {tp.partition for tp in tps if tp.topic == topic}

        def on_assign(c: Consumer, tps: list[TopicPartition]) -> None:
            ours = partitions(tps)
            wait(self.stage.on_assigned(ours))
            with self._assigned_lock:
                self._assigned |= ours

        def on_revoke(c: Consumer, tps: list[TopicPartition]) -> None:
            ours = partitions(tps)
            wait(self.stage.on_revoked(ours))
            self._commit(c, asynchronous=False)
            self._forget(ours)

        def on_lost(c: Consumer, tps: list[TopicPartition]) -> None:
            ours = partitions(tps)
            wait(self.stage.on_lost(ours))
            self._forget(ours)

        def consume() -> asyncio.Future[list[Message]]:
            return asyncio.ensure_future(
                asyncio.to_thread(consumer.consume, self.batch_size, self.poll_timeout_s)
            )

        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        ahead: asyncio.Future[list[Message]] | None = None
        try:
            ahead = consume()
            while not stop.is_set():
                messages = await ahead
                ahead = consume()  # the next batch arrives while this one is buffered
                records = [m for m in messages if m.error() is None]
                if len(records) != len(messages):
                    _log_errors(messages)
                if records:
                    self.batches += 1
                    self.records += len(records)
                    async with self._stage_lock:
                        await self.stage.on_batch(records)
                self._commit(consumer, asynchronous=True)
            await self._locked(self.stage.on_revoked(self.assigned))
            self._commit(consumer, asynchronous=False)
        finally:
            if ahead is not None:
                # Consumed ahead, never buffered: dropped uncommitted (read again later).
                await asyncio.gather(ahead, return_exceptions=True)
            await asyncio.to_thread(consumer.close)

    async def _locked(self, coro: Coroutine[Any, Any, None]) -> None:
        async with self._stage_lock:
            await coro

    def _commit(self, consumer: Consumer, *, asynchronous: bool) -> None:
        offsets = self.stage.offsets.committable()
        if not offsets:
            return
        tps = [TopicPartition(self.stage.topic, p, o) for p, o in sorted(offsets.items())]
        commit_offsets(consumer, tps, asynchronous=asynchronous)

    def _forget(self, partitions: set[int]) -> None:
        self.stage.offsets.drop(partitions)
        with self._assigned_lock:
            self._assigned -= partitions


def _log_errors(messages: list[Message]) -> None:
    for message in messages:
        error = message.error()
        if error is not None and error.code() != KafkaError._PARTITION_EOF:
            _LOG.warning("consuming %s: %s", message.topic(), error.str())
