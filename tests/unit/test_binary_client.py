"""The binary client against a scripted in-process server: greeting, pipelining by request
id, ERROR replies as exceptions, GOAWAY and a closed connection.

The server's side of the protocol is tested against the real facade in
tests/integration/test_binary_server.py; ``themis bench binary`` drives this client
against it (tests/e2e/test_bench_binary.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from pipeline.binary import (
    HEADER_BYTES,
    AuthOk,
    AuthRequest,
    Body,
    ErrorCode,
    ErrorReply,
    Flags,
    Frame,
    GoAway,
    HelloOk,
    HelloRequest,
    Opcode,
    Ping,
    TsPoint,
    WriteAck,
    decode_header,
    decode_payload,
    encode_frame,
)
from pipeline.binary.client import BinaryClient
from pipeline.errors import RequestRefused

pytestmark = pytest.mark.unit

Script = Callable[[list[Frame], asyncio.StreamWriter], Awaitable[None]]
"""What the server does after greeting: given the requests read so far and the writer."""


def _reply(frame: Frame, body: Body) -> bytes:
    return encode_frame(Frame(frame.opcode, Flags.REPLY, frame.request_id, body))


async def _serve(script: Script, batch: int) -> tuple[asyncio.Server, list[Frame]]:
    """A server that answers HELLO and AUTH, then hands each ``batch`` requests to
    ``script``."""
    seen: list[Frame] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending: list[Frame] = []
        try:
            while True:
                header = decode_header(await reader.readexactly(HEADER_BYTES))
                frame = decode_payload(header, await reader.readexactly(header.length))
                seen.append(frame)
                if isinstance(frame.body, HelloRequest):
                    writer.write(_reply(frame, HelloOk(1, 1 << 20, 64, ("api_key",))))
                elif isinstance(frame.body, AuthRequest):
                    writer.write(_reply(frame, AuthOk("writer")))
                else:
                    pending.append(frame)
                    if len(pending) == batch:
                        await script(pending, writer)
                        pending = []
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    return await asyncio.start_server(session, "127.0.0.1", 0), seen


def _run(
    script: Script, scenario: Callable[[BinaryClient], Awaitable[object]], batch: int = 1
) -> tuple[object, list[Frame]]:
    async def main() -> tuple[object, list[Frame]]:
        server, seen = await _serve(script, batch)
        port = server.sockets[0].getsockname()[1]
        async with server:
            client = await BinaryClient.connect(
                "127.0.0.1", port, client_id="unit", api_key="writer-key"
            )
            try:
                return await scenario(client), seen
            finally:
                await client.close()

    return asyncio.run(main())


async def _ack_each(frames: list[Frame], writer: asyncio.StreamWriter) -> None:
    for frame in frames:
        writer.write(_reply(frame, WriteAck(1, frame.request_id)))


def test_connect_greets_with_hello_then_auth_and_keeps_what_the_server_said() -> None:
    async def scenario(client: BinaryClient) -> tuple[HelloOk | None, str | None]:
        return client.hello, client.role

    greeting, seen = _run(_ack_each, scenario)
    assert isinstance(greeting, tuple)
    hello, role = greeting
    assert hello == HelloOk(1, 1 << 20, 64, ("api_key",))
    assert role == "writer"
    assert [(f.opcode, f.request_id) for f in seen] == [(Opcode.HELLO, 1), (Opcode.AUTH, 2)]
    assert seen[0].body == HelloRequest(1, 1, "unit")
    assert seen[1].body == AuthRequest("api_key", b"writer-key")


def test_pipelined_replies_in_reverse_order_each_reach_their_own_request() -> None:
    async def reverse(frames: list[Frame], writer: asyncio.StreamWriter) -> None:
        await _ack_each(list(reversed(frames)), writer)

    async def scenario(client: BinaryClient) -> list[Frame]:
        points = [TsPoint("cpu", f"s{i}", 1000 + i, float(i)) for i in range(8)]
        return list(
            await asyncio.gather(*(client.request(Opcode.TS_PUT_BUFFERED, p) for p in points))
        )

    replies, seen = _run(reverse, scenario, batch=8)
    puts = [f for f in seen if f.opcode == Opcode.TS_PUT_BUFFERED]
    assert [f.request_id for f in puts] == list(range(3, 11))
    assert isinstance(replies, list)
    assert [r.body for r in replies] == [WriteAck(1, rid) for rid in range(3, 11)]
    assert all(r.flags == Flags.REPLY for r in replies)


def test_an_error_reply_raises_request_refused_with_the_replys_fields() -> None:
    refusal = ErrorReply(int(ErrorCode.RATE_LIMITED), True, 1500, 0, "quota used up")

    async def refuse(frames: list[Frame], writer: asyncio.StreamWriter) -> None:
        frame = frames[0]
        writer.write(encode_frame(Frame(Opcode.ERROR, Flags.REPLY, frame.request_id, refusal)))

    async def scenario(client: BinaryClient) -> RequestRefused:
        with pytest.raises(RequestRefused) as caught:
            await client.request(Opcode.PING, Ping(b"x"))
        return caught.value

    error, _ = _run(refuse, scenario)
    assert isinstance(error, RequestRefused)
    assert (error.code, error.retriable, error.retry_after_ms, error.items_accepted) == (
        ErrorCode.RATE_LIMITED,
        True,
        1500,
        0,
    )
    assert str(error) == "PING (request 3): RATE_LIMITED: quota used up"


def test_goaway_fails_only_the_requests_after_its_last_request_id() -> None:
    async def go_away(frames: list[Frame], writer: asyncio.StreamWriter) -> None:
        await _ack_each(frames[:1], writer)
        last = GoAway(frames[0].request_id, int(ErrorCode.SHUTTING_DOWN), "stopping")
        writer.write(encode_frame(Frame(Opcode.GOAWAY, Flags.REPLY, 0, last)))

    async def scenario(client: BinaryClient) -> list[object]:
        point = TsPoint("cpu", "s", 1, 1.0)
        calls = [client.request(Opcode.TS_PUT_BUFFERED, point) for _ in range(3)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes, _ = _run(go_away, scenario, batch=3)
    assert isinstance(outcomes, list)
    first, *later = outcomes
    assert isinstance(first, Frame)
    assert first.body == WriteAck(1, 3)
    assert all(isinstance(e, RequestRefused) for e in later)
    assert {e.code for e in later if isinstance(e, RequestRefused)} == {ErrorCode.SHUTTING_DOWN}


def test_a_closed_connection_fails_what_is_in_flight_as_retriable_unavailable() -> None:
    async def hang_up(frames: list[Frame], writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def scenario(client: BinaryClient) -> RequestRefused:
        with pytest.raises(RequestRefused) as caught:
            await client.request(Opcode.PING, Ping())
        return caught.value

    error, _ = _run(hang_up, scenario)
    assert isinstance(error, RequestRefused)
    assert (error.code, error.retriable) == (ErrorCode.UNAVAILABLE, True)
