"""A flush holding a series no block can carry dead-letters it and writes the rest."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import orjson
import pytest
from confluent_kafka import Message

from pipeline.config import Settings
from pipeline.ingest.buffer_core import FlushReason
from pipeline.ingest.deadletter import REASON, SOURCE_TOPIC
from pipeline.kafka.consumer import open_consumer
from pipeline.kafka.producer import AsyncProducer
from pipeline.metrics import PipelineMetrics
from pipeline.ts.point import series_key
from pipeline.ts.store import read_durable
from pipeline.worker.ts_stage import TSStage

pytestmark = pytest.mark.integration


def _dead_letters(settings: Settings, want: int) -> list[Message]:
    assert settings.kafka.bootstrap_servers is not None
    letters: list[Message] = []
    with open_consumer(
        settings.kafka.bootstrap_servers, f"dl-{settings.kafka.topic_namespace}"
    ) as consumer:
        consumer.subscribe([settings.topic("deadletter")])
        for _ in range(300):
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                letters.append(msg)
                if len(letters) >= want:
                    break
    return letters


def test_a_series_no_block_can_carry_is_dead_lettered_and_the_rest_of_the_flush_is_written(
    topics: Settings, tmp_path: Path
) -> None:
    settings = topics
    bootstrap = settings.kafka.bootstrap_servers
    assert bootstrap is not None
    good = series_key("cpu", "host-1", {"dc": "a"})
    huge = series_key("cpu", "host-2", {"blob": "x" * 70_000})  # past the doors' checks

    async def run() -> tuple[dict[int, int], int]:
        producer = AsyncProducer(bootstrap)
        try:
            stage = TSStage(settings, PipelineMetrics(), producer)
            token = stage.offsets.hold(0, 42, 6)
            groups = {good: [([1, 2, 3], [1.0, 2.0, 3.0])], huge: [([1, 2, 3], [9.0, 9.0, 9.0])]}
            stage.buffer.add_grouped(groups, token)
            await stage.flush(FlushReason.MANUAL)
            return stage.offsets.committable(), stage.dead_letters.count
        finally:
            producer.close()

    committable, dead = asyncio.run(run())
    assert committable == {0: 42}, "both series' points are settled: offsets may move"
    assert dead == 1
    blocks = settings.topic("ts.blocks")
    timestamps, values = read_durable(bootstrap, blocks, tmp_path / "s", good, 0, 10)
    assert (timestamps.tolist(), values.tolist()) == ([1, 2, 3], [1.0, 2.0, 3.0])
    assert read_durable(bootstrap, blocks, tmp_path / "s", huge, 0, 10)[0].size == 0
    [letter] = _dead_letters(settings, 1)
    headers = dict(cast("list[tuple[str, bytes]]", letter.headers() or []))
    assert headers[REASON].startswith(b"series key is 70")
    assert headers[SOURCE_TOPIC] == settings.topic("ts.points").encode()
    assert letter.key() == huge.encode()
    assert orjson.loads(letter.value() or b"") == {
        "timestamps_ms": [1, 2, 3],
        "values": [9.0, 9.0, 9.0],
    }
