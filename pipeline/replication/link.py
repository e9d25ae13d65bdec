"""One replica's shipping thread for one WAL partition: reads from its position, batches, ships.

A :class:`ReplicaLink` owns a consumer of one partition of ``<namespace>.wal`` on the
primary cluster (group ``<app_id>-wal-<replica_id>``, which holds one committed offset
per partition) and a :class:`~pipeline.replication.targets.ShipTarget`. A replica has
one link per WAL partition, so its partitions ship in parallel, each with its own LSN
sequence, position and batches (which name the partition). Its loop, in order:

1. every half second, read the WAL's end (for lag and health);
2. if the target reports a gap at or below the confirmed LSN, rewind to it (a report
   of a gap already rewound to within 5 s is stale and ignored);
3. wait for the next record (at most 0.2 s idle, or what is left of
   ``max_batch_interval_ms`` with a batch open), then take every record already fetched,
   up to the owner's ``max_batch_entries``; a record that does not decode is logged and
   its LSN ships as part of the range, empty;
4. ship when the batch is full (entries or bytes), its first entry is older than
   ``max_batch_interval_ms``, or nothing more was fetched, once the link holds one of
   the replica's ship slots (``ship_slot``, one per core), taking in what was fetched
   while it waited; records arriving while a batch is on its way form the next one;
5. a failed ship is retried with bounded exponential backoff and +-50 % jitter; a
   confirmed one commits ``last_lsn`` as the group's offset (LSN = offset + 1) without
   waiting for the broker's answer (a lost commit means the replica skips a batch it
   already applied), so a restart resumes after it.

Lag. An entry is *queryable* on the replica once the replica applied it: at its
confirmation for the HTTP and binary targets (they answer after applying), and once
the replica's Kafka applier reports an applied LSN at or beyond it for a Kafka target
(:meth:`~pipeline.replication.targets.ShipTarget.applied_lsn`). An entry's lag is
the wall-clock time from its WAL timestamp (stamped by the primary's writer when it
appends the entry, before the broker acknowledges it) to the moment the link learns
it is queryable; :meth:`ReplicaLink.lag` reports the age of the oldest entry not yet
queryable, and every entry's lag goes to the owner's ``record_queryable``.

The link knows its shipper only as a :class:`LinkOwner`: the batch limits and codec
to use, and where to report confirmations and failures.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol

from confluent_kafka import KafkaError, Message, TopicPartition

from pipeline.config import Settings
from pipeline.errors import InvalidRecord, ReplicaRewind, ShipFailed
from pipeline.kafka.consumer import commit_offset, commit_offsets, committed_offset, make_consumer
from pipeline.metrics import WalShipperMetrics
from pipeline.replication.targets import ShipTarget
from pipeline.wal.batch import BatchHeader, Codec, Dictionary, encode_batch, read_header
from pipeline.wal.entry import WalEntry, decode_entry_record, format_lsn

__all__ = ["LinkOwner", "ReplicaCounters", "ReplicaLink"]

_LOG = logging.getLogger(__name__)

BACKOFF_INITIAL_S: Final = 0.1
BACKOFF_MAX_S: Final = 5.0
"""Retry delays double from the initial one up to this bound, each with +-50 % jitter."""
UNHEALTHY_FAILURES: Final = 3
"""A replica with this many consecutive failed attempts is unhealthy."""
UNHEALTHY_SILENCE_S: Final = 30.0
"""A lagging replica without a confirmation for this long is unhealthy."""
DICTIONARY_RESEND_BATCHES: Final = 256
"""A trained dictionary rides along again every this many batches."""
_WATERMARK_REFRESH_S: Final = 0.5
_IDLE_WAIT_S: Final = 0.2
_MAX_UNAPPLIED_BATCHES: Final = 4096
"""Batches confirmed to a Kafka target and not yet reported applied, kept one by one;
beyond, the newest two are kept as one (every entry's time stays, 8 bytes each)."""
_REWIND_QUIET_S: Final = 5.0
_WAL_FETCH: Final = {
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
}


class LinkOwner(Protocol):
    """What a link reads from, and reports to, the shipper that runs it (it never writes
    these attributes): the primary cluster, the batch limits and the codec to use."""

    settings: Settings
    bootstrap: str
    primary_id: str
    metrics: WalShipperMetrics | None
    max_batch_entries: int
    max_batch_bytes: int
    max_batch_interval_ms: int

    def compression(self) -> tuple[Codec, int, Dictionary | None]:
        """The codec, level and dictionary for the next batch."""
        ...

    def record_confirmed(self, header: BatchHeader) -> None: ...

    def record_failure(self, replica_id: str, bytes_sent: int) -> None: ...

    def record_queryable(self, replica_id: str, lags_ms: list[int]) -> None:
        """Entries became queryable on ``replica_id``, each this many ms after its WAL
        timestamp."""
        ...

    def ship_slot(self, replica_id: str) -> threading.Semaphore:
        """Held while a batch to ``replica_id`` is encoded and shipped (it bounds how
        many of the replica's partitions ship at once)."""
        ...

    def publish_lag(self, replica_id: str) -> None:
        """The lag of ``replica_id`` changed (the owner sums its partitions' lags)."""
        ...


@dataclass
class ReplicaCounters:
    """What one replica was sent; bytes are batch bytes (compressed) or entry bytes."""

    entries_shipped: int = 0
    bytes_shipped: int = 0
    bytes_uncompressed: int = 0
    batches: int = 0
    failed_ships: int = 0
    consecutive_failures: int = 0

    def add(self, other: ReplicaCounters) -> None:
        """Add ``other``'s totals (not its consecutive failures) to these."""
        self.entries_shipped += other.entries_shipped
        self.bytes_shipped += other.bytes_shipped
        self.bytes_uncompressed += other.bytes_uncompressed
        self.batches += other.batches
        self.failed_ships += other.failed_ships


class ReplicaLink(threading.Thread):
    """Ships the WAL to one replica from its own position (see the module docstring).

    ``lock`` guards the positions (``confirmed_lsn``, ``queryable_lsn``, ``read_lsn``,
    ``wal_end_lsn``), ``pending``, the unapplied entry times and ``counters``, which the
    shipper reads from other threads.
    """

    def __init__(
        self,
        owner: LinkOwner,
        replica_id: str,
        endpoint: str,
        target: ShipTarget,
        partition: int = 0,
    ) -> None:
        super().__init__(name=f"wal-ship-{replica_id}-p{partition}", daemon=True)
        self.owner = owner
        self.partition = partition
        self.replica_id = replica_id
        self.endpoint = endpoint
        self.target = target
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counters = ReplicaCounters()
        self.confirmed_lsn = 0
        self.queryable_lsn = 0
        """Every entry up to this LSN is applied on the replica (as far as the link knows)."""
        self.last_lag_ms = 0
        """The lag of the entry that became queryable last (ms; 0 before the first)."""
        self.last_lag_at = 0.0
        """``time.monotonic()`` when ``last_lag_ms`` was measured (0.0: never)."""
        self._unapplied: deque[tuple[int, array[int]]] = deque()
        """``(last_lsn, WAL timestamps)`` of batches confirmed but not yet applied."""
        self.read_lsn = 0
        self.wal_end_lsn = 0
        self.last_confirm_at = time.monotonic()
        self.pending: list[WalEntry] = []
        self.pending_bytes = 0
        self._read_entries = 0
        self._read_bytes = 0
        self.end_known = False
        self.behind_since: float | None = None
        self.error: BaseException | None = None
        self._send_dictionary = True
        self._batches_since_dictionary = 0
        self._rewound: dict[int, float] = {}
        self.wal_topic = owner.settings.topic("wal")
        group = f"{owner.settings.worker.app_id}-wal-{replica_id}"
        self._consumer = make_consumer(owner.bootstrap, group, **_WAL_FETCH)
        self._tp = TopicPartition(self.wal_topic, partition)
        try:
            committed = committed_offset(self._consumer, self._tp)
        except BaseException:
            self._consumer.close()
            raise
        self.confirmed_lsn = max(committed, 0)
        self.queryable_lsn = self.confirmed_lsn
        self.read_lsn = self.confirmed_lsn
        self._consumer.assign([TopicPartition(self.wal_topic, partition, self.confirmed_lsn)])
        self._last_watermark = 0.0

    def close_unstarted(self) -> None:
        """Release the consumer and the target of a link that never ran."""
        self._consumer.close()
        self.target.close()

    # -- the loop -----------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced through stats() and the shipper's log
            _LOG.exception(
                "WAL shipping to %s stopped (partition %d)", self.replica_id, self.partition
            )
            self.error = exc
        finally:
            self._consumer.close()
            self.target.close()

    def _loop(self) -> None:
        first_read_at: float | None = None
        while not self.stop.is_set():
            self._refresh_end()
            gap = self.target.reported_gap()
            if gap is not None and gap <= self.confirmed_lsn:
                self._rewind(gap, "the replica reported a gap", quiet_s=_REWIND_QUIET_S)
                first_read_at = None
            self._note_applied(self.target.applied_lsn())
            limits = self.owner
            room = max(1, limits.max_batch_entries - len(self.pending))
            wait = limits.max_batch_interval_ms / 1000.0
            if first_read_at is not None:
                wait = max(0.0, first_read_at + wait - time.monotonic())
            messages = self._read(room, wait if self.pending else _IDLE_WAIT_S)
            if self._take(messages) and first_read_at is None:
                first_read_at = time.monotonic()
            full = (
                len(self.pending) >= limits.max_batch_entries
                or self.pending_bytes >= limits.max_batch_bytes
            )
            caught_up = len(messages) < room
            expired = (
                first_read_at is not None
                and time.monotonic() - first_read_at >= limits.max_batch_interval_ms / 1000.0
            )
            if self.read_lsn > self.confirmed_lsn and (full or caught_up or expired):
                self._ship_pending()
                first_read_at = None

    def _take(self, messages: list[Message]) -> int:
        """Add the entries of ``messages`` to the pending batch; how many were added (a
        record that does not decode is logged, and its LSN ships as part of the range)."""
        added = 0
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    _LOG.warning("reading the WAL for %s: %s", self.replica_id, error.str())
                continue
            offset = msg.offset()
            assert offset is not None
            value = msg.value() or b""
            with self.lock:
                self.read_lsn = offset + 1
                # A record read proves the WAL reaches this far; the end itself is
                # read only every half second (caught_up() and lag() rely on it).
                self.wal_end_lsn = max(self.wal_end_lsn, self.read_lsn)
            try:
                entry = decode_entry_record(value, offset, self.partition)
            except InvalidRecord as exc:
                _LOG.error("WAL record skipped (its LSN ships as empty): %s", exc)
                continue
            added += 1
            with self.lock:
                self.pending.append(entry)
                self.pending_bytes += len(value)
                self._read_entries += 1
                self._read_bytes += len(value)
        return added

    def _top_up(self) -> None:
        """Take what was fetched meanwhile into the batch, within the batch limits (a
        link that waited for its ship slot ships one larger batch, not several)."""
        room = self.owner.max_batch_entries - len(self.pending)
        if room > 0 and self.pending_bytes < self.owner.max_batch_bytes:
            self._take(self._consumer.consume(room, timeout=0))

    def _read(self, room: int, wait_s: float) -> list[Message]:
        """Up to ``room`` records: the first within ``wait_s`` seconds, then those already
        fetched. (``consume(room, timeout)`` alone returns only once ``room`` records
        arrived or the timeout passed: at a light load every batch waited the timeout.)"""
        first = self._consumer.poll(wait_s)
        if first is None:
            return []
        if room == 1:
            return [first]
        return [first, *self._consumer.consume(room - 1, timeout=0)]

    def _refresh_end(self) -> None:
        now = time.monotonic()
        if now - self._last_watermark < _WATERMARK_REFRESH_S:
            return
        self._last_watermark = now
        try:
            _, high = self._consumer.get_watermark_offsets(self._tp, timeout=5, cached=False)
        except Exception:  # a primary hiccup: keep the previous end
            return
        with self.lock:
            self.wal_end_lsn = max(high, 0)
            self.end_known = True
            if self.wal_end_lsn > self.confirmed_lsn:
                self.behind_since = self.behind_since or now
            else:
                self.behind_since = None
        self._publish_lag()

    def _ship_pending(self) -> None:
        delay = BACKOFF_INITIAL_S
        slot = self.owner.ship_slot(self.replica_id)
        while not self.stop.is_set():
            with slot:
                self._top_up()
                first, last = self.confirmed_lsn + 1, self.read_lsn
                outcome = self._ship_once(list(self.pending), first, last)
            if outcome is None:
                return
            if isinstance(outcome, ShipFailed):
                self._refresh_end()  # the lag keeps growing while the replica is down
                jittered = delay * random.uniform(0.5, 1.5)
                self.stop.wait(jittered)
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _ship_once(
        self, entries: list[WalEntry], first: int, last: int
    ) -> ShipFailed | bool | None:
        """Encode and ship ``entries`` once: ``None`` when confirmed or rewound, ``True``
        to send again at once (with the dictionary), the failure to retry after a wait."""
        codec, level, dictionary = self.owner.compression()
        attach = dictionary is not None and (
            self._send_dictionary or self._batches_since_dictionary >= DICTIONARY_RESEND_BATCHES
        )
        data = encode_batch(
            entries,
            codec,
            level,
            self.owner.primary_id,
            dictionary,
            first_lsn=first,
            last_lsn=last,
            carry_dictionary=attach,
            partition=self.partition,
        )
        header = read_header(data)
        try:
            self.target.ship(data, header)
        except ReplicaRewind as rewind:
            if rewind.need_dictionary:
                self._send_dictionary = True
                return True
            self._rewind(rewind.expected_lsn, str(rewind))
            return None
        except ShipFailed as exc:
            self._failed(exc, len(data) if exc.bytes_sent else 0)
            return exc
        self._confirmed(header, len(entries), attach)
        return None

    def _confirmed(self, header: BatchHeader, entries: int, carried_dictionary: bool) -> None:
        commit_offsets(
            self._consumer,
            [TopicPartition(self.wal_topic, self.partition, header.last_lsn)],
            asynchronous=True,
        )
        stamps = array("q", (entry.timestamp_ms for entry in self.pending))
        if carried_dictionary:
            self._send_dictionary = False
            self._batches_since_dictionary = 0
        else:
            self._batches_since_dictionary += 1
        now = time.monotonic()
        with self.lock:
            c = self.counters
            c.entries_shipped += entries
            c.bytes_shipped += header.batch_bytes
            c.bytes_uncompressed += header.uncompressed_bytes
            c.batches += 1
            c.consecutive_failures = 0
            self.confirmed_lsn = header.last_lsn
            self.last_confirm_at = now
            self.pending = []
            self.pending_bytes = 0
            if self.wal_end_lsn <= self.confirmed_lsn:
                self.behind_since = None
            self._unapplied.append((header.last_lsn, stamps))
            if len(self._unapplied) > _MAX_UNAPPLIED_BATCHES:
                last_lsn, newest = self._unapplied.pop()
                merged = self._unapplied.pop()[1]
                merged.extend(newest)
                self._unapplied.append((last_lsn, merged))
        self.owner.record_confirmed(header)
        # A target that answers after applying makes the batch queryable now.
        self._note_applied(self.target.applied_lsn())
        self._publish_lag()

    def _note_applied(self, applied: int | None) -> None:
        """Move ``queryable_lsn`` to ``applied`` (``None``: the confirmed LSN) and report
        the lag of every entry that became queryable."""
        now_ms = int(time.time() * 1000)
        lags: list[int] = []
        with self.lock:
            reached = self.confirmed_lsn if applied is None else min(applied, self.confirmed_lsn)
            if reached <= self.queryable_lsn:
                return
            self.queryable_lsn = reached
            while self._unapplied and self._unapplied[0][0] <= reached:
                lags.extend(now_ms - stamp for stamp in self._unapplied.popleft()[1])
            if lags:
                self.last_lag_ms = max(0, lags[-1])
                self.last_lag_at = time.monotonic()
        if lags:
            self.owner.record_queryable(self.replica_id, lags)

    def _failed(self, exc: ShipFailed, bytes_sent: int) -> None:
        _LOG.warning("shipping to %s failed: %s", self.replica_id, exc)
        with self.lock:
            self.counters.failed_ships += 1
            self.counters.consecutive_failures += 1
            self.counters.bytes_shipped += bytes_sent
        self.owner.record_failure(self.replica_id, bytes_sent)

    def _rewind(self, expected_lsn: int, why: str, *, quiet_s: float = 0.0) -> None:
        """Read and send again from ``expected_lsn`` (unless done within ``quiet_s`` seconds)."""
        now = time.monotonic()
        if quiet_s and now - self._rewound.get(expected_lsn, -quiet_s) < quiet_s:
            return  # a stale report of a gap already being re-sent
        self._rewound[expected_lsn] = now
        position = max(expected_lsn - 1, 0)
        _LOG.warning(
            "replica %s: %s; sending partition %d again from LSN %s",
            self.replica_id,
            why,
            self.partition,
            format_lsn(position + 1),
        )
        self._consumer.seek(TopicPartition(self.wal_topic, self.partition, position))
        commit_offset(self._consumer, TopicPartition(self.wal_topic, self.partition, position))
        self._send_dictionary = True
        with self.lock:
            self.confirmed_lsn = position
            self.queryable_lsn = min(self.queryable_lsn, position)
            self.read_lsn = position
            self.pending = []
            self.pending_bytes = 0
            self._unapplied.clear()  # re-sent, timed again from their WAL timestamps

    # -- reporting ----------------------------------------------------------

    def lag(self) -> tuple[int, int]:
        """``(lag_bytes, lag_ms)`` of this replica (0, 0 when every entry is queryable).

        ``lag_ms``: milliseconds from the WAL timestamp of the oldest entry not yet
        queryable on the replica to now (see the module docstring); for entries not read
        yet, the time since the link first saw the WAL's end beyond the replica's
        position. ``lag_bytes``: entry bytes read and not yet confirmed, plus unread
        entries at the average entry size.
        """
        with self.lock:
            behind = self.wal_end_lsn - self.queryable_lsn
            if behind <= 0:
                return 0, 0
            unread = max(0, self.wal_end_lsn - self.read_lsn)
            average = self._read_bytes / self._read_entries if self._read_entries else 0.0
            lag_bytes = self.pending_bytes + int(unread * average)
            oldest = None
            if self._unapplied and len(self._unapplied[0][1]):
                oldest = self._unapplied[0][1][0]
            elif self.pending:
                oldest = self.pending[0].timestamp_ms
            if oldest is not None:
                lag_ms = max(0, int(time.time() * 1000) - oldest)
            elif self.behind_since is not None:
                lag_ms = int((time.monotonic() - self.behind_since) * 1000)
            else:
                lag_ms = 0
            return lag_bytes, lag_ms

    def healthy(self) -> bool:
        with self.lock:
            if self.error is not None or not self.is_alive():
                return False
            if self.counters.consecutive_failures >= UNHEALTHY_FAILURES:
                return False
            lagging = self.wal_end_lsn > self.confirmed_lsn
            return not lagging or time.monotonic() - self.last_confirm_at < UNHEALTHY_SILENCE_S

    def _publish_lag(self) -> None:
        if self.owner.metrics is not None:
            self.owner.publish_lag(self.replica_id)
