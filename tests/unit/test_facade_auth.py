"""The facade's auth (401 / 403 / 200), rate limits, input checks, error table, batch
framing and how single points are sent together, without Kafka.

The facade runs in-process on aiohttp's test server with a fake producer; a fake
worker (another aiohttp test server) answers the worker pages it asks for.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pipeline import errors
from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError
from pipeline.facade import create_facade, ts_routes
from pipeline.facade.app import FACADE_STATE
from pipeline.facade.auth import ApiKeyring, Role, load_keyring, parse_key_entries, presented_key
from pipeline.facade.deliveries import QUEUED_WINDOW_S, InFlight, PointFramer
from pipeline.facade.middleware import error_response
from pipeline.facade.ratelimit import RateLimiter, RouteClass
from pipeline.facade.ts_bodies import PointBodies
from pipeline.throttle import FailureThrottle, TokenBucket
from pipeline.ts.point import DataPoint, decode_frame, series_key
from pipeline.ts.producer import series_partition

pytestmark = pytest.mark.unit

WRITER = {"Authorization": "Bearer w-key"}
ADMIN = {"X-API-Key": "a-key"}
POINT = {"metric": "cpu", "entity": "s1", "timestamp_ms": 1, "value": 1.5}
DIM = 4


class FakeProducer:
    """Records what would go to Kafka; every delivery succeeds at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []

    def produce(
        self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, value, key, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0

    def close(self) -> None:
        pass


def fake_worker() -> web.Application:
    async def ts_stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "points_buffered": 10,
                "points_flushed": 8,
                "flush_count": 2,
                "auto_flush_count": 1,
                "manual_flush_count": 1,
                "current_buffer_size": 2,
                "current_buffer_memory": 64,
                "avg_compression_ratio": 4.0,
                "last_flush_time": "2025-12-15T12:30:00Z",
            }
        )

    async def flush(request: web.Request) -> web.Response:
        return web.json_response({"success": True, "points_flushed": 2, "vectors_flushed": 0})

    async def vec_stats(request: web.Request) -> web.Response:
        return web.json_response({"current_buffer_size": 0, "vectors_buffered": 0})

    async def get_pk(request: web.Request) -> web.Response:
        pk = request.query["pk"]
        return web.json_response({"pk": pk, "present": pk == "known", "pending": None})

    app = web.Application()
    app.router.add_get("/ts/buffer/stats", ts_stats)
    app.router.add_post("/ts/buffer/flush", flush)
    app.router.add_get("/vectors/buffer/stats", vec_stats)
    app.router.add_post("/vectors/buffer/flush", flush)
    app.router.add_get("/vectors/get", get_pk)
    return app


Scenario = Callable[[TestClient[web.Request, web.Application], FakeProducer], Awaitable[None]]


def run_facade(
    scenario: Scenario, sections: dict[str, dict[str, object]] | None = None, **facade: object
) -> None:
    """Run ``scenario`` against a facade wired to a fake worker and a fake producer."""

    async def main() -> None:
        worker = TestServer(fake_worker())
        await worker.start_server()
        try:
            overrides: dict[str, dict[str, object]] = {
                "facade": {
                    "api_keys": "w-key:writer,a-key:admin",
                    "worker_urls": str(worker.make_url("")).rstrip("/"),
                }
                | facade,
                "vector_auto_buffer": {"dimension": DIM},
            }
            overrides.update(sections or {})
            settings: Settings = load_settings(path=Path("/dev/null"), env={}, overrides=overrides)
            producer = FakeProducer()
            app = create_facade(
                settings,
                None,
                producer=producer,
                partitions={settings.topic("ts.points"): 6, settings.topic("vectors.ops"): 6},
            )
            async with TestClient(TestServer(app)) as client:
                await scenario(client, producer)
        finally:
            await worker.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/ts/buffer/stats", {}, 401),
        ("GET", "/ts/buffer/stats", {"Authorization": "Bearer nope"}, 401),
        ("GET", "/ts/buffer/stats", {"X-API-Key": "w-key-but-longer"}, 401),
        ("GET", "/ts/buffer/stats", WRITER, 200),
        ("GET", "/ts/buffer/stats", ADMIN, 200),
        ("POST", "/ts/buffer/flush", {}, 401),
        ("POST", "/ts/buffer/flush", WRITER, 403),
        ("POST", "/ts/buffer/flush", ADMIN, 200),
        ("POST", "/vectors/buffer/flush", WRITER, 403),
        ("POST", "/vectors/buffer/flush", ADMIN, 200),
        ("GET", "/metrics", {}, 200),
    ],
)
def test_auth_matrix_answers_401_for_missing_or_unknown_keys_and_403_for_weak_roles(
    method: str, path: str, headers: dict[str, str], status: int
) -> None:
    async def scenario(client: TestClient[web.Request, web.Application], _: FakeProducer) -> None:
        resp = await client.request(method, path, headers=headers)
        assert resp.status == status
        if status >= 400:
            body = await resp.json()
            assert body["success"] is False
            assert body["error"]
            assert "key" not in body["error"] or "w-key" not in body["error"]
        if status == 401:
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")

    run_facade(scenario)


def test_buffered_put_answers_roadmap_shape_with_buffer_size_from_workers() -> None:
    async def scenario(
        client: TestClient[web.Request, web.Application], sink: FakeProducer
    ) -> None:
        stats = await (await client.get("/ts/buffer/stats", headers=WRITER)).json()
        # The background refresh has to see the fake worker's current_buffer_size (2) first.
        assert client.app is not None
        facade = client.app[FACADE_STATE]
        deadline = asyncio.get_running_loop().time() + 10
        while not facade.worker_ts_sizes and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        resp = await client.post("/ts/put/buffered", json=POINT, headers=WRITER)
        assert resp.status == 200
        assert await resp.json() == {"success": True, "buffered": True, "buffer_size": 2}
        assert len(sink.sent) == 1
        assert stats["points_flushed"] == 8
        assert stats["avg_compression_ratio"] == 4.0

    run_facade(scenario)


def test_bad_inputs_answer_400_naming_the_field_and_send_nothing() -> None:
    async def scenario(
        client: TestClient[web.Request, web.Application], sink: FakeProducer
    ) -> None:
        cases: list[tuple[str, str, bytes | str, str]] = [
            ("POST", "/ts/put/buffered", b"{not json", "not valid JSON"),
            (
                "POST",
                "/ts/put/buffered",
                '{"metric": "m", "entity": "e", "value": 1}',
                "timestamp_ms",
            ),
            (
                "POST",
                "/ts/put/buffered",
                '{"metric": "m", "entity": "e", "timestamp_ms": 1, "value": NaN}',
                "'value'",
            ),
            (
                "POST",
                "/ts/put/buffered",
                '{"metric": 5, "entity": "e", "timestamp_ms": 1, "value": 1}',
                "'metric'",
            ),
            (
                "POST",
                "/ts/put/buffered/batch",
                '[{"metric": "m", "entity": "e", "timestamp_ms": 1, "value": 1}, {"metric": "m"}]',
                "point 1",
            ),
            (
                "POST",
                "/vectors/add/buffered",
                '{"pk": "a", "vector": [1, 2]}',
                "vector has 2 dimensions",
            ),
            ("POST", "/vectors/add/buffered", '{"pk": "", "vector": [1, 2, 3, 4]}', "'pk'"),
            ("POST", "/vectors/add/buffered", '{"pk": "a", "vector": [1, 2, 3, "x"]}', "'vector'"),
            ("POST", "/vectors/search", '{"vector": [1, 2, 3, 4], "k": 0}', "'k'"),
        ]
        json_body = WRITER | {"Content-Type": "application/json"}  # str data says text/plain
        for method, path, body, needle in cases:
            resp = await client.request(method, path, data=body, headers=json_body)
            text = await resp.text()
            assert resp.status == 400, (path, body, text)
            assert needle in (await resp.json())["error"], (path, body, text)
        resp = await client.request(
            "DELETE", "/vectors/remove/buffered", json={"pk": "ghost"}, headers=WRITER
        )
        assert resp.status == 404
        assert "ghost" in (await resp.json())["error"]
        assert sink.sent == []
        resp = await client.request(
            "DELETE", "/vectors/remove/buffered", json={"pk": "known"}, headers=WRITER
        )
        assert resp.status == 200

    run_facade(scenario)


def test_body_over_the_limit_answers_413() -> None:
    async def scenario(
        client: TestClient[web.Request, web.Application], sink: FakeProducer
    ) -> None:
        resp = await client.post("/ts/put/buffered", data=b"x" * 5000, headers=WRITER)
        assert resp.status == 413
        assert "max_body_bytes" in (await resp.json())["error"]
        assert sink.sent == []

    run_facade(scenario, max_body_bytes=2048)


def test_rate_limit_answers_429_with_retry_after_per_key() -> None:
    async def scenario(client: TestClient[web.Request, web.Application], _: FakeProducer) -> None:
        statuses = [
            (await client.post("/ts/put/buffered", json=POINT, headers=WRITER)).status
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        resp = await client.post("/ts/put/buffered", json=POINT, headers=WRITER)
        assert int(resp.headers["Retry-After"]) >= 1
        # Another key has its own bucket.
        assert (await client.post("/ts/put/buffered", json=POINT, headers=ADMIN)).status == 200

    run_facade(scenario, rate_ts_put_per_min=2)


def test_disabled_feature_answers_503_on_buffered_endpoints_only() -> None:
    async def scenario(client: TestClient[web.Request, web.Application], _: FakeProducer) -> None:
        resp = await client.post("/ts/put/buffered", json=POINT, headers=WRITER)
        assert resp.status == 503
        assert "/ts/put" in (await resp.json())["error"]
        assert (await client.post("/ts/put", json=POINT, headers=WRITER)).status == 200
        vector = {"pk": "a", "vector": [1.0, 2.0, 3.0, 4.0]}
        resp = await client.post("/vectors/add/buffered", json=vector, headers=WRITER)
        assert resp.status == 503
        assert "vector_auto_buffer" in (await resp.json())["error"]
        assert (await client.post("/vectors/add", json=vector, headers=WRITER)).status == 200

    run_facade(
        scenario,
        sections={
            "ts_auto_buffer": {"enabled": False},
            "vector_auto_buffer": {"enabled": False, "dimension": DIM},
        },
    )


def test_keyring_compares_every_key_and_parses_roles() -> None:
    ring = ApiKeyring(parse_key_entries("a:b:admin, w:writer", separator=",", origin="test"))
    assert ring.role_of("a:b") is Role.ADMIN
    assert ring.role_of("w") is Role.WRITER
    assert ring.role_of("") is None
    assert ring.role_of("a:b:admin") is None
    assert "a:b" not in repr(ring)
    assert Role.ADMIN.allows(Role.WRITER)
    assert not Role.WRITER.allows(Role.ADMIN)
    with pytest.raises(ConfigError, match="entry 1 ends in no known role") as refused:
        parse_key_entries("abc:def-secret", separator=",", origin="test")
    assert "secret" not in str(refused.value)


def test_keys_file_is_read_with_comments(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# ops team\nfile-key:admin\n\n")
    settings = load_settings(
        path=Path("/dev/null"), env={}, overrides={"facade": {"api_keys_file": str(keys)}}
    )
    assert load_keyring(settings.facade).role_of("file-key") is Role.ADMIN


def test_presented_key_prefers_bearer_then_x_api_key() -> None:
    assert presented_key({"Authorization": "Bearer t1", "X-API-Key": "t2"}) == "t1"
    assert presented_key({"Authorization": "Basic xyz", "X-API-Key": "t2"}) == "t2"
    assert presented_key({}) is None


def test_token_bucket_refills_at_rate_per_minute() -> None:
    now = [100.0]
    limiter = RateLimiter({RouteClass.FLUSH: 10}, clock=lambda: now[0])
    assert [limiter.retry_after("k", RouteClass.FLUSH) for _ in range(10)] == [0] * 10
    assert limiter.retry_after("k", RouteClass.FLUSH) == 6  # one token per 6 s
    now[0] += 3.0
    assert limiter.retry_after("k", RouteClass.FLUSH) == 3
    now[0] += 3.0
    assert limiter.retry_after("k", RouteClass.FLUSH) == 0
    assert limiter.retry_after("other", RouteClass.FLUSH) == 0


def test_failure_throttle_refuses_an_address_after_its_burst_and_forgets_refilled_ones() -> None:
    now = [100.0]
    throttle = FailureThrottle(3, clock=lambda: now[0], max_addresses=2)
    for _ in range(3):
        assert throttle.retry_after("a") == 0
        throttle.failed("a")
    assert throttle.retry_after("a") == 20  # one failure per 20 s
    assert throttle.retry_after("b") == 0  # another address is not affected
    now[0] += 20.0
    assert throttle.retry_after("a") == 0
    throttle.failed("b")
    now[0] += 60.0  # both refilled: a third address drops them instead of growing
    throttle.failed("c")
    assert throttle.retry_after("a") == throttle.retry_after("c") == 0


def test_token_bucket_never_exceeds_capacity() -> None:
    bucket = TokenBucket(capacity=2, rate_per_s=1.0, tokens=2, updated=0.0)
    assert bucket.take(1000.0) == 0.0
    assert bucket.take(1000.0) == 0.0
    assert bucket.take(1000.0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("error", "status", "extra", "headers"),
    [
        (errors.InvalidRequest("field 'k'"), 400, {}, {}),
        (errors.InvalidRecord("bad record"), 400, {}, {}),
        (errors.InvalidArgument("bad value"), 400, {}, {}),
        (errors.CorruptBatch("bad checksum"), 400, {}, {}),
        (errors.UnknownDictionary("no dict", dictionary_id=7), 400, {"need_dictionary": 7}, {}),
        (
            errors.AuthenticationFailed("no key", headers={"WWW-Authenticate": "Bearer"}),
            401,
            {},
            {"WWW-Authenticate": "Bearer"},
        ),
        (errors.PermissionDenied("admin only"), 403, {}, {}),
        (errors.NotFound("no pk", extra={"pk": "a"}), 404, {"pk": "a"}, {}),
        (errors.Conflict("already there"), 409, {}, {}),
        (
            errors.WalGap("gap", expected_lsn=67, first_lsn=80),
            409,
            {"expected_lsn": "0000000000000043"},
            {},
        ),
        (errors.PayloadTooLarge("too big"), 413, {}, {}),
        (
            errors.RateLimited("slow down", retry_after_s=4),
            429,
            {"retry_after_s": 4},
            {"Retry-After": "4"},
        ),
        (
            errors.BufferOverflow("Buffer overflow", buffer_size=12),
            429,
            {"buffer_size": 12},
            {"Retry-After": "1"},
        ),
        (errors.ServiceUnavailable("feature off"), 503, {}, {}),
        (errors.WorkerUnavailable("no worker answers"), 503, {}, {}),
        (errors.DeliveryFailed("not acknowledged"), 503, {}, {}),
        (errors.ConfigError("not a request error"), 500, None, {}),
    ],
)
def test_error_table_gives_each_error_class_its_status_body_fields_and_headers(
    error: errors.ThemisError, status: int, extra: dict[str, object] | None, headers: dict[str, str]
) -> None:
    response = error_response(error)
    assert response.status == status
    assert isinstance(response.body, bytes)
    body = orjson.loads(response.body)
    if extra is None:
        assert body == {"success": False, "error": "internal error; see the facade's log"}
    else:
        assert body == {"success": False, "error": str(error)} | extra
    assert {k: response.headers[k] for k in headers} == headers


def test_batch_goes_as_frames_each_on_its_series_partition_holding_every_point() -> None:
    series = [f"s{i}" for i in range(9)]
    points = [
        {"metric": "cpu", "entity": e, "timestamp_ms": t, "value": t * 0.5}
        for t in range(5)
        for e in series
    ]

    async def scenario(
        client: TestClient[web.Request, web.Application], sink: FakeProducer
    ) -> None:
        resp = await client.post("/ts/put/buffered/batch", json=points, headers=WRITER)
        assert resp.status == 200
        assert (await resp.json())["points"] == len(points)
        got: dict[str, list[tuple[int, float]]] = {}
        for topic, value, key, partition in sink.sent:
            assert (topic, key) == ("themis.ts.points", None)
            for skey, ts, vs in decode_frame(value):
                assert partition == series_partition(skey, 6)
                got.setdefault(skey, []).extend(zip(ts.tolist(), vs.tolist(), strict=True))
        assert len(sink.sent) == len({series_partition(k, 6) for k in got})
        assert got == {f'["cpu","{e}",{{}}]': [(t, t * 0.5) for t in range(5)] for e in series}

    run_facade(scenario)


def _framer(sink: FakeProducer) -> tuple[PointFramer, InFlight]:
    in_flight = InFlight()
    return PointFramer(lambda: sink, "points", lambda: 6, in_flight), in_flight


def test_points_of_one_turn_go_as_one_frame_per_partition_each_series_in_order() -> None:
    keys = [series_key("cpu", f"s{i}") for i in range(9)]

    async def main() -> None:
        sink = FakeProducer()
        framer, in_flight = _framer(sink)
        done = [framer.add(k, t, t * 0.5, acked=True) for t in range(3) for k in keys]
        assert (in_flight.points, in_flight.requests, sink.sent) == (27, 27, [])
        await asyncio.gather(*done)  # flushed once the turn that queued them ended
        assert (in_flight.points, in_flight.requests) == (0, 0)
        assert len(sink.sent) == len({series_partition(k, 6) for k in keys})
        got: dict[str, list[tuple[int, float]]] = {}
        for topic, value, key, partition in sink.sent:
            assert (topic, key) == ("points", None)
            for skey, ts, vs in decode_frame(value):
                assert partition == series_partition(skey, 6)
                got.setdefault(skey, []).extend(zip(ts.tolist(), vs.tolist(), strict=True))
        assert got == {k: [(t, t * 0.5) for t in range(3)] for k in keys}

    asyncio.run(main())


def test_a_lone_point_goes_as_the_json_point_keyed_by_its_series() -> None:
    key = series_key("cpu", "s1", {"dc": "eu"})

    async def main() -> None:
        sink = FakeProducer()
        framer, _ = _framer(sink)
        await framer.add(key, 5, 1.5, acked=True)
        point = DataPoint("cpu", "s1", 5, 1.5, {"dc": "eu"})
        assert sink.sent == [("points", point.to_json(), key.encode(), series_partition(key, 6))]

    asyncio.run(main())


def test_queued_points_wait_for_the_window_unless_an_acked_point_joins_them() -> None:
    key = series_key("cpu", "s1")

    async def main() -> None:
        sink = FakeProducer()
        framer, in_flight = _framer(sink)
        framer.add(key, 1, 1.0, acked=False)
        for _ in range(5):
            await asyncio.sleep(0)
        assert (sink.sent, in_flight.points) == ([], 1)
        await asyncio.sleep(QUEUED_WINDOW_S * 3)
        assert len(sink.sent) == 1
        framer.add(key, 2, 2.0, acked=False)
        await framer.add(key, 3, 3.0, acked=True)  # both, at the end of this turn
        assert [decode_frame(value)[0][1].tolist() for _, value, _, _ in sink.sent[1:]] == [[2, 3]]
        assert in_flight.points == 0

    asyncio.run(main())


def test_a_failed_delivery_fails_every_point_of_the_flush_and_releases_the_counts() -> None:
    class Failing(FakeProducer):
        def produce(
            self,
            topic: str,
            value: bytes,
            *,
            key: bytes | None = None,
            partition: int | None = None,
        ) -> asyncio.Future[Any]:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(errors.DeliveryFailed("broker down"))
            return future

    async def main() -> None:
        framer, in_flight = _framer(Failing())
        done = [framer.add(series_key("m", f"e{i}"), 1, 1.0, acked=True) for i in range(3)]
        for future in done:
            with pytest.raises(errors.DeliveryFailed, match="broker down"):
                await future
        assert (in_flight.points, in_flight.requests) == (0, 0)

    asyncio.run(main())


def test_a_batch_goes_after_the_single_points_accepted_before_it() -> None:
    async def scenario(
        client: TestClient[web.Request, web.Application], sink: FakeProducer
    ) -> None:
        queued = WRITER | {"X-Themis-Response-Mode": "queued"}
        assert (await client.post("/ts/put/buffered", json=POINT, headers=queued)).status == 200
        later = [POINT | {"timestamp_ms": 2}]
        assert (
            await client.post("/ts/put/buffered/batch", json=later, headers=WRITER)
        ).status == 200
        assert [key is not None for _, _, key, _ in sink.sent] == [True, False]

    run_facade(scenario)


def test_a_large_batch_is_decoded_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    decode = PointBodies.batch

    def recording(self: PointBodies, body: bytes, content_type: str) -> Any:
        threads.append(threading.current_thread().name)
        return decode(self, body, content_type)

    monkeypatch.setattr(PointBodies, "batch", recording)
    points = [POINT | {"timestamp_ms": t} for t in range(20_000)]
    body = orjson.dumps(points)
    assert len(body) > ts_routes.THREAD_BODY_BYTES

    async def scenario(
        client: TestClient[web.Request, web.Application], sink: FakeProducer
    ) -> None:
        resp = await client.post("/ts/put/buffered/batch", data=body, headers=WRITER)
        assert (resp.status, (await resp.json())["points"]) == (200, 20_000)
        small = orjson.dumps(points[:3])
        resp = await client.post("/ts/put/buffered/batch", data=small, headers=WRITER)
        assert resp.status == 200
        sent = [ts for _, value, _, _ in sink.sent for _, ts, _ in decode_frame(value)]
        assert np.concatenate(sent).tolist() == [*range(20_000), 0, 1, 2]

    run_facade(scenario)
    assert threads[0] != threading.main_thread().name
    assert threads[1] == threading.main_thread().name
