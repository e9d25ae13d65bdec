"""The facade under hostile or failing conditions, against a real broker.

A broker that stalls (its JVM stopped), clients that send slowly or send heads aiohttp
cannot parse, a client guessing keys, bodies of the wrong type, and requests refused
after part of them could have been sent. No worker runs: what was stored is read from
the topics themselves.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.kafka.local_broker import LocalKafka
from pipeline.kafka.topics import apply_topics
from pipeline.replication import REPLICA_STATE
from pipeline.ts.block import decode_block
from pipeline.ts.point import series_key
from pipeline.wal.batch import encode_batch
from pipeline.wal.entry import EntryType, WalEntry
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import DIM, KEYS, WRITER, FacadeThread, facade_settings
from tests.fixtures.support import raw_exchange
from tests.fixtures.topics import points_on, records_on

pytestmark = pytest.mark.integration

POINT = {"metric": "cpu", "entity": "s1", "timestamp_ms": 1, "value": 1.5}


MakeFacade = Callable[..., FacadeThread]


@pytest.fixture
def make_facade(make_settings: MakeSettings) -> Iterator[MakeFacade]:
    """Facades without a worker, each with the ``facade.*`` settings given; closed after."""
    started: list[FacadeThread] = []

    def make(**facade: object) -> FacadeThread:
        started.append(FacadeThread(facade_settings(make_settings, **facade)))
        return started[-1]

    try:
        yield make
    finally:
        for facade in started:
            facade.close()


@pytest.fixture
def facade(make_facade: MakeFacade) -> FacadeThread:
    return make_facade()


def _json_body(answer: bytes) -> Any:
    return orjson.loads(answer.partition(b"\r\n\r\n")[2])


# -- 1. deadlines ---------------------------------------------------------------


@pytest.fixture
def stalling_broker() -> Iterator[tuple[str, int]]:
    """A broker of this test's own, ``(bootstrap, JVM pid)``: the test stops and resumes it."""
    local = LocalKafka(f"stall-{uuid.uuid4().hex[:8]}")
    record = local.up()
    print(f"own broker up in {record.startup_seconds} s")
    try:
        yield record.bootstrap_servers, record.pid
    finally:
        os.kill(record.pid, signal.SIGCONT)
        local.down()


def test_a_stalled_broker_answers_acked_and_direct_writes_503_at_the_deadline_losing_no_ack(
    make_settings: MakeSettings, stalling_broker: tuple[str, int], tmp_path: Path
) -> None:
    bootstrap, pid = stalling_broker
    deadline_s = 2.0
    settings = make_settings(
        kafka={"bootstrap_servers": bootstrap},
        facade={"api_keys": KEYS, "write_deadline_s": deadline_s},
        vector_auto_buffer={"dimension": DIM},
    )
    apply_topics(bootstrap, settings, partitions_override=2)
    facade = FacadeThread(settings)
    vector = [0.25] * DIM

    def writes(t: int) -> list[tuple[str, str, object]]:
        batch = [POINT | {"entity": f"b{i}", "timestamp_ms": t} for i in range(3)]
        return [
            ("POST", "/ts/put/buffered", POINT | {"timestamp_ms": t}),
            ("POST", "/ts/put/buffered/batch", batch),
            ("POST", "/vectors/add/buffered", {"pk": f"v{t}", "vector": vector}),
            ("POST", "/ts/put", POINT | {"entity": "direct", "timestamp_ms": t}),
            ("POST", "/vectors/add", {"pk": f"d{t}", "vector": vector}),
        ]

    def send(write: tuple[str, str, object]) -> tuple[int, Any, dict[str, str], float]:
        started = time.monotonic()
        status, body, headers = facade.call(*write, WRITER)
        return status, body, headers, time.monotonic() - started

    try:
        for write in writes(1):  # acked before the stall
            assert send(write)[0] == 200, write
        os.kill(pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(5) as pool:
                stalled = list(pool.map(send, writes(2)))
        finally:
            os.kill(pid, signal.SIGCONT)
        for (_, path, _), (status, body, headers, took) in zip(writes(2), stalled, strict=True):
            assert status == 503, (path, body)
            assert headers["Retry-After"] == "2", path
            assert "facade.write_deadline_s" in body["error"]
            assert deadline_s <= took < deadline_s + 1.5, (path, took)
        print("503 after", [round(s[3], 2) for s in stalled], "s")
        for write in writes(3):  # the broker is back: acked again
            assert send(write)[0] == 200, write
    finally:
        facade.close()

    points = set(points_on(bootstrap, settings.topic("ts.points")))
    for t in (1, 3):
        assert ('["cpu","s1",{}]', t) in points
        assert {(f'["cpu","b{i}",{{}}]', t) for i in range(3)} <= points
    pks = {key for key, _ in records_on(bootstrap, settings.topic("vectors.ops"))}
    assert {b"v1", b"v3", b"d1", b"d3"} <= pks
    blocks = [
        decode_block(value) for _, value in records_on(bootstrap, settings.topic("ts.blocks"))
    ]
    direct = series_key("cpu", "direct", {})
    assert {1, 3} <= {int(t) for b in blocks if b.series_key == direct for t in b.points()[0]}


# -- 2. header and body timeouts --------------------------------------------------


def test_a_half_sent_head_is_cut_off_at_the_header_timeout_however_slowly_it_drips(
    make_facade: MakeFacade,
) -> None:
    facade = make_facade(header_timeout_s=1.0)
    head = b"POST /ts/put HTTP/1.1\r\nHost: facade\r\nAuthorization: Bear"
    answer, _, closed = raw_exchange(facade.port, head, drip=b"er writer-key" * 4)
    assert answer == b""
    assert 1.0 <= closed < 2.0, closed


def test_a_half_sent_body_answers_408_at_the_body_timeout_and_closes(
    make_facade: MakeFacade,
) -> None:
    facade = make_facade(header_timeout_s=1.0, body_timeout_s=2.0)
    body = orjson.dumps(POINT)
    head = (
        b"POST /ts/put HTTP/1.1\r\nHost: facade\r\nAuthorization: Bearer writer-key\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    answer, first, _ = raw_exchange(facade.port, head + body[:10], drip=body[10:], until=b"}")
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower()
    assert "facade.body_timeout_s" in _json_body(answer)["error"]
    assert 2.0 <= first < 3.0, first
    # Whole requests on fresh connections still go through.
    assert facade.call("POST", "/ts/put", POINT, WRITER)[0] == 200


# -- 3. failed key checks ---------------------------------------------------------


def test_failed_key_checks_from_one_address_get_429_without_the_key_being_checked(
    make_facade: MakeFacade,
) -> None:
    facade = make_facade(rate_auth_failures_per_min=5)
    statuses = [
        facade.call("GET", "/ts/buffer/stats", headers={"X-API-Key": f"guess-{i}"})[0]
        for i in range(5)
    ]
    assert statuses == [401] * 5
    status, body, headers = facade.call("GET", "/ts/buffer/stats", headers={"X-API-Key": "g"})
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert body["retry_after_s"] == int(headers["Retry-After"])
    assert "facade.rate_auth_failures_per_min" in body["error"]
    # Not even the right key is looked at while the address is throttled.
    assert facade.call("POST", "/ts/put", POINT, WRITER)[0] == 429
    started = time.monotonic()
    metrics = b"GET /metrics HTTP/1.1\r\nHost: f\r\nX-API-Key: g\r\nConnection: close\r\n\r\n"
    answer, _, _ = raw_exchange(facade.port, metrics)
    assert answer.startswith(b"HTTP/1.1 200 ")  # routes that need no key stay open
    statuses = [
        facade.call("POST", "/ts/put", POINT, {"X-API-Key": f"g{i}"})[0] for i in range(200)
    ]
    assert set(statuses) == {429}, statuses
    print(f"201 requests in {time.monotonic() - started:.2f} s")


def test_failed_replicator_keys_on_wal_apply_count_with_the_facades_other_key_checks(
    make_settings: MakeSettings,
) -> None:
    settings = facade_settings(
        make_settings, rate_auth_failures_per_min=4, api_keys=f"{KEYS},rep-key:replicator"
    )
    facade = FacadeThread(settings, replication=True)
    batch = encode_batch([WalEntry(1, EntryType.TS_BLOCK, 1, b"x")], "none", 3, "p1")
    apply = {"X-Primary-ID": "p1"}
    try:
        for guess in ("g1", "g2", "g3"):
            status, body, _ = facade.call(
                "POST", "/api/v1/wal/apply", batch, apply | {"X-API-Key": guess}
            )
            assert (status, body["error"]) == (401, "unknown replicator key")
        assert facade.call("GET", "/ts/buffer/stats", headers={"X-API-Key": "g4"})[0] == 401
        # The address used its 4 failures across both routes: the right keys wait too.
        status, body, headers = facade.call(
            "POST", "/api/v1/wal/apply", batch, apply | {"X-API-Key": "rep-key"}
        )
        assert status == 429
        assert int(headers["Retry-After"]) == body["retry_after_s"] >= 1
        assert "facade.rate_auth_failures_per_min" in body["error"]
        assert facade.call("POST", "/ts/put", POINT, WRITER)[0] == 429
        state = facade.app[REPLICA_STATE]
        assert state.last_applied_lsn == 0
    finally:
        facade.close()


# -- 4. a key is never echoed -----------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status"),
    [
        pytest.param(b"Authorization: Bearer %s", 431, id="9000-byte Authorization header"),
        pytest.param(b"X-API-Key: %s\x00", 400, id="NUL byte after the key"),
        pytest.param(b"X-Api-Key-%s: x", 431, id="key in a header name"),
    ],
)
def test_a_head_aiohttp_cannot_parse_is_refused_without_a_byte_of_the_key(
    facade: FacadeThread, caplog: pytest.LogCaptureFixture, header: bytes, status: int
) -> None:
    caplog.set_level(logging.DEBUG)
    key = "CANARY" + secrets.token_hex(4500)[: 8994 if status == 431 else 64]
    head = b"GET /ts/buffer/stats HTTP/1.1\r\nHost: facade\r\n" + header % key.encode()
    answer, _, _ = raw_exchange(facade.port, head + b"\r\n\r\n")
    assert answer.split(b" ", 2)[1] == b"%d" % status, answer[:300]
    assert _json_body(answer)["success"] is False
    logged = caplog.text
    assert "refused a malformed request" in logged
    for leak in (key[:6], key[6:22], key[-16:]):
        assert leak.encode() not in answer
        assert leak not in logged


# -- 5. 4xx, not 500 --------------------------------------------------------------


def test_key_bytes_that_are_no_utf8_answer_401(facade: FacadeThread) -> None:
    head = b"GET /ts/buffer/stats HTTP/1.1\r\nHost: facade\r\nX-API-Key: k\xff\xfe\xc3\r\n"
    for auth in (b"", b"Authorization: Bearer \xff\xfe\r\n"):
        answer, _, _ = raw_exchange(facade.port, head + auth + b"Connection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
        assert _json_body(answer)["error"] == "unknown API key"


def test_json_endpoints_refuse_other_declared_body_types_with_415(
    facade: FacadeThread, make_settings: MakeSettings
) -> None:
    body = orjson.dumps(POINT)
    for path in ("/ts/put/buffered", "/ts/put", "/ts/put/buffered/batch", "/ts/query"):
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            status, answer, _ = facade.call(
                "POST", path, body, WRITER | {"Content-Type": content_type}
            )
            assert status == 415, (path, content_type, answer)
            assert "application/json" in answer["error"]
    status, answer, _ = facade.call(
        "POST", "/vectors/search", b"{}", WRITER | {"Content-Type": "text/plain"}
    )
    assert status == 415
    # Declared JSON (any parameters, any case) and no declared type are read as JSON.
    for headers in ({"Content-Type": "Application/JSON; charset=utf-8"}, {}):
        assert facade.call("POST", "/ts/put/buffered", body, WRITER | headers)[0] == 200
    ndjson = b"\n".join([body, body])
    assert facade.call("POST", "/ts/put/buffered/batch", ndjson, WRITER)[0] == 200


def test_post_ts_query_names_what_is_wrong_in_its_body(facade: FacadeThread) -> None:
    for body, field in [
        ({"entity": "s1"}, "'metric'"),
        ({"metric": "cpu", "entity": ""}, "'entity'"),
        ({"metric": "cpu", "entity": "s1", "tags": {"a": 1}}, "'tags'"),
        ({"metric": "cpu", "entity": "s1", "start": "1"}, "'start'"),
        ({"metric": "cpu", "entity": "s1", "end": 2**63}, "'end'"),
        ({"metric": "cpu", "entity": "s1", "tag": ["a:b"]}, "tag"),
        (["cpu"], "JSON object"),
    ]:
        status, answer, _ = facade.call("POST", "/ts/query", body, WRITER)
        assert status == 400, body
        assert field in answer["error"], (body, answer)


# -- 6. all or nothing --------------------------------------------------------------


def test_a_request_refused_with_4xx_sent_nothing_to_any_topic(facade: FacadeThread) -> None:
    long_metric = "m" * 70_000
    many_tags = {f"t{i}": "v" for i in range(10_000)}
    good = [POINT | {"entity": f"e{i}"} for i in range(30)]
    poisoned = [*good, POINT | {"metric": long_metric}]
    typo = {"X-Themis-Response-Mode": "ack"}
    metric_limit = "field 'metric' is 70000 bytes of UTF-8; at most 4096 (MAX_METRIC_BYTES)"
    refused: list[tuple[str, str, object, dict[str, str], str]] = [
        ("POST", "/ts/put/buffered", POINT, typo, "X-Themis-Response-Mode"),
        ("POST", "/ts/put/buffered/batch", good, typo, "X-Themis-Response-Mode"),
        ("POST", "/vectors/add/buffered", {"pk": "a", "vector": [0.5] * DIM}, typo, "X-Themis-"),
        ("DELETE", "/vectors/remove/buffered", {"pk": "a"}, typo, "X-Themis-Response-Mode"),
        ("POST", "/ts/put/buffered/batch", poisoned, {}, metric_limit),
        ("POST", "/ts/put/buffered/batch", [*good, POINT | {"value": "1"}], {}, "'value'"),
        ("POST", "/ts/put/buffered", POINT | {"metric": long_metric}, {}, metric_limit),
        ("POST", "/ts/put/buffered", POINT | {"tags": many_tags}, {}, "(MAX_TAGS)"),
        ("POST", "/ts/put", POINT | {"metric": long_metric}, {}, metric_limit),
        ("POST", "/vectors/add", {"pk": "a", "vector": [0.5] * (DIM + 1)}, {}, "dimensions"),
        ("POST", "/vectors/add", {"pk": "p" * 70_000, "vector": [0.5] * DIM}, {}, "MAX_PK_BYTES"),
        ("POST", "/vectors/add", {"pk": "a", "vector": [10**400] * DIM}, {}, "float32 range"),
    ]
    for method, path, body, headers, needle in refused:
        status, answer, _ = facade.call(method, path, body, WRITER | headers)
        assert status == 400, (path, answer)
        assert needle in answer["error"], (path, answer)
    bootstrap = facade.settings.kafka.bootstrap_servers
    assert bootstrap
    for spec in ("ts.points", "vectors.ops", "ts.blocks", "wal"):
        assert records_on(bootstrap, facade.settings.topic(spec)) == [], spec
