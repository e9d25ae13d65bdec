"""A worker's block stores of the partitions it owns, against the session broker, in process."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.bench.ts_writes import AckedProducer
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.kafka.clients import Producer
from pipeline.kafka.producer import durable_producer_config
from pipeline.ts.block import encode_blocks
from pipeline.ts.owned_blocks import OwnedBlocks, Readiness, same_partition_count
from pipeline.ts.point import series_key
from pipeline.ts.store import BlockStore, repartition_blocks
from pipeline.ts.writer import block_partition

pytestmark = pytest.mark.integration


def _keys_in(partition: int, count: int) -> list[str]:
    keys = (series_key("m", f"e{i}", {"t": "x"}) for i in range(10_000))
    return [key for key in keys if block_partition(key, 2) == partition][:count]


def _produce(
    bootstrap: str, topic: str, keys: list[str], points: int, block: int, first: int = 0
) -> int:
    ts = np.arange(first, first + points, dtype=np.int64)
    blocks = 0
    with AckedProducer(bootstrap, topic) as producer:
        for key in keys:
            for start in range(0, points, block):
                cut = slice(start, start + block)
                for b in encode_blocks(key, ts[cut], ts[cut] * 0.5):
                    partition = block_partition(key, 2)
                    producer.produce(b.block_id.encode(), b.to_bytes(), partition=partition)
                    blocks += 1
        producer.flush_acked()
    return blocks


def test_owned_partitions_catch_up_answer_exactly_and_stop_answering_once_revoked(
    topics: Settings, tmp_path: Path
) -> None:
    bootstrap = topics.kafka.bootstrap_servers
    assert bootstrap is not None
    topic = topics.topic("ts.blocks")
    assert same_partition_count(bootstrap, topics.topic("ts.points"), topic) == 2
    with pytest.raises(ConfigError, match="both must exist with the same count"):
        same_partition_count(bootstrap, topics.topic("no.such"), topic)
    zero, one = _keys_in(0, 3), _keys_in(1, 2)
    blocks = _produce(bootstrap, topic, zero + one, 2_000, 10)  # 200 blocks a series

    store = OwnedBlocks(bootstrap, topic, tmp_path / "ts-blocks")
    try:
        store.assign({0, 1})
        # Right after the assignment the store cannot hold 1,000 blocks yet.
        assert store.wait_current(0, 0.0) is Readiness.BEHIND
        assert store.wait_current(0, 30.0) is Readiness.CURRENT
        assert store.wait_current(1, 30.0) is Readiness.CURRENT
        assert store.owned() == [0, 1]
        assert store.ready() == [0, 1]
        with ThreadPoolExecutor(8) as pool:  # queries read the partition's end side by side
            answers = set(pool.map(lambda n: store.wait_current(n % 2, 10.0), range(64)))
        assert answers == {Readiness.CURRENT}
        got = store.points(0, zero[1], 100, 199)
        assert got is not None
        assert got[0].tolist() == list(range(100, 200))
        assert got[1].tolist() == [t * 0.5 for t in range(100, 200)]
        assert store.series_matching("m", None, {"t": "x"}) == sorted(zero + one)
        done = {c.partition: c for c in store.catch_ups}
        assert sum(c.blocks for c in done.values()) == blocks
        assert {c.from_offset for c in done.values()} == {0}
        assert done[0].to_dict()["to_offset"] == 600

        store.revoke({1})
        assert store.owned() == [0]
        assert store.wait_current(1, 1.0) is Readiness.NOT_OWNED
        assert store.points(1, one[0], 0, 10) is None
        assert store.series_matching("m", None, {}) == sorted(zero)
        assert store.wait_current(0, 5.0) is Readiness.CURRENT  # the other one goes on
    finally:
        store.close()

    _produce(bootstrap, topic, zero[:1], 20, 10, 2_000)  # two blocks more while 0 is unowned
    again = OwnedBlocks(bootstrap, topic, tmp_path / "ts-blocks")
    try:
        again.assign({0})
        assert again.wait_current(0, 30.0) is Readiness.CURRENT
        deadline = time.monotonic() + 10
        while not again.catch_ups and time.monotonic() < deadline:
            time.sleep(0.01)
        (resumed,) = again.catch_ups
        assert (resumed.from_offset, resumed.to_offset, resumed.blocks) == (600, 602, 2)
        got = again.points(0, zero[0], 0, 2**62)
        assert got is not None
        assert got[0].tolist() == list(range(2_020))
    finally:
        again.close()


def test_blocks_written_before_to_other_partitions_are_moved_home_once(
    topics: Settings, tmp_path: Path
) -> None:
    bootstrap = topics.kafka.bootstrap_servers
    assert bootstrap is not None
    topic = topics.topic("ts.blocks")
    keys = _keys_in(0, 2) + _keys_in(1, 2)
    ts = np.arange(30, dtype=np.int64)
    misplaced = 0
    with AckedProducer(bootstrap, topic) as producer:  # as before: each by its id's hash
        for key in keys:
            for start in (0, 10, 20):
                (block,) = encode_blocks(key, ts[start : start + 10], ts[start : start + 10] * 2.0)
                partition = block_partition(block.block_id, 2)
                misplaced += partition != block_partition(key, 2)
                producer.produce(block.block_id.encode(), block.to_bytes(), partition=partition)
        producer.flush_acked()
    assert misplaced > 0
    assert repartition_blocks(bootstrap, topic) == misplaced
    assert repartition_blocks(bootstrap, topic) == 0  # every block has a copy at home now
    store = OwnedBlocks(bootstrap, topic, tmp_path / "ts-blocks")
    try:
        store.assign({0, 1})
        for key in keys:
            partition = block_partition(key, 2)
            assert store.wait_current(partition, 30.0) is Readiness.CURRENT
            got = store.points(partition, key, 0, 100)
            assert got is not None
            assert got[1].tolist() == [t * 2.0 for t in range(30)], key
    finally:
        store.close()


def test_a_batch_the_store_fails_to_write_is_read_again_not_skipped(
    topics: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap = topics.kafka.bootstrap_servers
    assert bootstrap is not None
    topic = topics.topic("ts.blocks")
    (key,) = _keys_in(0, 1)
    _produce(bootstrap, topic, [key], 500, 10)
    failures: list[int] = []
    store_messages = BlockStore.store_messages

    def fail_once(self: BlockStore, *args: Any, **kwargs: Any) -> int:
        if not failures:
            failures.append(1)
            raise sqlite3.OperationalError("database or disk is full")
        return store_messages(self, *args, **kwargs)

    monkeypatch.setattr(BlockStore, "store_messages", fail_once)
    store = OwnedBlocks(bootstrap, topic, tmp_path / "ts-blocks")
    try:
        store.assign({0})
        assert store.wait_current(0, 30.0) is Readiness.CURRENT
        assert failures == [1]
        got = store.points(0, key, 0, 2**62)
        assert got is not None
        assert got[0].tolist() == list(range(500))
    finally:
        store.close()


def test_tombstones_and_undecodable_records_on_the_blocks_topic_are_skipped_by_every_reader(
    topics: Settings, tmp_path: Path
) -> None:
    bootstrap = topics.kafka.bootstrap_servers
    assert bootstrap is not None
    topic = topics.topic("ts.blocks")
    key = _keys_in(0, 1)[0]
    (block,) = encode_blocks(key, np.arange(5, dtype=np.int64), np.arange(5) * 1.5)
    written_to = block_partition(block.block_id, 2)  # as before: by its id's hash
    with Producer(durable_producer_config(bootstrap)) as producer:
        for partition in (0, 1):
            producer.produce(topic, None, b"a-tombstone", partition=partition)
            producer.produce(topic, b"TGBK, then not a block", b"garbage", partition=partition)
        producer.produce(topic, block.to_bytes(), block.block_id.encode(), partition=written_to)
        assert producer.flush(30) == 0

    store = BlockStore(tmp_path / "blocks.sqlite")
    try:
        assert store.catch_up(bootstrap, topic) == 1
        assert store.series_keys() == [key]
        ts, vs = store.query(key, 0, 10)
    finally:
        store.close()
    assert ts.tolist() == [0, 1, 2, 3, 4]
    assert vs.tolist() == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert repartition_blocks(bootstrap, topic) == int(written_to != block_partition(key, 2))
