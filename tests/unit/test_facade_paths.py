"""The facade's less travelled paths, without Kafka: how errors become answers (404, 405,
413 of a chunked body, 429 of a full pipeline, 500 of a handler bug, 503 of a refused
write or of no worker), checks of query parameters and search fields, key files and
roles, the lifecycle without a broker, what is in flight, and `themis facade`'s TLS flags.

The facade runs in-process on aiohttp's test server with a fake producer, in front of
the fake worker of ``test_facade_auth`` or of a port where no worker listens.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from pipeline import cli
from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError, DeliveryFailed, InvalidRequest, ServiceUnavailable
from pipeline.facade import create_facade, ts_bodies
from pipeline.facade.app import FACADE_STATE, Facade
from pipeline.facade.auth import Role, load_keyring, parse_key_entries
from pipeline.facade.cli import run_facade
from pipeline.facade.connections import FacadeConnection
from pipeline.facade.deliveries import InFlight, PointFramer
from pipeline.facade.middleware import Handler, RouteSpec
from pipeline.kafka.local_broker import free_port
from pipeline.ts.json_batch import WirePoint
from pipeline.ts.point import decode_frame, decode_point_json, series_key
from pipeline.validation import INT64_MAX, INT64_MIN, SeriesQuery, series_query_body
from pipeline.vectors.ops import decode_op_json
from tests.unit.test_facade_auth import ADMIN, DIM, POINT, WRITER, FakeProducer, fake_worker

pytestmark = pytest.mark.unit

Client = TestClient[web.Request, web.Application]
Scenario = Callable[[Client, Facade, FakeProducer], Awaitable[None]]
VECTOR = {"pk": "doc-1", "vector": [0.5] * DIM}
REPLICATOR = {"X-API-Key": "r-key"}
INTERNAL = {"success": False, "error": "internal error; see the facade's log"}


class HeldProducer(FakeProducer):
    """Records what would go to Kafka; the broker acknowledges only on :meth:`release`."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[asyncio.Future[Any]] = []

    def produce(
        self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, value, key, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.held.append(future)
        return future

    def release(self) -> None:
        for future in self.held:
            future.set_result(None)
        self.held.clear()


class RefusingBroker(FakeProducer):
    """Takes every record, and the broker refuses each one."""

    def produce(
        self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, value, key, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(DeliveryFailed("broker down"))
        return future


def _settings(
    worker_url: str, sections: dict[str, dict[str, object]], **facade: object
) -> Settings:
    overrides: dict[str, dict[str, object]] = {
        "facade": {
            "api_keys": "w-key:writer,a-key:admin,r-key:replicator",
            "worker_urls": worker_url,
        }
        | facade,
        "vector_auto_buffer": {"dimension": DIM},
    }
    for name, body in sections.items():
        overrides.setdefault(name, {}).update(body)
    return load_settings(path=Path(os.devnull), env={}, overrides=overrides)


def serve(
    scenario: Scenario,
    *,
    producer: FakeProducer | None = None,
    worker: bool = True,
    sections: dict[str, dict[str, object]] | None = None,
    extra_routes: Sequence[RouteSpec] = (),
    plain_routes: Sequence[tuple[str, Handler]] = (),
    **facade: object,
) -> None:
    """Run ``scenario`` against a facade with a fake producer, in front of the fake worker
    (``worker``) or of a port nothing listens on."""

    async def main() -> None:
        fake = TestServer(fake_worker())
        await fake.start_server()
        try:
            url = (
                str(fake.make_url("")).rstrip("/") if worker else f"http://127.0.0.1:{free_port()}"
            )
            settings = _settings(url, sections or {}, **facade)
            sink = producer or FakeProducer()
            app = create_facade(
                settings,
                None,
                producer=sink,
                partitions={settings.topic("ts.points"): 6, settings.topic("vectors.ops"): 6},
                extra_routes=extra_routes,
            )
            for path, handler in plain_routes:
                app.router.add_get(path, handler)
            async with TestClient(TestServer(app)) as client:
                await scenario(client, app[FACADE_STATE], sink)
        finally:
            await fake.close()

    asyncio.run(main())


def _count(exposition: str, route: str, method: str, status: int) -> float:
    """The ``facade_request_duration_seconds_count`` of one label set (0 when absent)."""
    labels = {"route": route, "method": method, "status": str(status)}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "facade_request_duration_seconds_count" and sample.labels == labels:
                return sample.value
    return 0.0


# -- the error answers of the middleware --------------------------------------------


def test_unknown_paths_answer_404_and_wrong_methods_405_with_allow_in_json_and_are_timed() -> None:
    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"plain": True})

    async def scenario(client: Client, _: Facade, sink: FakeProducer) -> None:
        resp = await client.get("/no/such/path", headers=WRITER)
        assert (resp.status, await resp.json()) == (404, {"success": False, "error": "Not Found"})
        resp = await client.get("/ts/put/buffered", headers=WRITER)
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert resp.content_type == "application/json"
        assert await resp.json() == {"success": False, "error": "Method Not Allowed"}
        # A route added without a spec needs no key and is timed under its own path.
        resp = await client.get("/plain")
        assert (resp.status, await resp.json()) == (200, {"plain": True})
        exposition = await (await client.get("/metrics")).text()
        assert _count(exposition, "unmatched", "GET", 404) == 1.0
        assert _count(exposition, "unmatched", "GET", 405) == 1.0
        assert _count(exposition, "/plain", "GET", 200) == 1.0
        assert sink.sent == []

    serve(scenario, plain_routes=[("/plain", plain)])


def test_a_handler_bug_answers_500_with_a_json_body_naming_no_internals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def buggy(request: web.Request) -> web.Response:
        raise RuntimeError("password=hunter2 in /srv/themis/secret.py")

    async def misconfigured(request: web.Request) -> web.Response:
        raise ConfigError("a ThemisError no status is mapped to: hunter3")

    routes = [
        RouteSpec("POST", "/bug", buggy, Role.WRITER),
        RouteSpec("POST", "/unmapped", misconfigured, Role.WRITER),
    ]

    async def scenario(client: Client, _: Facade, sink: FakeProducer) -> None:
        for path, secret in (("/bug", "hunter2"), ("/unmapped", "hunter3")):
            resp = await client.post(path, headers=WRITER)
            text = await resp.text()
            assert resp.status == 500, text
            assert resp.content_type == "application/json"
            assert await resp.json() == INTERNAL
            assert secret not in text
            assert "Traceback" not in text
        exposition = await (await client.get("/metrics")).text()
        assert _count(exposition, "/bug", "POST", 500) == 1.0

    caplog.set_level(logging.ERROR, logger="pipeline.facade.middleware")
    serve(scenario, extra_routes=routes)
    logged = caplog.text
    assert "unexpected error on POST /bug" in logged
    assert "password=hunter2" in logged  # the log has what the answer does not
    assert "unmapped error on POST /unmapped" in logged


def test_a_chunked_body_over_max_body_bytes_answers_413_naming_the_setting() -> None:
    async def scenario(client: Client, _: Facade, sink: FakeProducer) -> None:
        body = b"[" + b" " * 4000 + b"]"
        resp = await client.post("/ts/put/buffered/batch", data=body, chunked=True, headers=WRITER)
        assert resp.status == 413
        answer = await resp.json()
        assert answer["success"] is False
        assert "larger than 2048 bytes (facade.max_body_bytes)" in answer["error"]
        assert sink.sent == []

    serve(scenario, max_body_bytes=2048)


def test_a_write_the_broker_refuses_answers_503_with_retry_after_and_releases_its_counts() -> None:
    async def scenario(client: Client, facade: Facade, sink: FakeProducer) -> None:
        writes: list[tuple[str, object]] = [
            ("/ts/put/buffered", POINT),
            ("/ts/put/buffered/batch", [POINT, POINT | {"timestamp_ms": 2}]),
            ("/ts/put", POINT),
            ("/vectors/add/buffered", VECTOR),
            ("/vectors/add", VECTOR),
        ]
        for path, body in writes:
            resp = await client.post(path, json=body, headers=WRITER)
            answer = await resp.json()
            assert resp.status == 503, (path, answer)
            assert resp.headers["Retry-After"] == "3", path  # ceil(2.5 s)
            assert answer == {
                "success": False,
                "error": "the broker did not acknowledge the write; retry: broker down",
            }
        assert (facade.in_flight.points, facade.in_flight.requests) == (0, 0)
        topics = [topic for topic, _, _, _ in sink.sent]
        assert topics.count("themis.ts.points") == 2  # the point and the batch's one frame
        assert topics.count("themis.vectors.ops") == 2
        assert {"themis.ts.blocks", "themis.wal"} <= set(topics)

    serve(scenario, producer=RefusingBroker(), worker=False, write_deadline_s=2.5)


def test_requests_beyond_max_in_flight_answer_429_until_the_broker_acknowledges() -> None:
    held = HeldProducer()
    queued = WRITER | {"X-Themis-Response-Mode": "queued"}

    async def scenario(client: Client, facade: Facade, sink: FakeProducer) -> None:
        batch = [POINT | {"entity": f"e{i}"} for i in range(3)]
        resp = await client.post("/ts/put/buffered/batch", json=batch, headers=queued)
        # Queued: answered before the broker acknowledged, the points counted as in flight.
        assert await resp.json() == {
            "success": True,
            "buffered": True,
            "points": 3,
            "buffer_size": 3,
        }
        frames = len(sink.sent)
        assert sorted(k for _, v, _, _ in sink.sent for k, _, _ in decode_frame(v)) == [
            series_key("cpu", f"e{i}") for i in range(3)
        ]
        for path, body in (("/ts/put/buffered", POINT), ("/vectors/add/buffered", VECTOR)):
            resp = await client.post(path, json=body, headers=queued)
            assert resp.status == 429, path
            assert resp.headers["Retry-After"] == "1"
            assert await resp.json() == {
                "success": False,
                "error": "Buffer overflow",
                "buffer_size": 3,
            }
        assert len(sink.sent) == frames  # nothing of the refused requests was sent
        assert facade.unacked_points == 3
        held.release()
        deadline = time.monotonic() + 5
        while facade.in_flight.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert (facade.in_flight.points, facade.in_flight.requests) == (0, 0)
        resp = await client.post("/vectors/add/buffered", json=VECTOR, headers=queued)
        assert await resp.json() == {"success": True, "buffered": True, "buffer_size": 1}
        assert [decode_op_json(v, dimension=DIM).pk for _, v, _, _ in sink.sent[frames:]] == [
            "doc-1"
        ]
        held.release()

    serve(scenario, producer=held, worker=False, max_in_flight=1)


def test_a_worker_at_its_hard_cap_answers_429_for_its_buffer_only() -> None:
    async def scenario(client: Client, facade: Facade, sink: FakeProducer) -> None:
        deadline = time.monotonic() + 10
        while not facade.worker_ts_sizes and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert list(facade.worker_ts_sizes.values()) == [2]  # the fake worker's buffer
        for path, body in (("/ts/put/buffered", POINT), ("/ts/put/buffered/batch", [POINT])):
            resp = await client.post(path, json=body, headers=WRITER)
            assert resp.status == 429, path
            assert await resp.json() == {
                "success": False,
                "error": "Buffer overflow",
                "buffer_size": 2,
            }
        # The vector buffer has room; the direct TS endpoint does not ask the buffers.
        assert (
            await client.post("/vectors/add/buffered", json=VECTOR, headers=WRITER)
        ).status == 200
        assert (await client.post("/ts/put", json=POINT, headers=WRITER)).status == 200
        assert [topic for topic, _, _, _ in sink.sent] == [
            "themis.vectors.ops",
            "themis.ts.blocks",
            "themis.wal",
        ]

    serve(scenario, sections={"ts_auto_buffer": {"max_total_points": 2}})


def test_without_a_worker_reads_and_flushes_answer_503_and_a_direct_vector_add_is_stored() -> None:
    async def scenario(client: Client, facade: Facade, sink: FakeProducer) -> None:
        (url,) = facade.workers.urls
        search = {"vector": [0.5] * DIM, "k": 3}
        for method, path, body, headers in [
            ("GET", "/ts/buffer/stats", None, WRITER),
            ("GET", "/vectors/buffer/stats", None, WRITER),
            ("POST", "/ts/buffer/flush", None, ADMIN),
            ("POST", "/vectors/buffer/flush", None, ADMIN),
            ("POST", "/vectors/search", search, WRITER),
            ("DELETE", "/vectors/remove/buffered", {"pk": "doc-1"}, WRITER),
        ]:
            resp = await client.request(method, path, json=body, headers=headers)
            answer = await resp.json()
            assert resp.status == 503, (path, answer)
            assert answer["error"].startswith(f"no worker answers at {url}"), path
            assert "THEMIS_FACADE_WORKER_URLS" in answer["error"]
        assert sink.sent == []  # the remove was refused before anything was sent
        resp = await client.post("/vectors/add", json=VECTOR, headers=WRITER)
        assert await resp.json() == {"success": True, "durable": True, "flushed_workers": 0}
        ((topic, value, key, _),) = sink.sent
        assert (topic, key) == ("themis.vectors.ops", b"doc-1")
        op = decode_op_json(value, dimension=DIM)
        assert op.vector is not None
        assert op.vector.tolist() == VECTOR["vector"]

    serve(scenario, worker=False)


# -- request checks -----------------------------------------------------------------


def test_bad_query_parameters_answer_400_naming_the_parameter() -> None:
    async def scenario(client: Client, _: Facade, sink: FakeProducer) -> None:
        for query, needle in [
            ("entity=e", "query parameter 'metric' is required"),
            ("metric=m&entity=", "query parameter 'entity' is required"),
            ("metric=m&entity=e&start=yesterday", "'start' must be an integer (milliseconds)"),
            ("metric=m&entity=e&end=1.5", "'end' must be an integer (milliseconds)"),
            (f"metric=m&entity=e&start={INT64_MIN - 1}", "'start' is outside the int64 range"),
            (f"metric=m&entity=e&end={INT64_MAX + 1}", "'end' is outside the int64 range"),
            ("metric=m&entity=e&tag=dc", "'tag' must be key:value; got 'dc'"),
            ("metric=m&entity=e&tag=:eu", "'tag' must be key:value; got ':eu'"),
        ]:
            resp = await client.get(f"/ts/query?{query}", headers=WRITER)
            answer = await resp.json()
            assert resp.status == 400, (query, answer)
            assert needle in answer["error"], (query, answer)

    serve(scenario, worker=False)


def test_bad_search_bodies_answer_400_naming_the_field() -> None:
    vector = [0.5] * DIM

    async def scenario(client: Client, _: Facade, sink: FakeProducer) -> None:
        for body, needle in [
            ([vector], "the body must be a JSON object with field 'vector'"),
            ({"vector": vector, "limit": 3, "where": {}}, "unknown field(s): limit, where"),
            ({"vector": "abc"}, "field 'vector' must be an array of numbers"),
            ({"vector": vector, "k": True}, "field 'k' must be an integer from 1 to"),
            ({"vector": vector, "ef": 0}, "field 'ef' must be an integer from 1 to"),
            ({"vector": vector, "filter": ["tech"]}, "field 'filter' must be an object"),
        ]:
            resp = await client.post("/vectors/search", json=body, headers=WRITER)
            answer = await resp.json()
            assert resp.status == 400, (body, answer)
            assert needle in answer["error"], (body, answer)

    serve(scenario, worker=False)


def test_empty_batches_lone_surrogates_and_huge_numbers_answer_400_and_send_nothing() -> None:
    async def scenario(client: Client, _: Facade, sink: FakeProducer) -> None:
        json_type = WRITER | {"Content-Type": "application/json"}
        ndjson = WRITER | {"Content-Type": "application/x-ndjson"}
        huge = b'{"metric":"m","entity":"e","timestamp_ms":1,"value":1' + b"0" * 400 + b"}"
        for path, body, headers, needle in [
            ("/ts/put/buffered/batch", b"[]", json_type, "the batch holds no points"),
            ("/ts/put/buffered/batch", b"\n \n", ndjson, "the batch holds no points"),
            (
                "/ts/put/buffered",
                b'{"metric":"\\ud800","entity":"e","timestamp_ms":1,"value":1}',
                json_type,
                "a string holds a lone UTF-16 surrogate",
            ),
            ("/ts/put/buffered", huge, json_type, "field 'value' does not fit a float64"),
            ("/ts/put/buffered/batch", huge, ndjson, "line 1: field 'value' does not fit"),
        ]:
            resp = await client.post(path, data=body, headers=headers)
            answer = await resp.json()
            assert resp.status == 400, (path, body[:40], answer)
            assert needle in answer["error"], (path, body[:40], answer)
        assert sink.sent == []

    serve(scenario, worker=False)


def test_bodies_that_start_with_a_utf8_bom_are_read_like_those_without() -> None:
    bom = b"\xef\xbb\xbf"
    point = b'{"metric":"bom","entity":"e","timestamp_ms":%d,"value":1.5}'

    async def scenario(client: Client, _: Facade, sink: FakeProducer) -> None:
        json_type = WRITER | {"Content-Type": "application/json"}
        ndjson = WRITER | {"Content-Type": "application/x-ndjson"}
        for path, body, headers, points in [
            ("/ts/put/buffered", bom + point % 1, json_type, None),
            (
                "/ts/put/buffered/batch",
                bom + b"[" + point % 2 + b"," + point % 3 + b"]",
                json_type,
                2,
            ),
            ("/ts/put/buffered/batch", bom + point % 4 + b"\n" + point % 5, ndjson, 2),
        ]:
            resp = await client.post(path, data=body, headers=headers)
            answer = await resp.json()
            assert resp.status == 200, (path, answer)
            assert answer.get("points") == points
        key = series_key("bom", "e")
        sent: list[int] = []
        for _topic, value, record_key, _partition in sink.sent:
            if record_key is None:
                sent += [t for k, ts, _ in decode_frame(value) if k == key for t in ts.tolist()]
            else:
                sent.append(decode_point_json(value).timestamp_ms)
        assert sorted(sent) == [1, 2, 3, 4, 5]

    serve(scenario, worker=False)


def test_a_non_finite_value_the_typed_decoder_let_through_is_still_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should msgspec ever decode ``NaN`` (it does not today), the reference check answers."""
    nan_point = WirePoint("m", "e", 1, math.nan)

    class LetsNaNThrough:
        def decode(self, body: bytes) -> Any:
            return [nan_point] if body.startswith(b"[") else nan_point

    monkeypatch.setattr(ts_bodies, "DECODE_POINT", LetsNaNThrough())
    monkeypatch.setattr(ts_bodies, "_ARRAY", LetsNaNThrough())
    body = b'{"metric":"m","entity":"e","timestamp_ms":1,"value":NaN}'
    bodies = ts_bodies.PointBodies()
    with pytest.raises(InvalidRequest, match="field 'value' must be a finite number"):
        bodies.point(body)
    with pytest.raises(InvalidRequest, match="point 0: field 'value' must be a finite number"):
        bodies.batch(b"[" + body + b"]", "application/json")


def test_a_query_body_with_null_bounds_reads_the_whole_series() -> None:
    raw = {"metric": "m", "entity": "e", "tags": None, "start": None, "end": None}
    assert series_query_body(raw) == SeriesQuery("m", "e", {}, INT64_MIN, INT64_MAX)


# -- keys and roles -----------------------------------------------------------------


def test_the_replicator_role_may_only_apply_wal_batches() -> None:
    assert Role.REPLICATOR.allows(Role.REPLICATOR)
    assert not Role.REPLICATOR.allows(Role.WRITER)
    assert not Role.ADMIN.allows(Role.REPLICATOR)
    assert not Role.WRITER.allows(Role.REPLICATOR)

    async def scenario(client: Client, _: Facade, sink: FakeProducer) -> None:
        for method, path in (("GET", "/ts/buffer/stats"), ("POST", "/ts/put/buffered")):
            resp = await client.request(method, path, json=POINT, headers=REPLICATOR)
            assert resp.status == 403, path
            assert (await resp.json())["error"] == (
                "this endpoint needs role writer; the key has role replicator"
            )
        assert sink.sent == []

    serve(scenario, worker=False)


def _facade_settings(**facade: object) -> Settings:
    return load_settings(path=Path(os.devnull), env={}, overrides={"facade": facade})


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_keys_file_that_cannot_be_read_is_a_config_error_naming_it(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "keys"
    if kind == "directory":
        path.mkdir()
    reason = "No such file or directory" if kind == "missing" else "Is a directory"
    settings = _facade_settings(api_keys="w:writer", api_keys_file=str(path))
    with pytest.raises(ConfigError) as caught:
        load_keyring(settings.facade)
    assert str(caught.value) == (
        f"facade.api_keys_file: cannot read {path} ({reason}); "
        "fix the path or unset THEMIS_FACADE_API_KEYS_FILE"
    )
    with pytest.raises(ConfigError, match=r"^facade\.api_keys_file: cannot read"):
        create_facade(settings, None, producer=FakeProducer(), partitions={})


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("# team keys\nfile-key:admin\nsecret-without-role\n", 3),
        ("file-key:admin\n\n:writer\n", 3),
        ("  :admin\n", 1),
    ],
)
def test_a_keys_file_entry_that_is_no_key_role_pair_is_named_by_line_without_the_key(
    tmp_path: Path, text: str, number: int
) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    settings = _facade_settings(api_keys_file=str(path))
    with pytest.raises(ConfigError) as caught:
        load_keyring(settings.facade)
    message = str(caught.value)
    assert message == (
        f"{path}: entry {number} is not 'key:role' (roles: writer, admin, replicator)"
    )
    assert "secret" not in message
    assert "file-key" not in message


def test_api_keys_entries_are_numbered_by_comma_and_blanks_skipped() -> None:
    entries = parse_key_entries("a:writer, ,b:admin", separator=",", origin="facade.api_keys")
    assert entries == [("a", Role.WRITER), ("b", Role.ADMIN)]
    with pytest.raises(ConfigError, match=r"^facade.api_keys: entry 3 is not 'key:role'"):
        parse_key_entries("a:writer,,nokey", separator=",", origin="facade.api_keys")


def test_auth_enabled_without_any_key_refuses_to_build_the_facade() -> None:
    settings = _facade_settings(api_keys="")
    with pytest.raises(ConfigError, match="no API keys are configured: set THEMIS_FACADE_API_KEYS"):
        create_facade(settings, None, producer=FakeProducer(), partitions={})


def test_auth_disabled_lets_calls_without_a_key_through_flushes_included() -> None:
    async def scenario(client: Client, _: Facade, sink: FakeProducer) -> None:
        stats = await client.get("/ts/buffer/stats")
        assert (stats.status, (await stats.json())["points_flushed"]) == (200, 8)
        flush = await client.post("/ts/buffer/flush")
        assert await flush.json() == {
            "success": True,
            "points_flushed": 2,
            "workers": 1,
            "workers_unreachable": [],
        }

    serve(scenario, auth_enabled=False, api_keys="")


# -- lifecycle -------------------------------------------------------------------------


def test_a_facade_without_producer_or_bootstrap_refuses_to_start_and_answers_503_before() -> None:
    settings = _settings("http://127.0.0.1:9", {}, api_keys="k:admin")

    async def main() -> None:
        facade = Facade(settings, None)
        with pytest.raises(ServiceUnavailable, match="the facade is not started"):
            _ = facade.producer
        with pytest.raises(ServiceUnavailable, match="the facade is not started"):
            _ = facade.block_writer
        app = web.Application()
        with pytest.raises(ConfigError, match="the facade needs a Kafka bootstrap address"):
            await facade.start(app)
        await facade.stop(app)  # nothing was started: nothing to stop
        with pytest.raises(ServiceUnavailable):
            _ = facade.producer

    asyncio.run(main())


def test_stopping_a_facade_that_never_started_still_delivers_the_points_it_accepted() -> None:
    settings = _settings("http://127.0.0.1:9", {}, api_keys="k:admin")
    key = series_key("cpu", "s1")

    async def main() -> None:
        sink = FakeProducer()
        facade = Facade(settings, None, producer=sink, partitions={settings.topic("ts.points"): 6})
        queued = facade.points.add(key, 7, 2.5, acked=False)  # would wait 20 ms for others
        assert (sink.sent, facade.unacked_points) == ([], 1)
        await facade.stop(web.Application())
        assert queued.done()
        assert facade.unacked_points == 0
        ((topic, value, record_key, _),) = sink.sent
        assert (topic, record_key) == ("themis.ts.points", key.encode())
        point = decode_point_json(value)
        assert (point.series_key(), point.timestamp_ms, point.value) == (key, 7, 2.5)

    asyncio.run(main())


# -- what is in flight ---------------------------------------------------------------


def test_a_request_with_no_records_is_delivered_at_once() -> None:
    async def main() -> None:
        in_flight = InFlight()
        done = in_flight.deliver([], 0)
        assert done.done()
        assert done.result() is None
        assert (in_flight.points, in_flight.requests) == (0, 0)

    asyncio.run(main())


def test_a_delivery_given_up_by_its_caller_still_releases_its_counts() -> None:
    async def main() -> None:
        in_flight = InFlight()
        record: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done = in_flight.deliver([record], 2)
        assert (in_flight.points, in_flight.requests) == (2, 1)
        done.cancel()
        record.set_exception(DeliveryFailed("too late"))
        await asyncio.sleep(0)  # the record's callbacks run
        assert done.cancelled()
        assert (in_flight.points, in_flight.requests) == (0, 0)

    asyncio.run(main())


def test_drain_waits_for_what_is_pending_but_no_longer_than_its_timeout() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        in_flight = InFlight()
        late: asyncio.Future[Any] = loop.create_future()
        loop.call_later(0.05, late.set_result, None)
        in_flight.deliver([late], 4)
        await in_flight.drain(5.0)
        assert (late.done(), in_flight.points) == (True, 0)
        never: asyncio.Future[Any] = loop.create_future()
        in_flight.deliver([never], 1)
        started = time.monotonic()
        await in_flight.drain(0.1)
        assert 0.09 <= time.monotonic() - started < 2.0
        assert (in_flight.points, in_flight.requests) == (1, 1)
        never.set_result(None)

    asyncio.run(main())


def test_a_producer_that_refuses_a_flush_fails_every_point_of_it_and_releases_them() -> None:
    class QueueFull(FakeProducer):
        def produce(
            self,
            topic: str,
            value: bytes,
            *,
            key: bytes | None = None,
            partition: int | None = None,
        ) -> asyncio.Future[Any]:
            raise BufferError("Local: Queue full")

    async def main() -> None:
        in_flight = InFlight()
        framer = PointFramer(QueueFull, "points", lambda: 6, in_flight)
        done = [framer.add(series_key("m", f"e{i}"), 1, 1.0, acked=True) for i in range(2)]
        for future in done:
            with pytest.raises(BufferError, match="Queue full"):
                await future
        assert (in_flight.points, in_flight.requests) == (0, 0)

    asyncio.run(main())


def test_a_point_whose_waiter_was_cancelled_is_still_sent_with_its_flush() -> None:
    keys = [series_key("m", "a"), series_key("m", "b")]

    async def main() -> None:
        sink = FakeProducer()
        in_flight = InFlight()
        framer = PointFramer(lambda: sink, "points", lambda: 6, in_flight)
        first = framer.add(keys[0], 1, 1.0, acked=False)
        framer.add(keys[1], 2, 2.0, acked=False)
        first.cancel()  # the same future both points share
        framer.flush()
        await asyncio.sleep(0)
        assert in_flight.points == 0
        got = {k: ts.tolist() for _, v, _, _ in sink.sent for k, ts, _ in decode_frame(v)}
        assert got == {keys[0]: [1], keys[1]: [2]}

    asyncio.run(main())


# -- connections ---------------------------------------------------------------------


def _connection() -> FacadeConnection:
    server = web.Server(mock.AsyncMock(), loop=mock.Mock())
    return FacadeConnection(server, loop=mock.Mock())


def test_an_error_that_is_no_parse_error_gets_aiohttps_500_without_its_text() -> None:
    writer = mock.Mock(output_size=0)
    request = make_mocked_request("GET", "/", writer=writer)
    response = _connection().handle_error(request, 500, RuntimeError("hunter2"))
    assert isinstance(response, web.Response)
    assert response.status == 500
    assert response.text is not None
    assert "hunter2" not in response.text


def test_a_malformed_head_after_an_answer_began_closes_the_connection() -> None:
    request = make_mocked_request("GET", "/", writer=mock.Mock(output_size=12))
    with pytest.raises(ConnectionError, match="an answer was sent already"):
        _connection().handle_error(request, 400, BadHttpMessage("bad"))
    fresh = make_mocked_request("GET", "/", writer=mock.Mock(output_size=0))
    response = _connection().handle_error(fresh, 400, BadHttpMessage("bad header 'k3y'"))
    assert isinstance(response, web.Response)
    assert response.status == 400
    assert isinstance(response.body, bytes)
    assert b"k3y" not in response.body
    assert msgspec.json.decode(response.body) == {
        "success": False,
        "error": "the request head is not valid HTTP/1.1 (or has over 128 header fields)",
    }


# -- themis facade's TLS flags -----------------------------------------------------------


@pytest.fixture
def no_broker_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flag error must come before any broker is looked for (or started)."""

    def forbidden(*args: object, **kwargs: object) -> object:
        raise AssertionError("run_facade looked for a broker before checking its flags")

    monkeypatch.setattr("pipeline.kafka.broker.require_broker", forbidden)


@pytest.mark.usefixtures("no_broker_search")
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "{d}/c.pem"], r"^--tls-cert needs --tls-key"),
        (["--tls-key", "{d}/k.pem"], r"^--tls-key and --tls-client-ca need --tls-cert"),
        (["--tls-client-ca", "{d}/ca.pem"], r"^--tls-key and --tls-client-ca need --tls-cert"),
        (
            ["--tls-cert", "{d}/none.pem", "--tls-key", "{d}/none.key"],
            r"^cannot load the TLS files \(--tls-cert {d}/none.pem, --tls-key {d}/none.key\): "
            r".*No such file",
        ),
        (
            ["--tls-cert", "{d}/junk", "--tls-key", "{d}/junk", "--tls-client-ca", "{d}/junk"],
            r"^cannot load the TLS files \(--tls-cert {d}/junk, --tls-key {d}/junk, "
            r"--tls-client-ca {d}/junk\): ",
        ),
    ],
)
def test_tls_flags_that_cannot_work_are_refused_naming_the_flag_or_files(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    (tmp_path / "junk").write_text("not a certificate\n")
    args = cli.build_parser().parse_args(["facade", *(f.format(d=tmp_path) for f in flags)])
    settings = _settings("http://127.0.0.1:9", {}, api_keys="k:admin")
    with pytest.raises(ConfigError, match=message.format(d=tmp_path)):
        run_facade(args, settings)


@pytest.mark.usefixtures("no_broker_search")
def test_themis_facade_with_a_cert_but_no_key_exits_2_with_the_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("THEMIS_CONFIG", os.devnull)
    assert cli.main(["facade", "--tls-cert", str(tmp_path / "c.pem")]) == 2
    err = capsys.readouterr().err
    assert err == "themis: error: --tls-cert needs --tls-key (the certificate's private key)\n"
