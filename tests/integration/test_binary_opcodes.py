"""Every served opcode of the binary door against a live facade, worker and broker.

Results are read back through the REST door: points queried, vectors searched, stats
compared field by field, a WAL batch applied on the facade's replica state.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pipeline.binary import (
    Empty,
    ErrorCode,
    Flags,
    Frame,
    JsonBody,
    Opcode,
    TsBatch,
    TsPoint,
    VectorBatch,
    VectorRemove,
    VectorWrite,
    WalApply,
    WriteAck,
)
from pipeline.kafka.broker import BrokerHandle
from pipeline.kafka.local_broker import free_port
from pipeline.replication import REPLICA_STATE
from pipeline.ts.block import encode_block
from pipeline.ts.point import series_key
from pipeline.wal.batch import encode_batch
from pipeline.wal.entry import EntryType, WalEntry
from tests.fixtures.binary import Client, error_of, with_client
from tests.fixtures.broker import MakeSettings, settings_maker
from tests.fixtures.facade import (
    ADMIN,
    DIM,
    KEYS,
    WRITER,
    FacadeThread,
    facade_behind_worker,
    facade_settings,
)
from tests.fixtures.support import wait_until
from tests.fixtures.topics import records_on

pytestmark = pytest.mark.integration

T0 = 1_702_645_200_000
REPLICATOR_KEY = "replicator-key"


@pytest.fixture(scope="module")
def live(
    kafka_broker: BrokerHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FacadeThread]:
    """One facade with its binary door, behind one worker, for the module's tests."""
    tmp = tmp_path_factory.mktemp("binary")
    settings = facade_settings(settings_maker(kafka_broker, tmp), binary_port=free_port())
    with facade_behind_worker(settings, tmp, WRITER) as facade:
        yield facade


def _port(facade: FacadeThread) -> int:
    return facade.settings.facade.binary_port


def _calls(facade: FacadeThread, key: str, calls: list[tuple[Opcode, Any, int]]) -> list[Frame]:
    """Greet with ``key``, send every call pipelined, the replies in request order."""

    async def scenario(client: Client) -> list[Frame]:
        await client.greet(key)
        for i, (opcode, body, flags) in enumerate(calls):
            client.send(opcode, 100 + i, body, Flags(flags))
        replies = [await client.read() for _ in calls]
        return sorted(replies, key=lambda r: r.request_id)

    return with_client(_port(facade), scenario)


def _points(facade: FacadeThread, query: str) -> list[list[Any]]:
    status, body, _ = facade.call("GET", f"/ts/query?{query}", headers=WRITER)
    assert status == 200, body
    return [[p["timestamp_ms"], p["value"]] for p in body["points"]]


def _top(facade: FacadeThread, vector: np.ndarray, k: int = 1) -> list[dict[str, Any]]:
    body = {"vector": vector.tolist(), "k": k}
    status, answer, _ = facade.call("POST", "/vectors/search", body, WRITER)
    assert status == 200, answer
    results: list[dict[str, Any]] = answer["results"]
    return results


def test_ts_flush_makes_binary_points_queryable_and_stats_match_rest(live: FacadeThread) -> None:
    points = tuple(TsPoint("bin.cpu", "h1", T0 + i, i * 0.5, (("dc", "eu"),)) for i in range(50))
    put, stats = _calls(
        live,
        "writer-key",
        [
            (Opcode.TS_PUT_BUFFERED_BATCH, TsBatch(points), Flags.NONE),
            (Opcode.TS_BUFFER_STATS, Empty(), Flags.NONE),
        ],
    )
    assert isinstance(put.body, WriteAck)
    assert put.body.accepted == 50
    assert isinstance(stats.body, JsonBody)
    status, rest, _ = live.call("GET", "/ts/buffer/stats", headers=WRITER)
    assert status == 200
    assert set(stats.body.document) == set(rest)

    def buffered() -> object:
        (reply,) = _calls(live, "writer-key", [(Opcode.TS_BUFFER_STATS, Empty(), Flags.NONE)])
        assert isinstance(reply.body, JsonBody)
        return reply.body.document["current_buffer_size"]

    wait_until(lambda: buffered() == 50, timeout_s=60, what="the worker buffering the batch")
    (refused,) = _calls(live, "writer-key", [(Opcode.TS_BUFFER_FLUSH, Empty(), Flags.NONE)])
    assert error_of(refused).code == ErrorCode.PERMISSION_DENIED  # flush is admin, as on REST
    (flushed,) = _calls(live, "admin-key", [(Opcode.TS_BUFFER_FLUSH, Empty(), Flags.NONE)])
    assert isinstance(flushed.body, JsonBody)
    assert flushed.body.document["success"] is True
    flushed_points = flushed.body.document["points_flushed"]
    assert isinstance(flushed_points, int)
    assert flushed_points >= 50
    assert {"workers", "workers_unreachable"} <= set(flushed.body.document)
    expected = [[T0 + i, i * 0.5] for i in range(50)]
    assert _points(live, "metric=bin.cpu&entity=h1&tag=dc:eu") == expected


def test_vector_opcodes_add_update_remove_and_batches_are_searchable(live: FacadeThread) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(0, 1, (12, DIM)).astype(np.float32)
    pks = tuple(f"bin{i}" for i in range(10))
    metadata: tuple[dict[str, object] | None, ...] = tuple({"n": i} for i in range(10))
    replies = _calls(
        live,
        "writer-key",
        [
            (
                Opcode.VECTOR_ADD_BUFFERED_BATCH,
                VectorBatch(pks, vectors[:10], metadata),
                Flags.NONE,
            ),
            (Opcode.VECTOR_ADD_BUFFERED, VectorWrite("solo", vectors[10], {"n": 10}), Flags.NONE),
        ],
    )
    assert [r.body.accepted for r in replies if isinstance(r.body, WriteAck)] == [10, 1]

    def searchable() -> bool:
        # A cold worker may take more polls than flush's rate limit allows per minute:
        # a rate-limited flush is a poll that waits for the time flush instead.
        (flushed,) = _calls(live, "admin-key", [(Opcode.VECTOR_BUFFER_FLUSH, Empty(), 0)])
        if not isinstance(flushed.body, JsonBody):
            assert error_of(flushed).code == ErrorCode.RATE_LIMITED
        else:
            assert flushed.body.document["success"] is True
        top, solo = _top(live, vectors[4]), _top(live, vectors[10])
        return bool(top and solo) and (top[0]["pk"], solo[0]["pk"]) == ("bin4", "solo")

    wait_until(searchable, timeout_s=60, what="the binary batch searchable")
    assert _top(live, vectors[10])[0] == {
        "pk": "solo",
        "distance": pytest.approx(0, abs=1e-4),
        "metadata": {"n": 10},
    }

    moved = vectors[11]
    replies = _calls(
        live,
        "writer-key",
        [
            (Opcode.VECTOR_UPDATE_BUFFERED, VectorWrite("bin4", moved, {"n": 44}), Flags.NONE),
            (Opcode.VECTOR_REMOVE_BUFFERED, VectorRemove("solo"), Flags.ACK_QUEUED),
            (Opcode.VECTOR_REMOVE_BUFFERED, VectorRemove("never-added"), Flags.NONE),
            (Opcode.VECTOR_BUFFER_STATS, Empty(), Flags.NONE),
        ],
    )
    update, remove, missing, stats = replies
    assert isinstance(update.body, WriteAck)
    assert isinstance(remove.body, WriteAck)
    assert error_of(missing).code == ErrorCode.NOT_FOUND
    assert isinstance(stats.body, JsonBody)
    status, rest, _ = live.call("GET", "/vectors/buffer/stats", headers=WRITER)
    assert status == 200
    assert set(stats.body.document) == set(rest)

    def moved_and_gone() -> bool:
        assert live.call("POST", "/vectors/buffer/flush", headers=ADMIN)[0] in {200, 429}
        top = _top(live, moved, 20)
        return top[0]["pk"] == "bin4" and all(hit["pk"] != "solo" for hit in top)

    wait_until(moved_and_gone, timeout_s=60, what="the update and the remove applied")
    assert _top(live, moved)[0]["metadata"] == {"n": 44}


def test_a_bad_vector_is_refused_naming_the_field_and_nothing_of_its_batch_is_written(
    live: FacadeThread,
) -> None:
    good = np.ones(DIM, dtype=np.float32)
    short = np.ones(DIM - 1, dtype=np.float32)
    bad_batch = np.stack([good, good * np.float32(np.nan)])
    replies = _calls(
        live,
        "writer-key",
        [
            (Opcode.VECTOR_ADD_BUFFERED, VectorWrite("short", short), Flags.NONE),
            (Opcode.VECTOR_ADD_BUFFERED_BATCH, VectorBatch(("ok1", "nan1"), bad_batch), Flags.NONE),
            (Opcode.VECTOR_ADD_BUFFERED, VectorWrite("", good), Flags.NONE),
        ],
    )
    codes_and_texts = [(error_of(r).code, error_of(r).message) for r in replies]
    assert all(code == ErrorCode.INVALID_REQUEST for code, _ in codes_and_texts)
    assert "vector" in codes_and_texts[0][1]
    assert codes_and_texts[1][1].startswith("vector 1: ")
    assert "pk" in codes_and_texts[2][1]
    produced = records_on(
        live.settings.kafka.bootstrap_servers or "", live.settings.topic("vectors.ops")
    )
    assert not {b"ok1", b"nan1", b"short", b""} & {key for key, _ in produced}


def test_binary_requests_errors_and_bytes_are_on_the_metrics_page(live: FacadeThread) -> None:
    _calls(live, "writer-key", [(Opcode.TS_BUFFER_STATS, Empty(), Flags.NONE)])
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    conn.request("GET", "/metrics")
    page = conn.getresponse().read().decode()
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in page.splitlines()
        if line.startswith("facade_binary_")
    }
    assert samples['facade_binary_requests_total{opcode="TS_BUFFER_STATS"}'] >= 1
    assert samples['facade_binary_handler_seconds_count{opcode="TS_BUFFER_STATS"}'] >= 1
    assert samples["facade_binary_received_bytes_total"] > 0
    assert samples['facade_binary_errors_total{code="PERMISSION_DENIED"}'] >= 1


@pytest.fixture
def replica(make_settings: MakeSettings) -> Iterator[FacadeThread]:
    keys = f"{KEYS},{REPLICATOR_KEY}:replicator"
    settings = facade_settings(make_settings, binary_port=free_port(), api_keys=keys)
    thread = FacadeThread(settings, replication=True)
    try:
        yield thread
    finally:
        thread.close()


def test_wal_apply_over_binary_takes_only_a_replicator_and_applies_the_batch(
    replica: FacadeThread,
) -> None:
    key = series_key("wal.bin", "e1", {})
    ts = np.arange(T0, T0 + 40, dtype=np.int64)
    vs = np.linspace(0, 1, 40)
    block = encode_block(key, ts, vs)
    batch = encode_batch([WalEntry(1, EntryType.TS_BLOCK, T0, block)], "zstd", 3, "primary-b")
    gap = encode_batch([WalEntry(5, EntryType.TS_BLOCK, T0, block)], "zstd", 3, "primary-b")
    apply = WalApply("primary-b", batch)
    (as_writer,) = _calls(replica, "writer-key", [(Opcode.WAL_APPLY_COMPRESSED, apply, Flags.NONE)])
    assert error_of(as_writer).code == ErrorCode.PERMISSION_DENIED
    replies = _calls(
        replica,
        REPLICATOR_KEY,
        [
            (Opcode.WAL_APPLY_COMPRESSED, WalApply("someone-else", batch), Flags.NONE),
            (Opcode.WAL_APPLY_COMPRESSED, apply, Flags.NONE),
        ],
    )
    mismatch, applied = replies
    assert error_of(mismatch).code == ErrorCode.INVALID_REQUEST
    assert isinstance(applied.body, JsonBody)
    assert applied.body.document["entries_applied"] == 1
    (gapped,) = _calls(
        replica, REPLICATOR_KEY, [(Opcode.WAL_APPLY_COMPRESSED, WalApply("primary-b", gap), 0)]
    )
    assert error_of(gapped).code == ErrorCode.WAL_GAP
    state = replica.app[REPLICA_STATE]
    got_ts, got_vs = state.query_ts(key, -(2**62), 2**62)
    np.testing.assert_array_equal(got_ts, ts)
    np.testing.assert_array_equal(got_vs, vs)


def test_replication_stats_and_config_answer_as_the_rest_endpoints(replica: FacadeThread) -> None:
    config = JsonBody({"compression_type": "zstd", "compression_level": 7})
    bad = JsonBody({"compression_type": "zstd", "compression_level": 99})
    stats, denied = _calls(
        replica,
        "writer-key",
        [
            (Opcode.REPLICATION_STATS, Empty(), Flags.NONE),
            (Opcode.REPLICATION_CONFIG, config, Flags.NONE),
        ],
    )
    status, rest, _ = replica.call("GET", "/api/v1/replication/stats", headers=WRITER)
    assert status == 200
    assert isinstance(stats.body, JsonBody)
    assert stats.body.document == rest
    assert error_of(denied).code == ErrorCode.PERMISSION_DENIED
    done, refused = _calls(
        replica,
        "admin-key",
        [(Opcode.REPLICATION_CONFIG, config, Flags.NONE), (Opcode.REPLICATION_CONFIG, bad, 0)],
    )
    assert isinstance(done.body, JsonBody)
    assert done.body.document == {
        "success": True,
        "compression_type": "zstd",
        "compression_level": 7,
    }
    assert error_of(refused).code == ErrorCode.INVALID_REQUEST
    assert "compression_level" in error_of(refused).message


def test_many_vector_batches_in_flight_are_each_answered(live: FacadeThread) -> None:
    rng = np.random.default_rng(9)
    calls: list[tuple[Opcode, Any, int]] = []
    for b in range(20):
        block = rng.normal(0, 1, (50, DIM)).astype(np.float32)
        pks = tuple(f"many{b}-{i}" for i in range(50))
        calls.append((Opcode.VECTOR_ADD_BUFFERED_BATCH, VectorBatch(pks, block), Flags.ACK_QUEUED))
    replies = _calls(live, "writer-key", calls)
    assert [r.request_id for r in replies] == list(range(100, 120))
    assert all(isinstance(r.body, WriteAck) and r.body.accepted == 50 for r in replies)
