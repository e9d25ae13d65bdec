"""The HNSW vector index and its readers-writer lock."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import VectorAutoBufferSettings
from pipeline.errors import ConfigError, InvalidRecord
from pipeline.vectors.buffer import VectorAutoBuffer, VectorBatch
from pipeline.vectors.index import SearchHit, VectorIndex
from pipeline.vectors.ops import OpType, VectorOp
from pipeline.vectors.rwlock import ReadWriteLock

pytestmark = pytest.mark.unit

DIM = 16


def make_index(
    *, dim: int = DIM, space: str = "l2", capacity: int = 1000, ef_search: int = 64
) -> VectorIndex:
    return VectorIndex(
        dimension=dim,
        space=space,
        m=16,
        ef_construction=200,
        ef_search=ef_search,
        initial_capacity=capacity,
        threads=2,
    )


def rand(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def clustered(n: int, dim: int, *, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32) * 4
    which = rng.integers(0, clusters, n)
    return (centers[which] + rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32)


def embedding_like(n: int, dim: int, *, seed: int, latent: int = 32) -> np.ndarray:
    """Clustered vectors of low intrinsic dimension, like text embeddings.

    Isotropic Gaussian clusters in all 64 dimensions are close to the worst case
    for HNSW: hnswlib itself reaches only ~0.91 recall@10 on them at ef=64.
    """
    rng = np.random.default_rng(seed)
    projection = np.random.default_rng(0).standard_normal((latent, dim))
    centers = np.random.default_rng(1).standard_normal((20, latent)) * 3
    z = centers[rng.integers(0, 20, n)] + rng.standard_normal((n, latent))
    return (z @ projection + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)


Upsert = tuple[str, np.ndarray] | tuple[str, np.ndarray, dict[str, Any]]


def batch(
    upserts: Sequence[Upsert] = (), removes: Sequence[str] = (), *, op: OpType = OpType.ADD
) -> VectorBatch:
    ops = []
    for pk, vector, *metadata in upserts:
        ops.append(VectorOp(op, pk, vector, dict(metadata[0]) if metadata else {}))
    return VectorBatch(ops, list(removes), [], len(ops) + len(removes))


def adds(vectors: np.ndarray, prefix: str = "p", start: int = 0) -> VectorBatch:
    return batch([(f"{prefix}{start + i}", v) for i, v in enumerate(vectors)])


def hnsw_slots(index: VectorIndex) -> int:
    return int(index._index.get_current_count())


# -- search basics -------------------------------------------------------------


@pytest.mark.parametrize("space", ["l2", "cosine", "ip"])
def test_search_finds_a_just_added_vector_first(space: str) -> None:
    index = make_index(space=space)
    vectors = rand(200)
    if space == "ip":  # nearest by inner product is itself only for unit vectors
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.apply(adds(vectors))

    hits = index.search(vectors[17], k=3)

    assert hits[0].pk == "p17"
    assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
    assert isinstance(hits[0].distance, float)
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)


def test_cosine_distance_is_one_minus_cosine_similarity() -> None:
    index = make_index(dim=2, space="cosine")
    index.apply(
        batch([("x", np.array([3.0, 0.0], np.float32)), ("d", np.array([1, 1], np.float32))])
    )

    hits = index.search(np.array([5.0, 0.0], np.float32), k=2)

    assert [(h.pk, round(h.distance, 5)) for h in hits] == [
        ("x", 0.0),
        ("d", round(1 - 0.5**0.5, 5)),
    ]


def test_search_returns_the_exact_nearest_with_their_metadata_and_squared_l2_distance() -> None:
    index = make_index()  # ef_search 64 over 50 vectors: the search is exhaustive
    vectors = rand(50)
    index.apply(batch([(f"p{i}", v, {"n": i}) for i, v in enumerate(vectors)]))
    query = rand(1, seed=1)[0]

    hits = index.search(query, k=5)

    squared = ((vectors.astype(np.float64) - query) ** 2).sum(axis=1)  # brute force
    nearest = np.argsort(squared)[:5].tolist()
    assert [(h.pk, h.metadata) for h in hits] == [(f"p{i}", {"n": i}) for i in nearest]
    assert [h.distance for h in hits] == pytest.approx(squared[nearest].tolist(), rel=1e-5)


def test_search_on_empty_index_returns_nothing() -> None:
    assert make_index().search(rand(1)[0], k=5) == []


def test_k_above_live_count_returns_every_live_vector_sorted() -> None:
    index = make_index()
    vectors = rand(7)
    index.apply(adds(vectors))
    index.apply(batch(removes=["p3"]))

    hits = index.search(vectors[0], k=100)

    assert sorted(h.pk for h in hits) == sorted(f"p{i}" for i in range(7) if i != 3)
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)


def test_query_of_wrong_dimension_is_refused_naming_the_vector() -> None:
    index = make_index()
    index.apply(adds(rand(3)))

    with pytest.raises(
        InvalidRecord, match=f"vector has {DIM - 1} dimensions; the index has {DIM}"
    ):
        index.search(np.zeros(DIM - 1, np.float32), k=1)


def test_larger_ef_returns_k_hits_and_at_least_as_good() -> None:
    index = make_index(ef_search=10)
    vectors = clustered(2000, DIM)
    index.apply(adds(vectors))
    query = vectors[5] + 0.1

    narrow = index.search(query, k=10)
    wide = index.search(query, k=10, ef=400)

    assert len(narrow) == len(wide) == 10
    assert sum(h.distance for h in wide) <= sum(h.distance for h in narrow) + 1e-4


# -- updates, removes, slots, capacity ------------------------------------------


def test_update_replaces_the_vector_and_the_old_one_is_not_returned() -> None:
    index = make_index()
    vectors = rand(50)
    index.apply(adds(vectors))
    new = vectors[40] + 10

    index.apply(batch([("p7", new, {"v": 2})], op=OpType.UPDATE))

    near_old = index.search(vectors[7], k=50)
    assert [h.pk for h in near_old].count("p7") == 1
    assert next(h for h in near_old if h.pk == "p7").distance > 1.0
    assert index.search(new, k=1)[0].pk == "p7"
    got = index.get("p7")
    assert got is not None
    assert np.allclose(got[0], new)
    assert got[1] == {"v": 2}
    assert index.live_count() == 50


def test_update_while_deleted_slots_exist_never_leaves_the_old_vector_behind() -> None:
    index = make_index()
    vectors = rand(20)
    index.apply(adds(vectors))
    index.apply(batch(removes=["p0", "p1", "p2"]))
    moved = vectors[10] * -5

    index.apply(batch([("p10", moved), ("new", vectors[0])]))

    hits = index.search(vectors[10], k=100)
    assert [h.pk for h in hits].count("p10") == 1
    assert next(h for h in hits if h.pk == "p10").distance > 1.0
    assert sorted(h.pk for h in hits) == sorted(index.pks())
    assert index.live_count() == 18
    assert hnsw_slots(index) == 22  # fresh slots: deleted ones are never overwritten


def test_removed_pk_is_never_returned() -> None:
    index = make_index()
    vectors = rand(100)
    index.apply(adds(vectors))

    index.apply(batch(removes=["p5", "p6", "missing"]))

    for query in (vectors[5], vectors[6]):
        pks = {h.pk for h in index.search(query, k=100)}
        assert "p5" not in pks
        assert "p6" not in pks
        assert len(pks) == 98
    assert index.get("p5") is None
    assert "p5" not in index.pks()


def test_remove_then_add_of_the_same_pk_in_later_batches_holds_the_new_vector() -> None:
    index = make_index()
    vectors = rand(10)
    index.apply(adds(vectors))
    index.apply(batch(removes=["p1"]))

    index.apply(batch([("p1", vectors[9] + 3)]))

    hits = index.search(vectors[9] + 3, k=10)
    assert hits[0].pk == "p1"
    assert [h.pk for h in hits].count("p1") == 1


def test_churn_is_compacted_so_slots_stay_within_about_twice_the_live_vectors() -> None:
    index = make_index(capacity=100)
    index.compact_min_dead = 50
    index.apply(adds(rand(100)))

    live = {f"p{i}": v for i, v in enumerate(rand(100))}
    for cycle in range(30):
        gone = sorted(live)[:10]
        fresh = rand(20, seed=cycle + 1)
        new = {f"n{cycle * 10 + i}": fresh[i] for i in range(10)}
        kept = sorted(set(live) - set(gone))[:10]
        moved = {pk: fresh[10 + i] for i, pk in enumerate(kept)}
        index.apply(batch(list({**new, **moved}.items()), removes=gone))
        for pk in gone:
            del live[pk]
        live |= new | moved
        assert hnsw_slots(index) <= 2 * len(live) + 50 + 20

    assert index.compactions >= 2
    assert index.pks() == set(live)
    for pk, vector in live.items():
        assert index.search(vector, k=1)[0] == SearchHit(pk, 0.0, {})


def test_every_live_vector_stays_findable_by_its_own_vector_under_churn() -> None:
    # Clustered vectors shared by several pks, updated and removed in batches of
    # random size: slot reuse (hnswlib's replace_deleted) left 1-7 of ~2,500 live
    # vectors unreachable in runs like this one, even with ef above the index size.
    rng = np.random.default_rng(5)
    pool = clustered(1_500, DIM, clusters=8)
    model: dict[str, np.ndarray] = {}
    index = make_index(space="cosine")
    pending: dict[str, np.ndarray | None] = {}
    for n in range(8_000):
        pk = f"p{int(rng.integers(0, 1_200))}"
        vector = None if rng.random() < 0.15 else pool[(n * 7) % 1_500]
        pending[pk] = vector
        if vector is None:
            model.pop(pk, None)
        else:
            model[pk] = vector
        if rng.random() < 1 / 200:
            upserts = [(p, v) for p, v in pending.items() if v is not None]
            index.apply(batch(upserts, removes=[p for p, v in pending.items() if v is None]))
            pending = {}
    upserts = [(p, v) for p, v in pending.items() if v is not None]
    index.apply(batch(upserts, removes=[p for p, v in pending.items() if v is None]))

    missing = [
        pk
        for pk, vector in model.items()
        if pk not in {h.pk for h in index.search(vector, k=50) if h.distance < 1e-4}
    ]
    assert missing == []
    assert index.pks() == set(model)


def test_capacity_grows_before_it_runs_out() -> None:
    index = make_index(capacity=10)
    vectors = rand(200)

    index.apply(adds(vectors[:25]))
    first = index.capacity()
    index.apply(adds(vectors[25:], start=25))

    assert first >= 25
    assert index.capacity() >= 200
    assert index.live_count() == 200
    assert index.search(vectors[199], k=1)[0].pk == "p199"


def test_memory_estimate_grows_with_capacity_and_metadata() -> None:
    index = make_index(capacity=10)
    empty = index.memory_bytes()
    index.apply(batch([(f"p{i}", v, {"text": "x" * 100}) for i, v in enumerate(rand(50))]))

    assert empty >= 10 * 4 * DIM
    assert index.memory_bytes() > empty + 50 * 100


def test_apply_refuses_pk_both_upserted_and_removed_without_changing_anything() -> None:
    index = make_index()
    index.apply(adds(rand(3)))

    with pytest.raises(ValueError, match="both upserts and removes"):
        index.apply(VectorBatch(adds(rand(1)).upserts, ["p0"], [], 2))
    with pytest.raises(ValueError, match="the index has dimension"):
        index.apply(batch([("x", np.zeros(DIM + 2, np.float32))], removes=["p1"]))

    assert index.pks() == {"p0", "p1", "p2"}


# -- filters --------------------------------------------------------------------


def test_filter_sees_pk_and_metadata_and_keeps_only_matches() -> None:
    index = make_index()
    vectors = rand(300)
    index.apply(batch([(f"p{i}", v, {"even": i % 2 == 0}) for i, v in enumerate(vectors)]))

    hits = index.search(vectors[1], k=10, filter=lambda pk, meta: bool(meta["even"]))

    assert len(hits) == 10
    assert all(h.metadata["even"] for h in hits)
    assert "p1" not in {h.pk for h in hits}


def test_selective_filter_returns_fewer_than_k_without_error() -> None:
    index = make_index()
    vectors = rand(300)
    index.apply(adds(vectors))
    wanted = {"p3", "p200"}

    hits = index.search(vectors[0], k=10, filter=lambda pk, meta: pk in wanted)

    assert {h.pk for h in hits} == wanted
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert hits[0].distance == pytest.approx(
        min(float(((vectors[int(p[1:])] - vectors[0]) ** 2).sum()) for p in wanted), rel=1e-4
    )


def test_filter_matching_nothing_returns_nothing() -> None:
    index = make_index()
    index.apply(adds(rand(30)))

    assert index.search(rand(1)[0], k=5, filter=lambda pk, meta: False) == []


# -- recall ---------------------------------------------------------------------


def test_recall_at_10_is_at_least_095_after_adds_updates_and_removes() -> None:
    dim, k = 64, 10
    rng = np.random.default_rng(7)
    vectors = embedding_like(2000, dim, seed=1)
    index = make_index(dim=dim, space="cosine", capacity=500)
    live: dict[str, np.ndarray] = {}
    for start in range(0, 2000, 250):
        index.apply(adds(vectors[start : start + 250], start=start))
        live.update({f"p{start + i}": v for i, v in enumerate(vectors[start : start + 250])})
    updated = [f"p{i}" for i in rng.choice(2000, 300, replace=False)]
    moved = embedding_like(300, dim, seed=2)
    index.apply(batch(list(zip(updated, moved, strict=True)), op=OpType.UPDATE))
    live.update(zip(updated, moved, strict=True))
    removed = [f"p{i}" for i in rng.choice(2000, 300, replace=False)]
    index.apply(batch(removes=removed))
    for pk in removed:
        live.pop(pk, None)
    extra = embedding_like(200, dim, seed=3)
    index.apply(adds(extra, prefix="x"))
    live.update({f"x{i}": v for i, v in enumerate(extra)})

    pks = list(live)
    matrix = np.stack([live[pk] for pk in pks])
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    queries = embedding_like(100, dim, seed=4)
    found = 0
    for query in queries:
        exact = np.argsort(1 - unit @ (query / np.linalg.norm(query)))[:k]
        truth = {pks[i] for i in exact}
        found += len(truth & {h.pk for h in index.search(query, k=k)})

    assert index.live_count() == len(live)
    assert found / (k * len(queries)) >= 0.95


# -- snapshots ------------------------------------------------------------------


def test_snapshot_round_trip_gives_identical_search_results_and_extra(tmp_path: Path) -> None:
    index = make_index(space="cosine", capacity=50)
    vectors = clustered(300, DIM)
    index.apply(batch([(f"p{i}", v, {"i": i}) for i, v in enumerate(vectors)]))
    index.apply(batch(removes=[f"p{i}" for i in range(0, 300, 7)]))
    extra = {"offsets": {"themis.vectors.ops": {"0": 1234, "1": 99}}, "note": "ü"}
    queries = clustered(20, DIM, seed=9)

    index.save(tmp_path / "snap", extra=extra)
    loaded, got_extra = VectorIndex.load(tmp_path / "snap", dimension=DIM, space="cosine")

    assert got_extra == extra
    assert loaded.pks() == index.pks()
    assert loaded.capacity() == index.capacity()
    for query in queries:
        assert loaded.search(query, k=10) == index.search(query, k=10)
    # The loaded index keeps working: removes, fresh labels and slot reuse.
    loaded.apply(batch([("p1", vectors[2])], removes=["p3"]))
    loaded.apply(batch([("new", vectors[0])]))
    assert loaded.search(vectors[2], k=2)[0].pk in {"p1", "p2"}
    assert loaded.get("p3") is None
    assert loaded.search(vectors[0], k=1)[0].pk in {"new"}


def test_a_compacted_index_saves_loads_and_keeps_applying(tmp_path: Path) -> None:
    index = make_index(capacity=10)
    index.compact_min_dead = 20
    vectors = rand(60)
    index.apply(adds(vectors))
    index.apply(batch(removes=[f"p{i}" for i in range(40)]))
    index.apply(adds(rand(1, seed=9), prefix="x"))
    assert index.compactions == 1
    assert hnsw_slots(index) == 21

    index.save(tmp_path, extra={})
    loaded, _ = VectorIndex.load(tmp_path)
    loaded.apply(adds(rand(5, seed=3), prefix="y"))

    assert loaded.pks() == {f"p{i}" for i in range(40, 60)} | {"x0"} | {f"y{i}" for i in range(5)}
    for i in range(40, 60):
        assert loaded.search(vectors[i], k=1)[0].pk == f"p{i}"


def test_save_replaces_the_previous_snapshot_and_keeps_one(tmp_path: Path) -> None:
    index = make_index()
    index.apply(adds(rand(10)))
    index.save(tmp_path, extra={"n": 1})
    index.apply(batch(removes=["p0"]))

    index.save(tmp_path, extra={"n": 2})

    loaded, extra = VectorIndex.load(tmp_path)
    assert extra == {"n": 2}
    assert "p0" not in loaded.pks()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "snap-2"]


def test_failed_save_leaves_the_previous_snapshot_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = make_index()
    index.apply(adds(rand(10)))
    index.save(tmp_path, extra={"n": 1})
    index.apply(adds(rand(5, seed=5), prefix="late"))

    def crash(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        index.save(tmp_path, extra={"n": 2})
    monkeypatch.undo()

    loaded, extra = VectorIndex.load(tmp_path)
    assert extra == {"n": 1}
    assert loaded.live_count() == 10
    index.save(tmp_path, extra={"n": 3})  # a later save overwrites the leftover snap-2
    assert VectorIndex.load(tmp_path)[1] == {"n": 3}


def test_load_refuses_a_snapshot_of_another_dimension_or_space(tmp_path: Path) -> None:
    index = make_index()
    index.apply(adds(rand(3)))
    index.save(tmp_path, extra={})

    with pytest.raises(ConfigError, match="dimension is 768 but the snapshot"):
        VectorIndex.load(tmp_path, dimension=768)
    with pytest.raises(ConfigError, match="space is 'cosine'"):
        VectorIndex.load(tmp_path, space="cosine")


def test_load_without_snapshot_raises_file_not_found(tmp_path: Path) -> None:
    assert not VectorIndex.has_snapshot(tmp_path)
    with pytest.raises(FileNotFoundError, match="no vector index snapshot"):
        VectorIndex.load(tmp_path)


# -- with the buffer ---------------------------------------------------------------


def test_buffered_add_then_remove_leaves_pk_absent_in_the_index() -> None:
    buffer = VectorAutoBuffer(VectorAutoBufferSettings(dimension=DIM))
    index = make_index()
    v = rand(3)
    buffer.add_many(
        [
            VectorOp(OpType.ADD, "a", v[0], {}),
            VectorOp(OpType.ADD, "b", v[1], {}),
            VectorOp(OpType.REMOVE, "a", None, {}),
            VectorOp(OpType.UPDATE, "unknown", v[2], {"upsert": True}),
        ]
    )
    drained = buffer.flush()
    assert drained is not None

    index.apply(drained)

    assert index.pks() == {"b", "unknown"}
    assert index.search(v[2], k=1)[0] == SearchHit("unknown", 0.0, {"upsert": True})


# -- concurrency ----------------------------------------------------------------


def test_concurrent_searches_during_apply_and_compaction_never_fail_or_return_removed_pks() -> None:
    index = make_index(capacity=100)
    index.compact_min_dead = 100
    base = clustered(500, DIM)
    index.apply(adds(base, prefix="keep"))
    removed: set[str] = set()
    removed_lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            for round_ in range(40):
                fresh = clustered(50, DIM, seed=100 + round_)
                index.apply(adds(fresh, prefix=f"t{round_}-"))
                if round_:
                    gone = [f"t{round_ - 1}-{i}" for i in range(50)]
                    index.apply(batch(removes=gone))
                    with removed_lock:
                        removed.update(gone)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                with removed_lock:
                    gone_before = set(removed)
                query = base[rng.integers(0, 500)] + 0.05
                use_filter = rng.random() < 0.3
                hits = index.search(
                    query,
                    k=20,
                    filter=(lambda pk, meta: not pk.startswith("keep")) if use_filter else None,
                )
                leaked = {h.pk for h in hits} & gone_before
                assert not leaked, f"search returned removed pks {leaked}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert index.live_count() == 550
    assert index.compactions >= 2
    assert index.search(base[7], k=1)[0].pk == "keep7"


# -- readers-writer lock --------------------------------------------------------


def test_rwlock_lets_readers_overlap() -> None:
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=5)
    passed: list[bool] = []

    def read() -> None:
        with lock.read():
            inside.wait()  # only passes if all three readers are inside at once
            passed.append(True)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)

    assert passed == [True, True, True]


def test_rwlock_writer_excludes_readers_and_other_writers() -> None:
    lock = ReadWriteLock()
    watched = _watched(lock)
    state = {"readers": 0, "writers": 0}
    guard = threading.Lock()
    violations: list[str] = []

    def enter(kind: str) -> None:
        with guard:
            state[kind] += 1
            if state["writers"] > 1 or (state["writers"] and state["readers"]):
                violations.append(str(state))

    def leave(kind: str) -> None:
        with guard:
            state[kind] -= 1

    def work(kind: str) -> None:
        for _ in range(200):
            with lock.write() if kind == "writers" else lock.read():
                enter(kind)
                time.sleep(0.0001)  # hold it a while, so that the others must wait
                leave(kind)

    threads = [threading.Thread(target=work, args=("writers",)) for _ in range(2)]
    threads += [threading.Thread(target=work, args=("readers",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert not any(t.is_alive() for t in threads)
    assert violations == []
    assert watched.waits > 0, "no thread ever waited: the run proved no exclusion"


class _CountingCondition(threading.Condition):
    """The lock's condition, counting the threads in ``wait``: a thread waits there only
    when the lock is not available to it, so ``waiting`` says who is blocked."""

    def __init__(self) -> None:
        super().__init__(threading.Lock())
        self.waiting = 0
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting += 1  # the condition's lock is held here
        self.waits += 1
        try:
            return super().wait(timeout)
        finally:
            self.waiting -= 1


def _watched(lock: ReadWriteLock) -> _CountingCondition:
    condition = _CountingCondition()
    lock._cond = condition  # before any thread uses the lock
    return condition


def _until_blocked(condition: _CountingCondition, threads: int) -> None:
    """Return once ``threads`` threads wait for the lock (a state, not a delay)."""
    deadline = time.monotonic() + 10
    while condition.waiting < threads:
        assert time.monotonic() < deadline, f"{condition.waiting} of {threads} threads blocked"
        time.sleep(0.001)


def _start(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_rwlock_writer_blocks_while_a_reader_holds_it_and_enters_once_it_leaves() -> None:
    lock = ReadWriteLock()
    watched = _watched(lock)
    entered = threading.Event()

    def write() -> None:
        with lock.write():
            entered.set()

    with lock.read():
        writer = _start(write)
        _until_blocked(watched, 1)
        assert not entered.is_set()
    assert entered.wait(timeout=10)
    writer.join(timeout=10)


def test_rwlock_a_held_write_blocks_readers_and_writers_and_the_waiting_writer_goes_first() -> None:
    lock = ReadWriteLock()
    watched = _watched(lock)
    order: list[str] = []

    def read() -> None:
        with lock.read():
            order.append("reader")

    def write() -> None:
        with lock.write():
            order.append("writer")

    with lock.write():
        threads = [_start(read), _start(write)]
        _until_blocked(watched, 2)
        assert order == []
        order.append("first writer leaves")
    for thread in threads:
        thread.join(timeout=10)

    # Writers are preferred: the reader that waited longer still goes after the writer.
    assert order == ["first writer leaves", "writer", "reader"]


def test_rwlock_a_waiting_writer_holds_back_new_readers_so_readers_cannot_starve_it() -> None:
    lock = ReadWriteLock()
    watched = _watched(lock)
    order: list[str] = []

    def read() -> None:
        with lock.read():
            order.append("late reader")

    def write() -> None:
        with lock.write():
            order.append("writer")

    with lock.read():  # an early reader holds the lock
        writer = _start(write)
        _until_blocked(watched, 1)
        late = _start(read)  # the lock is only read-held, yet this reader must wait
        _until_blocked(watched, 2)
        assert order == []
        order.append("early reader leaves")
    writer.join(timeout=10)
    late.join(timeout=10)

    assert order == ["early reader leaves", "writer", "late reader"]
