"""Chunking, the hashing embedder and the resumable ingest state, without a broker."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

import numpy as np
import orjson
import pytest

import pipeline.rag
from pipeline.rag import HashingEmbedder, chunk_document, ingest_files
from pipeline.rag.chunking import Chunk
from pipeline.vectors import OpType, VectorOp

pytestmark = pytest.mark.unit

GUIDE = """# Kafka Guide

Kafka stores records in topics.

## Topics

A topic has partitions.

Each partition is an ordered log.

```
# a comment in code, not a heading
```

### Compaction

Compaction keeps the last record per key.

## Consumers

Consumers read partitions in groups.
"""


def test_markdown_is_cut_at_headings_and_chunks_carry_their_heading_path() -> None:
    chunks = chunk_document(GUIDE, "guide/kafka.md")
    assert [c.metadata["heading"] for c in chunks] == [
        "Kafka Guide",
        "Kafka Guide > Topics",
        "Kafka Guide > Topics > Compaction",
        "Kafka Guide > Consumers",
    ]
    assert [c.pk for c in chunks] == [f"guide/kafka.md#{i}" for i in range(4)]
    topics = chunks[1]
    assert topics.text.startswith("A topic has partitions.\n\nEach partition is an ordered log.")
    assert "# a comment in code, not a heading" in topics.text
    for i, chunk in enumerate(chunks):
        assert chunk.metadata["source"] == "guide/kafka.md"
        assert chunk.metadata["title"] == "Kafka Guide"
        assert chunk.metadata["chunk"] == i
        assert chunk.metadata["chars"] == len(chunk.text)
    assert chunks[2].embedding_text == (
        "Kafka Guide > Kafka Guide > Topics > Compaction\nCompaction keeps the last record per key."
    )


def test_long_paragraphs_are_cut_into_overlapping_windows_within_max_chars() -> None:
    words = " ".join(f"w{i}" for i in range(400))
    chunks = chunk_document(words, "notes.txt", max_chars=200, overlap=40)
    assert len(chunks) > 5
    assert all(len(c.text) <= 200 for c in chunks)
    for first, second in pairwise(chunks):
        shared = set(first.text.split()) & set(second.text.split())
        assert len(shared) >= 3  # about 40 characters of overlap
    covered = {w for c in chunks for w in c.text.split()}
    assert covered == set(words.split())
    assert chunks[0].metadata["title"] == "notes"
    assert chunks[0].metadata["heading"] == ""


def test_short_paragraphs_are_packed_together_up_to_max_chars() -> None:
    text = "\n\n".join(f"Paragraph {i} says something short." for i in range(20))
    chunks = chunk_document(text, "a.txt", max_chars=120, overlap=0)
    assert all(len(c.text) <= 120 for c in chunks)
    assert all(c.text.count("Paragraph") >= 2 for c in chunks[:-1])
    assert sum(c.text.count("Paragraph") for c in chunks) == 20


def test_chunking_rejects_overlap_not_below_max_chars() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_document("text", "a.txt", max_chars=100, overlap=100)


def test_hashing_embeddings_are_unit_vectors_equal_across_calls_and_processes() -> None:
    texts = ["Kafka brokers replicate partitions", "", "sourdough bread"]
    embedder = HashingEmbedder(128)
    first = embedder.embed(texts)
    assert first.dtype == np.float32
    assert first.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(first, HashingEmbedder(128).embed(texts))
    code = (
        "import sys; from pipeline.rag import HashingEmbedder; "
        "sys.stdout.buffer.write(HashingEmbedder(128).embed(['Kafka brokers replicate "
        "partitions']).tobytes())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    np.testing.assert_array_equal(np.frombuffer(other, dtype=np.float32), first[0])
    assert not np.array_equal(HashingEmbedder(128, seed=1).embed(texts[:1]), first[:1])


def test_similar_texts_are_closer_than_unrelated_texts() -> None:
    embedder = HashingEmbedder(768)
    kafka, kafka_too, bread = embedder.embed(
        [
            "Kafka brokers store topic partitions and replicate them to followers",
            "Each Kafka topic partition is replicated from the leader broker to followers",
            "Knead the sourdough bread dough and let it rise overnight before baking",
        ]
    )
    assert float(kafka @ kafka_too) > 0.3
    assert abs(float(kafka @ bread)) < 0.15
    assert float(kafka @ kafka_too) > float(kafka @ bread) + 0.2


class FakeSink:
    """Records operations; ``flush`` moves them to ``durable`` (or fails when told to)."""

    def __init__(self) -> None:
        self.sent: list[VectorOp] = []
        self.durable: list[VectorOp] = []
        self.fail_flush = False

    def send_many(self, ops: Iterable[VectorOp]) -> int:
        batch = list(ops)
        self.sent += batch
        return len(batch)

    def flush(self) -> None:
        if self.fail_flush:
            raise RuntimeError("broker gone")
        self.durable += self.sent
        self.sent = []

    def live(self) -> dict[str, VectorOp]:
        state: dict[str, VectorOp] = {}
        for op in self.durable:
            if op.op is OpType.REMOVE:
                state.pop(op.pk, None)
            else:
                state[op.pk] = op
        return state


def _corpus(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# A\n\nalpha one\n\n## A2\n\nalpha two\n")
    (root / "b.txt").write_text("bravo\n\nbravo again")
    (root / "sub" / "c.md").write_text("# C\n\ncharlie\n\n## C2\n\ncharlie two\n\n## C3\n\nthree\n")
    (root / "ignored.rst").write_text("not chunked")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "d.md").write_text("# hidden\n\nskipped")


def test_rerun_skips_unchanged_resends_changed_and_removes_vanished_chunks(
    tmp_path: Path,
) -> None:
    docs, state = tmp_path / "docs", tmp_path / "state" / "ingest.json"
    _corpus(docs)
    sink, embedder = FakeSink(), HashingEmbedder(64)

    first = ingest_files(docs, sink, embedder, state_path=state)
    assert (first.files_seen, first.files_ingested, first.files_skipped_unchanged) == (3, 3, 0)
    assert first.chunks_sent == 2 + 1 + 3
    assert set(sink.live()) == {
        "a.md#0",
        "a.md#1",
        "b.txt#0",
        "sub/c.md#0",
        "sub/c.md#1",
        "sub/c.md#2",
    }
    assert sink.live()["sub/c.md#1"].metadata["heading"] == "C > C2"

    again = ingest_files(docs, sink, embedder, state_path=state)
    assert (again.files_skipped_unchanged, again.files_ingested, again.chunks_sent) == (3, 0, 0)
    assert again.chunks_removed == 0

    (docs / "sub" / "c.md").write_text("# C\n\ncharlie rewritten\n")  # 3 chunks -> 1
    (docs / "b.txt").unlink()
    (docs / "e.md").write_text("echo")
    third = ingest_files(docs, sink, embedder, state_path=state)
    assert third.files_seen == 3
    assert third.files_skipped_unchanged == 1  # a.md
    assert third.files_ingested == 2  # c.md changed, e.md new
    assert third.files_deleted == 1
    assert third.chunks_sent == 1 + 1
    assert third.chunks_removed == 2 + 1  # c.md#1, c.md#2, b.txt#0
    assert set(sink.live()) == {"a.md#0", "a.md#1", "sub/c.md#0", "e.md#0"}
    assert sink.live()["sub/c.md#0"].metadata["text"] == "charlie rewritten"
    recorded = orjson.loads(state.read_bytes())["files"]
    assert sorted(Path(k).name for k in recorded) == ["a.md", "c.md", "e.md"]


def test_state_is_not_advanced_when_the_flush_fails(tmp_path: Path) -> None:
    docs, state = tmp_path / "docs", tmp_path / "ingest.json"
    _corpus(docs)
    sink, embedder = FakeSink(), HashingEmbedder(64)
    sink.fail_flush = True
    with pytest.raises(RuntimeError, match="broker gone"):
        ingest_files(docs, sink, embedder, state_path=state)
    assert not state.exists()
    sink.fail_flush = False
    report = ingest_files(docs, sink, embedder, state_path=state)
    assert report.files_ingested == 3


def test_a_new_embedder_re_sends_every_file(tmp_path: Path) -> None:
    docs, state = tmp_path / "docs", tmp_path / "ingest.json"
    _corpus(docs)
    sink = FakeSink()
    ingest_files(docs, sink, HashingEmbedder(64), state_path=state)
    report = ingest_files(docs, sink, HashingEmbedder(64, seed=7), state_path=state)
    assert (report.files_ingested, report.files_skipped_unchanged) == (3, 0)
    assert report.chunks_removed == 0


def test_a_single_file_run_leaves_other_recorded_files_alone(tmp_path: Path) -> None:
    docs, state = tmp_path / "docs", tmp_path / "ingest.json"
    _corpus(docs)
    sink, embedder = FakeSink(), HashingEmbedder(64)
    ingest_files(docs / "sub", sink, embedder, state_path=state)
    report = ingest_files(docs / "a.md", sink, embedder, state_path=state)
    assert (report.files_seen, report.files_ingested, report.files_deleted) == (1, 1, 0)
    assert set(sink.live()) == {"c.md#0", "c.md#1", "c.md#2", "a.md#0", "a.md#1"}


def test_progress_bar_is_drawn_with_carriage_returns(tmp_path: Path) -> None:
    import io

    docs = tmp_path / "docs"
    _corpus(docs)
    stream = io.StringIO()
    ingest_files(
        docs, FakeSink(), HashingEmbedder(64), state_path=tmp_path / "s.json", progress=stream
    )
    out = stream.getvalue()
    assert out.count("\r") == 3
    assert "3/3 files, 6 chunks" in out


def test_public_names_match_all() -> None:
    public = {name for name in vars(pipeline.rag) if not name.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(pipeline.rag, n))}
    assert sorted(pipeline.rag.__all__) == pipeline.rag.__all__
    assert set(pipeline.rag.__all__) == public - modules
    assert isinstance(chunk_document("x", "x.txt")[0], Chunk)


def test_symbolic_links_out_of_the_folder_are_not_followed(tmp_path: Path) -> None:
    docs, outside = tmp_path / "docs", tmp_path / "private"
    _corpus(docs)
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nThe password is hunter2.\n")
    (docs / "leak.md").symlink_to(outside / "secret.md")
    (docs / "leakdir").symlink_to(outside, target_is_directory=True)
    (docs / "inside.md").symlink_to(docs / "a.md")
    sink = FakeSink()
    ingest_files(docs, sink, HashingEmbedder(64), state_path=tmp_path / "s.json")
    texts = " ".join(str(op.metadata.get("text", "")) for op in sink.durable)
    assert "hunter2" not in texts
    assert any(pk.startswith("inside.md#") for pk in sink.live())
