"""Producers whose deliveries can be awaited from asyncio (:class:`AsyncProducer`) or waited
on (:class:`TopicProducer`), and :class:`RecordProducer`, what writers need of one.

``acks=all`` and idempotence are on: a record counts as durable when the broker
acknowledged it, and retries never duplicate it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, Self

from confluent_kafka import KafkaError, KafkaException, Message

from pipeline.errors import DeliveryFailed, TopicError
from pipeline.kafka.clients import Producer

__all__ = [
    "AsyncProducer",
    "Headers",
    "RecordProducer",
    "TopicProducer",
    "durable_producer_config",
    "key_partition",
]

Headers = Sequence[tuple[str, bytes]]


class RecordProducer(Protocol):
    """What the WAL and block writers and the facade need of a producer.

    :class:`AsyncProducer` is the real one; tests pass fakes that resolve at once.
    """

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        """Send one record; the future resolves when the broker acknowledged it."""
        ...

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait up to ``timeout_s`` seconds for deliveries; returns how many are left."""
        ...

    def close(self) -> None:
        """Deliver what is queued, then release the producer."""
        ...


def durable_producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """librdkafka settings for records that must be durable before anything is acked."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "message.max.bytes": 8 * 1024 * 1024,
    }
    config.update(extra)
    return config


class _Inbox:
    """Delivery reports for one event loop, settled there in bulk.

    The poll thread appends each report and wakes the loop only when no settling is
    already scheduled: one ``call_soon_threadsafe`` (one self-pipe write and one loop
    wake-up) per batch of reports instead of per record.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reports: deque[tuple[asyncio.Future[Message], KafkaError | None, Message]] = deque()
        self.scheduled = False

    def report(self, future: asyncio.Future[Message], err: KafkaError | None, msg: Message) -> None:
        """Any thread: queue one report; wake the loop unless a settle is due already."""
        self.reports.append((future, err, msg))
        if not self.scheduled:
            self.scheduled = True
            try:
                self.loop.call_soon_threadsafe(self.settle)
            except RuntimeError:  # the loop is closed; nobody awaits these futures
                self.reports.clear()
                self.scheduled = False

    def settle(self) -> None:
        """On the loop: resolve every queued report's future."""
        # Cleared before draining: a report appended meanwhile schedules another settle
        # (at worst an empty one), never none.
        self.scheduled = False
        reports = self.reports
        while reports:
            future, err, msg = reports.popleft()
            if future.done():
                continue
            if err is None:
                future.set_result(msg)
            else:
                future.set_exception(
                    DeliveryFailed(f"delivery to {msg.topic()} failed: {err.str()}")
                )


class AsyncProducer:
    """A producer with a polling thread that resolves asyncio futures on delivery.

    Deliveries are settled on the loop that produced them, in bulk (see :class:`_Inbox`).
    """

    def __init__(self, bootstrap: str, **extra: Any) -> None:
        self._producer = Producer(durable_producer_config(bootstrap, **extra))
        self._inboxes: dict[asyncio.AbstractEventLoop, _Inbox] = {}
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _inbox(self, loop: asyncio.AbstractEventLoop) -> _Inbox:
        inbox = self._inboxes.get(loop)
        if inbox is None:
            inbox = self._inboxes[loop] = _Inbox(loop)
        return inbox

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[Message]:
        """Send one record; the returned future resolves when the broker acknowledged it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        report = self._inbox(loop).report

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            report(future, err, msg)

        kwargs: dict[str, Any] = {"key": key, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = list(headers)
        while True:
            try:
                self._producer.produce(topic, value, **kwargs)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise DeliveryFailed(f"producing to {topic} failed: {exc}") from exc
        return future

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still in flight."""
        remaining: int = self._producer.flush(timeout_s)
        return remaining

    def close(self, timeout_s: float = 30.0) -> None:
        """Deliver what is queued (up to ``timeout_s`` seconds), stop polling, release.

        What the broker has not acknowledged by then is purged: its futures fail.
        Safe to call twice.
        """
        if self._stop.is_set():
            return
        self._producer.flush(timeout_s)
        self._stop.set()
        self._poller.join()  # polls for at most 50 ms at a time; must not poll a closed one
        self._producer.close(timeout_s=0)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of a key: CRC-32 modulo the partition count.

    The same mapping as librdkafka's ``consistent`` partitioner, so records keyed by
    a series or pk and frames sent to an explicit partition land together.
    """
    return zlib.crc32(key) % partitions


class TopicProducer:
    """Sends records to one topic with ``acks=all``; ``flush`` raises if any was lost."""

    def __init__(self, bootstrap: str, topic: str, **extra: Any) -> None:
        self.topic = topic
        config = durable_producer_config(bootstrap, partitioner="consistent", **extra)
        self._producer = Producer(config)
        self._closed = False
        self._failures: list[str] = []
        try:
            metadata = self._producer.list_topics(topic, timeout=10)
        except BaseException:
            self._producer.close(timeout_s=0)
            raise
        described = metadata.topics.get(topic)
        self.partitions = 0 if described is None else len(described.partitions)
        if self.partitions == 0:
            self._producer.close(timeout_s=0)
            raise TopicError(f"topic {topic} does not exist; run `themis topics apply`")

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(err.str())

    def send(self, value: bytes, *, key: bytes | None = None, partition: int | None = None) -> None:
        """Queue one record (waiting for room when the local queue is full)."""
        kwargs: dict[str, Any] = {"key": key, "on_delivery": self._on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(self.topic, value, **kwargs)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every record sent is acknowledged; raises ``DeliveryFailed`` otherwise."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryFailed(f"{remaining} records not acknowledged after {timeout_s} s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailed(f"{len(failures)} records failed: {failures[0]}")

    def close(self, timeout_s: float = 60.0) -> None:
        """Wait until every record sent is acknowledged, then release the producer.

        Raises ``DeliveryFailed`` as :meth:`flush` does; the producer is released either
        way (what was not acknowledged is purged). Safe to call twice.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.flush(timeout_s)
        finally:
            self._producer.close(timeout_s=0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        """Close: a failed delivery raises unless an exception is propagating already."""
        if exc is None:
            self.close()
            return
        with contextlib.suppress(DeliveryFailed):
            self.close()
