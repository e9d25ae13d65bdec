"""Where the shipper sends batches: a replica cluster's topic, or a replica's HTTP(S) door.

:func:`open_target` picks the target of an endpoint:

``kafka://host:port`` (:class:`KafkaTarget`)
    The batch is produced to ``<namespace>.wal.replica`` on that cluster (created if
    missing, see :mod:`pipeline.replication.topics`) with headers
    ``themis.wal.primary``, ``themis.wal.first_lsn``, ``themis.wal.last_lsn``,
    ``themis.wal.codec``, ``themis.wal.checksum``, ``themis.wal.partition``. Confirmed
    when the replica broker
    acknowledged it (``acks=all``), which is before the replica applied it. The target
    also reads ``<namespace>.wal.replica.status``, where the replica's applier reports
    after every batch: :meth:`KafkaTarget.applied_lsn` is the last LSN it applied in
    the target's WAL partition (what is queryable there), and when it reports a gap in
    that partition (say, it dead-lettered a corrupt batch)
    :meth:`KafkaTarget.reported_gap` names the LSN it expects, and the shipper re-sends
    from there. A status record names each partition's positions under
    ``partitions``; one without (an applier built before issue 17) is partition 0's.
``themis://host:port`` or ``themis+tls://host:port`` (:class:`BinaryTarget`)
    WAL_APPLY_COMPRESSED over the binary protocol (docs/api/BINARY_PROTOCOL_EXTENSIONS.md)
    to a facade's binary door, on one connection kept open: HELLO, AUTH with the ship
    key, then one request per batch. Confirmed by its JSON reply; WAL_GAP rewinds to the
    LSN its message ends with, NEED_DICTIONARY re-sends with the dictionary, any other
    ERROR (or a lost connection, reopened on the next batch) is retried.
``http://host:port`` or ``https://host:port`` (:class:`HttpTarget`)
    ``POST /api/v1/wal/apply`` with the batch as body (``Content-Encoding: zstd`` for
    zstd batches, ``X-Primary-ID``). Confirmed on 200; 409 rewinds to the LSN the
    replica expects; 400 is retried (the bytes were damaged on the way).

The binary and HTTP replicas answer after applying, so their confirmation means the
entries are queryable there (:meth:`ShipTarget.applied_lsn` is ``None``).

A target raises :class:`~pipeline.errors.ShipFailed` (retried with backoff) or
:class:`~pipeline.errors.ReplicaRewind` (send again from ``expected_lsn``).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import orjson
from confluent_kafka import OFFSET_END, KafkaError, TopicPartition

from pipeline.binary import (
    HEADER_BYTES,
    AuthOk,
    AuthRequest,
    Body,
    ErrorCode,
    ErrorReply,
    Flags,
    Frame,
    HelloOk,
    HelloRequest,
    Opcode,
    WalApply,
    decode_header,
    decode_payload,
    encode_frame,
)
from pipeline.config import Settings
from pipeline.errors import InvalidArgument, ProtocolError, ReplicaRewind, ShipFailed
from pipeline.kafka.clients import Producer
from pipeline.kafka.consumer import make_consumer
from pipeline.kafka.producer import durable_producer_config
from pipeline.replication.topics import REPLICA_STATUS_TOPIC, REPLICA_TOPIC, ensure_replica_topics
from pipeline.wal.batch import BatchHeader, Codec
from pipeline.wal.entry import format_lsn, parse_lsn

__all__ = [
    "SHIP_TIMEOUT_S",
    "BinaryTarget",
    "HttpTarget",
    "KafkaTarget",
    "ShipTarget",
    "open_target",
]

SHIP_TIMEOUT_S: Final = 30.0
"""A batch not confirmed within this many seconds counts as failed."""
_CODES: Final = frozenset(int(code) for code in ErrorCode)
_STATUS_GROUP: Final = "themis-wal-status-reader"


class ShipTarget(Protocol):
    """One replica as the shipper sees it."""

    def ship(self, data: bytes, header: BatchHeader) -> None:
        """Send one encoded batch; return once the replica confirmed it."""
        ...

    def reported_gap(self) -> int | None:
        """The LSN the replica asks for, if it reported a gap since the last call."""
        ...

    def applied_lsn(self) -> int | None:
        """The last LSN the replica reported applied, or ``None`` when a confirmed
        batch is applied already (the replica answers after applying)."""
        ...

    def close(self) -> None: ...


def open_target(
    endpoint: str, settings: Settings, ssl_context: ssl.SSLContext | None, *, partition: int = 0
) -> ShipTarget:
    """The target of ``endpoint``: ``kafka://``, ``themis[+tls]://`` or ``http(s)://host:port``,
    for the batches of WAL partition ``partition``."""
    scheme = urlsplit(endpoint).scheme
    key = settings.compressed_wal_shipping.ship_key
    if scheme == "kafka":
        return KafkaTarget(
            endpoint.removeprefix("kafka://").rstrip("/"), settings, partition=partition
        )
    if scheme in ("http", "https"):
        return HttpTarget(endpoint, ssl_context, key=key)
    if scheme in ("themis", "themis+tls"):
        return BinaryTarget(endpoint, ssl_context, key=key)
    raise InvalidArgument(
        f"replica endpoint {endpoint!r}: use kafka://host:port, themis[+tls]://host:port "
        "or http(s)://host:port"
    )


class KafkaTarget:
    """Produces batches to the replica cluster; reads the applier's status topic."""

    _applied: int = 0
    """The highest ``last_applied_lsn`` the applier reported."""
    _gap: int | None = None
    """The LSN the latest status record asks for, if it reports a gap."""
    _last_status_poll: float = 0.0
    """``time.monotonic()`` of the last read of the status topic."""
    partition: int = 0
    """The WAL partition whose batches this target ships and whose status it reads."""

    def __init__(self, bootstrap: str, settings: Settings, *, partition: int = 0) -> None:
        self.partition = partition
        ensure_replica_topics(bootstrap, settings)
        self.topic = settings.topic(REPLICA_TOPIC)
        self._producer = Producer(
            durable_producer_config(
                bootstrap,
                **{
                    "compression.type": "none",  # the batch is compressed already
                    "linger.ms": 0,
                    "message.max.bytes": 64 * 1024 * 1024,
                    "message.timeout.ms": int(SHIP_TIMEOUT_S * 1000),
                },
            )
        )
        self._status = make_consumer(bootstrap, _STATUS_GROUP)
        self._status.assign([TopicPartition(settings.topic(REPLICA_STATUS_TOPIC), 0, OFFSET_END)])

    def ship(self, data: bytes, header: BatchHeader) -> None:
        outcome: list[KafkaError | None] = []
        headers: list[tuple[str, str | bytes | None]] = [
            ("themis.wal.primary", header.primary_id.encode()),
            ("themis.wal.first_lsn", format_lsn(header.first_lsn).encode()),
            ("themis.wal.last_lsn", format_lsn(header.last_lsn).encode()),
            ("themis.wal.codec", header.codec.name.lower().encode()),
            ("themis.wal.checksum", f"{header.checksum:08x}".encode()),
            ("themis.wal.partition", str(header.partition).encode()),
        ]
        try:
            self._producer.produce(
                self.topic,
                data,
                key=header.primary_id.encode(),
                headers=headers,
                on_delivery=lambda err, _msg: outcome.append(err),
            )
        except Exception as exc:  # BufferError, KafkaException: retried as a failed ship
            raise ShipFailed(f"producing to {self.topic} failed: {exc}") from exc
        self._producer.flush(SHIP_TIMEOUT_S)
        if not outcome:
            raise ShipFailed(f"{self.topic}: no acknowledgement within {SHIP_TIMEOUT_S:.0f} s")
        if outcome[0] is not None:
            raise ShipFailed(f"{self.topic}: delivery failed: {outcome[0].str()}")

    def _read_status(self) -> None:
        """Take the status records fetched since the last call (never waits)."""
        self._last_status_poll = time.monotonic()
        for msg in self._status.consume(1000, timeout=0):
            if msg.error() is not None or not msg.value():
                continue
            try:
                record = orjson.loads(msg.value() or b"")
            except orjson.JSONDecodeError:
                continue
            if not isinstance(record, dict):  # another JSON value is no status either
                continue
            record = _partition_status(record, self.partition)
            if record is None:
                continue
            self._applied = max(self._applied, _status_lsn(record, "last_applied_lsn") or 0)
            # The latest record says whether a gap is open (one it cannot read: none).
            self._gap = _status_lsn(record, "expected_lsn") if record.get("gap") else None

    def reported_gap(self) -> int | None:
        """The LSN the replica's applier expects if its latest status reports a gap."""
        self._read_status()
        gap, self._gap = self._gap, None
        return gap

    def applied_lsn(self) -> int | None:
        """The last LSN the replica's applier reported applied (0: none yet)."""
        self._read_status()
        return self._applied

    def close(self) -> None:
        self._producer.close(timeout_s=5)
        self._status.close()


class HttpTarget:
    """POSTs batches to a replica's ``/api/v1/wal/apply``."""

    def __init__(self, endpoint: str, ssl_context: ssl.SSLContext | None, *, key: str = "") -> None:
        parts = urlsplit(endpoint)
        if parts.hostname is None:
            raise InvalidArgument(
                f"replica endpoint {endpoint!r} has no host; use http(s)://host:port"
            )
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path.rstrip("/") or "") + "/api/v1/wal/apply"
        self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._auth = {"Authorization": f"Bearer {key}"} if key else {}

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=SHIP_TIMEOUT_S, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=SHIP_TIMEOUT_S)

    def ship(self, data: bytes, header: BatchHeader) -> None:
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Primary-ID": header.primary_id,
            **self._auth,
        }
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
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            decoded = None
        # Another JSON value than the error object a replica sends tells nothing either.
        reply: dict[str, Any] = decoded if isinstance(decoded, dict) else {}
        if response.status == 409 and "expected_lsn" in reply:
            try:
                expected = parse_lsn(str(reply["expected_lsn"]))
            except ValueError as exc:
                raise ShipFailed(
                    f"replica answered 409 with an unreadable expected_lsn: {exc}",
                    bytes_sent=len(data),
                ) from None
            raise ReplicaRewind(
                f"replica expects LSN {reply['expected_lsn']}", expected_lsn=expected
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

    def applied_lsn(self) -> int | None:
        return None  # a 200 answers after applying

    def close(self) -> None:
        return None


class BinaryTarget:
    """Sends batches as WAL_APPLY_COMPRESSED to a binary door, one at a time."""

    def __init__(self, endpoint: str, ssl_context: ssl.SSLContext | None, *, key: str = "") -> None:
        parts = urlsplit(endpoint)
        if parts.hostname is None or parts.port is None:
            raise InvalidArgument(
                f"replica endpoint {endpoint!r} needs a host and a port: themis://host:port"
            )
        self._address = (parts.hostname, parts.port)
        tls = parts.scheme == "themis+tls"
        self._ssl = (ssl_context or ssl.create_default_context()) if tls else None
        self._key = key.encode()
        self._sock: socket.socket | None = None
        self._request_id = 0

    def _call(self, sock: socket.socket, opcode: Opcode, body: Body) -> Frame:
        """Send one request and read its reply (this target never pipelines)."""
        self._request_id = self._request_id % 0xFFFFFFFF + 1
        sock.sendall(encode_frame(Frame(opcode, Flags.NONE, self._request_id, body)))
        header = decode_header(_read_exactly(sock, HEADER_BYTES))
        frame = decode_payload(header, _read_exactly(sock, header.length))
        if frame.opcode == Opcode.GOAWAY:
            raise ShipFailed("the replica is shutting down (GOAWAY)")
        return frame

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self._address, timeout=SHIP_TIMEOUT_S)
        try:
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._address[0])
            hello = self._call(sock, Opcode.HELLO, HelloRequest(1, 1, "themis-wal-shipper"))
            if not isinstance(hello.body, HelloOk):
                raise ShipFailed(f"the replica refused HELLO: {_reason(hello)}")
            if hello.body.auth_methods and self._key:  # else a client certificate
                auth = self._call(sock, Opcode.AUTH, AuthRequest("api_key", self._key))
                if not isinstance(auth.body, AuthOk):
                    raise ShipFailed(f"the replica refused the ship key: {_reason(auth)}")
        except BaseException:
            sock.close()
            raise
        return sock

    def ship(self, data: bytes, header: BatchHeader) -> None:
        where = f"themis://{self._address[0]}:{self._address[1]}"
        try:
            if self._sock is None:
                self._sock = self._open()
            reply = self._call(
                self._sock, Opcode.WAL_APPLY_COMPRESSED, WalApply(header.primary_id, data)
            )
        except (OSError, ProtocolError, ShipFailed) as exc:
            self.close()
            raise ShipFailed(f"{where}: {exc}", bytes_sent=len(data)) from exc
        if not isinstance(reply.body, ErrorReply):
            return
        error = reply.body
        if error.code == ErrorCode.WAL_GAP:
            try:
                expected = parse_lsn(error.message.rsplit(" ", 1)[-1])
            except ValueError:
                raise ShipFailed(
                    f"{where} answered WAL_GAP without an LSN: {error.message}",
                    bytes_sent=len(data),
                ) from None
            raise ReplicaRewind(
                f"replica expects LSN {format_lsn(expected)}", expected_lsn=expected
            )
        if error.code == ErrorCode.NEED_DICTIONARY:
            raise ReplicaRewind(
                "replica needs the dictionary", expected_lsn=header.first_lsn, need_dictionary=True
            )
        raise ShipFailed(f"{where} answered {_reason(reply)}", bytes_sent=len(data))

    def reported_gap(self) -> int | None:
        return None  # a WAL_GAP answers at once

    def applied_lsn(self) -> int | None:
        return None  # the reply comes after applying

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _partition_status(record: dict[str, Any], partition: int) -> dict[str, Any] | None:
    """The positions of WAL partition ``partition`` in a status record (``None``: not
    named). A record without ``partitions`` (an older applier) is partition 0's."""
    named = record.get("partitions")
    if not isinstance(named, dict):
        return record if partition == 0 else None
    mine = named.get(str(partition))
    return mine if isinstance(mine, dict) else None


def _status_lsn(record: dict[str, Any], name: str) -> int | None:
    """The LSN ``record[name]`` of a status record, or ``None`` if absent or unreadable."""
    try:
        return parse_lsn(str(record[name]))
    except (KeyError, ValueError):
        return None


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ShipFailed("the replica closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _reason(frame: Frame) -> str:
    if isinstance(frame.body, ErrorReply):
        code = frame.body.code
        name = ErrorCode(code).name if code in _CODES else str(code)
        return f"{name}: {frame.body.message}"
    return f"an unexpected {frame.opcode.name} reply"
