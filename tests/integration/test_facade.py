"""The HTTP facade against the session broker and a real worker process."""

from __future__ import annotations

import dataclasses
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import TopicPartition

from pipeline.kafka.consumer import open_consumer, watermark_offsets
from pipeline.kafka.local_broker import free_port
from pipeline.ts.block import decode_block
from pipeline.ts.point import series_key
from pipeline.ts.writer import block_partition
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import (
    ADMIN,
    DIM,
    WRITER,
    FacadeThread,
    facade_behind_worker,
    facade_settings,
    http_call,
    start_facade_process,
)
from tests.fixtures.support import stop_process, wait_until
from tests.fixtures.topics import points_on, records_on

pytestmark = pytest.mark.integration


@pytest.fixture
def with_worker(make_settings: MakeSettings, tmp_path: Path) -> Iterator[FacadeThread]:
    with facade_behind_worker(facade_settings(make_settings), tmp_path, WRITER) as facade:
        yield facade


def _points(facade: FacadeThread, query: str) -> list[list[Any]]:
    status, body, _ = facade.call("GET", f"/ts/query?{query}", headers=WRITER)
    assert status == 200, body
    return [[p["timestamp_ms"], p["value"]] for p in body["points"]]


def test_buffered_points_and_vectors_go_through_the_worker_and_come_back_exactly(
    with_worker: FacadeThread,
) -> None:
    facade = with_worker
    t0 = 1_702_645_200_000
    status, body, _ = facade.call(
        "POST",
        "/ts/put/buffered",
        {"metric": "cpu", "entity": "s1", "timestamp_ms": t0, "value": 75.5, "tags": {"dc": "eu"}},
        WRITER,
    )
    assert status == 200
    assert list(body) == ["success", "buffered", "buffer_size"]
    assert body["success"] is True
    assert body["buffered"] is True
    assert isinstance(body["buffer_size"], int)
    ndjson = "\n".join(
        json.dumps({"metric": "cpu", "entity": "s1", "timestamp_ms": t0 + i, "value": i * 0.25})
        for i in range(1, 101)
    ).encode()
    status, body, _ = facade.call(
        "POST",
        "/ts/put/buffered/batch",
        ndjson,
        WRITER | {"Content-Type": "application/x-ndjson"},
    )
    assert (status, body["points"]) == (200, 100)
    expected = [[t0 + i, i * 0.25] for i in range(1, 101)]
    wait_until(
        lambda: _points(facade, "metric=cpu&entity=s1") == expected,
        timeout_s=60,
        what="the batch readable through /ts/query",
    )
    # The tagged point is another series, so maybe another partition: it has its own wait.
    wait_until(
        lambda: _points(facade, "metric=cpu&entity=s1&tag=dc:eu") == [[t0, 75.5]],
        timeout_s=60,
        what="the single tagged point readable through /ts/query",
    )
    assert _points(facade, f"metric=cpu&entity=s1&start={t0 + 10}&end={t0 + 12}") == [
        [t0 + 10, 2.5],
        [t0 + 11, 2.75],
        [t0 + 12, 3.0],
    ]

    status, stats, _ = facade.call("GET", "/ts/buffer/stats", headers=WRITER)
    assert status == 200
    assert stats["points_buffered"] == 101
    assert stats["current_buffer_size"] == 101  # flush interval is a minute: all still buffered
    assert facade.call("POST", "/ts/buffer/flush", headers=WRITER)[0] == 403
    assert facade.call("POST", "/ts/buffer/flush", headers={"X-API-Key": "nope"})[0] == 401
    status, flushed, _ = facade.call("POST", "/ts/buffer/flush", headers=ADMIN)
    assert (status, flushed["points_flushed"]) == (200, 101)
    status, stats, _ = facade.call("GET", "/ts/buffer/stats", headers=WRITER)
    assert (stats["points_flushed"], stats["current_buffer_size"]) == (101, 0)
    assert stats["manual_flush_count"] == 2
    assert stats["avg_compression_ratio"] > 1.0
    assert _points(facade, "metric=cpu&entity=s1")[:2] == [[t0 + 1, 0.25], [t0 + 2, 0.5]]

    rng = np.random.default_rng(7)
    vectors = rng.normal(0, 1, (20, DIM)).astype(np.float32)
    for i in range(20):
        status, body, _ = facade.call(
            "POST",
            "/vectors/add/buffered",
            {"pk": f"doc{i}", "vector": vectors[i].tolist(), "metadata": {"n": i}},
            WRITER,
        )
        assert status == 200, body
        assert set(body) == {"success", "buffered", "buffer_size"}

    def top(vector: np.ndarray, k: int = 1) -> list[dict[str, Any]]:
        status, body, _ = facade.call(
            "POST", "/vectors/search", {"vector": vector.tolist(), "k": k}, WRITER
        )
        assert status == 200, body
        results: list[dict[str, Any]] = body["results"]
        return results

    wait_until(lambda: len(top(vectors[0], 50)) == 20, timeout_s=60, what="20 searchable vectors")
    assert top(vectors[3])[0]["pk"] == "doc3"
    new = (-vectors[3]).tolist()
    status, _, _ = facade.call(
        "POST",
        "/vectors/update/buffered",
        {"pk": "doc3", "vector": new, "metadata": {"n": -3}},
        WRITER,
    )
    assert status == 200
    wait_until(
        lambda: top(np.array(new, np.float32))[0]["metadata"] == {"n": -3},
        timeout_s=60,
        what="the update to be searchable",
    )
    status, _, _ = facade.call("DELETE", "/vectors/remove/buffered", {"pk": "doc5"}, WRITER)
    assert status == 200
    wait_until(
        lambda: "doc5" not in {h["pk"] for h in top(vectors[5], 50)},
        timeout_s=60,
        what="the removal",
    )
    status, body, _ = facade.call("DELETE", "/vectors/remove/buffered", {"pk": "ghost"}, WRITER)
    assert status == 404
    assert "ghost" in body["error"]
    status, body, _ = facade.call(
        "POST", "/vectors/add/buffered", {"pk": "x", "vector": [1.0] * (DIM - 1)}, WRITER
    )
    assert status == 400
    assert "dimensions" in body["error"]
    status, vstats, _ = facade.call("GET", "/vectors/buffer/stats", headers=WRITER)
    assert status == 200
    assert vstats["vectors_buffered"] == 22
    assert vstats["live_vectors"] == 19
    assert facade.call("POST", "/vectors/buffer/flush", headers=WRITER)[0] == 403
    assert facade.call("POST", "/vectors/buffer/flush", headers=ADMIN)[0] == 200

    conn = http.client.HTTPConnection("127.0.0.1", facade.port, timeout=10)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    assert resp.status == 200
    labels = 'method="POST",route="/ts/put/buffered",status="200"'
    assert f"facade_request_duration_seconds_count{{{labels}}} 1.0" in text


def test_feature_flag_off_answers_503_while_direct_writes_are_durable_and_rate_limited(
    make_settings: MakeSettings,
) -> None:
    settings = facade_settings(make_settings, rate_ts_put_per_min=2)
    settings = dataclasses.replace(
        settings,
        ts_auto_buffer=dataclasses.replace(settings.ts_auto_buffer, enabled=False),
        vector_auto_buffer=dataclasses.replace(settings.vector_auto_buffer, enabled=False),
    )
    facade = FacadeThread(settings)
    try:
        point = {"metric": "mem", "entity": "s2", "timestamp_ms": 5, "value": 1.25}
        status, body, _ = facade.call("POST", "/ts/put/buffered", point, WRITER)
        assert status == 503
        assert "ts_auto_buffer" in body["error"]
        status, body, _ = facade.call("POST", "/ts/put", point | {"timestamp_ms": 6}, WRITER)
        assert (status, body) == (200, {"success": True, "durable": True})
        status, body, headers = facade.call("POST", "/ts/put", point, WRITER)
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        # No worker runs (a query would wait for the series' owner): the point is in its
        # durable one-point block, the only block written (the 429 wrote none), in its
        # series' partition, and nothing went to the points topic.
        bootstrap = settings.kafka.bootstrap_servers
        assert bootstrap
        on_topic = records_on(bootstrap, settings.topic("ts.blocks"))
        blocks = [decode_block(value) for _, value in on_topic]
        assert [(b.series_key, b.points()[0].tolist(), b.points()[1].tolist()) for b in blocks] == [
            (series_key("mem", "s2", {}), [6], [1.25])
        ]
        partition = block_partition(series_key("mem", "s2", {}), 2)  # 2 partitions a topic
        with open_consumer(bootstrap, "ends") as consumer:
            ends = [
                watermark_offsets(consumer, TopicPartition(settings.topic("ts.blocks"), p))[1]
                for p in (0, 1)
            ]
        assert ends == [int(p == partition) for p in (0, 1)], "the block in its series' partition"
        assert points_on(bootstrap, settings.topic("ts.points")) == []
        status, body, _ = facade.call(
            "POST", "/vectors/add/buffered", {"pk": "a", "vector": [0.5] * DIM}, WRITER
        )
        assert status == 503
        status, body, _ = facade.call(
            "POST", "/vectors/add", {"pk": "a", "vector": [0.5] * DIM}, WRITER
        )
        assert (status, body["durable"]) == (200, True)
        status, body, _ = facade.call("GET", "/ts/buffer/stats", headers=WRITER)
        assert status == 503
        assert "no worker answers" in body["error"]
    finally:
        facade.close()


def test_sigterm_delivers_every_queued_point_before_the_facade_exits(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    port = free_port()
    settings = facade_settings(make_settings, port=port, response_mode="queued")
    proc = start_facade_process(settings, tmp_path / "facade.log")
    try:
        for i in range(200):
            point = {"metric": "q", "entity": "e", "timestamp_ms": i, "value": float(i)}
            assert http_call(port, "POST", "/ts/put/buffered", point, WRITER)[0] == 200
    finally:
        code = stop_process(proc)
    assert code == 0, (tmp_path / "facade.log").read_text()[-2000:]
    assert settings.kafka.bootstrap_servers
    points = points_on(settings.kafka.bootstrap_servers, settings.topic("ts.points"))
    assert sorted(points) == [('["q","e",{}]', i) for i in range(200)]
