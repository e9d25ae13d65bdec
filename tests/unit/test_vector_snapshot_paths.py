"""Vector index snapshots that a crash or a tamperer left behind, and the index's own edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from pipeline.errors import ConfigError, InvalidArgument, ThemisError
from pipeline.vectors.buffer import VectorBatch
from pipeline.vectors.index import VectorIndex
from pipeline.vectors.ops import OpType, VectorOp
from pipeline.vectors.snapshot import INDEX_FILE, current_snapshot, read_state, write_snapshot

pytestmark = pytest.mark.unit

DIM = 4


def _index(pks: list[str]) -> VectorIndex:
    index = VectorIndex(
        dimension=DIM, space="l2", m=8, ef_construction=32, ef_search=16, initial_capacity=8
    )
    ops = [
        VectorOp(OpType.ADD, pk, np.full(DIM, i, dtype=np.float32), {"i": i})
        for i, pk in enumerate(pks)
    ]
    index.apply(VectorBatch(ops, [], [], len(ops)))
    return index


def _state_file(directory: Path) -> Path:
    return current_snapshot(directory) / "state.json"


def test_constructor_names_the_bad_space_or_parameter() -> None:
    with pytest.raises(InvalidArgument, match="space must be one of cosine, l2, ip; got 'hamming'"):
        VectorIndex(dimension=DIM, space="hamming", m=8, ef_construction=8, ef_search=8)
    with pytest.raises(InvalidArgument, match="dimension=0 initial_capacity=10000 m=1"):
        VectorIndex(dimension=0, space="l2", m=1, ef_construction=8, ef_search=8)


def test_capacity_grows_past_the_initial_slots_and_k_zero_finds_nothing() -> None:
    assert _index([]).search(np.zeros(DIM, dtype=np.float32), 3) == []
    index = _index([f"pk{i}" for i in range(12)])
    assert (index.dimension, index.space) == (DIM, "l2")
    assert index.get("absent") is None
    assert index.live_count() == 12
    assert index.capacity() >= 12 > 8
    assert index.search(np.zeros(DIM, dtype=np.float32), 0) == []
    assert [hit.pk for hit in index.search(np.zeros(DIM, dtype=np.float32), 2)] == ["pk0", "pk1"]


def test_loading_a_directory_without_a_snapshot_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"no vector index snapshot in {tmp_path}"):
        VectorIndex.load(tmp_path)


def test_snapshot_left_renamed_but_not_current_by_a_crash_is_replaced(tmp_path: Path) -> None:
    _index(["a"]).save(tmp_path, extra={"n": 1})
    assert current_snapshot(tmp_path).name == "snap-1"
    leftover = tmp_path / "snap-2"  # renamed, then the crash came before CURRENT named it
    leftover.mkdir()
    (leftover / "half-written").write_bytes(b"x")
    (tmp_path / ".tmp-snap-7-dead").mkdir()
    _index(["a", "b"]).save(tmp_path, extra={"n": 2})
    assert current_snapshot(tmp_path).name == "snap-2"
    assert sorted(p.name for p in (tmp_path / "snap-2").iterdir()) == [INDEX_FILE, "state.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "snap-2"]
    loaded, extra = VectorIndex.load(tmp_path)
    assert (loaded.pks(), extra) == ({"a", "b"}, {"n": 2})


def test_current_naming_no_numbered_snapshot_starts_the_numbering_again(tmp_path: Path) -> None:
    (tmp_path / "CURRENT").write_text("hand-made\n", encoding="utf-8")
    _index(["a"]).save(tmp_path, extra={})
    assert (tmp_path / "CURRENT").read_text(encoding="utf-8") == "snap-1\n"
    assert VectorIndex.load(tmp_path)[0].pks() == {"a"}


def test_tampered_snapshots_are_refused_with_a_reason(tmp_path: Path) -> None:
    _index(["a", "b"]).save(tmp_path, extra={})
    state_file = _state_file(tmp_path)
    state = orjson.loads(state_file.read_bytes())

    state_file.write_bytes(orjson.dumps(state | {"format": 99}))
    with pytest.raises(ThemisError, match="has format 99; this version reads 1: rebuild"):
        VectorIndex.load(tmp_path)

    state_file.write_bytes(orjson.dumps(state | {"pks": [*state["pks"], ["ghost", 999, {}]]}))
    with pytest.raises(ThemisError, match="pk 'ghost' has label 999, which the index file"):
        VectorIndex.load(tmp_path)

    state_file.write_bytes(b"{not json")
    with pytest.raises(ThemisError, match="is unreadable"):
        read_state(state_file.parent)

    state_file.write_bytes(orjson.dumps(state))
    (state_file.parent / INDEX_FILE).write_bytes(b"")
    with pytest.raises(ThemisError, match=f"snapshot {state_file.parent} is unreadable"):
        VectorIndex.load(tmp_path)


def test_a_snapshot_whose_writer_fails_leaves_the_previous_one_current(tmp_path: Path) -> None:
    _index(["a"]).save(tmp_path, extra={"n": 1})

    def failing(tmp: Path) -> dict[str, object]:
        (tmp / INDEX_FILE).write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_snapshot(tmp_path, failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "snap-1"]
    assert VectorIndex.load(tmp_path)[1] == {"n": 1}


def test_a_snapshot_of_another_dimension_or_space_names_the_setting(tmp_path: Path) -> None:
    _index(["a"]).save(tmp_path, extra={})
    with pytest.raises(ConfigError, match=r"vector_auto_buffer\.dimension is 8 but the snapshot"):
        VectorIndex.load(tmp_path, dimension=8)
    with pytest.raises(ConfigError, match=r"vector_auto_buffer\.space is 'cosine' but"):
        VectorIndex.load(tmp_path, space="cosine")
