"""Points through Kafka, the worker and Gorilla blocks, read back exactly."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from pathlib import Path
from typing import cast

import numpy as np
import orjson
import pytest
from confluent_kafka import Message

from pipeline.config import Settings
from pipeline.ingest.deadletter import REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from pipeline.kafka.clients import Producer
from pipeline.kafka.consumer import open_consumer
from pipeline.ts import DataPoint, TSProducer
from pipeline.ts.point import encode_frame, series_key
from pipeline.ts.store import BlockStore
from pipeline.worker import query
from tests.fixtures.support import (
    committed_total,
    settings_as_env,
    start_themis_worker,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.integration


def _fast_flush_env(settings: Settings) -> dict[str, str]:
    return settings_as_env(settings) | {"THEMIS_TS_AUTO_BUFFER_FLUSH_INTERVAL_MS": "300"}


def _durable_points(settings: Settings, tmp_path: Path) -> int:
    store = BlockStore(tmp_path / "check.sqlite")
    try:
        assert settings.kafka.bootstrap_servers
        store.catch_up(settings.kafka.bootstrap_servers, settings.topic("ts.blocks"))
        return store.point_count()
    finally:
        store.close()


def test_json_points_and_frames_are_queried_back_exactly(topics: Settings, tmp_path: Path) -> None:
    producer = TSProducer(topics)
    special = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.5]
    json_points = [
        DataPoint("cpu", f"host{i % 3}", 1_700_000_000_000 + 1000 * i, float(i) * 0.5, {"dc": "eu"})
        for i in range(150)
    ] + [DataPoint("odd", "x", 1_000 + i, v) for i, v in enumerate(special)]
    for point in json_points:
        producer.put(point)
    rng = np.random.default_rng(7)
    frame_ts = np.cumsum(rng.integers(9_000, 11_000, 20_000)).astype(np.int64)
    frame_vs = np.round(rng.normal(50, 5, 20_000), 2)
    producer.put_arrays([('["mem","db1",{}]', frame_ts, frame_vs)])
    producer.close()  # raises unless the broker acknowledged every point
    expected_total = len(json_points) + 20_000

    worker = start_themis_worker(_fast_flush_env(topics), tmp_path / "worker.log")
    try:
        wait_until(
            lambda: _durable_points(topics, tmp_path) >= expected_total,
            timeout_s=90,
            what="all points durable as blocks",
        )
        result = query(
            "cpu", "host1", 0, 2**62, {"dc": "eu"}, settings=topics, include_buffered=False
        )
        host1 = [p for p in json_points if p.entity == "host1"]
        assert result.to_list() == [(p.timestamp_ms, p.value) for p in host1]
        odd = query("odd", "x", 0, 10_000, settings=topics, include_buffered=False)
        assert odd.timestamps.tolist() == [1_000 + i for i in range(len(special))]
        assert odd.values.view(np.uint64).tolist() == np.array(special).view(np.uint64).tolist()
        mem = query("mem", "db1", int(frame_ts[100]), int(frame_ts[199]), settings=topics)
        assert mem.timestamps.tolist() == frame_ts[100:200].tolist()
        assert mem.values.tolist() == frame_vs[100:200].tolist()
        assert topics.kafka.bootstrap_servers
        wait_until(
            lambda: (
                committed_total(
                    topics.kafka.bootstrap_servers or "",
                    f"{topics.worker.app_id}-ts",  # the TS stage's consumer group
                    topics.topic("ts.points"),
                    2,
                )
                >= len(json_points) + 1
            ),
            timeout_s=30,
            what="input offsets committed",
        )
        with urllib.request.urlopen(
            f"http://127.0.0.1:{topics.worker.web_port}/metrics", timeout=5
        ) as resp:
            exposition = resp.read().decode()
        for name in (
            "ts_auto_buffer_points_buffered_total",
            "ts_auto_buffer_points_flushed_total",
            "ts_auto_buffer_flush_count_total",
            "ts_auto_buffer_compression_ratio",
            "ts_auto_buffer_current_size",
            "ts_auto_buffer_flush_duration_seconds_bucket",
        ):
            assert name in exposition
        assert f"ts_auto_buffer_points_flushed_total {float(expected_total)}" in exposition
    finally:
        assert stop_process(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]


def test_malformed_records_go_to_the_dead_letter_topic_and_the_pipeline_goes_on(
    topics: Settings, tmp_path: Path
) -> None:
    bootstrap = topics.kafka.bootstrap_servers
    assert bootstrap is not None
    null_tags = encode_frame([('["m","e",null]', np.array([1], np.int64), np.array([1.0]))])
    bad = [
        b"{not json",
        b'{"metric": "cpu", "entity": "a", "value": 1.0}',
        b"TSF1\x05\x00",
        null_tags,  # once a TypeError: the agent restarted and skipped it, no dead letter
    ]
    with Producer({"bootstrap.servers": bootstrap}) as raw:
        for value in bad:
            raw.produce(topics.topic("ts.points"), value, key=b"bad", partition=0)
        assert raw.flush(10) == 0
    with TSProducer(topics) as producer:
        producer.put(DataPoint("cpu", "good", 42, 4.2))

    worker = start_themis_worker(_fast_flush_env(topics), tmp_path / "worker.log")
    try:
        wait_until(
            lambda: len(query("cpu", "good", 0, 100, settings=topics, include_buffered=False)) == 1,
            timeout_s=90,
            what="the good point durable",
        )
        letters: list[Message] = []
        with open_consumer(bootstrap, "dlq-check") as consumer:
            consumer.subscribe([topics.topic("deadletter")])
            deadline_polls = 100
            while len(letters) < len(bad) and deadline_polls:
                msg = consumer.poll(0.3)
                deadline_polls -= 1
                if msg is not None and not msg.error():
                    letters.append(msg)
        assert [m.value() for m in letters] == bad
        headers = [dict(cast("list[tuple[str, bytes]]", m.headers() or [])) for m in letters]
        assert b"not valid JSON" in headers[0][REASON]
        assert b"timestamp_ms" in headers[1][REASON]
        assert b"frame" in headers[2][REASON]
        assert b"""'["m","e",null]' is not a series key""" in headers[3][REASON]
        assert [h[SOURCE_OFFSET] for h in headers] == [b"0", b"1", b"2", b"3"]
        assert worker.poll() is None, "the worker must keep running"
        assert {h[SOURCE_PARTITION] for h in headers} == {b"0"}
        assert {h[SOURCE_TOPIC] for h in headers} == {topics.topic("ts.points").encode()}
    finally:
        assert stop_process(worker) == 0


def test_a_series_key_too_long_for_a_block_is_dead_lettered_and_ingest_goes_on(
    topics: Settings, tmp_path: Path
) -> None:
    bootstrap = topics.kafka.bootstrap_servers
    assert bootstrap is not None
    poison = orjson.dumps({"metric": "m" * 70_000, "entity": "e", "timestamp_ms": 1, "value": 1.0})
    with Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 1_000_000}) as raw:
        raw.produce(topics.topic("ts.points"), poison, key=b"poison", partition=0)
        assert raw.flush(10) == 0
    with TSProducer(topics) as producer:
        for i in range(10_000):
            point = {"metric": "cpu", "entity": "ok", "timestamp_ms": i, "value": i * 0.5}
            producer.send(orjson.dumps(point), key=b'["cpu","ok",{}]')

    worker = start_themis_worker(_fast_flush_env(topics), tmp_path / "worker.log")
    try:
        wait_until(
            lambda: (
                len(query("cpu", "ok", 0, 10**6, settings=topics, include_buffered=False)) == 10_000
            ),
            timeout_s=90,
            what="every good point durable",
        )
        good = query("cpu", "ok", 0, 10**6, settings=topics, include_buffered=False)
        assert good.values.tolist() == [i * 0.5 for i in range(10_000)]
        letter = None
        with open_consumer(bootstrap, "dlq-long") as consumer:
            consumer.subscribe([topics.topic("deadletter")])
            for _ in range(100):
                letter = consumer.poll(0.3)
                if letter is not None and not letter.error():
                    break
        assert letter is not None
        assert letter.value() == poison
        reason = dict(cast("list[tuple[str, bytes]]", letter.headers() or []))[REASON]
        limit = b"field 'metric' is 70000 bytes of UTF-8; at most 4096 (MAX_METRIC_BYTES)"
        assert reason == limit
        assert worker.poll() is None, "the worker must keep running"
        page = f"http://127.0.0.1:{topics.worker.web_port}/ts/buffered?series=x"
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(page, timeout=5)
        assert answer.value.code == 400
        assert b"'start' and 'end'" in answer.value.read()
    finally:
        assert stop_process(worker) == 0


def test_a_consumer_batch_holding_more_points_than_the_buffer_cap_is_buffered_in_pieces(
    topics: Settings, tmp_path: Path
) -> None:
    # Frames of 5,000, 1,500 and 1,700 points against a cap of 1,000 buffered points: one
    # record alone is over the cap, so a flush cannot make room for it.
    rng = np.random.default_rng(11)
    sent = {
        series_key("big", f"s{i}"): (
            np.arange(size, dtype=np.int64) * 1000,
            np.round(rng.normal(0, 1, size), 3),
        )
        for i, size in enumerate((5_000, 1_500, 1_700))
    }
    with TSProducer(topics) as producer:
        producer.put_arrays((key, ts, vs) for key, (ts, vs) in sent.items())
    env = _fast_flush_env(topics) | {
        "THEMIS_TS_AUTO_BUFFER_MAX_TOTAL_POINTS": "1000",
        "THEMIS_TS_AUTO_BUFFER_MAX_POINTS": "400",
    }
    worker = start_themis_worker(env, tmp_path / "worker.log")
    try:
        wait_until(
            lambda: _durable_points(topics, tmp_path) == 8_200,
            timeout_s=90,
            what="every point of the oversized batch durable",
        )
        for key, (ts, vs) in sent.items():
            metric, entity, _ = orjson.loads(key)
            got = query(metric, entity, 0, 10**9, settings=topics, include_buffered=False)
            assert got.timestamps.tolist() == ts.tolist(), key
            assert got.values.tolist() == vs.tolist(), key
        assert worker.poll() is None, "the worker must keep running"
    finally:
        assert stop_process(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
