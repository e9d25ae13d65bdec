"""The blocks of the partitions one worker owns: its queryable time-series state.

A block goes to the blocks-topic partition of its series, the partition its points came
in on (:func:`~pipeline.ts.writer.block_partition`). So the worker that owns partition
``p`` of the points topic holds, in :class:`OwnedBlocks`, every block of partition ``p``
of the blocks topic, and answers for every series of ``p`` (blocks and buffered points)
without reading any other partition; Kafka Streams calls this a state store queried
in place (interactive queries).

Layout
    One SQLite :class:`~pipeline.ts.store.BlockStore` per partition,
    ``<root>/p<N>.sqlite``, holding the partition's blocks and the offset it was read
    up to (in the same transaction). A file stays when its partition moves away: if
    the partition comes back, the store resumes from that offset.

Steps
    1. :meth:`OwnedBlocks.assign` opens the stores of partitions that became this
       worker's; one thread (the tail) adds them to its consumer at their files'
       offsets and notes each partition's end at that moment.
    2. The tail consumes the owned partitions without end and stores each batch
       with its offsets. A partition has **caught up** once its store reaches the end
       noted in step 1; :attr:`OwnedBlocks.catch_ups` times it (assignment to caught
       up, files opened included).
    3. A query first reads the partition's end from the broker, then waits until the
       store reached it (:meth:`OwnedBlocks.wait_current`): every block acknowledged
       before the query is in its answer.
    4. :meth:`OwnedBlocks.revoke` forgets partitions at once (queries for them answer
       :attr:`Readiness.NOT_OWNED`); the tail lets them go and closes their files.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from pipeline.errors import ConfigError
from pipeline.kafka.consumer import (
    LARGE_FETCH,
    make_consumer,
    partition_count,
    watermark_offsets,
)
from pipeline.ts.store import BlockStore, Points

__all__ = ["CatchUp", "OwnedBlocks", "Readiness", "same_partition_count"]

_LOG = logging.getLogger(__name__)

_POLL_S: Final = 0.05
"""How long the tail's ``consume`` waits for records (seconds): also how soon it sees
an assignment or a revoke."""
_BATCH: Final = 10_000
_RETRY_S: Final = 1.0
"""How long the tail waits after a failure (the broker, the disk) before it tries again."""
_CATCH_UPS_KEPT: Final = 64


def same_partition_count(bootstrap: str, points_topic: str, blocks_topic: str) -> int:
    """The partition count of both topics; :class:`ConfigError` unless they exist with the
    same count (a worker answers for a series from its points' partition of blocks)."""
    blocks = partition_count(bootstrap, blocks_topic)
    points = partition_count(bootstrap, points_topic)
    if not blocks or points != blocks:
        raise ConfigError(
            f"topic {points_topic} has {points} partitions and {blocks_topic} {blocks}: both "
            "must exist with the same count (topics/ts.*.yaml; run `themis topics apply`)"
        )
    return blocks


class Readiness(Enum):
    """Whether a partition's store can answer a query now (:meth:`OwnedBlocks.wait_current`)."""

    CURRENT = "current"
    """Owned here, and every block acknowledged before the question is stored."""
    NOT_OWNED = "not_owned"
    """Not this worker's partition (it moved, or never was here)."""
    BEHIND = "behind"
    """Owned here, still catching up after the wait allowed."""


@dataclass(frozen=True)
class CatchUp:
    """One partition's store brought up to date after it became this worker's."""

    partition: int
    from_offset: int
    """Where the local file left off (0: an empty file)."""
    to_offset: int
    """The partition's end when it was assigned."""
    blocks: int
    """Blocks stored on the way."""
    seconds: float
    """From the assignment to the store at ``to_offset`` (opening the file included)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "from_offset": self.from_offset,
            "to_offset": self.to_offset,
            "blocks": self.blocks,
            "ms": round(self.seconds * 1000, 3),
        }


@dataclass
class _Partition:
    """One owned partition: its store (written by the tail), a reader and progress."""

    number: int
    writer: BlockStore
    reader: BlockStore
    assigned_at: float
    start: int
    """The file's offset when it was opened."""
    position: int
    """The next offset the store has not read (committed with the blocks before it)."""
    target: int | None = None
    """The partition's end at assignment, until the store reached it."""
    blocks: int = 0
    caught_up: bool = False
    read_lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False


class OwnedBlocks:
    """The block stores of the partitions of ``topic`` this worker owns, under ``root``."""

    def __init__(self, bootstrap: str, topic: str, root: Path) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.root = root
        self.catch_ups: deque[CatchUp] = deque(maxlen=_CATCH_UPS_KEPT)
        """The latest catch-ups, oldest first."""
        self._owned: dict[int, _Partition] = {}
        self._changed = threading.Condition()
        self._commands: queue.SimpleQueue[tuple[str, _Partition]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ends: Consumer | None = None
        self._ends_lock = threading.Lock()
        self._ends_users = 0

    # -- ownership ------------------------------------------------------------

    def assign(self, partitions: set[int]) -> None:
        """Open the stores of ``partitions`` and start catching them up (blocking I/O:
        call it off the event loop)."""
        self._start()
        for p in sorted(partitions):
            with self._changed:
                if p in self._owned:
                    continue
            path = self.root / f"p{p}.sqlite"
            writer = BlockStore(path)
            reader = BlockStore(path)
            start = writer.position(self.topic, p)
            part = _Partition(p, writer, reader, time.monotonic(), start or 0, start or 0)
            with self._changed:
                self._owned[p] = part
            self._commands.put(("assign", part))

    def revoke(self, partitions: set[int]) -> None:
        """Forget ``partitions``: queries for them answer :attr:`Readiness.NOT_OWNED` now."""
        with self._changed:
            gone = [self._owned.pop(p) for p in sorted(partitions) if p in self._owned]
            self._changed.notify_all()
        for part in gone:
            with part.read_lock:
                part.closed = True
                part.reader.close()
            self._commands.put(("revoke", part))

    def owned(self) -> list[int]:
        """The partitions whose stores this worker holds, sorted."""
        with self._changed:
            return sorted(self._owned)

    def ready(self) -> list[int]:
        """The owned partitions whose stores caught up since they were assigned, sorted."""
        with self._changed:
            return sorted(p for p, part in self._owned.items() if part.caught_up)

    # -- reading ----------------------------------------------------------------

    def wait_current(self, partition: int, timeout_s: float) -> Readiness:
        """Wait until the store of ``partition`` holds every block acknowledged before this
        call, at most ``timeout_s`` seconds (blocking: call it off the event loop)."""
        with self._changed:
            part = self._owned.get(partition)
        if part is None:
            return Readiness.NOT_OWNED
        end = self._end(partition)
        with self._changed:
            done = self._changed.wait_for(
                lambda: self._owned.get(partition) is not part or part.position >= end,
                timeout=timeout_s,
            )
            if self._owned.get(partition) is not part:
                return Readiness.NOT_OWNED
        return Readiness.CURRENT if done else Readiness.BEHIND

    def points(self, partition: int, series_key: str, start_ms: int, end_ms: int) -> Points | None:
        """The stored points of one series of ``partition`` (:meth:`BlockStore.query`);
        ``None`` when the partition is not owned here."""
        with self._changed:
            part = self._owned.get(partition)
        if part is None:
            return None
        with part.read_lock:
            return None if part.closed else part.reader.query(series_key, start_ms, end_ms)

    def series_matching(
        self, metric: str | None, entity: str | None, tags: Mapping[str, str]
    ) -> list[str]:
        """:meth:`BlockStore.series_matching` over every owned partition, sorted."""
        with self._changed:
            parts = list(self._owned.values())
        found: list[str] = []
        for part in parts:
            with part.read_lock:
                if not part.closed:
                    found += part.reader.series_matching(metric, entity, tags)
        return sorted(found)

    def _end(self, partition: int) -> int:
        """The partition's end now, from the broker (one round trip; queries at once each
        take theirs side by side on one client, which the last user closes after
        :meth:`close`)."""
        with self._ends_lock:
            if self._ends is None:
                self._ends = make_consumer(self.bootstrap, f"themis-blockends-{uuid.uuid4().hex}")
            ends, self._ends_users = self._ends, self._ends_users + 1
        try:
            return watermark_offsets(ends, TopicPartition(self.topic, partition))[1]
        finally:
            with self._ends_lock:
                self._ends_users -= 1
                if self._ends is not ends and not self._ends_users:
                    ends.close()

    # -- the tail ---------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._tail, name="ts-block-tail", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the tail and close every store (the files stay)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.revoke(set(self.owned()))
        while not self._commands.empty():
            _, part = self._commands.get()
            part.writer.close()
        with self._ends_lock:
            ends, self._ends = self._ends, None
            if ends is not None and not self._ends_users:
                ends.close()

    def _tail(self) -> None:
        group = f"themis-blocktail-{uuid.uuid4().hex}"  # assigned, never committed
        consumer = make_consumer(self.bootstrap, group, **LARGE_FETCH)
        tailing: dict[int, _Partition] = {}
        todo: deque[tuple[str, _Partition]] = deque()
        try:
            while not self._stop.is_set():
                try:
                    self._obey(consumer, tailing, todo)
                    messages = consumer.consume(_BATCH, timeout=_POLL_S) if tailing else []
                    if not tailing:
                        self._stop.wait(_POLL_S)
                    self._store(consumer, tailing, messages)
                except Exception:  # a broker that does not answer, a full disk: try again
                    _LOG.exception("the block store's tail of %s failed; retrying", self.topic)
                    self._stop.wait(_RETRY_S)
                    consumer = self._reopen(consumer, tailing)
        finally:
            for part in tailing.values():
                part.writer.close()
            consumer.close()

    def _reopen(self, consumer: Consumer, tailing: dict[int, _Partition]) -> Consumer:
        """A new consumer reading each partition from what its store holds (a batch
        consumed but not stored is read again, never skipped)."""
        with contextlib.suppress(Exception):
            consumer.close()
        fresh = make_consumer(self.bootstrap, f"themis-blocktail-{uuid.uuid4().hex}", **LARGE_FETCH)
        fresh.assign([
            TopicPartition(self.topic, p, part.position if part.position > 0 else OFFSET_BEGINNING)
            for p, part in tailing.items()
        ])  # fmt: skip
        return fresh

    def _obey(
        self,
        consumer: Consumer,
        tailing: dict[int, _Partition],
        todo: deque[tuple[str, _Partition]],
    ) -> None:
        """Apply the assignments and revokes queued since the last batch, in order; one
        that fails stays first in ``todo`` for the next try."""
        while not self._commands.empty():
            todo.append(self._commands.get())
        while todo:
            command, part = todo[0]
            tp = TopicPartition(self.topic, part.number)
            if command == "revoke":
                if tailing.pop(part.number, None) is not None:
                    with contextlib.suppress(KafkaException):
                        consumer.incremental_unassign([tp])
                part.writer.close()
                todo.popleft()
                continue
            low, high = watermark_offsets(consumer, tp)
            start = max(part.start, low)
            with self._changed:
                part.position = start
                if start >= high:
                    self._caught_up(part, high)
                else:
                    part.target = high
                self._changed.notify_all()
            tp.offset = part.start if part.start > 0 else OFFSET_BEGINNING
            consumer.incremental_assign([tp])
            tailing[part.number] = part
            todo.popleft()

    def _store(
        self, consumer: Consumer, tailing: dict[int, _Partition], messages: list[Message]
    ) -> None:
        """Store a batch per partition with the consumer's positions, then wake waiters."""
        by_partition: dict[int, list[Message]] = {}
        for msg in messages:
            p = msg.partition()
            if msg.error() is None and p is not None:
                by_partition.setdefault(p, []).append(msg)
        if not tailing:
            return
        positions = consumer.position([TopicPartition(self.topic, p) for p in tailing])
        moved: list[tuple[_Partition, int, int]] = []
        for tp in positions:
            part = tailing.get(tp.partition)
            if part is None or tp.offset < 0:
                continue
            batch = by_partition.get(tp.partition, [])
            if not batch and tp.offset <= part.position:
                continue
            added = part.writer.store_messages(self.topic, batch, {tp.partition: tp.offset})
            moved.append((part, tp.offset, added))
        if not moved:
            return
        with self._changed:
            for part, offset, added in moved:
                part.position = offset
                part.blocks += added
                if part.target is not None and offset >= part.target:
                    self._caught_up(part, part.target)
            self._changed.notify_all()

    def _caught_up(self, part: _Partition, end: int) -> None:
        """Record ``part``'s catch-up (called holding the condition)."""
        part.target = None
        part.caught_up = True
        done = CatchUp(
            part.number, part.start, end, part.blocks, time.monotonic() - part.assigned_at
        )
        self.catch_ups.append(done)
        _LOG.info(
            "block store of %s [%d] caught up: offsets %d..%d, %d blocks in %.1f ms",
            self.topic, done.partition, done.from_offset, done.to_offset, done.blocks,
            done.seconds * 1000,
        )  # fmt: skip
