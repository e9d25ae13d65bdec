"""The vector auto buffer: coalescing per pk, triggers, hard cap, counters, threads."""

from __future__ import annotations

import dataclasses
import random
import re
import threading

import numpy as np
import pytest

from pipeline.config import VectorAutoBufferSettings
from pipeline.errors import BufferOverflow, ThemisError
from pipeline.ingest.buffer_core import FlushReason
from pipeline.vectors.buffer import (
    ENTRY_OVERHEAD_BYTES,
    VectorAutoBuffer,
    VectorBatch,
    VectorBufferStats,
)
from pipeline.vectors.ops import OpType, VectorOp
from tests.fixtures.support import FakeClock

pytestmark = pytest.mark.unit

DIM = 4


def make_buffer(
    clock: FakeClock | None = None,
    *,
    max_vectors_per_buffer: int = 1000,
    flush_interval_ms: int = 1000,
    max_memory_bytes: int = 64 * 1024 * 1024,
    max_total_vectors: int = 100_000,
) -> VectorAutoBuffer:
    settings = VectorAutoBufferSettings(
        max_vectors_per_buffer=max_vectors_per_buffer,
        flush_interval_ms=flush_interval_ms,
        max_memory_bytes=max_memory_bytes,
        max_total_vectors=max_total_vectors,
        dimension=DIM,
    )
    return VectorAutoBuffer(settings, clock=clock or FakeClock())


def vec(x: float) -> np.ndarray:
    return np.full(DIM, x, dtype=np.float32)


def add(pk: str, x: float = 1.0, **metadata: object) -> VectorOp:
    return VectorOp(OpType.ADD, pk, vec(x), dict(metadata))


def update(pk: str, x: float = 1.0, **metadata: object) -> VectorOp:
    return VectorOp(OpType.UPDATE, pk, vec(x), dict(metadata))


def remove(pk: str, **metadata: object) -> VectorOp:
    return VectorOp(OpType.REMOVE, pk, None, dict(metadata))


def drained(buffer: VectorAutoBuffer) -> VectorBatch:
    batch = buffer.flush()
    assert batch is not None
    return batch


# -- multi-operation buffering and coalescing ------------------------------------


def test_add_update_remove_of_different_pks_are_all_kept() -> None:
    buffer = make_buffer()
    buffer.add(add("a", 1.0, k=1))
    buffer.add(update("b", 2.0))
    buffer.add(remove("c"))

    batch = drained(buffer)

    assert batch.upserts == [add("a", 1.0, k=1), update("b", 2.0)]
    assert batch.removes == ["c"]
    assert batch.ops_in == 3
    assert batch.vectors == 3


def test_add_then_remove_leaves_pk_absent() -> None:
    buffer = make_buffer()
    buffer.add(add("a"))
    buffer.add(remove("a"))

    batch = drained(buffer)

    assert batch.upserts == []
    assert batch.removes == ["a"]
    assert batch.ops_in == 2


def test_remove_then_add_same_pk_keeps_new_vector() -> None:
    buffer = make_buffer()
    buffer.add(remove("a"))
    buffer.add(add("a", 7.0, v=2))

    batch = drained(buffer)

    assert batch.removes == []
    assert batch.upserts == [add("a", 7.0, v=2)]


def test_update_then_update_keeps_last_vector_and_metadata() -> None:
    buffer = make_buffer()
    buffer.add(update("a", 1.0, v=1, old=True))
    buffer.add(update("a", 2.0, v=2))

    batch = drained(buffer)

    assert batch.upserts == [update("a", 2.0, v=2)]  # metadata replaced, not merged


def test_update_of_unknown_pk_is_kept_as_an_upsert() -> None:
    buffer = make_buffer()
    buffer.add(update("never-added", 3.0))

    batch = drained(buffer)

    assert batch.upserts == [update("never-added", 3.0)]
    assert batch.removes == []


def test_add_update_remove_add_of_one_pk_keeps_the_last_add() -> None:
    buffer = make_buffer()
    buffer.add_many([add("a", 1.0), update("a", 2.0), remove("a"), add("a", 4.0, final=True)])

    batch = drained(buffer)

    assert batch.upserts == [add("a", 4.0, final=True)]
    assert batch.removes == []
    assert batch.ops_in == 4


def test_batch_lists_pks_in_order_of_their_last_operation() -> None:
    buffer = make_buffer()
    for op in [add("a"), add("b"), remove("c"), update("a", 2.0), add("d"), add("c")]:
        buffer.add(op)

    batch = drained(buffer)

    assert [op.pk for op in batch.upserts] == ["b", "a", "d", "c"]


def test_pending_returns_the_coalesced_operation() -> None:
    buffer = make_buffer()
    buffer.add(add("a", 1.0))
    buffer.add(update("a", 5.0))

    assert buffer.pending("a") == update("a", 5.0)
    assert buffer.pending("b") is None
    buffer.flush()
    assert buffer.pending("a") is None


def test_tokens_count_operations_before_coalescing() -> None:
    buffer = make_buffer()
    buffer.add(add("a"), token="t1")
    buffer.add_many([update("a"), add("b"), remove("a")], token="t2")
    buffer.add(add("c"))  # no token: only in ops_in

    batch = drained(buffer)

    assert batch.tokens == [("t1", 1), ("t2", 3)]
    assert batch.ops_in == 5


def test_add_many_of_nothing_records_nothing() -> None:
    buffer = make_buffer()

    assert buffer.add_many([], token="t") is None
    assert buffer.flush() is None
    assert buffer.stats().vectors_buffered == 0


def test_vector_of_wrong_dimension_is_refused() -> None:
    buffer = make_buffer()
    op = VectorOp(OpType.ADD, "a", np.zeros(DIM + 1, dtype=np.float32), {})

    with pytest.raises(ValueError, match=f"vector has {DIM + 1} dimensions; the buffer has {DIM}"):
        buffer.add(op)
    with pytest.raises(ValueError, match="dimensions"):
        buffer.add_many([add("b"), op])
    assert buffer.stats().current_buffer_size == 0


# -- triggers -------------------------------------------------------------------


def test_size_trigger_drains_when_distinct_pks_reach_the_limit() -> None:
    buffer = make_buffer(max_vectors_per_buffer=3)
    assert buffer.add(add("a")) is None
    assert buffer.add(add("b")) is None
    assert buffer.add(update("a", 2.0)) is None  # same pk: still two pks

    batch = buffer.add(remove("c"), token="t")

    assert batch is not None
    assert [op.pk for op in batch.upserts] == ["b", "a"]
    assert batch.removes == ["c"]
    assert batch.tokens == [("t", 1)]
    assert buffer.flush_reason_counts()["size"] == 1
    assert buffer.stats().current_buffer_size == 0


def test_add_many_past_the_size_limit_drains_everything_once() -> None:
    buffer = make_buffer(max_vectors_per_buffer=3)

    batch = buffer.add_many([add(f"p{i}") for i in range(5)])

    assert batch is not None
    assert len(batch.upserts) == 5
    assert buffer.flush_reason_counts()["size"] == 1


def test_time_trigger_fires_when_oldest_operation_reaches_interval() -> None:
    clock = FakeClock()
    buffer = make_buffer(clock, flush_interval_ms=1000)
    assert buffer.due() is None  # empty
    buffer.add(add("a"))
    clock.now += 0.6
    buffer.add(update("a", 2.0))  # replaces the op, not its age
    buffer.add(add("b"))
    clock.now += 0.399
    assert buffer.due() is None

    clock.now += 0.001
    batch = buffer.due()

    assert batch is not None
    assert [op.pk for op in batch.upserts] == ["a", "b"]
    assert buffer.flush_reason_counts()["time"] == 1
    assert buffer.due() is None


def test_time_trigger_measures_age_from_first_op_after_a_drain() -> None:
    clock = FakeClock()
    buffer = make_buffer(clock, flush_interval_ms=1000)
    buffer.add(add("a"))
    clock.now += 5
    buffer.flush()
    buffer.add(add("b"))
    clock.now += 0.5

    assert buffer.due() is None
    clock.now += 0.5
    assert buffer.due() is not None


def test_memory_trigger_drains_when_bytes_pass_the_limit() -> None:
    one = ENTRY_OVERHEAD_BYTES + 1 + 4 * DIM  # pk "a".."c", no metadata
    buffer = make_buffer(max_memory_bytes=3 * one)
    assert buffer.add(add("a")) is None
    assert buffer.add(add("b")) is None
    assert buffer.add(add("c")) is None
    assert buffer.stats().current_buffer_memory == 3 * one

    batch = buffer.add(remove("d"))

    assert batch is not None
    assert len(batch.upserts) == 3
    assert batch.removes == ["d"]
    assert buffer.flush_reason_counts()["memory"] == 1
    assert buffer.stats().current_buffer_memory == 0


def test_memory_counts_vector_pk_metadata_and_overhead_and_follows_coalescing() -> None:
    buffer = make_buffer()
    buffer.add(add("pk-1", lang="en"))  # metadata {"lang":"en"} is 13 bytes
    assert buffer.stats().current_buffer_memory == ENTRY_OVERHEAD_BYTES + 4 + 13 + 4 * DIM

    buffer.add(remove("pk-1"))  # a remove holds no vector

    assert buffer.stats().current_buffer_memory == ENTRY_OVERHEAD_BYTES + 4


def test_manual_flush_drains_everything_and_empty_flush_returns_none() -> None:
    buffer = make_buffer()
    assert buffer.flush() is None
    buffer.add(add("a"))

    batch = buffer.flush()

    assert batch is not None
    assert batch.upserts == [add("a")]
    assert buffer.flush() is None
    assert buffer.flush_reason_counts()["manual"] == 1
    assert buffer.stats().flush_count == 1


def test_flush_counts_the_reason_given() -> None:
    buffer = make_buffer()
    buffer.add(add("a"))

    buffer.flush(reason=FlushReason.REVOKE)

    assert buffer.flush_reason_counts() == {
        "size": 0,
        "time": 0,
        "memory": 0,
        "manual": 0,
        "revoke": 1,
    }


# -- hard cap --------------------------------------------------------------------


def test_hard_cap_refuses_a_new_pk_and_keeps_nothing() -> None:
    buffer = make_buffer(max_total_vectors=2)
    buffer.add(add("a"))
    buffer.add(add("b"))

    with pytest.raises(BufferOverflow) as info:
        buffer.add(add("c"))

    assert info.value.buffer_size == 2
    assert info.value.retriable
    assert isinstance(info.value, ThemisError)
    assert "features.vector_auto_buffer.max_total_vectors=2" in str(info.value)
    assert buffer.pending("c") is None
    assert buffer.stats().vectors_buffered == 2


def test_hard_cap_still_accepts_operations_on_buffered_pks() -> None:
    buffer = make_buffer(max_total_vectors=2)
    buffer.add(add("a"))
    buffer.add(add("b"))

    buffer.add(remove("a"))

    assert buffer.pending("a") == remove("a")


def test_hard_cap_refuses_the_whole_add_many_call() -> None:
    buffer = make_buffer(max_total_vectors=3)
    buffer.add(add("a"))

    with pytest.raises(BufferOverflow) as info:
        buffer.add_many([update("a", 9.0), add("b"), add("c"), add("d")], token="t")

    assert info.value.buffer_size == 1
    assert buffer.pending("a") == add("a")
    assert buffer.pending("b") is None
    batch = drained(buffer)
    assert batch.tokens == []
    assert batch.ops_in == 1


# -- statistics ------------------------------------------------------------------


def test_stats_have_exactly_the_roadmap_fields_in_order() -> None:
    names = [f.name for f in dataclasses.fields(VectorBufferStats)]

    assert names == [
        "vectors_buffered",
        "vectors_flushed",
        "flush_count",
        "current_buffer_size",
        "current_buffer_memory",
        "compression_type",
        "last_flush_time",
    ]


def test_stats_count_operations_flushes_and_durable_vectors() -> None:
    buffer = make_buffer()
    before = buffer.stats()
    assert before.to_dict() == {
        "vectors_buffered": 0,
        "vectors_flushed": 0,
        "flush_count": 0,
        "current_buffer_size": 0,
        "current_buffer_memory": 0,
        "compression_type": "none",
        "last_flush_time": None,
    }
    buffer.add_many([add("a"), update("a"), add("b")])
    batch = drained(buffer)
    buffer.record_durable(batch.vectors)
    buffer.add(add("c"))

    stats = buffer.stats()

    assert stats.vectors_buffered == 4
    assert stats.vectors_flushed == 2
    assert stats.flush_count == 1
    assert stats.current_buffer_size == 1
    assert stats.current_buffer_memory == ENTRY_OVERHEAD_BYTES + 1 + 4 * DIM
    assert stats.compression_type == "none"
    assert stats.last_flush_time is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stats.last_flush_time)
    assert list(stats.to_dict()) == [f.name for f in dataclasses.fields(VectorBufferStats)]


def test_record_durable_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="vectors must be >= 0"):
        make_buffer().record_durable(-1)


# -- threads ----------------------------------------------------------------------


def test_concurrent_adds_account_for_every_op_and_match_a_sequential_model() -> None:
    """Each thread owns its pks; the last op per pk (highest seq) must survive coalescing."""
    threads, ops_per_thread, pks_per_thread = 8, 1500, 40
    buffer = make_buffer(max_vectors_per_buffer=64, max_total_vectors=10_000)
    batches: list[VectorBatch] = []
    batches_lock = threading.Lock()
    expected: dict[str, VectorOp] = {}
    start = threading.Barrier(threads)

    def plan(worker: int) -> list[VectorOp]:
        rng = random.Random(worker)
        ops: list[VectorOp] = []
        for seq in range(ops_per_thread):
            pk = f"w{worker}-p{rng.randrange(pks_per_thread)}"
            kind = rng.choice([OpType.ADD, OpType.UPDATE, OpType.REMOVE])
            if kind is OpType.REMOVE:
                ops.append(remove(pk, seq=seq))
            else:
                ops.append(VectorOp(kind, pk, vec(float(seq)), {"seq": seq}))
        return ops

    plans = [plan(w) for w in range(threads)]
    for ops in plans:
        for op in ops:
            expected[op.pk] = op

    def run(worker: int) -> None:
        ops = plans[worker]
        start.wait()
        i = 0
        while i < len(ops):
            if i % 3 == 0:
                chunk = ops[i : i + 5]
                got = buffer.add_many(chunk, token=(worker, i))
                i += len(chunk)
            else:
                got = buffer.add(ops[i], token=(worker, i))
                i += 1
            if got is not None:
                with batches_lock:
                    batches.append(got)

    workers = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in workers)
    rest = buffer.flush()
    if rest is not None:
        batches.append(rest)

    total = threads * ops_per_thread
    assert sum(b.ops_in for b in batches) == total
    assert sum(n for b in batches for _, n in b.tokens) == total
    assert buffer.stats().vectors_buffered == total
    # Every op came with a token, so a batch must equal the coalescing of the ops
    # its tokens cover, and each op must be covered by exactly one batch.
    covered: set[tuple[int, int]] = set()
    holder: dict[str, VectorBatch] = {}
    for batch in batches:
        model: dict[str, VectorOp] = {}
        for token, n in batch.tokens:
            assert isinstance(token, tuple)
            worker, first = token
            for index in range(first, first + n):
                assert (worker, index) not in covered
                covered.add((worker, index))
                op = plans[worker][index]
                model.pop(op.pk, None)
                model[op.pk] = op
                if op is expected[op.pk]:
                    holder[op.pk] = batch
        assert batch.upserts == [op for op in model.values() if op.op is not OpType.REMOVE]
        assert batch.removes == [pk for pk, op in model.items() if op.op is OpType.REMOVE]
    assert len(covered) == total
    # The sequential model: the last op of each pk is in the batch that covers it.
    assert holder.keys() == expected.keys()
    for pk, op in expected.items():
        batch = holder[pk]
        if op.op is OpType.REMOVE:
            assert pk in batch.removes
        else:
            assert op in batch.upserts
