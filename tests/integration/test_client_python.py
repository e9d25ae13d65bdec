"""The Python SDK (``themisdb``) against the session's live stack, on both transports and
both APIs: what it writes is read back exactly; what it could not write it says."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from themisdb import (
    AsyncThemisClient,
    AuthenticationError,
    BufferOverflowError,
    PermissionDeniedError,
    ThemisClient,
    ValidationError,
    WriteError,
)

from tests.fixtures.stack import stack_of
from tests.fixtures.support import wait_until

pytestmark = pytest.mark.integration

T0 = 1_702_645_200_000
DIM = 16
TRANSPORTS = ("http", "themis")


_STACK: dict[str, Any] = {}


@pytest.fixture(scope="module")
def stack(live_stack: Path) -> dict[str, Any]:
    _STACK.update(stack_of(live_stack))
    return _STACK


def _conf(stack: dict[str, Any], transport: str, role: str = "writer", **keys: object) -> str:
    conf = str(stack["conf"][transport]).replace(stack["keys"]["writer"], stack["keys"][role])
    return conf + "".join(f";{k}={v}" for k, v in keys.items())


_RUN = uuid.uuid4().int


def _unit(i: int) -> list[float]:
    """Vector ``i`` of this run: random directions, far from every other run's."""
    rng = random.Random(_RUN + i)
    return [rng.uniform(-1, 1) for _ in range(DIM)]


def _tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(params=TRANSPORTS)
def client(request: pytest.FixtureRequest, stack: dict[str, Any]) -> Iterator[ThemisClient]:
    with ThemisClient(conf=_conf(stack, request.param, "admin")) as c:
        yield c


def _series(c: ThemisClient, metric: str, entity: str, **kw: Any) -> list[tuple[int, float]]:
    return [(p["timestamp_ms"], p["value"]) for p in c.timeseries.query(metric, entity, **kw)]


def test_every_sync_method_stores_what_it_says(client: ThemisClient) -> None:
    metric, ts = f"cpu{_tag()}", client.timeseries
    ts.put_buffered(metric, "s1", T0, 75.5, {"dc": "eu"})
    assert ts.put_many([{"metric": metric, "entity": "s2", "timestamp_ms": T0 + i, "value": i}
                        for i in range(50)]) == 50  # fmt: skip
    assert ts.put_many([(metric, "s3", T0 + i, i * 0.5) for i in range(10)]) == 10
    assert ts.put_arrays(metric, "s4", [T0, T0 + 1], [1.0, 2.0], {"k": "v"}) == 2
    ts.put_buffered(metric=metric, entity="s5", value=3.25)  # timestamp: now
    assert ts.put(metric, "direct", T0, 9.5) == {"success": True, "durable": True}
    client.flush()
    assert client.counters.sent == client.counters.queued == 64
    assert _series(client, metric, "direct") == [(T0, 9.5)]
    wait_until(lambda: len(_series(client, metric, "s2")) == 50, timeout_s=30, what="s2")
    assert _series(client, metric, "s2") == [(T0 + i, float(i)) for i in range(50)]
    wait_until(lambda: len(_series(client, metric, "s3")) == 10, timeout_s=30, what="s3")
    assert _series(client, metric, "s3", start=T0 + 2, end=T0 + 3) == [(T0 + 2, 1.0), (T0 + 3, 1.5)]
    wait_until(lambda: _series(client, metric, "s1", tags={"dc": "eu"}) == [(T0, 75.5)],
               timeout_s=30, what="the tagged point")  # fmt: skip
    wait_until(lambda: len(_series(client, metric, "s4", tags={"k": "v"})) == 2, timeout_s=30,
               what="the arrays")  # fmt: skip
    wait_until(lambda: len(_series(client, metric, "s5")) == 1, timeout_s=30, what="now")
    assert abs(_series(client, metric, "s5")[0][0] - time.time() * 1000) < 120_000
    stats = ts.get_buffer_stats()
    assert stats["points_buffered"] >= 63
    assert ts.flush_buffer()["success"] is True

    vectors, tag = client.vectors, _tag()
    salt = 100 * TRANSPORTS.index(client.config.schema)
    vectors.add_buffered(f"a{tag}", _unit(salt), {"title": "zero"})
    items = ({"pk": f"m{tag}{i}", "vector": _unit(i + salt)} for i in range(1, 5))
    assert vectors.add_many(items) == 4
    assert vectors.add(f"d{tag}", _unit(7 + salt), {"direct": True})["durable"] is True
    client.flush()

    def top(i: int) -> list[Any]:
        return [(h["pk"], h["metadata"]) for h in vectors.search(_unit(i + salt), k=1)]

    wait_until(lambda: top(0) == [(f"a{tag}", {"title": "zero"})], timeout_s=30, what="add")
    wait_until(lambda: top(3) == [(f"m{tag}3", {})], timeout_s=30, what="add_many")
    wait_until(lambda: top(7) == [(f"d{tag}", {"direct": True})], timeout_s=30, what="add")
    vectors.update_buffered(f"a{tag}", _unit(9 + salt), {"title": "nine"})
    client.flush()
    wait_until(lambda: top(9) == [(f"a{tag}", {"title": "nine"})], timeout_s=30, what="update")
    vectors.remove_buffered(f"a{tag}")
    client.flush()
    wait_until(lambda: top(9) != [(f"a{tag}", {"title": "nine"})], timeout_s=30, what="remove")
    assert vectors.get_buffer_stats()["vectors_buffered"] >= 7
    assert vectors.flush_buffer()["success"] is True

    replication = client.replication
    assert replication.configure_compression("zstd", 5)["compression_level"] == 5
    replica_id = f"r{tag}"
    endpoint = f"kafka://{_STACK['bootstrap_servers']}"
    assert replication.add_replica(replica_id, endpoint)["success"] is True
    rows = replication.get_replication_stats()["replicas"]
    assert replica_id in [row["replica_id"] for row in rows]
    assert replication.remove_replica(replica_id)["success"] is True


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_async_client_has_the_same_surface_and_results(
    stack: dict[str, Any], transport: str
) -> None:
    metric, pk = f"async{_tag()}", f"v{_tag()}"
    salt = 1000 + TRANSPORTS.index(transport)

    async def run() -> tuple[list[Any], list[Any]]:
        async with AsyncThemisClient(conf=_conf(stack, transport)) as c:
            await c.timeseries.put_buffered(metric, "e", T0, 1.5)
            await c.timeseries.put_many([(metric, "e", T0 + 1, 2.5)])
            await c.vectors.add_buffered(pk, _unit(salt), {"n": 1})
            await c.flush()
            stats = await c.timeseries.get_buffer_stats()
            assert stats["points_buffered"] >= 2
            deadline = time.monotonic() + 30
            points: list[Any] = []
            hits: list[Any] = []
            while time.monotonic() < deadline:
                points = await c.timeseries.query(metric, "e")
                hits = await c.vectors.search(_unit(salt), k=1)
                if len(points) == 2 and hits and hits[0]["pk"] == pk:
                    break
                await asyncio.sleep(0.2)
            return points, hits

    points, hits = asyncio.run(run())
    assert points == [{"timestamp_ms": T0, "value": 1.5}, {"timestamp_ms": T0 + 1, "value": 2.5}]
    assert [(h["pk"], h["metadata"]) for h in hits] == [(pk, {"n": 1})]


def test_100000_points_through_put_buffered_then_close_are_all_queryable_once(
    stack: dict[str, Any],
) -> None:
    metric, series = f"bulk{_tag()}", 10
    client = ThemisClient(conf=_conf(stack, "themis"))
    for i in range(100_000):
        client.timeseries.put_buffered(metric, f"e{i % series}", T0 + i // series, float(i))
    client.close()
    assert (client.counters.queued, client.counters.sent, client.counters.failed) == (
        100_000, 100_000, 0,
    )  # fmt: skip
    with ThemisClient(conf=_conf(stack, "http")) as reader:

        def counts() -> list[int]:
            return [len(reader.timeseries.query(metric, f"e{s}")) for s in range(series)]

        wait_until(lambda: counts() == [10_000] * series, timeout_s=120, what="100,000 points")
        first = reader.timeseries.query(metric, "e3", end=T0 + 1)
    assert first == [{"timestamp_ms": T0, "value": 3.0}, {"timestamp_ms": T0 + 1, "value": 13.0}]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_full_queue_fails_at_once_and_the_item_is_not_queued(
    stack: dict[str, Any], transport: str
) -> None:
    conf = _conf(stack, transport, auto_flush="off", max_buffer_rows=10)
    with ThemisClient(conf=conf) as c:
        metric = f"full{_tag()}"
        for i in range(10):
            c.timeseries.put_buffered(metric, "e", T0 + i, 1.0)
        started = time.monotonic()
        with pytest.raises(BufferOverflowError) as caught:
            c.timeseries.put_buffered(metric, "e", T0 + 10, 1.0)
        assert time.monotonic() - started < 0.1
        assert (caught.value.buffer_size, caught.value.retriable) == (10, False)
        assert c.counters.queued == 10
        c.flush()
        assert c.counters.sent == 10
        wait_until(lambda: len(c.timeseries.query(metric, "e")) == 10, timeout_s=30, what="10")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bad_keys_roles_and_values_are_typed_errors(stack: dict[str, Any], transport: str) -> None:
    bad_key = _conf(stack, transport).replace(stack["keys"]["writer"], "nope")
    # the binary door refuses the key at AUTH, when the client connects
    with pytest.raises(AuthenticationError), ThemisClient(conf=bad_key) as c:
        c.timeseries.get_buffer_stats()
    with ThemisClient(conf=_conf(stack, transport)) as c:
        with pytest.raises(PermissionDeniedError):
            c.timeseries.flush_buffer()
        with pytest.raises(ValidationError) as caught:
            c.vectors.add(f"v{_tag()}", [1.0, 2.0])
        assert caught.value.field == "vector"
        with pytest.raises(ValidationError) as caught:
            c.timeseries.put_buffered("m", "e", T0, float("nan"))
        assert caught.value.field == "value"
        with pytest.raises(ValidationError) as caught:
            c.timeseries.put_buffered("", "e", T0, 1.0)
        assert caught.value.field == "metric"
        assert c.counters.queued == 0


def test_a_refused_batch_reaches_a_blocking_callback_which_never_stops_the_writer(
    stack: dict[str, Any],
) -> None:
    release, seen = threading.Event(), []

    def callback(items: list[dict[str, Any]], error: BaseException) -> None:
        seen.append((len(items), type(error).__name__))
        release.wait(30)  # a callback that blocks ...
        raise RuntimeError("... and then fails")

    metric = f"cb{_tag()}"
    with ThemisClient(conf=_conf(stack, "themis"), on_error=callback) as c:
        c.timeseries.put_buffered(metric, "bad", T0, 1.0, {"t": "x" * 20_000})  # over a limit
        with pytest.raises(WriteError) as caught:
            c.flush()
        assert caught.value.failed[0]["entity"] == "bad"
        assert isinstance(caught.value.cause, ValidationError)
        started = time.monotonic()
        c.timeseries.put_buffered(metric, "good", T0, 2.0)
        c.flush()  # the callback still blocks: the writer goes on
        assert time.monotonic() - started < 5
        assert seen == [(1, "ValidationError")]
        release.set()
        assert (c.counters.sent, c.counters.failed) == (1, 1)
    wait_until(lambda: _series_of(stack, metric, "good") == [(T0, 2.0)], timeout_s=30,
               what="the good point")  # fmt: skip


def _series_of(stack: dict[str, Any], metric: str, entity: str) -> list[tuple[int, float]]:
    with ThemisClient(conf=_conf(stack, "http")) as reader:
        return _series(reader, metric, entity)


def test_a_client_never_closed_is_flushed_at_exit(stack: dict[str, Any]) -> None:
    metric = f"exit{_tag()}"
    script = (
        "from themisdb import ThemisClient\n"
        f"c = ThemisClient(conf={_conf(stack, 'themis', auto_flush='off')!r})\n"
        f"for i in range(1000): c.timeseries.put_buffered({metric!r}, 'e', {T0} + i, float(i))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_until(lambda: len(_series_of(stack, metric, "e")) == 1000, timeout_s=30,
               what="1000 points flushed at exit")  # fmt: skip
