"""The binary protocol server beside the facade, against the session broker.

The reference client here is asyncio streams plus the codec (``pipeline.binary``).
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pipeline.binary import (
    AuthOk,
    AuthRequest,
    Empty,
    ErrorCode,
    Flags,
    Frame,
    GoAway,
    HelloOk,
    HelloRequest,
    JsonBody,
    Opcode,
    Ping,
    TsBatch,
    TsPoint,
    WriteAck,
)
from pipeline.binary.codes import HEADER
from pipeline.kafka.local_broker import free_port
from pipeline.limits import MAX_FRAME_BYTES
from pipeline.replication import server_ssl_context
from pipeline.ts.point import series_key
from tests.fixtures.binary import Client, error_of, with_client
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import WRITER, FacadeThread, facade_behind_worker, facade_settings
from tests.fixtures.topics import points_on

pytestmark = pytest.mark.integration

T0 = 1_702_645_200_000
_T = TypeVar("_T")


@pytest.fixture
def facade(make_settings: MakeSettings) -> Iterator[FacadeThread]:
    settings = facade_settings(make_settings, binary_port=free_port(), max_body_bytes=64 * 1024)
    thread = FacadeThread(settings)
    try:
        yield thread
    finally:
        thread.close()


def _port(facade: FacadeThread) -> int:
    return facade.settings.facade.binary_port


def test_hello_advertises_limits_and_auth_names_the_keys_role(facade: FacadeThread) -> None:
    async def scenario(client: Client) -> tuple[HelloOk, AuthOk, Frame]:
        hello = await client.hello()
        auth = await client.call(Opcode.AUTH, 2, AuthRequest("api_key", b"admin-key"))
        assert isinstance(auth.body, AuthOk)
        return hello, auth.body, await client.call(Opcode.PING, 3, Ping(b"abc"))

    hello, auth, pong = with_client(_port(facade), scenario)
    assert (hello.version, hello.max_frame_bytes, hello.auth_methods) == (
        1,
        64 * 1024,
        ("api_key",),
    )
    assert hello.max_in_flight >= 1000
    assert auth.role == "admin"
    assert (pong.opcode, pong.flags, pong.request_id, pong.body) == (
        Opcode.PING,
        Flags.REPLY,
        3,
        Ping(b"abc"),
    )


def test_wrong_key_is_refused_and_no_request_is_accepted_after_it(facade: FacadeThread) -> None:
    async def scenario(client: Client) -> list[Frame]:
        await client.hello()
        replies = [await client.call(Opcode.AUTH, 2, AuthRequest("api_key", b"wrong"))]
        point = TsPoint("cpu", "s1", T0, 1.0)
        replies.append(await client.call(Opcode.TS_PUT_BUFFERED, 3, point))
        replies.append(await client.call(Opcode.PING, 4, Ping()))  # still open
        return replies

    auth, put, pong = with_client(_port(facade), scenario)
    assert error_of(auth).code == ErrorCode.AUTHENTICATION_FAILED
    assert (put.request_id, error_of(put).code) == (3, ErrorCode.NOT_AUTHENTICATED)
    assert pong.opcode == Opcode.PING
    assert points_on(facade.settings.kafka.bootstrap_servers or "", _points_topic(facade)) == []


def test_a_first_frame_other_than_hello_is_refused_and_the_connection_closed(
    facade: FacadeThread,
) -> None:
    async def scenario(client: Client) -> tuple[Frame, bytes]:
        reply = await client.call(Opcode.PING, 1, Ping())
        return reply, await client.reader.read()

    reply, rest = with_client(_port(facade), scenario)
    assert error_of(reply).code == ErrorCode.NOT_AUTHENTICATED
    assert rest == b""


def _points_topic(facade: FacadeThread) -> str:
    return facade.settings.topic("ts.points")


def test_thousand_pipelined_puts_are_each_answered_by_id_and_reach_the_points_topic(
    facade: FacadeThread,
) -> None:
    count = 1000

    async def scenario(client: Client) -> list[Frame]:
        await client.greet()
        for i in range(count):
            point = TsPoint("cpu", f"s{i % 7}", T0 + i, i * 0.5, (("dc", "eu"),))
            client.send(Opcode.TS_PUT_BUFFERED, 100 + i, point)
        await client.writer.drain()
        return [await client.read() for _ in range(count)]

    replies = with_client(_port(facade), scenario)
    assert sorted(r.request_id for r in replies) == list(range(100, 100 + count))
    assert all(r.opcode == Opcode.TS_PUT_BUFFERED and r.flags == Flags.REPLY for r in replies)
    assert all(isinstance(r.body, WriteAck) and r.body.accepted == 1 for r in replies)
    stored = points_on(facade.settings.kafka.bootstrap_servers or "", _points_topic(facade))
    expected = {(series_key("cpu", f"s{i % 7}", {"dc": "eu"}), T0 + i) for i in range(count)}
    assert sorted(stored) == sorted(expected)


def test_batch_put_is_acknowledged_and_its_points_are_on_the_points_topic(
    facade: FacadeThread,
) -> None:
    points = tuple(
        TsPoint("mem", "host-é", T0 + i, float(i), (("rack", str(i % 3)),)) for i in range(250)
    )

    async def scenario(client: Client) -> tuple[Frame, Frame, Frame]:
        await client.greet()
        acked = await client.call(Opcode.TS_PUT_BUFFERED_BATCH, 10, TsBatch(points))
        queued = await client.call(
            Opcode.TS_PUT_BUFFERED_BATCH, 11, TsBatch(points[:5]), Flags.ACK_QUEUED
        )
        bad = TsPoint("mem", "", T0, 1.0)
        refused = await client.call(Opcode.TS_PUT_BUFFERED_BATCH, 12, TsBatch((points[0], bad)))
        return acked, queued, refused

    acked, queued, refused = with_client(_port(facade), scenario)
    assert isinstance(acked.body, WriteAck)
    assert acked.body.accepted == 250
    assert isinstance(queued.body, WriteAck)
    assert queued.body.accepted == 5
    error = error_of(refused)
    assert (error.code, error.items_accepted) == (ErrorCode.INVALID_REQUEST, 0)
    assert "point 1: field 'entity'" in error.message
    stored = points_on(facade.settings.kafka.bootstrap_servers or "", _points_topic(facade))
    expected = [(series_key("mem", "host-é", {"rack": str(i % 3)}), T0 + i) for i in range(250)]
    assert sorted(stored) == sorted(expected + expected[:5])


def _stats(port: int) -> Frame:
    async def scenario(client: Client) -> Frame:
        await client.greet()
        return await client.call(Opcode.TS_BUFFER_STATS, 5, Empty())

    return with_client(port, scenario)


def test_buffer_stats_answer_the_fields_of_the_rest_answer(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = facade_settings(make_settings, binary_port=free_port())
    with facade_behind_worker(settings, tmp_path, WRITER) as facade:
        reply = _stats(_port(facade))
        status, rest, _ = facade.call("GET", "/ts/buffer/stats", headers=WRITER)
    assert status == 200
    assert (reply.opcode, reply.request_id) == (Opcode.TS_BUFFER_STATS, 5)
    assert isinstance(reply.body, JsonBody)
    assert set(reply.body.document) == set(rest)
    assert reply.body.document["workers"] == rest["workers"]


def test_buffer_stats_without_a_worker_is_unavailable_as_on_rest(facade: FacadeThread) -> None:
    reply = _stats(_port(facade))
    status, _, _ = facade.call("GET", "/ts/buffer/stats", headers=WRITER)
    assert status == 503
    error = error_of(reply)
    assert (error.code, error.retriable) == (ErrorCode.UNAVAILABLE, True)


def test_unknown_and_unserved_opcodes_are_answered_and_the_connection_keeps_working(
    facade: FacadeThread,
) -> None:
    async def scenario(client: Client) -> list[Frame]:
        await client.greet()
        client.writer.write(HEADER.pack(0x55, 0, 3, 7) + b"xyz")
        replies = [await client.read()]
        replies.append(await client.call(Opcode.REPLICATION_STATS, 8, Empty()))
        replies.append(await client.call(Opcode.PING, 9, Ping(b"ok")))
        return replies

    unknown, unserved, pong = with_client(_port(facade), scenario)
    assert (unknown.request_id, error_of(unknown).code) == (7, ErrorCode.UNKNOWN_OPCODE)
    assert (unserved.request_id, error_of(unserved).code) == (8, ErrorCode.UNKNOWN_OPCODE)
    assert (pong.request_id, pong.body) == (9, Ping(b"ok"))


def test_an_over_limit_frame_is_refused_from_its_header_and_its_payload_skipped(
    facade: FacadeThread,
) -> None:
    async def scenario(client: Client) -> list[Frame]:
        await client.greet()
        size = 64 * 1024 + 1
        client.writer.write(HEADER.pack(Opcode.TS_PUT_BUFFERED, 0, size, 20))
        replies = [await client.read()]  # before a payload byte was sent
        client.writer.write(b"\0" * size)
        replies.append(await client.call(Opcode.PING, 21, Ping()))
        client.writer.write(HEADER.pack(Opcode.TS_PUT_BUFFERED, 0, MAX_FRAME_BYTES * 512, 22))
        replies.append(await client.read())
        return replies

    refused, pong, huge = with_client(_port(facade), scenario)
    assert (refused.request_id, error_of(refused).code) == (20, ErrorCode.FRAME_TOO_LARGE)
    assert (pong.opcode, pong.request_id) == (Opcode.PING, 21)
    assert (huge.request_id, error_of(huge).code) == (22, ErrorCode.FRAME_TOO_LARGE)


def test_shutdown_sends_goaway_naming_the_last_request(make_settings: MakeSettings) -> None:
    port = free_port()
    facade = FacadeThread(facade_settings(make_settings, binary_port=port))
    closed = False

    async def scenario() -> Frame:
        nonlocal closed
        client = await Client.connect(port)
        try:
            await client.greet()
            await client.call(Opcode.TS_PUT_BUFFERED, 30, TsPoint("cpu", "s1", T0, 1.0))
            await asyncio.to_thread(facade.close)
            closed = True
            return await client.read()
        finally:
            await client.close()

    try:
        goaway = asyncio.run(scenario())
    finally:
        if not closed:
            facade.close()
    assert (goaway.opcode, goaway.request_id) == (Opcode.GOAWAY, 0)
    assert isinstance(goaway.body, GoAway)
    assert (goaway.body.last_request_id, goaway.body.code) == (30, ErrorCode.SHUTTING_DOWN)


def test_the_door_speaks_tls_and_refuses_a_client_without_a_certificate(
    make_settings: MakeSettings, pki: Path
) -> None:
    tls = server_ssl_context(pki / "server.pem", pki / "server.key", pki / "ca.pem")
    settings = facade_settings(make_settings, binary_port=free_port())
    thread = FacadeThread(settings, binary_tls=tls)
    client_tls = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    client_tls.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    anonymous = ssl.create_default_context(cafile=str(pki / "ca.pem"))

    async def scenario() -> tuple[AuthOk, Frame]:
        client = await Client.connect(_port(thread), client_tls)
        try:
            auth = await client.greet()
            return auth, await client.call(Opcode.PING, 3, Ping(b"tls"))
        finally:
            await client.close()

    async def without_certificate() -> Frame:
        client = await Client.connect(_port(thread), anonymous)
        try:
            return await client.call(Opcode.HELLO, 1, HelloRequest(1, 1, "anonymous"))
        finally:
            await client.close()

    try:
        auth, pong = asyncio.run(scenario())
        assert auth.role == "writer"
        assert (pong.opcode, pong.body) == (Opcode.PING, Ping(b"tls"))
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            asyncio.run(without_certificate())
    finally:
        thread.close()


def test_random_payloads_for_every_opcode_get_answers_and_never_an_internal_error(
    facade: FacadeThread,
) -> None:
    """A bounded fuzz of the live server: 600 frames of random bytes behind valid headers."""
    rng = random.Random(12)
    opcodes = [int(op) for op in Opcode if op not in (Opcode.HELLO, Opcode.GOAWAY)]
    count = 600

    async def scenario(client: Client) -> tuple[list[Frame], Frame]:
        await client.greet("admin-key")
        for i in range(count):
            payload = rng.randbytes(rng.choice((0, 1, 4, 17, 64, 300)))
            client.writer.write(HEADER.pack(rng.choice(opcodes), 0, len(payload), 1000 + i))
            client.writer.write(payload)
        await client.writer.drain()
        replies = [await client.read() for _ in range(count)]
        return replies, await client.call(Opcode.PING, 5000, Ping(b"alive"))

    replies, pong = with_client(_port(facade), scenario)
    assert sorted(r.request_id for r in replies) == list(range(1000, 1000 + count))
    codes = {error_of(r).code for r in replies if r.opcode == Opcode.ERROR}
    assert ErrorCode.INTERNAL not in codes
    assert ErrorCode.MALFORMED_FRAME in codes
    assert (pong.request_id, pong.body) == (5000, Ping(b"alive"))


def test_a_payload_slower_than_the_body_timeout_is_answered_timeout_and_closed(
    make_settings: MakeSettings,
) -> None:
    settings = facade_settings(make_settings, binary_port=free_port(), body_timeout_s=1.0)
    thread = FacadeThread(settings)

    async def scenario(client: Client) -> tuple[Frame, Frame, bytes]:
        await client.greet()
        pong = await client.call(Opcode.PING, 3, Ping(b"fast"))
        client.writer.write(HEADER.pack(Opcode.TS_PUT_BUFFERED, 0, 100, 4) + b"\0" * 10)
        reply = await client.read(timeout_s=10)
        return pong, reply, await client.reader.read()

    try:
        pong, reply, rest = with_client(_port(thread), scenario)
    finally:
        thread.close()
    assert pong.body == Ping(b"fast")
    assert (reply.request_id, error_of(reply).code) == (4, ErrorCode.TIMEOUT)
    assert "within 1 s" in error_of(reply).message
    assert rest == b""
