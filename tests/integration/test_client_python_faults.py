"""The Python SDK when things go wrong: a facade killed mid-write, an answer lost after the
server applied a batch, a rate limit. Nothing acknowledged is lost; what is not written is
reported; a retry changes no stored result."""

from __future__ import annotations

import asyncio
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from themisdb import RateLimitedError, ThemisClient, WriteError

from pipeline.kafka.local_broker import free_port
from tests.fixtures.stack import stack_of, start_stack_facade
from tests.fixtures.support import stop_process, wait_until

pytestmark = pytest.mark.integration

T0 = 1_702_645_200_000


@pytest.fixture(scope="module")
def stack(live_stack: Path) -> dict[str, Any]:
    return stack_of(live_stack)


def _conf(stack: dict[str, Any], schema: str, ports: tuple[int, int], **keys: object) -> str:
    http, binary = (f"127.0.0.1:{port}" for port in ports)
    addr = binary if schema == "themis" else http
    base = f"{schema}::addr={addr};http_addr={http};api_key={stack['keys']['writer']}"
    return base + "".join(f";{k}={v}" for k, v in keys.items())


def _stored(stack: dict[str, Any], metric: str, entities: int) -> set[tuple[str, int, float]]:
    with ThemisClient(conf=stack["conf"]["http"]) as reader:
        return {
            (f"e{e}", p["timestamp_ms"], p["value"])
            for e in range(entities)
            for p in reader.timeseries.query(metric, f"e{e}")
        }


@pytest.mark.parametrize("schema", ["themis", "http"])
def test_a_facade_killed_mid_write_loses_nothing_acknowledged_and_reports_the_rest(
    stack: dict[str, Any], schema: str, tmp_path: Path
) -> None:
    ports = (free_port(), free_port())
    facade = start_stack_facade(stack, tmp_path / "facade.log", ports)
    reported: list[dict[str, Any]] = []
    conf = _conf(stack, schema, ports, auto_flush_rows=500, auto_flush_interval_ms=50,
                 max_retries=30, retry_timeout_ms=30000, retry_max_backoff_ms=400)  # fmt: skip
    client = ThemisClient(conf=conf, on_error=lambda items, _: reported.extend(items))
    metric, total, entities = f"kill{uuid.uuid4().hex[:8]}", 30_000, 3
    half = threading.Event()

    def write() -> None:
        for i in range(total):
            client.timeseries.put_buffered(metric, f"e{i % entities}", T0 + i, float(i))
            if i == total // 3:
                half.set()
            if i % 1000 == 0:
                threading.Event().wait(0.02)  # a steady producer, not one burst

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert half.wait(60)
        wait_until(lambda: client.counters.sent > 0, timeout_s=30, what="a first acknowledgement")
        stop_process(facade, sig=signal.SIGKILL)
        facade = start_stack_facade(stack, tmp_path / "facade2.log", ports)
        writer.join(120)
        client.close(timeout=120)
    finally:
        stop_process(facade)
    counters = client.counters
    assert counters.queued == total
    assert counters.sent + counters.failed == total
    assert counters.failed == len(reported)
    assert counters.retried > 0  # the kill was felt
    expected = {(f"e{i % entities}", T0 + i, float(i)) for i in range(total)}
    unwritten = {(p["entity"], p["timestamp_ms"], p["value"]) for p in reported}
    wait_until(lambda: expected - unwritten <= _stored(stack, metric, entities), timeout_s=90,
               what="every acknowledged point stored")  # fmt: skip
    assert _stored(stack, metric, entities) <= expected  # nothing foreign, nothing doubled


class DropFirstAnswer:
    """A TCP proxy to ``upstream`` that forwards the first connection's request and then
    closes it as the answer arrives: the server applied the request, the client never heard."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.dropped = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        drop = self.dropped == 0
        if drop:
            self.dropped += 1

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answer: bool) -> None:
            while data := await src.read(65536):
                if answer and drop:
                    break  # the server answered: the client never hears it
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True),
                             return_exceptions=True)  # fmt: skip
        writer.close()
        up_writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def lossy(stack: dict[str, Any]) -> Iterator[DropFirstAnswer]:
    proxy = DropFirstAnswer(int(stack["http_addr"].rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


def test_a_batch_retried_after_the_server_applied_it_leaves_the_stored_result_unchanged(
    stack: dict[str, Any], lossy: DropFirstAnswer
) -> None:
    """Time series keep the last write per (series, timestamp): the batch sent twice is
    stored once."""
    metric = f"twice{uuid.uuid4().hex[:8]}"
    conf = f"http::addr=127.0.0.1:{lossy.port};api_key={stack['keys']['writer']}"
    with ThemisClient(conf=conf, retry_initial_backoff_ms=50) as c:
        c.timeseries.put_many((metric, "e0", T0 + i, i * 1.5) for i in range(200))
        c.flush()
        assert (c.counters.sent, c.counters.retried, c.counters.failed) == (200, 200, 0)
    assert lossy.dropped == 1
    expected = {("e0", T0 + i, i * 1.5) for i in range(200)}
    wait_until(lambda: _stored(stack, metric, 1) == expected, timeout_s=60, what="200 points")
    with ThemisClient(conf=stack["conf"]["http"]) as reader:
        assert len(reader.timeseries.query(metric, "e0")) == 200  # once each, not twice


def test_a_rate_limit_is_a_typed_error_with_the_servers_advice(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    ports = (free_port(), free_port())
    facade = start_stack_facade(
        stack, tmp_path / "facade.log", ports, THEMIS_FACADE_RATE_TS_PUT_PER_MIN="2"
    )
    try:
        for schema in ("http", "themis"):
            with ThemisClient(conf=_conf(stack, schema, ports, max_retries=0)) as c:

                def exhaust(client: ThemisClient = c, metric: str = f"rl{schema}") -> None:
                    for i in range(3):  # the key's quota is 2 a minute (both doors share it)
                        client.timeseries.put(metric, "e", T0 + i, 1.0)

                with pytest.raises(RateLimitedError) as caught:
                    exhaust()
                assert caught.value.retry_after > 0
                assert caught.value.retriable is True
                c.timeseries.put_buffered(f"rl{schema}", "e", T0, 1.0)
                with pytest.raises(WriteError, match="not written") as failed:
                    c.flush()
                assert isinstance(failed.value.cause, RateLimitedError)
                assert failed.value.failed == [
                    {"metric": f"rl{schema}", "entity": "e", "timestamp_ms": T0, "value": 1.0,
                     "tags": {}}
                ]  # fmt: skip
                assert c.counters.failed == 1
    finally:
        stop_process(facade)
