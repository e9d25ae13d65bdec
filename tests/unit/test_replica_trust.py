"""A replica applies only its own primary's WAL, in consistent LSN ranges, all or nothing."""

from __future__ import annotations

import http.client
import logging
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest

from pipeline.config import Settings, load_settings, with_overrides
from pipeline.errors import CorruptBatch, ForeignPrimary, ShipFailed
from pipeline.kafka.local_broker import free_port
from pipeline.replication import ApplyAuth, ReplicaServer, ReplicaState
from pipeline.replication.targets import open_target
from pipeline.throttle import FailureThrottle
from pipeline.ts.block import encode_block
from pipeline.ts.point import series_key
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame
from pipeline.wal.batch import encode_batch, read_header
from pipeline.wal.entry import EntryType, WalEntry
from tests.fixtures.support import (
    THEMIS,
    UNPARSABLE_HEADS,
    FakeClock,
    raw_exchange,
    send_unparsable_head,
    start_process,
    stop_process,
    wait_until,
)
from tests.fixtures.wal import post_wal_apply, resigned

pytestmark = pytest.mark.unit

DIM = 4


def _settings() -> Settings:
    return load_settings(
        path=Path("/dev/null"), env={}, overrides={"vector_auto_buffer": {"dimension": DIM}}
    )


def _block_entry(lsn: int) -> WalEntry:
    ts = np.array([lsn], dtype=np.int64)
    return WalEntry(lsn, EntryType.TS_BLOCK, 1, encode_block(series_key("m", "e"), ts, ts * 1.0))


def _vector_entry(lsn: int, pk: str) -> WalEntry:
    op = VectorOp(OpType.ADD, pk, np.ones(DIM, dtype=np.float32), {})
    return WalEntry(lsn, EntryType.VECTOR_BATCH, 1, encode_op_frame([op], DIM))


def _with_range(batch: bytes, first: int, last: int) -> bytes:
    """``batch`` claiming another LSN range, checksum fixed up (what an attacker can send)."""
    forged = bytearray(batch)
    struct.pack_into("<QQ", forged, 12, first, last)
    return resigned(forged)


def test_an_empty_batch_claiming_a_huge_lsn_range_is_refused_and_replication_goes_on(
    tmp_path: Path,
) -> None:
    replica = ReplicaState(tmp_path, _settings())
    replica.apply_batch(encode_batch([_block_entry(i) for i in range(1, 6)], "zstd", 3, "p1"))
    empty = encode_batch([], "zstd", 3, "p1", first_lsn=6, last_lsn=6)
    with pytest.raises(CorruptBatch, match=r"carries 0 entries; .* \(MAX_LSN_HOLES\)"):
        replica.apply_batch(_with_range(empty, 6, 2**63 - 1))
    result = replica.apply_batch(encode_batch([_block_entry(6)], "zstd", 3, "p1"))
    assert result.entries_applied == 1
    assert replica.last_applied_lsn == 6
    replica.close()


def test_a_batch_ending_beyond_int64_changes_nothing_not_even_the_vector_index(
    tmp_path: Path,
) -> None:
    replica = ReplicaState(tmp_path, _settings())
    batch = encode_batch([_vector_entry(1, "v1")], "zstd", 3, "p1")
    with pytest.raises(CorruptBatch, match=r"beyond 9223372036854775807 \(MAX_LSN\)"):
        replica.apply_batch(_with_range(batch, 1, 2**64 - 1))
    assert replica.vector_dump() == {}
    assert replica.last_applied_lsn == 0
    assert replica.apply_batch(batch).entries_applied == 1
    assert list(replica.vector_dump()) == ["v1"]
    replica.close()


def test_a_replica_is_pinned_to_the_first_primary_it_applies_even_after_a_restart(
    tmp_path: Path,
) -> None:
    replica = ReplicaState(tmp_path, _settings())
    replica.apply_batch(encode_batch([_block_entry(1)], "zstd", 3, "p1"))
    with pytest.raises(ForeignPrimary, match="follows primary 'p1'"):
        replica.apply_batch(encode_batch([_block_entry(2)], "zstd", 3, "intruder"))
    replica.close()
    restarted = ReplicaState(tmp_path, _settings())
    assert restarted.primary_id == "p1"
    with pytest.raises(ForeignPrimary):
        restarted.apply_batch(encode_batch([_block_entry(2)], "zstd", 3, "intruder"))
    assert restarted.apply_batch(encode_batch([_block_entry(2)], "zstd", 3, "p1")).last_lsn == 2
    restarted.close()
    with pytest.raises(ForeignPrimary, match="holds a replica of primary 'p1'"):
        ReplicaState(tmp_path, _settings(), primary_id="other")


def test_wal_apply_answers_401_without_a_replicator_key_and_applies_with_one(
    tmp_path: Path,
) -> None:
    replica = ReplicaState(tmp_path, _settings())
    server = ReplicaServer(replica, auth=ApplyAuth(["replicator-key"]))
    port = server.start()
    batch = encode_batch([_block_entry(1), _block_entry(2)], "none", 3, "p1")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"X-API-Key": "replicator"}):
            status, body = post_wal_apply(port, batch, {"X-Primary-ID": "p1", **headers})
            assert (status, body["success"]) == (401, False)
            assert "replicator" in str(body["error"])
            assert "wrong-key" not in str(body["error"])
        assert replica.last_applied_lsn == 0
        status, body = post_wal_apply(
            port, batch, {"X-Primary-ID": "p1", "Authorization": "Bearer replicator-key"}
        )
        assert (status, body["entries_applied"]) == (200, 2)
        assert replica.last_applied_lsn == 2
    finally:
        server.stop()
        replica.close()


def test_wal_apply_without_keys_or_client_certificates_is_closed_to_everyone(
    tmp_path: Path,
) -> None:
    replica = ReplicaState(tmp_path, _settings())
    auth = ApplyAuth([""])
    assert auth.closed
    assert "keys" in repr(auth)
    server = ReplicaServer(replica, auth=auth)
    port = server.start()
    try:
        batch = encode_batch([_block_entry(1)], "none", 3, "p1")
        status, body = post_wal_apply(port, batch, {"X-Primary-ID": "p1", "X-API-Key": "any"})
        assert (status, body["success"]) == (401, False)
        assert "closed" in str(body["error"])
        assert replica.last_applied_lsn == 0
    finally:
        server.stop()
        replica.close()


def test_wal_serve_refuses_to_start_an_apply_endpoint_open_to_everyone(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "THEMIS_CONFIG": os.devnull,
        "THEMIS_WORKER_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [*THEMIS, "wal", "serve", "--replica", "r1", "--port", "0"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert b"THEMIS_WAL_APPLY_KEYS" in done.stderr
    assert not (tmp_path / "replica-r1").exists() or not any((tmp_path / "replica-r1").iterdir())


def test_the_binary_door_of_wal_serve_applies_only_with_a_replicator_key(tmp_path: Path) -> None:
    replica = ReplicaState(tmp_path, _settings())
    server = ReplicaServer(replica, auth=ApplyAuth(["replicator-key"]), binary_port=0)
    server.start()
    endpoint = f"themis://127.0.0.1:{server.binary_port}"
    batch = encode_batch([_block_entry(1), _block_entry(2)], "none", 3, "p1")
    try:
        for key in ("", "wrong-key"):
            settings = with_overrides(_settings(), {"compressed_wal_shipping": {"ship_key": key}})
            target = open_target(endpoint, settings, None)
            with pytest.raises(ShipFailed, match=r"NOT_AUTHENTICATED|AUTHENTICATION_FAILED"):
                target.ship(batch, read_header(batch))
            target.close()
        assert replica.last_applied_lsn == 0
        settings = with_overrides(
            _settings(), {"compressed_wal_shipping": {"ship_key": "replicator-key"}}
        )
        target = open_target(endpoint, settings, None)
        try:
            target.ship(batch, read_header(batch))
            target.ship(batch, read_header(batch))  # the same connection; applied once
        finally:
            target.close()
        assert replica.last_applied_lsn == 2
        assert replica.status()["entries_applied_total"] == 2
    finally:
        server.stop()
        replica.close()


def _call(
    port: int, method: str, path: str, body: bytes | None, key: str | None
) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"X-API-Key": key} if key else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        conn.close()


def test_a_replica_answers_queries_and_searches_as_the_facade_to_callers_it_trusts(
    tmp_path: Path,
) -> None:
    replica = ReplicaState(tmp_path, _settings())
    server = ReplicaServer(replica, auth=ApplyAuth(["replicator-key"]))
    port = server.start()
    ts = np.array([10, 20, 30], dtype=np.int64)
    block = encode_block(series_key("cpu", "s1", {"dc": "eu"}), ts, np.array([1.5, np.nan, 3.0]))
    near = VectorOp(OpType.ADD, "near", np.array([1, 0, 0, 0], dtype=np.float32), {"n": 1})
    far = VectorOp(OpType.ADD, "far", np.array([0, 0, 0, 1], dtype=np.float32), {"n": 2})
    entries = [
        WalEntry(1, EntryType.TS_BLOCK, 1, block),
        WalEntry(2, EntryType.VECTOR_BATCH, 1, encode_op_frame([near, far], DIM)),
    ]
    replica.apply_batch(encode_batch(entries, "zstd", 3, "p1"))
    key = "replicator-key"
    try:
        status, body = _call(
            port, "GET", "/ts/query?metric=cpu&entity=s1&tag=dc:eu&start=15", None, key
        )
        assert status == 200, body
        assert body == {
            "series": series_key("cpu", "s1", {"dc": "eu"}),
            "count": 2,
            "points": [{"timestamp_ms": 20, "value": "NaN"}, {"timestamp_ms": 30, "value": 3.0}],
        }
        query = orjson.dumps({"metric": "cpu", "entity": "s1", "tags": {"dc": "eu"}, "end": 10})
        status, body = _call(port, "POST", "/ts/query", query, key)
        assert (status, body["points"]) == (200, [{"timestamp_ms": 10, "value": 1.5}])
        search = orjson.dumps({"vector": [0.9, 0.1, 0, 0], "k": 2})
        status, body = _call(port, "POST", "/vectors/search", search, key)
        assert status == 200, body
        assert [(hit["pk"], hit["metadata"]) for hit in body["results"]] == [  # type: ignore[attr-defined]
            ("near", {"n": 1}),
            ("far", {"n": 2}),
        ]
        assert _call(port, "GET", "/ts/query?metric=cpu&entity=s1", None, None)[0] == 401
        assert _call(port, "POST", "/vectors/search", search, "wrong")[0] == 401
        status, body = _call(port, "GET", "/ts/query?entity=s1", None, key)
        assert (status, body["error"]) == (400, "query parameter 'metric' is required (non-empty)")
        filtered = orjson.dumps({"vector": [1, 0, 0, 0], "filter": {"n": 1}})
        status, body = _call(port, "POST", "/vectors/search", filtered, key)
        assert status == 400
        assert "'filter'" in str(body["error"])
        status, body = _call(port, "POST", "/vectors/search", b'{"vector": [1, 0]}', key)
        assert status == 400
        assert "dimension" in str(body["error"]), body
    finally:
        server.stop()
        replica.close()


def test_failed_replicator_keys_from_one_address_get_429_on_both_doors_until_it_refills(
    tmp_path: Path,
) -> None:
    replica = ReplicaState(tmp_path, _settings())
    clock = FakeClock()
    auth = ApplyAuth(["replicator-key"], failures=FailureThrottle(3, clock=clock))
    server = ReplicaServer(replica, auth=auth, binary_port=0)
    port = server.start()
    batch = encode_batch([_block_entry(1), _block_entry(2)], "none", 3, "p1")
    right = {"X-Primary-ID": "p1", "Authorization": "Bearer replicator-key"}

    def ship(key: str) -> None:
        settings = with_overrides(_settings(), {"compressed_wal_shipping": {"ship_key": key}})
        target = open_target(f"themis://127.0.0.1:{server.binary_port}", settings, None)
        try:
            target.ship(batch, read_header(batch))
        finally:
            target.close()

    try:
        for guess in ("guess-1", "guess-2"):
            status, _ = post_wal_apply(port, batch, {"X-Primary-ID": "p1", "X-API-Key": guess})
            assert status == 401
        with pytest.raises(ShipFailed, match="AUTHENTICATION_FAILED"):
            ship("guess-3")  # the binary door counts against the same address
        # Now not even the right key is compared, on either door or on the reads.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/api/v1/wal/apply", body=batch, headers=right)
        response = conn.getresponse()
        body = orjson.loads(response.read())
        conn.close()
        assert response.status == 429
        assert int(response.getheader("Retry-After") or 0) == body["retry_after_s"] >= 1
        assert "compressed_wal_shipping.apply_auth_failures_per_min" in str(body["error"])
        assert _call(port, "GET", "/ts/query?metric=m&entity=e", None, "replicator-key")[0] == 429
        with pytest.raises(ShipFailed, match="RATE_LIMITED"):
            ship("replicator-key")
        assert replica.last_applied_lsn == 0
        clock.now += 20  # one failure's worth refilled (3 a minute)
        status, body = post_wal_apply(port, batch, right)
        assert (status, body["entries_applied"]) == (200, 2)
        assert replica.last_applied_lsn == 2
    finally:
        server.stop()
        replica.close()


def test_wal_serve_throttles_failed_keys_at_its_setting(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "THEMIS_CONFIG": os.devnull,
        "THEMIS_WORKER_DATA_DIR": str(tmp_path),
        "THEMIS_WAL_APPLY_KEYS": "replicator-key",
        "THEMIS_WAL_APPLY_AUTH_FAILURES_PER_MIN": "2",
    }
    log = tmp_path / "serve.log"
    serve = start_process(
        [*THEMIS, "wal", "serve", "--replica", "r1", "--port", str(port)], env, log
    )
    try:
        wait_until(
            lambda: f"serving http://127.0.0.1:{port}" in log.read_text(),
            timeout_s=60,
            what="wal serve to listen",
        )
        batch = encode_batch([_block_entry(1)], "none", 3, "p1")
        guesses = [
            post_wal_apply(port, batch, {"X-Primary-ID": "p1", "X-API-Key": f"g{i}"})[0]
            for i in range(3)
        ]
        assert guesses == [401, 401, 429]
        status, body = post_wal_apply(
            port, batch, {"X-Primary-ID": "p1", "X-API-Key": "replicator-key"}
        )
        assert status == 429
        assert "at most 2 a minute" in str(body["error"])
    finally:
        assert stop_process(serve) == 0, log.read_text()[-2000:]


@pytest.mark.parametrize("shape", list(UNPARSABLE_HEADS))
def test_a_head_aiohttp_cannot_parse_never_shows_the_replicator_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, shape: str
) -> None:
    caplog.set_level(logging.DEBUG)
    replica = ReplicaState(tmp_path, _settings())
    server = ReplicaServer(replica, auth=ApplyAuth(["replicator-key"]))
    port = server.start()
    header, status = UNPARSABLE_HEADS[shape]
    try:
        answer = send_unparsable_head(port, "/api/v1/replica/status", header, "replicator-key")
    finally:
        server.stop()
        replica.close()
    assert answer.split(b" ", 2)[1] == b"%d" % status, answer[:300]
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["success"] is False
    assert b"replicator-key" not in answer
    assert "replicator-key" not in caplog.text
    assert "refused a malformed request" in caplog.text


def test_wal_serve_cuts_off_a_dripping_head_and_answers_408_to_a_dripping_body(
    tmp_path: Path,
) -> None:
    replica = ReplicaState(tmp_path, _settings())
    server = ReplicaServer(
        replica,
        auth=ApplyAuth(["replicator-key"]),
        head_timeout_s=1.0,
        body_timeout_s=1.5,
    )
    port = server.start()
    batch = encode_batch([_block_entry(1)], "none", 3, "p1")
    head = (
        b"POST /api/v1/wal/apply HTTP/1.1\r\nHost: replica\r\n"
        b"Authorization: Bearer replicator-key\r\nX-Primary-ID: p1\r\n"
        b"Content-Length: %d\r\n\r\n" % len(batch)
    )
    try:
        answer, _, closed = raw_exchange(port, head[:40], drip=head[40:])
        assert answer == b""
        assert 1.0 <= closed < 2.5, closed
        answer, first, _ = raw_exchange(port, head + batch[:10], drip=batch[10:], until=b"}")
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert b"connection: close" in answer.lower()
        assert "within 1.5 s" in orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]
        assert 1.5 <= first < 3.0, first
        assert replica.last_applied_lsn == 0
        status, body = post_wal_apply(
            port, batch, {"X-Primary-ID": "p1", "Authorization": "Bearer replicator-key"}
        )
        assert (status, body["entries_applied"]) == (200, 1)
    finally:
        server.stop()
        replica.close()
