"""The facade's paths that need the real broker: a start-up without its topics, durable
points that are NaN or infinite read back through the query (from the worker that owns
the series), and ``themis facade``
serving HTTPS with client certificates, its flags over its settings."""

from __future__ import annotations

import asyncio
import http.client
import ssl
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web

from pipeline.errors import ConfigError
from pipeline.facade.app import FACADE_STATE, Facade
from pipeline.kafka.local_broker import free_port
from pipeline.ts.point import series_key
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import KEYS, WRITER, FacadeThread, facade_settings
from tests.fixtures.support import (
    THEMIS,
    settings_as_env,
    start_process,
    start_themis_worker,
    stop_process,
    wait_until,
)
from tests.fixtures.topics import points_on

pytestmark = pytest.mark.integration


def test_a_facade_whose_topics_do_not_exist_refuses_to_start_naming_the_topic(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(facade={"api_keys": KEYS})  # no `themis topics apply`
    bootstrap = settings.kafka.bootstrap_servers
    assert bootstrap

    async def main() -> None:
        facade = Facade(settings, bootstrap)
        app = web.Application()
        try:
            with pytest.raises(ConfigError) as caught:
                await facade.start(app)
        finally:
            await facade.stop(app)  # closes the producer start-up created
        topic = settings.topic("ts.points")
        assert str(caught.value) == f"topic {topic} does not exist; run `themis topics apply`"

    asyncio.run(main())


def test_durable_nan_and_infinities_come_back_as_text_from_the_series_owner(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = facade_settings(make_settings)
    worker = start_themis_worker(settings_as_env(settings), tmp_path / "worker.log")
    facade = FacadeThread(settings)
    try:
        key = series_key("temp", "probe", {"site": "a"})
        ts = np.array([1, 2, 3, 4], np.int64)
        vs = np.array([np.nan, np.inf, -np.inf, 21.5], np.float64)
        state = facade.runner.app[FACADE_STATE]

        async def write() -> None:
            await state.block_writer.write([(key, ts, vs)])

        facade._run(write())
        expected = [
            {"timestamp_ms": 1, "value": "NaN"},
            {"timestamp_ms": 2, "value": "inf"},
            {"timestamp_ms": 3, "value": "-inf"},
            {"timestamp_ms": 4, "value": 21.5},
        ]
        status, body, _ = facade.call(
            "GET", "/ts/query?metric=temp&entity=probe&tag=site:a", headers=WRITER
        )
        assert (status, body) == (200, {"series": key, "count": 4, "points": expected})
        query = {"metric": "temp", "entity": "probe", "tags": {"site": "a"}, "start": 2, "end": 3}
        status, body, _ = facade.call("POST", "/ts/query", query, WRITER)
        assert (status, body["points"]) == (200, expected[1:3])
    finally:
        facade.close()
        stop_process(worker)


def _https(
    port: int, context: ssl.SSLContext, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, orjson.loads(raw)
        return resp.status, raw
    finally:
        conn.close()


def test_themis_facade_serves_https_to_client_certificates_with_its_flags_over_settings(
    make_settings: MakeSettings, pki: Path, tmp_path: Path
) -> None:
    settings_port, port = free_port(), free_port()
    settings = facade_settings(make_settings, port=settings_port, response_mode="acked")
    flags = [
        *("--host", "127.0.0.1", "--port", str(port), "--response-mode", "queued"),
        *("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")),
        *("--tls-client-ca", str(pki / "ca.pem")),
    ]
    log = tmp_path / "facade.log"
    proc = start_process([*THEMIS, "facade", *flags], settings_as_env(settings), log)
    client = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    client.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    anonymous = ssl.create_default_context(cafile=str(pki / "ca.pem"))

    def answers() -> bool:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            return _https(port, client, "GET", "/metrics")[0] == 200
        except OSError:
            return False

    try:
        wait_until(answers, timeout_s=60, what="the facade to serve HTTPS")
        # --port wins over facade.port: nothing listens there.
        with pytest.raises(ConnectionRefusedError):
            http.client.HTTPConnection("127.0.0.1", settings_port, timeout=5).connect()
        # --tls-client-ca: a client without a certificate is refused in the handshake.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https(port, anonymous, "GET", "/metrics")
        # --response-mode queued: the answer comes before the broker's acknowledgement,
        # so the point is still counted in buffer_size (no worker runs).
        point = {"metric": "tls", "entity": "e1", "timestamp_ms": 5, "value": 2.5}
        status, body = _https(port, client, "POST", "/ts/put/buffered", point, **WRITER)
        assert (status, body) == (200, {"success": True, "buffered": True, "buffer_size": 1})
        # A client certificate is trusted for WAL apply: the batch itself is judged (400).
        status, body = _https(
            port, client, "POST", "/api/v1/wal/apply", b"\x28\xb5\x2f\xfd junk",
            **{"X-Primary-ID": "p1", "Content-Encoding": "zstd"},
        )  # fmt: skip
        assert (status, body["success"]) == (400, False), body
    finally:
        code = stop_process(proc)
    assert code == 0, log.read_text()[-2000:]
    bootstrap = settings.kafka.bootstrap_servers
    assert bootstrap
    assert points_on(bootstrap, settings.topic("ts.points")) == [(series_key("tls", "e1"), 5)]
