"""A vector shard reopened after a crash: its snapshot plus the partition up to the commit.

The operations topic holds the state; a shard whose snapshot is older than the committed
offset replays the operations after the snapshot's offset and must end with exactly the
index a model applying every operation in offset order describes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import TopicPartition

from pipeline.config import Settings
from pipeline.kafka.clients import Producer
from pipeline.kafka.consumer import commit_offset, open_consumer
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.vectors.buffer import VectorBatch
from pipeline.vectors.index import VectorIndex
from pipeline.vectors.ops import OpType, VectorOp, encode_op_frame, encode_op_json
from pipeline.vectors.shard import ShardStore, new_index
from tests.fixtures.broker import MakeSettings

pytestmark = pytest.mark.integration

DIM = 4
CAP = 6
"""``max_total_vectors``: one frame below carries more distinct pks than this."""

Model = dict[str, VectorOp]


@pytest.fixture
def ops_settings(make_settings: MakeSettings) -> Settings:
    settings = make_settings(
        vector_auto_buffer={
            "dimension": DIM,
            "space": "l2",
            "max_total_vectors": CAP,
            "max_vectors_per_buffer": 3,
        }
    )
    assert settings.kafka.bootstrap_servers
    specs = [spec for spec in load_specs() if spec.name == "vectors.ops"]
    apply_topics(settings.kafka.bootstrap_servers, settings, specs, partitions_override=2)
    return settings


def _add(pk: str, value: float, op: OpType = OpType.ADD) -> VectorOp:
    return VectorOp(op, pk, np.full(DIM, value, dtype=np.float32), {"v": value})


def _remove(pk: str) -> VectorOp:
    return VectorOp(OpType.REMOVE, pk, None, {})


def _workload() -> list[tuple[bytes, list[VectorOp]]]:
    """Records in offset order with the operations each carries (none: a bad record)."""
    wide = [_add(f"w{i}", 100.0 + i) for i in range(CAP + 4)]
    return [
        (encode_op_json(_add("a", 1.0)), [_add("a", 1.0)]),
        (encode_op_json(_add("b", 2.0)), [_add("b", 2.0)]),
        (encode_op_json(_add("c", 3.0)), [_add("c", 3.0)]),
        (encode_op_frame([_add("d", 4.0), _add("e", 5.0)], DIM), [_add("d", 4.0), _add("e", 5.0)]),
        # -- the snapshot below covers the records above --
        (encode_op_json(_add("a", 1.5, OpType.UPDATE)), [_add("a", 1.5, OpType.UPDATE)]),
        (encode_op_json(_remove("b")), [_remove("b")]),
        (b"{not a vector operation", []),
        (encode_op_frame(wide, DIM), wide),
        (encode_op_frame([_remove("w3"), _add("b", 2.5)], DIM), [_remove("w3"), _add("b", 2.5)]),
        (encode_op_json(_add("c", 3.5, OpType.UPDATE)), [_add("c", 3.5, OpType.UPDATE)]),
        # -- committed up to here; the record below is not covered by the commit --
        (encode_op_json(_remove("a")), [_remove("a")]),
    ]


def _model(records: list[tuple[bytes, list[VectorOp]]], end: int) -> Model:
    state: Model = {}
    for _, ops in records[:end]:
        for op in ops:
            if op.op is OpType.REMOVE:
                state.pop(op.pk, None)
            else:
                state[op.pk] = op
    return state


def _produce(settings: Settings, partition: int, records: list[bytes]) -> None:
    assert settings.kafka.bootstrap_servers
    topic = settings.topic("vectors.ops")
    with Producer({"bootstrap.servers": settings.kafka.bootstrap_servers}) as producer:
        for i, value in enumerate(records):
            producer.produce(topic, value, key=f"k{i}".encode(), partition=partition)
        assert producer.flush(30) == 0


def _commit(settings: Settings, group: str, partition: int, offset: int) -> None:
    assert settings.kafka.bootstrap_servers
    with open_consumer(settings.kafka.bootstrap_servers, group) as consumer:
        commit_offset(consumer, TopicPartition(settings.topic("vectors.ops"), partition, offset))


def _store(settings: Settings, group: str, root: Path) -> ShardStore:
    assert settings.kafka.bootstrap_servers
    return ShardStore(
        settings.vector_auto_buffer,
        bootstrap=settings.kafka.bootstrap_servers,
        topic=settings.topic("vectors.ops"),
        group=group,
        root=root,
    )


def _assert_index_is(index: VectorIndex, model: Model) -> None:
    assert index.pks() == set(model)
    for pk, op in model.items():
        got = index.get(pk)
        assert got is not None
        assert op.vector is not None
        np.testing.assert_array_equal(got[0], op.vector)
        assert got[1] == op.metadata


def test_shard_with_an_older_snapshot_replays_to_the_committed_offset_in_offset_order(
    ops_settings: Settings, tmp_path: Path
) -> None:
    records = _workload()
    _produce(ops_settings, 0, [value for value, _ in records])
    snapshot_at, committed = 4, len(records) - 1
    group = f"{ops_settings.worker.app_id}-vectors"
    store = _store(ops_settings, group, tmp_path / "shards")
    # The snapshot a worker wrote before it crashed: the state of the first four records.
    snapshot = new_index(ops_settings.vector_auto_buffer)
    upserts = list(_model(records, snapshot_at).values())
    snapshot.apply(VectorBatch(upserts, [], [], len(upserts)))
    snapshot.save(store.directory(0), extra={"next_offset": snapshot_at})
    _commit(ops_settings, group, 0, committed)

    shard = store.open(0)
    assert (shard.next_offset, shard.applied_offset, shard.snapshot_offset) == (committed,) * 3
    want = _model(records, committed)
    assert {"a", "b"} <= want.keys()  # the last record, removing "a", is not replayed
    assert "w3" not in want
    _assert_index_is(shard.index, want)

    # A store whose group committed nothing keeps the snapshot as it is, replaying nothing.
    fresh = _store(ops_settings, f"{group}-other", tmp_path / "shards").open(0)
    assert fresh.next_offset == snapshot_at
    _assert_index_is(fresh.index, _model(records, snapshot_at))


def test_shard_without_a_snapshot_is_rebuilt_from_the_start_of_its_partition(
    ops_settings: Settings, tmp_path: Path
) -> None:
    records = _workload()
    _produce(ops_settings, 1, [value for value, _ in records])
    group = f"{ops_settings.worker.app_id}-vectors"
    _commit(ops_settings, group, 1, len(records))
    store = _store(ops_settings, group, tmp_path / "shards")
    shard = store.open(1)
    assert shard.next_offset == len(records)
    _assert_index_is(shard.index, _model(records, len(records)))
    store.snapshot(shard, shard.next_offset)
    reopened = store.open(1)  # the snapshot covers the commit: nothing to replay
    assert reopened.snapshot_offset == len(records)
    _assert_index_is(reopened.index, _model(records, len(records)))
    assert store.open(0).index.pks() == set()  # the other partition holds nothing
