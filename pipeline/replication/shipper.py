"""``WalShipper``: reads the primary's WAL, batches, compresses and ships to every replica.

Each replica has its own thread, its own position and its own confluent Consumer on
partition 0 of ``<namespace>.wal`` (the primary cluster); a replica that is down
retries with bounded exponential backoff and jitter while the others carry on.

Batching (defaults below): a batch closes at :data:`MAX_BATCH_ENTRIES` entries,
:data:`MAX_BATCH_BYTES` bytes of entry records, :data:`MAX_BATCH_INTERVAL_MS` after its
first entry was read, or as soon as the shipper has caught up with the WAL's end
(so an idle WAL ships at once). Every batch is compressed with the current
``compression_type``/``compression_level`` (:meth:`WalShipper.configure_compression`
changes them while running).

Replicas, by endpoint:

``kafka://host:port``
    The batch is produced to ``<namespace>.wal.replica`` on that cluster (created if
    missing, see :func:`~pipeline.replication.replica.ensure_replica_topics`) with headers
    ``themis.wal.primary``, ``themis.wal.first_lsn``, ``themis.wal.last_lsn``,
    ``themis.wal.codec``, ``themis.wal.checksum``. Confirmed when the replica broker
    acknowledged it (``acks=all``). The shipper also reads
    ``<namespace>.wal.replica.status``: when the replica's applier reports a gap
    (say, it dead-lettered a corrupt batch) the shipper re-sends from the LSN it
    expects.
``http://host:port`` or ``https://host:port``
    ``POST /api/v1/wal/apply`` with the batch as body (``Content-Encoding: zstd`` for
    zstd batches, ``X-Primary-ID``). Confirmed on 200; 409 rewinds to the LSN the
    replica expects; 400 is retried (the bytes were damaged on the way).

Confirmations are persisted as committed offsets of the consumer group
``<app_id>-wal-<replica_id>`` on the primary cluster (committed offset = last
confirmed LSN, because LSN = offset + 1), synchronously after every confirmed batch.
After a crash each replica resumes from there; a batch confirmed but not yet
committed is sent again and the replica skips the entries it already applied.
"""

from __future__ import annotations

import http.client
import logging
import random
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import orjson
from confluent_kafka import OFFSET_END, Consumer, KafkaError, Producer, TopicPartition

from pipeline.config import Settings
from pipeline.errors import InvalidRecord, ReplicaRewind, ShipFailed, ThemisError
from pipeline.kafka.consumer import commit_offset, committed_offset
from pipeline.metrics import WalShipperMetrics
from pipeline.replication.replica import (
    REPLICA_STATUS_TOPIC,
    REPLICA_TOPIC,
    ensure_replica_topics,
)
from pipeline.wal.batch import BatchHeader, Codec, Dictionary, encode_batch, read_header
from pipeline.wal.entry import WalEntry, decode_entry_record, format_lsn, parse_lsn

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ENTRIES",
    "MAX_BATCH_INTERVAL_MS",
    "WalShipper",
]

_LOG = logging.getLogger(__name__)

MAX_BATCH_ENTRIES: Final = 1000
"""A batch holds at most this many entries."""
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024
"""A batch closes once its entry records reach this many bytes (uncompressed)."""
MAX_BATCH_INTERVAL_MS: Final = 50
"""A batch closes this many milliseconds after its first entry was read."""
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
_STATUS_POLL_S: Final = 0.5
_REWIND_QUIET_S: Final = 5.0
_SHIP_TIMEOUT_S: Final = 30.0


class _Target(Protocol):
    def ship(self, data: bytes, header: BatchHeader) -> None: ...

    def reported_gap(self) -> int | None: ...

    def close(self) -> None: ...


# -- targets -------------------------------------------------------------------------


class _KafkaTarget:
    """Produces batches to the replica cluster; reads the applier's status topic."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        ensure_replica_topics(bootstrap, settings)
        self.topic = settings.topic(REPLICA_TOPIC)
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "compression.type": "none",  # the batch is compressed already
                "linger.ms": 0,
                "message.max.bytes": 64 * 1024 * 1024,
                "message.timeout.ms": int(_SHIP_TIMEOUT_S * 1000),
            }
        )
        self._status = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "themis-wal-status-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        self._status.assign([TopicPartition(settings.topic(REPLICA_STATUS_TOPIC), 0, OFFSET_END)])
        self._last_status_poll = 0.0

    def ship(self, data: bytes, header: BatchHeader) -> None:
        outcome: list[KafkaError | None] = []
        headers: list[tuple[str, str | bytes | None]] = [
            ("themis.wal.primary", header.primary_id.encode()),
            ("themis.wal.first_lsn", format_lsn(header.first_lsn).encode()),
            ("themis.wal.last_lsn", format_lsn(header.last_lsn).encode()),
            ("themis.wal.codec", header.codec.name.lower().encode()),
            ("themis.wal.checksum", f"{header.checksum:08x}".encode()),
        ]
        try:
            self._producer.produce(
                self.topic,
                data,
                key=header.primary_id.encode(),
                headers=headers,
                on_delivery=lambda err, _msg: outcome.append(err),
            )
        except (BufferError, Exception) as exc:
            raise ShipFailed(f"producing to {self.topic} failed: {exc}") from exc
        self._producer.flush(_SHIP_TIMEOUT_S)
        if not outcome:
            raise ShipFailed(f"{self.topic}: no acknowledgement within {_SHIP_TIMEOUT_S:.0f} s")
        if outcome[0] is not None:
            raise ShipFailed(f"{self.topic}: delivery failed: {outcome[0].str()}")

    def reported_gap(self) -> int | None:
        """The LSN the replica's applier expects if its latest status reports a gap."""
        now = time.monotonic()
        if now - self._last_status_poll < _STATUS_POLL_S:
            return None
        self._last_status_poll = now
        latest: dict[str, Any] | None = None
        for msg in self._status.consume(1000, timeout=0):
            if msg.error() is None and msg.value():
                try:
                    latest = orjson.loads(msg.value() or b"")
                except orjson.JSONDecodeError:
                    continue
        if latest is None or not latest.get("gap"):
            return None
        try:
            return parse_lsn(str(latest["expected_lsn"]))
        except (KeyError, ValueError):
            return None

    def close(self) -> None:
        self._producer.flush(5)
        self._status.close()


class _HttpTarget:
    """POSTs batches to a replica's ``/api/v1/wal/apply``."""

    def __init__(self, endpoint: str, ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(endpoint)
        if parts.hostname is None:
            raise ValueError(f"replica endpoint {endpoint!r} has no host")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path.rstrip("/") or "") + "/api/v1/wal/apply"
        self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=_SHIP_TIMEOUT_S, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=_SHIP_TIMEOUT_S)

    def ship(self, data: bytes, header: BatchHeader) -> None:
        headers = {"Content-Type": "application/octet-stream", "X-Primary-ID": header.primary_id}
        if header.codec is Codec.ZSTD:
            headers["Content-Encoding"] = "zstd"
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=data, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ShipFailed(f"POST {self._host}:{self._port}{self._path}: {exc}") from exc
        finally:
            conn.close()
        if response.status == 200:
            return
        try:
            reply: dict[str, Any] = orjson.loads(body)
        except orjson.JSONDecodeError:
            reply = {}
        if response.status == 409 and "expected_lsn" in reply:
            raise ReplicaRewind(
                f"replica expects LSN {reply['expected_lsn']}",
                expected_lsn=parse_lsn(str(reply["expected_lsn"])),
            )
        if response.status == 400 and reply.get("need_dictionary"):
            raise ReplicaRewind(
                "replica needs the dictionary",
                expected_lsn=header.first_lsn,
                need_dictionary=True,
            )
        reason = reply.get("error") or body[:200].decode("utf-8", "replace")
        raise ShipFailed(
            f"replica answered {response.status}: {reason}",
            bytes_sent=len(data),
        )

    def reported_gap(self) -> int | None:
        return None  # a 409 answers at once

    def close(self) -> None:
        return None


# -- one replica ---------------------------------------------------------------------


@dataclass
class _ReplicaCounters:
    entries_shipped: int = 0
    bytes_shipped: int = 0
    bytes_uncompressed: int = 0
    batches: int = 0
    failed_ships: int = 0
    consecutive_failures: int = 0


class _ReplicaLink(threading.Thread):
    """Ships the WAL to one replica from its own position."""

    def __init__(
        self, shipper: WalShipper, replica_id: str, endpoint: str, target: _Target
    ) -> None:
        super().__init__(name=f"wal-ship-{replica_id}", daemon=True)
        self.shipper = shipper
        self.replica_id = replica_id
        self.endpoint = endpoint
        self.target = target
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counters = _ReplicaCounters()
        self.confirmed_lsn = 0
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
        settings = shipper.settings
        self.wal_topic = settings.topic("wal")
        self._consumer = Consumer(
            {
                "bootstrap.servers": shipper.bootstrap,
                "group.id": f"{settings.worker.app_id}-wal-{replica_id}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 16 * 1024 * 1024,
            }
        )
        self._tp = TopicPartition(self.wal_topic, 0)
        committed = committed_offset(self._consumer, self._tp)
        self.confirmed_lsn = max(committed, 0)
        self.read_lsn = self.confirmed_lsn
        self._consumer.assign([TopicPartition(self.wal_topic, 0, self.confirmed_lsn)])
        self._last_watermark = 0.0

    # -- the loop -----------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced through stats() and the shipper's log
            _LOG.exception("WAL shipping to %s stopped", self.replica_id)
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
            limits = self.shipper
            room = max(1, limits.max_batch_entries - len(self.pending))
            wait = limits.max_batch_interval_ms / 1000.0
            if first_read_at is not None:
                wait = max(0.0, first_read_at + wait - time.monotonic())
            messages = self._consumer.consume(room, timeout=wait if self.pending else 0.2)
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
                try:
                    entry = decode_entry_record(value, offset)
                except InvalidRecord as exc:
                    _LOG.error("WAL record skipped (its LSN ships as empty): %s", exc)
                    continue
                if first_read_at is None:
                    first_read_at = time.monotonic()
                with self.lock:
                    self.pending.append(entry)
                    self.pending_bytes += len(value)
                    self._read_entries += 1
                    self._read_bytes += len(value)
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
        first, last = self.confirmed_lsn + 1, self.read_lsn
        entries = list(self.pending)
        delay = BACKOFF_INITIAL_S
        while not self.stop.is_set():
            codec, level, dictionary = self.shipper.compression()
            attach = dictionary is not None and (
                self._send_dictionary or self._batches_since_dictionary >= DICTIONARY_RESEND_BATCHES
            )
            data = encode_batch(
                entries,
                codec,
                level,
                self.shipper.primary_id,
                dictionary,
                first_lsn=first,
                last_lsn=last,
                carry_dictionary=attach,
            )
            header = read_header(data)
            try:
                self.target.ship(data, header)
            except ReplicaRewind as rewind:
                if rewind.need_dictionary:
                    self._send_dictionary = True
                    continue
                self._rewind(rewind.expected_lsn, str(rewind))
                return
            except ShipFailed as exc:
                self._failed(exc, len(data) if exc.bytes_sent else 0)
                jittered = delay * random.uniform(0.5, 1.5)
                self.stop.wait(jittered)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            self._confirmed(header, len(entries), attach)
            return

    def _confirmed(self, header: BatchHeader, entries: int, carried_dictionary: bool) -> None:
        commit_offset(self._consumer, TopicPartition(self.wal_topic, 0, header.last_lsn))
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
        self.shipper.record_confirmed(header)
        self._publish_lag()

    def _failed(self, exc: ShipFailed, bytes_sent: int) -> None:
        _LOG.warning("shipping to %s failed: %s", self.replica_id, exc)
        with self.lock:
            self.counters.failed_ships += 1
            self.counters.consecutive_failures += 1
            self.counters.bytes_shipped += bytes_sent
        self.shipper.record_failure(self.replica_id, bytes_sent)

    def _rewind(self, expected_lsn: int, why: str, *, quiet_s: float = 0.0) -> None:
        """Read and send again from ``expected_lsn`` (unless done within ``quiet_s`` seconds)."""
        now = time.monotonic()
        if quiet_s and now - self._rewound.get(expected_lsn, -quiet_s) < quiet_s:
            return  # a stale report of a gap already being re-sent
        self._rewound[expected_lsn] = now
        position = max(expected_lsn - 1, 0)
        _LOG.warning(
            "replica %s: %s; sending again from LSN %s",
            self.replica_id,
            why,
            format_lsn(position + 1),
        )
        self._consumer.seek(TopicPartition(self.wal_topic, 0, position))
        commit_offset(self._consumer, TopicPartition(self.wal_topic, 0, position))
        self._send_dictionary = True
        with self.lock:
            self.confirmed_lsn = position
            self.read_lsn = position
            self.pending = []
            self.pending_bytes = 0

    # -- reporting ----------------------------------------------------------

    def lag(self) -> tuple[int, int]:
        """``(lag_bytes, lag_ms)`` of this replica (0, 0 when caught up)."""
        with self.lock:
            behind = self.wal_end_lsn - self.confirmed_lsn
            if behind <= 0:
                return 0, 0
            unread = max(0, self.wal_end_lsn - self.read_lsn)
            average = self._read_bytes / self._read_entries if self._read_entries else 0.0
            lag_bytes = self.pending_bytes + int(unread * average)
            if self.pending:
                lag_ms = max(0, int(time.time() * 1000) - self.pending[0].timestamp_ms)
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
        metrics = self.shipper.metrics
        if metrics is None:
            return
        lag_bytes, lag_ms = self.lag()
        metrics.wal_shipper_lag_bytes.labels(self.replica_id).set(lag_bytes)
        metrics.wal_shipper_lag_seconds.labels(self.replica_id).set(lag_ms / 1000.0)


# -- the shipper ---------------------------------------------------------------------


class WalShipper:
    """Ships the primary's WAL to replicas (see the module docstring).

    ``bootstrap`` is the primary cluster, ``primary_id`` names this primary in
    every batch. ``dictionary`` (optional) is a trained zstd dictionary used for
    zstd batches. ``max_batch_*`` override :data:`MAX_BATCH_ENTRIES`,
    :data:`MAX_BATCH_BYTES` and :data:`MAX_BATCH_INTERVAL_MS`. Call :meth:`close` to
    stop every replica's thread.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: str | None = None,
        primary_id: str | None = None,
        metrics: WalShipperMetrics | None = None,
        dictionary: Dictionary | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_batch_entries: int = MAX_BATCH_ENTRIES,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        max_batch_interval_ms: int = MAX_BATCH_INTERVAL_MS,
    ) -> None:
        if max_batch_entries < 1 or max_batch_bytes < 1 or max_batch_interval_ms < 0:
            raise ValueError("batch limits must be positive")
        self.max_batch_entries = max_batch_entries
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_interval_ms = max_batch_interval_ms
        resolved = bootstrap or settings.kafka.bootstrap_servers
        if not resolved:
            raise ThemisError(
                "the WAL shipper needs the primary cluster: set KAFKA_BOOTSTRAP_SERVERS"
            )
        self.settings = settings
        self.bootstrap = resolved
        self.primary_id = primary_id or settings.worker.app_id
        self.metrics = metrics
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        self._links: dict[str, _ReplicaLink] = {}
        self._removed = _ReplicaCounters()
        wal = settings.compressed_wal_shipping
        self._codec = Codec.from_name(wal.compression_type)
        self._level = wal.compression_level
        self._dictionary = dictionary
        self._total_uncompressed = 0
        self._total_shipped = 0

    # -- configuration ----------------------------------------------------

    def configure_compression(self, compression_type: str, level: int) -> None:
        """Compress the following batches with ``compression_type`` (zstd|none) at ``level``."""
        codec = Codec.from_name(compression_type)
        if not 1 <= level <= 22:
            raise ValueError(f"compression level must be 1..22; got {level}")
        with self._lock:
            self._codec, self._level = codec, level

    def compression(self) -> tuple[Codec, int, Dictionary | None]:
        with self._lock:
            return self._codec, self._level, self._dictionary

    def add_replica(self, replica_id: str, endpoint: str) -> None:
        """Start shipping to ``endpoint`` (``kafka://host:port`` or ``http(s)://...``).

        Resumes from the LSN this replica confirmed last (a new replica: from the start).
        """
        if not replica_id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"replica id {replica_id!r} must be letters, digits, '-' or '_'")
        with self._lock:
            if replica_id in self._links:
                raise ValueError(f"replica {replica_id!r} is already configured")
        scheme = urlsplit(endpoint).scheme
        target: _Target
        if scheme == "kafka":
            target = _KafkaTarget(endpoint.removeprefix("kafka://").rstrip("/"), self.settings)
        elif scheme in ("http", "https"):
            target = _HttpTarget(endpoint, self.ssl_context)
        else:
            raise ValueError(
                f"replica endpoint {endpoint!r}: use kafka://host:port or http(s)://host:port"
            )
        link = _ReplicaLink(self, replica_id, endpoint, target)
        with self._lock:
            self._links[replica_id] = link
        link.start()

    def remove_replica(self, replica_id: str, timeout_s: float = 30.0) -> None:
        """Stop shipping to ``replica_id``; its confirmed position stays committed."""
        with self._lock:
            link = self._links.pop(replica_id)
        link.stop.set()
        link.join(timeout_s)
        with link.lock:
            self._removed.entries_shipped += link.counters.entries_shipped
            self._removed.bytes_shipped += link.counters.bytes_shipped
            self._removed.bytes_uncompressed += link.counters.bytes_uncompressed
            self._removed.batches += link.counters.batches
            self._removed.failed_ships += link.counters.failed_ships

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop every replica's thread (positions are committed after each batch anyway)."""
        for replica_id in list(self._links):
            self.remove_replica(replica_id, timeout_s)

    # -- progress ---------------------------------------------------------

    def caught_up(self) -> bool:
        """Whether every replica confirmed the WAL's end (as last seen) and none failed."""
        with self._lock:
            links = list(self._links.values())
        for link in links:
            if link.error is not None:
                raise ThemisError(f"shipping to {link.replica_id} stopped: {link.error}")
            with link.lock:
                if not link.end_known or link.confirmed_lsn < link.wal_end_lsn:
                    return False
        return True

    def confirmed_lsn(self, replica_id: str) -> int:
        link = self._links[replica_id]
        with link.lock:
            return link.confirmed_lsn

    def record_confirmed(self, header: BatchHeader) -> None:
        with self._lock:
            self._total_uncompressed += header.uncompressed_bytes
            self._total_shipped += header.batch_bytes
            ratio = self._total_uncompressed / self._total_shipped
        if self.metrics is not None:
            self.metrics.wal_shipper_bytes_uncompressed_total.inc(header.uncompressed_bytes)
            self.metrics.wal_shipper_bytes_shipped_total.inc(header.batch_bytes)
            self.metrics.wal_shipper_batches_total.inc()
            self.metrics.wal_shipper_compression_ratio.set(ratio)

    def record_failure(self, replica_id: str, bytes_sent: int) -> None:
        if self.metrics is not None:
            self.metrics.wal_shipper_failures_total.labels(replica_id).inc()
            if bytes_sent:
                self.metrics.wal_shipper_bytes_shipped_total.inc(bytes_sent)

    def stats(self) -> dict[str, Any]:
        """The roadmap's replication stats: ``{"replicas": [...], "stats": {...}}``.

        ``total_bytes_shipped`` counts batch bytes sent (retries of a batch the replica
        received but refused included); ``avg_compression_ratio`` is
        ``total_bytes_uncompressed / total_bytes_shipped``. ``lag_bytes`` is exact for
        entries the shipper read and estimated at the average entry size beyond;
        ``lag_ms`` is the age of the oldest unconfirmed entry.
        """
        with self._lock:
            links = list(self._links.values())
            totals = _ReplicaCounters(**vars(self._removed))
        replicas = []
        for link in links:
            lag_bytes, lag_ms = link.lag()
            healthy = link.healthy()
            with link.lock:
                c = link.counters
                totals.entries_shipped += c.entries_shipped
                totals.bytes_shipped += c.bytes_shipped
                totals.bytes_uncompressed += c.bytes_uncompressed
                totals.batches += c.batches
                totals.failed_ships += c.failed_ships
                confirmed = link.confirmed_lsn
            replicas.append(
                {
                    "replica_id": link.replica_id,
                    "endpoint": link.endpoint,
                    "last_confirmed_lsn": format_lsn(confirmed),
                    "lag_bytes": lag_bytes,
                    "lag_ms": lag_ms,
                    "is_healthy": healthy,
                }
            )
        ratio = totals.bytes_uncompressed / totals.bytes_shipped if totals.bytes_shipped else 0.0
        return {
            "replicas": replicas,
            "stats": {
                "total_entries_shipped": totals.entries_shipped,
                "total_bytes_shipped": totals.bytes_shipped,
                "total_bytes_uncompressed": totals.bytes_uncompressed,
                "avg_compression_ratio": round(ratio, 3),
                "total_batches": totals.batches,
                "failed_ships": totals.failed_ships,
            },
        }
