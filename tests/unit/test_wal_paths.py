"""The WAL batch's refusals, the HTTP target's answers and the replica door's checks.

Batches that pass their checksum but are wrong inside are forged here with the
checksum recomputed (what a buggy or hostile sender can send). The HTTP target talks
to real servers on loopback: the replica's own ``ReplicaServer``, and a scripted
aiohttp server that gives the answers a replica could give.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import zstandard
from aiohttp import web

from pipeline.config import Settings, load_settings
from pipeline.errors import (
    CorruptBatch,
    ForeignPrimary,
    InvalidArgument,
    InvalidRecord,
    ReplicaRewind,
    ShipFailed,
)
from pipeline.kafka.local_broker import free_port
from pipeline.replication import ApplyAuth, ReplicaServer, ReplicaState
from pipeline.replication.targets import HttpTarget, open_target
from pipeline.ts.block import encode_block
from pipeline.ts.point import series_key
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.batch import (
    MAX_UNCOMPRESSED_BYTES,
    Codec,
    Dictionary,
    decode_batch,
    encode_batch,
    read_header,
    train_dictionary,
)
from pipeline.wal.entry import (
    EntryType,
    WalEntry,
    decode_entry_record,
    encode_entry_record,
    format_lsn,
)
from tests.fixtures.wal import resigned

pytestmark = pytest.mark.unit

DIM = 4
_HEAD = struct.Struct("<4sBBBBIQQIQIHI")  # the header up to the CRC (module docstring)
_ENTRY = struct.Struct("<IBqI")


def _forge(
    *,
    body: bytes = b"",
    version: int = 1,
    codec: int = 0,
    first: int = 1,
    last: int = 1,
    count: int = 0,
    uncompressed: int | None = None,
    key: bytes = b"p1",
) -> bytes:
    """A batch laid out as the docstring says, with a correct CRC over whatever it holds."""
    size = len(body) if uncompressed is None else uncompressed
    head = _HEAD.pack(
        b"TWB1", version, codec, 0, 0, 0, first, last, count, size, len(body), len(key), 0
    )
    return resigned(head + bytes(4) + key + body)


def _raw_entry(delta: int, entry_type: int, payload: bytes, size: int | None = None) -> bytes:
    length = len(payload) if size is None else size
    return _ENTRY.pack(delta, entry_type, 1_700_000_000_000, length) + payload


def _settings() -> Settings:
    return load_settings(
        path=Path("/dev/null"), env={}, overrides={"vector_auto_buffer": {"dimension": DIM}}
    )


def _block_entry(lsn: int) -> WalEntry:
    ts = np.array([lsn * 10, lsn * 10 + 1], dtype=np.int64)
    block = encode_block(series_key("m", "e"), ts, ts / 4.0)
    return WalEntry(lsn, EntryType.TS_BLOCK, 1_700_000_000_000, block)


def _vector_entry(lsn: int, pk: str) -> WalEntry:
    op = VectorOp(OpType.ADD, pk, np.full(DIM, lsn, dtype=np.float32), {"lsn": lsn})
    return WalEntry(lsn, EntryType.VECTOR_BATCH, 1_700_000_000_000, encode_op_frame([op], DIM))


def _mixed(first: int, last: int) -> list[WalEntry]:
    return [_vector_entry(i, f"v{i}") if i % 2 else _block_entry(i) for i in range(first, last + 1)]


@pytest.fixture(scope="module")
def dictionary() -> Dictionary:
    samples = [
        encode_entry_record(e.type, e.timestamp_ms, e.payload + bytes([i % 251]) * (i % 40))
        for i, e in enumerate(_mixed(1, 600))
    ]
    return train_dictionary(samples, 4 * 1024)


# -- the batch format -------------------------------------------------------------------


def test_forged_batch_of_a_real_body_is_byte_identical_to_encode_batch() -> None:
    entries = _mixed(5, 7)
    body = b"".join(_raw_entry(e.lsn - 5, int(e.type), e.payload) for e in entries)
    forged = _forge(body=body, first=5, last=7, count=3, key=b"p1")
    assert forged == encode_batch(entries, "none", 3, "p1", format_version=1)
    assert decode_batch(forged)[1] == entries


def test_batches_cut_short_padded_foreign_or_damaged_are_refused_before_their_fields() -> None:
    batch = encode_batch(_mixed(1, 3), "zstd", 3, "p1")
    with pytest.raises(CorruptBatch, match="is 20 bytes, shorter than its 54-byte header"):
        read_header(batch[:20])
    with pytest.raises(CorruptBatch, match="not a WAL batch: magic b'XWB2'"):
        read_header(b"X" + batch[1:])
    with pytest.raises(CorruptBatch, match="but its header describes"):
        read_header(batch + b"\0")
    damaged = bytearray(batch)
    damaged[-1] ^= 0x01
    with pytest.raises(CorruptBatch, match=r"1\.\.3 checksum mismatch: stored crc32"):
        decode_batch(bytes(damaged))


def test_wal_records_too_short_or_of_an_unknown_type_are_invalid() -> None:
    record = encode_entry_record(EntryType.TS_BLOCK, 5, b"payload")
    assert decode_entry_record(record, 41) == WalEntry(42, EntryType.TS_BLOCK, 5, b"payload")
    with pytest.raises(InvalidRecord, match="at offset 7 is 3 bytes, too short"):
        decode_entry_record(record[:3], 7)
    with pytest.raises(InvalidRecord, match="at offset 7 has magic b'XWE1'"):
        decode_entry_record(b"X" + record[1:], 7)
    unknown = record[:4] + bytes([9]) + record[5:]
    with pytest.raises(InvalidRecord, match="at offset 7 has unknown type 9"):
        decode_entry_record(unknown, 7)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"version": 2}, "format 2 is not supported"),
        ({"codec": 7}, "unknown codec 7"),
        ({"first": 0, "last": 3}, "claims LSNs 0..3, not a range"),
        ({"first": 9, "last": 3}, "claims LSNs 9..3, not a range"),
        (
            {"uncompressed": MAX_UNCOMPRESSED_BYTES + 1},
            r"uncompressed bytes; at most 268435456 \(MAX_DECOMPRESSED_BYTES\)",
        ),
        ({"key": b"\xff\xfe"}, "primary id is not valid UTF-8"),
    ],
)
def test_header_fields_a_checksum_cannot_vouch_for_are_refused(
    fields: dict[str, Any], message: str
) -> None:
    forged = _forge(**fields)
    with pytest.raises(CorruptBatch, match=message):
        read_header(forged)
    with pytest.raises(CorruptBatch, match=message):
        decode_batch(forged)


@pytest.mark.parametrize(
    ("body", "count", "message"),
    [
        (b"\x00" * 5, 1, "body truncated in entry 0$"),
        (_raw_entry(5, 1, b"x"), 1, "entry 0 has LSN 6, out of order or range"),
        (_raw_entry(0, 1, b"x") + _raw_entry(0, 1, b"y"), 2, "entry 1 has LSN 1, out of order"),
        (_raw_entry(0, 99, b"x"), 1, "entry 0 has unknown type 99"),
        (_raw_entry(0, 1, b"0123456789", size=100), 1, "truncated in entry 0 payload"),
        (_raw_entry(0, 1, b"x") + b"zz", 1, "has 2 bytes after its entries"),
    ],
)
def test_a_body_that_decompresses_but_does_not_parse_is_refused(
    body: bytes, count: int, message: str
) -> None:
    forged = _forge(body=body, first=1, last=2, count=count)
    assert read_header(forged).entry_count == count  # the header and checksum are fine
    with pytest.raises(CorruptBatch, match=message):
        decode_batch(forged)


def test_body_length_other_than_the_header_says_is_refused() -> None:
    with pytest.raises(CorruptBatch, match="body is 5 bytes; the header says 10"):
        decode_batch(_forge(body=b"12345", uncompressed=10))


def test_zstd_frames_that_fail_after_the_checksum_passed_are_refused_by_name() -> None:
    body = b"".join(_raw_entry(e.lsn - 1, int(e.type), e.payload) for e in _mixed(1, 8))
    frame = zstandard.ZstdCompressor(level=3).compress(body)
    truncated = frame[: len(frame) // 2]
    with pytest.raises(CorruptBatch, match=r"1\.\.8 does not decompress"):
        decode_batch(
            _forge(body=truncated, codec=1, first=1, last=8, count=8, uncompressed=len(body))
        )
    with pytest.raises(CorruptBatch, match="does not decompress"):
        decode_batch(_forge(body=b"junkjunk", codec=1, uncompressed=8))
    # A frame declaring more than the header allows is refused before it is inflated.
    with pytest.raises(CorruptBatch, match=f"declares {len(body)} bytes, the header 100"):
        decode_batch(_forge(body=frame, codec=1, first=1, last=8, count=8, uncompressed=100))


def test_zstd_frame_without_a_content_size_is_streamed_within_the_header_bound() -> None:
    entries = _mixed(1, 8)
    body = b"".join(_raw_entry(e.lsn - 1, int(e.type), e.payload) for e in entries)
    frame = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(body)
    assert zstandard.frame_content_size(frame) == -1
    ok = _forge(body=frame, codec=1, first=1, last=8, count=8, uncompressed=len(body))
    assert decode_batch(ok)[1] == entries
    # The stream is cut one byte past the header's size: a bomb stops there.
    small = _forge(body=frame, codec=1, first=1, last=8, count=8, uncompressed=40)
    with pytest.raises(CorruptBatch, match="body is 41 bytes; the header says 40"):
        decode_batch(small)


def test_encode_batch_refuses_what_it_could_not_describe() -> None:
    entries = _mixed(1, 3)
    with pytest.raises(InvalidArgument, match="unknown WAL compression 'lz4'; allowed: none, zstd"):
        encode_batch(entries, "lz4", 3, "p1")
    with pytest.raises(InvalidArgument, match="empty batch needs first_lsn and last_lsn"):
        encode_batch([], "none", 3, "p1", first_lsn=1)
    with pytest.raises(InvalidArgument, match=r"LSN range 0\.\.3 is not a range"):
        encode_batch(entries, "none", 3, "p1", first_lsn=0)
    with pytest.raises(InvalidArgument, match=r"entry LSN 1 is out of order or outside 1\.\.3"):
        encode_batch([entries[0], entries[0]], "none", 3, "p1", last_lsn=3)
    with pytest.raises(InvalidArgument, match="wider than 2\\*\\*32 entries"):
        encode_batch([], "none", 3, "p1", first_lsn=1, last_lsn=2**33)
    with pytest.raises(InvalidArgument, match="longer than 65535 bytes"):
        encode_batch(entries, "none", 3, "p" * 70_000)


def test_a_raw_content_dictionary_is_refused_and_a_trained_one_reads_back(
    dictionary: Dictionary,
) -> None:
    with pytest.raises(InvalidArgument, match="raw content dictionaries have none"):
        Dictionary.from_bytes(b"just some bytes that are no zstd dictionary")
    assert Dictionary.from_bytes(dictionary.data) == dictionary
    # Codec none never uses a dictionary, so the batch names none.
    plain = encode_batch(_mixed(1, 3), Codec.NONE, 3, "p1", dictionary)
    header = read_header(plain)
    assert (header.dictionary_id, header.dictionary) == (0, None)


# -- the replica door, and the HTTP target against it -----------------------------------


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[tuple[ReplicaState, int]]:
    state = ReplicaState(tmp_path / "replica", _settings())
    server = ReplicaServer(state, auth=ApplyAuth(["k1", "k2"]))
    port = server.start()
    try:
        yield state, port
    finally:
        server.stop()
        state.close()


def _post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/api/v1/wal/apply", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, orjson.loads(response.read()), dict(response.getheaders())
    finally:
        conn.close()


def test_wal_apply_checks_the_key_then_the_primary_header_then_the_batch(
    replica: tuple[ReplicaState, int], dictionary: Dictionary
) -> None:
    state, port = replica
    batch = encode_batch(_mixed(1, 4), "zstd", 3, "p1")
    status, body, headers = _post(port, batch, {"X-Primary-ID": "p1"})
    assert (status, body["success"]) == (401, False)
    assert "needs a replicator key" in body["error"]
    assert headers["WWW-Authenticate"] == 'Bearer realm="themis-wal"'
    status, body, _ = _post(port, batch, {"X-Primary-ID": "p1", "Authorization": "Bearer k3"})
    assert (status, body["error"]) == (401, "unknown replicator key")
    status, body, _ = _post(port, batch, {"X-API-Key": "k2"})
    assert (status, body["error"]) == (400, "the X-Primary-ID header is required")
    status, body, _ = _post(port, batch, {"X-API-Key": "k2", "X-Primary-ID": "p9"})
    assert status == 400
    assert body["error"] == "X-Primary-ID is 'p9' but the batch was written by 'p1'"
    assert state.last_applied_lsn == 0

    bare = encode_batch(_mixed(1, 4), "zstd", 3, "p1", dictionary, carry_dictionary=False)
    status, body, _ = _post(port, bare, {"X-API-Key": "k2", "X-Primary-ID": "p1"})
    assert (status, body["need_dictionary"]) == (400, dictionary.dictionary_id)
    assert state.last_applied_lsn == 0

    status, body, _ = _post(port, batch, {"Authorization": "Bearer k1", "X-Primary-ID": "p1"})
    assert (status, body["success"], body["entries_applied"]) == (200, True, 4)
    foreign = encode_batch(_mixed(5, 6), "zstd", 3, "p2")
    status, body, _ = _post(port, foreign, {"X-API-Key": "k1", "X-Primary-ID": "p2"})
    assert status == 403
    assert "follows primary 'p1'" in body["error"]

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/api/v1/replica/status")
        response = conn.getresponse()
        report = orjson.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200
    assert report["last_applied_lsn"] == format_lsn(4)
    assert report["expected_lsn"] == format_lsn(5)
    assert (report["entries_applied_total"], report["blocks"], report["vectors"]) == (4, 2, 2)


def test_apply_auth_without_keys_or_certificates_is_closed_and_never_shows_keys() -> None:
    closed = ApplyAuth()
    assert closed.closed
    assert repr(ApplyAuth(["secret-key"])) == "ApplyAuth(1 keys, client_certificates=False)"
    assert not ApplyAuth(client_certificates=True).closed


def test_http_target_against_the_replica_rewinds_on_a_gap_and_on_a_missing_dictionary(
    replica: tuple[ReplicaState, int], dictionary: Dictionary
) -> None:
    state, port = replica
    target = open_target(f"http://127.0.0.1:{port}", _settings(), None)
    assert isinstance(target, HttpTarget)
    keyed = HttpTarget(f"http://127.0.0.1:{port}", None, key="k1")
    unkeyed = target.ship
    gap = encode_batch(_mixed(3, 4), "zstd", 3, "p1")
    with pytest.raises(ShipFailed, match="replica answered 401: WAL apply needs a replicator key"):
        unkeyed(gap, read_header(gap))
    with pytest.raises(ReplicaRewind) as rewind:
        keyed.ship(gap, read_header(gap))
    assert (rewind.value.expected_lsn, rewind.value.need_dictionary) == (1, False)
    bare = encode_batch(_mixed(1, 4), "zstd", 3, "p1", dictionary, carry_dictionary=False)
    with pytest.raises(ReplicaRewind) as rewind:
        keyed.ship(bare, read_header(bare))
    assert (rewind.value.expected_lsn, rewind.value.need_dictionary) == (1, True)
    carried = encode_batch(_mixed(1, 4), "zstd", 3, "p1", dictionary)
    keyed.ship(carried, read_header(carried))
    assert state.last_applied_lsn == 4
    assert keyed.reported_gap() is None
    keyed.close()
    # The dictionary arrived with the batch: the next bare batch decompresses.
    later = encode_batch(_mixed(5, 8), "zstd", 3, "p1", dictionary, carry_dictionary=False)
    keyed.ship(later, read_header(later))
    assert state.last_applied_lsn == 8


class ScriptedReplica:
    """A real aiohttp server on loopback answering every POST with the next scripted answer."""

    def __init__(self, answers: list[tuple[int, bytes, str]]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner = web.AppRunner(self._app(), auto_decompress=False)
        self.port = free_port()
        self._call(self._runner.setup())
        self._call(web.TCPSite(self._runner, "127.0.0.1", self.port).start())

    def _app(self) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            self.requests.append((request.path, dict(request.headers), await request.read()))
            status, body, content_type = self.answers.pop(0)
            return web.Response(status=status, body=body, content_type=content_type)

        app = web.Application()
        app.router.add_post("/{tail:.*}", answer)
        return app

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def close(self) -> None:
        self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def _json(status: int, body: object) -> tuple[int, bytes, str]:
    return status, orjson.dumps(body), "application/json"


def test_http_target_names_every_answer_it_cannot_confirm() -> None:
    server = ScriptedReplica(
        [
            (200, b"{}", "application/json"),
            _json(409, {"expected_lsn": "0000000000000007"}),
            _json(409, {"expected_lsn": "not-hex"}),
            _json(409, {"error": "a conflict without a position"}),
            _json(400, {"error": "checksum mismatch", "need_dictionary": 0}),
            _json(500, [1, 2]),
            (503, b"upstream busy", "text/plain"),
        ]
    )
    try:
        target = HttpTarget(f"http://127.0.0.1:{server.port}/replica/", None, key="sekrit")
        zstd = encode_batch(_mixed(7, 9), "zstd", 3, "p1")
        target.ship(zstd, read_header(zstd))
        path, headers, body = server.requests[0]
        assert (path, body) == ("/replica/api/v1/wal/apply", zstd)
        assert headers["Content-Encoding"] == "zstd"
        assert headers["X-Primary-ID"] == "p1"
        assert headers["Authorization"] == "Bearer sekrit"
        plain = encode_batch(_mixed(7, 9), "none", 3, "p1")
        header = read_header(plain)
        with pytest.raises(ReplicaRewind) as rewind:
            target.ship(plain, header)
        assert rewind.value.expected_lsn == 7
        assert "Content-Encoding" not in server.requests[1][1]
        failures = []
        for _ in range(5):
            with pytest.raises(ShipFailed) as failed:
                target.ship(plain, header)
            failures.append((str(failed.value), failed.value.bytes_sent))
    finally:
        server.close()
    sent = len(plain)
    assert failures[0][1] == sent
    assert failures[0][0].startswith("replica answered 409 with an unreadable expected_lsn")
    assert failures[1:] == [
        ("replica answered 409: a conflict without a position", sent),
        ("replica answered 400: checksum mismatch", sent),
        ("replica answered 500: [1,2]", sent),
        ("replica answered 503: upstream busy", sent),
    ]


def _read_request(conn: socket.socket) -> bytes:
    """One whole HTTP request (headers and the Content-Length body) from ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head + body


def test_http_target_unreachable_or_hanging_up_is_a_failed_ship_with_nothing_sent() -> None:
    batch = encode_batch(_mixed(1, 2), "none", 3, "p1")
    header = read_header(batch)
    closed_port = free_port()
    with pytest.raises(ShipFailed, match=f"POST 127.0.0.1:{closed_port}/api/v1/wal/apply") as err:
        HttpTarget(f"http://127.0.0.1:{closed_port}", None).ship(batch, header)
    assert err.value.bytes_sent == 0

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up() -> None:
        conn, _ = listener.accept()
        _read_request(conn)  # all of it: unread bytes would make the close a reset
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        with pytest.raises(ShipFailed, match="Remote end closed connection") as err:
            HttpTarget(f"http://127.0.0.1:{port}", None).ship(batch, header)
        assert err.value.bytes_sent == 0
        # TLS towards a plain-HTTP server fails the handshake: a failed ship, too.
        plain = ScriptedReplica([])
        try:
            with pytest.raises(ShipFailed, match="SSL"):
                HttpTarget(f"https://127.0.0.1:{plain.port}", None).ship(batch, header)
            assert plain.requests == []
        finally:
            plain.close()
    finally:
        thread.join(timeout=10)
        listener.close()


def test_endpoints_without_a_host_or_with_another_scheme_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="has no host; use http"):
        HttpTarget("http:///api", None)
    with pytest.raises(InvalidArgument, match="use kafka://host:port, themis"):
        open_target("ftp://127.0.0.1:21", _settings(), None)


# -- the replica's state ----------------------------------------------------------------


def test_a_reopened_replica_reads_its_dictionaries_and_ignores_a_foreign_file(
    tmp_path: Path, dictionary: Dictionary
) -> None:
    state = ReplicaState(tmp_path, _settings())
    carried = encode_batch(_mixed(1, 4), "zstd", 3, "p1", dictionary)
    assert state.apply_batch(carried).entries_applied == 4
    state.close()
    stored = tmp_path / "dictionaries" / str(dictionary.dictionary_id)
    assert stored.read_bytes() == dictionary.data
    (tmp_path / "dictionaries" / "junk").write_bytes(b"not a dictionary")
    reopened = ReplicaState(tmp_path, _settings())
    bare = encode_batch(_mixed(5, 8), "zstd", 3, "p1", dictionary, carry_dictionary=False)
    assert reopened.apply_batch(bare).entries_applied == 4
    again = encode_batch(_mixed(9, 10), "zstd", 3, "p1", dictionary)  # carried once more
    assert reopened.apply_batch(again).entries_applied == 2
    assert reopened.last_applied_lsn == 10
    assert sorted(p.name for p in stored.parent.iterdir()) == sorted(["junk", stored.name])
    reopened.close()


def test_a_batch_overlapping_what_was_applied_skips_blocks_and_vectors_already_there(
    tmp_path: Path,
) -> None:
    state = ReplicaState(tmp_path, _settings())
    state.apply_batch(encode_batch(_mixed(1, 5), "zstd", 3, "p1"))
    result = state.apply_batch(encode_batch(_mixed(4, 9), "zstd", 3, "p1"))
    assert (result.entries_applied, result.entries_skipped) == (4, 2)  # LSN 4 block, 5 vector
    assert state.entries_applied_total == 9
    assert sorted(state.vector_dump()) == ["v1", "v3", "v5", "v7", "v9"]
    assert state.vector_dump()["v5"] == {"lsn": 5}
    ts, _ = state.query_ts(series_key("m", "e"), 0, 10**6)
    assert ts.tolist() == [t for i in (2, 4, 6, 8) for t in (i * 10, i * 10 + 1)]
    state.close()


def test_entries_whose_payload_does_not_decode_are_rejected_and_their_lsns_pass(
    tmp_path: Path,
) -> None:
    state = ReplicaState(tmp_path, _settings())
    wrong_dimension = VectorOp(OpType.ADD, "v2", np.ones(DIM + 1, dtype=np.float32), {})
    entries = [
        _vector_entry(1, "v1"),
        WalEntry(2, EntryType.VECTOR_BATCH, 1, encode_op_frame([wrong_dimension], DIM + 1)),
        WalEntry(3, EntryType.TS_BLOCK, 1, b"not a gorilla block"),
        _block_entry(4),
    ]
    result = state.apply_batch(encode_batch(entries, "zstd", 3, "p1"))
    assert (result.entries_applied, result.entries_rejected) == (2, 2)
    assert state.last_applied_lsn == 4
    assert state.status()["entries_rejected"] == 2
    assert list(state.vector_dump()) == ["v1"]
    assert [hit.pk for hit in state.search(np.ones(DIM, dtype=np.float32), 3)] == ["v1"]
    assert state.query_ts(series_key("m", "e"), 0, 10**6)[0].tolist() == [40, 41]
    state.close()


def test_a_replica_directory_pinned_to_one_primary_refuses_another(tmp_path: Path) -> None:
    state = ReplicaState(tmp_path, _settings())
    state.apply_batch(encode_batch(_mixed(1, 2), "zstd", 3, "p1"))
    state.close()
    with pytest.raises(ForeignPrimary, match="holds a replica of primary 'p1', not 'p2'"):
        ReplicaState(tmp_path, _settings(), primary_id="p2")
    same = ReplicaState(tmp_path, _settings(), primary_id="p1")
    assert (same.primary_id, same.last_applied_lsn) == ("p1", 2)
    same.close()
