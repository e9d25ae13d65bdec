"""``ingest``: a folder of ``.md`` / ``.txt`` files into the vector path, resumably.

Each file is chunked (:mod:`pipeline.rag.chunking`), embedded in batches
(:mod:`pipeline.rag.embedding`) and sent as ADD operations in binary frames
(:meth:`pipeline.vectors.producer.VectorProducer.send_many`); the producer is
flushed, so every operation is acknowledged by Kafka, before the run is recorded.

Resuming
    A state file (default ``<worker.data_dir>/rag/ingest-state.json``) records, per
    file (absolute path), its SHA-256, its ``source`` and the pks sent for it, plus
    the embedder name and chunk sizes. A later run over the same path

    - skips a file whose content, source, embedder and chunk sizes are unchanged;
    - re-sends every chunk of a changed file (ADD is an upsert) and REMOVEs the pks
      of its chunks that no longer exist;
    - REMOVEs every pk of a recorded file under the path that is gone from disk.

    The state is written atomically (temporary file, fsync, rename) after each
    producer flush, every :data:`CHECKPOINT_CHUNKS` chunks and at the end. A crash
    in between re-sends at most the work since the last checkpoint, which is
    harmless: an ADD of the same pk and vector changes nothing.

Scope
    A run over a folder owns the recorded files under that folder; a run over one
    file owns that file. Files recorded from other paths are left alone.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

import orjson

from pipeline.config import Settings
from pipeline.errors import ConfigError, ThemisError
from pipeline.rag.chunking import (
    DEFAULT_MAX_CHARS,
    DEFAULT_OVERLAP,
    SUFFIXES,
    Chunk,
    chunk_document,
)
from pipeline.rag.embedding import Embedder, HashingEmbedder
from pipeline.vectors.ops import OpType, VectorOp

__all__ = [
    "CHECKPOINT_CHUNKS",
    "EMBED_BATCH",
    "STATE_FORMAT",
    "IngestReport",
    "VectorSink",
    "default_state_path",
    "ingest",
    "ingest_files",
]

STATE_FORMAT: Final = 1
EMBED_BATCH: Final = 64
"""Chunks embedded (and sent) together."""
CHECKPOINT_CHUNKS: Final = 2000
"""Flush the producer and write the state at least this often (chunks)."""


class VectorSink(Protocol):
    """Where operations go: :class:`~pipeline.vectors.producer.VectorProducer` or a test fake."""

    def send_many(self, ops: Iterable[VectorOp]) -> int:
        """Send operations (order kept per pk); returns how many."""
        ...

    def flush(self) -> None:
        """Return once every operation sent is durable; raise otherwise."""
        ...


@dataclass(frozen=True)
class IngestReport:
    """What one run did; ``seconds`` is wall-clock time of the whole run."""

    files_seen: int
    files_skipped_unchanged: int
    files_ingested: int
    files_deleted: int
    chunks_sent: int
    chunks_removed: int
    seconds: float
    state_path: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _FileRecord:
    sha256: str
    source: str
    fingerprint: str
    """Embedder name and chunk sizes the file's vectors were made with."""
    pks: list[str]


@dataclass
class _State:
    files: dict[str, _FileRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> _State:
        """The recorded state; an unreadable one is an error, a missing one is empty."""
        try:
            raw = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ThemisError(
                f"ingest state {path} is unreadable ({exc}): delete it to re-ingest everything"
            ) from None
        if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
            raise ThemisError(
                f"ingest state {path} has an unknown format: delete it to re-ingest everything"
            )
        try:
            files = {
                name: _FileRecord(
                    str(body["sha256"]),
                    str(body["source"]),
                    str(body["fingerprint"]),
                    [str(pk) for pk in body["pks"]],
                )
                for name, body in raw["files"].items()
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise ThemisError(
                f"ingest state {path} is malformed ({exc!r}): delete it to re-ingest everything"
            ) from None
        return cls(files)

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old state or the new one, never half."""
        body = orjson.dumps(
            {
                "format": STATE_FORMAT,
                "files": {name: asdict(record) for name, record in sorted(self.files.items())},
            },
            option=orjson.OPT_INDENT_2,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        if sys.platform != "win32":
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def default_state_path(settings: Settings) -> Path:
    """``<worker.data_dir>/rag/ingest-state.json``."""
    return settings.worker.data_dir / "rag" / "ingest-state.json"


def _files_under(path: Path) -> tuple[Path, list[Path]]:
    """``(root, files)``: chunkable files under ``path`` (hidden ones skipped), sorted.

    A symbolic link is followed only when it stays inside ``path``: a link out of the
    folder (to ``/etc``, to a home directory) is skipped, never read.
    """
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise ThemisError(f"{path} is neither a file nor a folder: give a .md/.txt file or folder")
    root = path.resolve()
    files = [
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and p.resolve().is_relative_to(root)
    ]
    return path, sorted(files)


class _Progress:
    """A one-line ``\\r`` progress bar on a text stream (stderr)."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.started = time.monotonic()

    def show(self, done: int, chunks: int) -> None:
        if self.stream is None:
            return
        width = 30
        filled = width * done // self.total
        elapsed = time.monotonic() - self.started
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} files, "
            f"{chunks} chunks, {elapsed:.1f} s"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()


def ingest(
    path: Path | str,
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    progress: bool = True,
    state_path: Path | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
) -> IngestReport:
    """Ingest ``path`` (a file or folder) into the vector operations topic of ``settings``.

    ``embedder`` defaults to :class:`~pipeline.rag.embedding.HashingEmbedder` at the
    index dimension (``vector_auto_buffer.dimension``); another embedder must have
    that dimension (:class:`~pipeline.errors.ConfigError` otherwise). ``progress``
    draws a bar on stderr. The topic must exist (``themis topics apply``).
    """
    from pipeline.vectors.producer import VectorProducer

    dimension = settings.vector_auto_buffer.dimension
    embedder = embedder if embedder is not None else HashingEmbedder(dimension)
    if embedder.dimension != dimension:
        raise ConfigError(
            f"the embedder {embedder.name} makes {embedder.dimension}-dimensional vectors but "
            f"features.vector_auto_buffer.dimension is {dimension}: set the dimension to "
            f"{embedder.dimension} (on a new index) or pick an embedder of {dimension}"
        )
    with VectorProducer(settings) as producer:
        return ingest_files(
            Path(path),
            producer,
            embedder,
            state_path=state_path or default_state_path(settings),
            progress=sys.stderr if progress else None,
            max_chars=max_chars,
            overlap=overlap,
        )


def ingest_files(
    path: Path,
    sink: VectorSink,
    embedder: Embedder,
    *,
    state_path: Path,
    progress: TextIO | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
) -> IngestReport:
    """The work of :func:`ingest` against any :class:`VectorSink` (tests pass a fake)."""
    started = time.monotonic()
    path = path.resolve()
    root, files = _files_under(path)
    fingerprint = f"{embedder.name}|max_chars={max_chars}|overlap={overlap}"
    state = _State.load(state_path)
    run = _Run(sink, embedder, state, state_path)
    bar = _Progress(len(files), progress)
    skipped = 0
    ingested: list[str] = []
    try:
        for done, file in enumerate(files, 1):
            key = str(file)
            source = file.relative_to(root).as_posix()
            data = file.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            old = state.files.get(key)
            if (
                old is not None
                and old.sha256 == digest
                and old.source == source
                and old.fingerprint == fingerprint
            ):
                skipped += 1
            else:
                chunks = chunk_document(
                    data.decode("utf-8", errors="replace"),
                    source,
                    max_chars=max_chars,
                    overlap=overlap,
                )
                run.replace_file(
                    key, _FileRecord(digest, source, fingerprint, [c.pk for c in chunks]), chunks
                )
                ingested.append(key)
            bar.show(done, run.chunks_sent)
        present = {str(f) for f in files}
        deleted = [
            key
            for key in state.files
            if key not in present and (key == str(path) or Path(key).is_relative_to(path))
        ]
        for key in deleted:
            run.forget_file(key)
        run.checkpoint()
    finally:
        bar.close()
    return IngestReport(
        files_seen=len(files),
        files_skipped_unchanged=skipped,
        files_ingested=len(ingested),
        files_deleted=len(deleted),
        chunks_sent=run.chunks_sent,
        chunks_removed=run.chunks_removed,
        seconds=round(time.monotonic() - started, 3),
        state_path=str(state_path),
    )


class _Run:
    """Sends one run's operations and moves state forward only past flushed ones."""

    def __init__(
        self, sink: VectorSink, embedder: Embedder, state: _State, state_path: Path
    ) -> None:
        self.sink = sink
        self.embedder = embedder
        self.state = state
        self.state_path = state_path
        self.chunks_sent = 0
        self.chunks_removed = 0
        self._unflushed = 0
        self._pending: list[tuple[str, _FileRecord | None]] = []

    def replace_file(self, key: str, record: _FileRecord, chunks: list[Chunk]) -> None:
        """Upsert every chunk of a (new or changed) file; remove its vanished pks."""
        for batch in _batches(chunks, EMBED_BATCH):
            vectors = self.embedder.embed([c.embedding_text for c in batch])
            self.sink.send_many(
                VectorOp(OpType.ADD, c.pk, vectors[i], c.metadata) for i, c in enumerate(batch)
            )
            self.chunks_sent += len(batch)
            self._unflushed += len(batch)
        old = self.state.files.get(key)
        keep = set(record.pks)
        gone = [pk for pk in (old.pks if old else []) if pk not in keep]
        self._remove(gone)
        self._pending.append((key, record))
        if self._unflushed >= CHECKPOINT_CHUNKS:
            self.checkpoint()

    def forget_file(self, key: str) -> None:
        """Remove every pk of a file that is gone."""
        self._remove(self.state.files[key].pks)
        self._pending.append((key, None))

    def _remove(self, pks: list[str]) -> None:
        if pks:
            self.sink.send_many(VectorOp(OpType.REMOVE, pk, None, {}) for pk in pks)
            self.chunks_removed += len(pks)
            self._unflushed += len(pks)

    def checkpoint(self) -> None:
        """Flush the sink, then record what it made durable."""
        self.sink.flush()
        for key, record in self._pending:
            if record is None:
                self.state.files.pop(key, None)
            else:
                self.state.files[key] = record
        self._pending.clear()
        self._unflushed = 0
        self.state.save(self.state_path)


def _batches(items: list[Chunk], size: int) -> Iterator[list[Chunk]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
