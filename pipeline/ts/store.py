"""The block store: queryable local state, a materialized view of the blocks topic.

Blocks live in SQLite, keyed by block id, together with the blocks-topic offsets
they were read up to (in the same transaction). ``catch_up`` consumes the topic
from there to its end, so the store can be rebuilt from Kafka at any time, and a
block replayed after a crash (same id) is stored once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from pipeline.errors import CorruptBlock
from pipeline.kafka.consumer import open_consumer, watermark_offsets
from pipeline.kafka.producer import TopicProducer
from pipeline.ts.block import decode_block
from pipeline.ts.buffer import sorted_last_wins
from pipeline.ts.writer import block_partition

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    block_id TEXT PRIMARY KEY,
    series_key TEXT NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    min_ts INTEGER NOT NULL,
    max_ts INTEGER NOT NULL,
    count INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS blocks_by_series ON blocks (series_key, min_ts, max_ts);
-- MAX(seq) at every insert_blocks: without it a scan of every block (10 ms at 12,000).
CREATE INDEX IF NOT EXISTS blocks_by_seq ON blocks (seq);
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS series_labels (
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    series_key TEXT NOT NULL,
    PRIMARY KEY (name, value, series_key)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS index_series_v2 AFTER INSERT ON blocks BEGIN
    INSERT OR IGNORE INTO series_labels
        SELECT '', json_extract(k, '$[0]'), k FROM (SELECT NEW.series_key AS k) WHERE %(ok)s
        UNION ALL SELECT ' ', json_extract(k, '$[1]'), k
            FROM (SELECT NEW.series_key AS k) WHERE %(ok)s
        UNION ALL SELECT 't' || j.key, j.value, v.k
            FROM (SELECT NEW.series_key AS k) AS v,
                json_each(CASE WHEN %(ok_v)s THEN v.k ELSE '[]' END, '$[2]') AS j
            WHERE j.type = 'text';
END;
DROP TRIGGER IF EXISTS index_series;
"""
_BACKFILL = """
INSERT OR IGNORE INTO series_labels
    SELECT '', json_extract(k, '$[0]'), k FROM (SELECT DISTINCT series_key AS k FROM blocks)
        WHERE %(ok)s
    UNION ALL SELECT ' ', json_extract(k, '$[1]'), k
        FROM (SELECT DISTINCT series_key AS k FROM blocks) WHERE %(ok)s
    UNION ALL SELECT 't' || j.key, j.value, v.k
        FROM (SELECT DISTINCT series_key AS k FROM blocks) AS v,
            json_each(CASE WHEN %(ok_v)s THEN v.k ELSE '[]' END, '$[2]') AS j
        WHERE j.type = 'text';
"""
_KEY_OK = (
    "CASE WHEN json_valid(k) THEN json_type(k) = 'array' AND json_type(k, '$[0]') = 'text' "
    "AND json_type(k, '$[1]') = 'text' ELSE 0 END"
)
"""Keys the index can read: ``[metric, entity, {tags}]``. A block under any other key is
stored and queried by that key as ever, and is just not in the index."""
_SCHEMA %= {"ok": _KEY_OK, "ok_v": _KEY_OK.replace("(k", "(v.k")}
_BACKFILL %= {"ok": _KEY_OK, "ok_v": _KEY_OK.replace("(k", "(v.k")}
_METRIC, _ENTITY = "", " "
"""The series index's names for a key's metric and entity; a tag's name is ``t<name>``,
so no tag name can be taken for either."""

Points = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]
"""``(timestamps_ms, values)``: int64 milliseconds and float64 values of equal length."""


@dataclass(frozen=True)
class SeriesSelector:
    """Which series a read wants: the exact parts the series index finds (``None``: any;
    :meth:`BlockStore.series_matching`), then ``keep(metric, entity, tags)`` over those,
    for what the index cannot answer (inequalities, regexes)."""

    metric: str | None
    entity: str | None
    tags: Mapping[str, str]
    keep: Callable[[str, str, dict[str, str]], bool]


@dataclass(frozen=True)
class SeriesPoints:
    """Points of one series in timestamp order (int64 milliseconds, float64 values)."""

    series_key: str
    timestamps: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.timestamps.size)

    def to_list(self) -> list[tuple[int, float]]:
        return list(zip(self.timestamps.tolist(), self.values.tolist(), strict=True))


def merge_last_wins(parts: list[Points]) -> Points:
    """Concatenate point sets in write order, sort by time, keep the last write per timestamp."""
    return sorted_last_wins([p[0] for p in parts], [p[1] for p in parts])


class BlockStore:
    """Blocks of every series, read from the blocks topic into ``path`` (SQLite)."""

    def __init__(self, path: Path, *, checkpoint_in_background: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._checkpointer: sqlite3.Connection | None = None
        if checkpoint_in_background:
            # A commit that crosses SQLite's automatic checkpoint copies the WAL file
            # into the database and fsyncs both while the writer waits (15 ms for a
            # 3 MB commit on an idle disk); the owner calls checkpoint() instead.
            self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(_SCHEMA)
        indexed = self._db.execute("SELECT 1 FROM series_labels LIMIT 1").fetchone()
        if indexed is None and self._db.execute("SELECT 1 FROM blocks LIMIT 1").fetchone():
            self._db.executescript(_BACKFILL)  # a store made before the index existed

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._db.close()  # the last connection checkpoints the WAL file as it closes

    def checkpoint(self) -> None:
        """Copy committed transactions from SQLite's WAL file into the database, on a
        connection of its own and without waiting for writers (a PASSIVE checkpoint):
        for a store opened with ``checkpoint_in_background``, from one thread at a time."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False
            )
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _seq(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM blocks").fetchone()
        return int(row[0])

    def catch_up(self, bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> int:
        """Read the blocks topic up to its current end; returns the number of new blocks."""
        group = f"themis-blockstore-{uuid.uuid4().hex}"
        with open_consumer(bootstrap, group, **{"fetch.max.bytes": 64 * 1024 * 1024}) as consumer:
            return self._catch_up(consumer, topic, timeout_s)

    def _catch_up(self, consumer: Consumer, topic: str, timeout_s: float) -> int:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        stored = dict(
            self._db.execute(
                "SELECT partition, next_offset FROM positions WHERE topic = ?", (topic,)
            ).fetchall()
        )
        ends: dict[int, int] = {}
        assignment = []
        for p in partitions:
            low, high = watermark_offsets(consumer, TopicPartition(topic, p))
            start = stored.get(p, OFFSET_BEGINNING)
            if (start if start >= 0 else low) < high:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, start))
        if not assignment:
            return 0
        consumer.assign(assignment)
        added = 0
        deadline = time.monotonic() + timeout_s
        positions = {tp.partition: tp.offset for tp in assignment}
        while ends and time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.5)
            for msg in batch:
                p, offset = msg.partition(), msg.offset()
                if msg.error() or p is None or offset is None:
                    continue
                positions[p] = offset + 1
                if p in ends and offset + 1 >= ends[p]:
                    del ends[p]
            if batch:
                added += self.store_messages(topic, batch, positions)
        return added

    def store_messages(
        self, topic: str, messages: Iterable[Message], positions: Mapping[int, int]
    ) -> int:
        """Store the blocks among ``messages`` (records of ``topic``) and ``positions``
        (partition -> next offset to read; negative ones are left out) in one transaction.

        A record that is no block (an error, no value, a block that does not decode) is
        skipped: the worker that wrote it counted it, and it never stops a rebuild.
        Returns the number of new blocks.
        """
        rows: list[BlockRow] = []
        for msg in messages:
            value = msg.value()
            if msg.error() or value is None:
                continue
            with contextlib.suppress(CorruptBlock):
                rows.append(block_row(value))
        at = {(topic, p): offset for p, offset in positions.items() if offset >= 0}
        return self.insert_rows(rows, positions=at)

    def query(self, series_key: str, start_ms: int, end_ms: int) -> Points:
        """Points of one series with ``start_ms <= t <= end_ms``, sorted, last write wins."""
        rows = self._db.execute(
            "SELECT data FROM blocks WHERE series_key = ? AND max_ts >= ? AND min_ts <= ? "
            "ORDER BY seq",
            (series_key, start_ms, end_ms),
        ).fetchall()
        parts = [decode_block(row[0]).points() for row in rows]
        ts, vs = merge_last_wins(parts)
        mask = (ts >= start_ms) & (ts <= end_ms)
        return ts[mask], vs[mask]

    def series_keys(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT series_key FROM blocks")]

    def series_matching(
        self, metric: str | None = None, entity: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[str]:  # fmt: skip
        """The keys of every stored series with this metric, entity and these tag values
        (each ``None`` or absent: any), from the series index, sorted."""
        wanted = [(_METRIC, metric), (_ENTITY, entity)]
        wanted += [(f"t{name}", value) for name, value in (tags or {}).items()]
        pairs = [(name, value) for name, value in wanted if value is not None]
        if not pairs:
            rows = self._db.execute("SELECT series_key FROM series_labels WHERE name = ''")
            return sorted(r[0] for r in rows)
        query = " INTERSECT ".join(
            "SELECT series_key FROM series_labels WHERE name = ? AND value = ?" for _ in pairs
        )
        args = [part for pair in pairs for part in pair]
        return sorted(r[0] for r in self._db.execute(query, args))

    def block_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0])

    def point_count(self) -> int:
        """Points over all blocks (a replayed point stored in two blocks counts twice)."""
        return int(self._db.execute("SELECT COALESCE(SUM(count), 0) FROM blocks").fetchone()[0])

    # -- written by a WAL replica (pipeline.replication.replica) ------------------------

    def insert_blocks(
        self, blocks: list[bytes], *, positions: dict[tuple[str, int], int] | None = None
    ) -> int:
        """Store ``blocks`` (verified block bytes) and ``positions`` in one transaction.

        Idempotent by block id: a block already stored is not stored again, so a
        replayed block keeps its first place in write order. ``positions`` maps
        ``(name, partition)`` to an integer kept beside the blocks (a WAL replica
        keeps its last applied LSN there). Raises :class:`CorruptBlock` (storing
        nothing) for a block that does not decode. Returns the number of new blocks.
        """
        return self.insert_rows([block_row(value) for value in blocks], positions=positions)

    def insert_rows(
        self, blocks: list[BlockRow], *, positions: dict[tuple[str, int], int] | None = None
    ) -> int:
        """:meth:`insert_blocks` of rows made by :func:`block_row` (a caller that holds a
        lock around the store makes them, decoding every block, before taking it)."""
        seq = self._seq()
        rows = [(*row[:7], seq + i, row[7]) for i, row in enumerate(blocks, 1)]
        self._db.execute("BEGIN")
        try:
            insert = "INSERT OR IGNORE INTO blocks VALUES (?,?,?,?,?,?,?,?,?)"
            added = max(0, self._db.executemany(insert, rows).rowcount)
            self._db.executemany(
                "INSERT OR REPLACE INTO positions VALUES (?, ?, ?)",
                [(name, part, value) for (name, part), value in (positions or {}).items()],
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return added

    def position(self, name: str, partition: int = 0) -> int | None:
        """The integer kept for ``(name, partition)`` by :meth:`insert_blocks` or ``catch_up``."""
        row = self._db.execute(
            "SELECT next_offset FROM positions WHERE topic = ? AND partition = ?",
            (name, partition),
        ).fetchone()
        return None if row is None else int(row[0])


BlockRow = tuple[Any, ...]
"""A ``blocks`` row without its write-order ``seq`` (:func:`block_row`)."""


def block_row(data: bytes) -> BlockRow:
    """The ``blocks`` row of the block ``data`` but its ``seq``, verified by decoding its
    points (:class:`CorruptBlock` if they do not decode)."""
    block = decode_block(data)
    ts, _ = block.points()
    return (
        block.block_id,
        block.series_key,
        block.first_ts_ms,
        block.last_ts_ms,
        int(ts.min()),
        int(ts.max()),
        block.count,
        bytes(data),
    )


def repartition_blocks(bootstrap: str, topic: str, *, timeout_s: float = 600.0) -> int:
    """Write each block of ``topic`` that is not in its series' partition again, to that
    partition (same key, same bytes); returns how many were written.

    The upgrade of a blocks topic written before blocks went to their series' partition
    (:func:`~pipeline.ts.writer.block_partition`; docs/operations.md, "Queries routed to
    the owner"): a worker's store reads only its own partitions. Reads the topic once, up
    to its end now; a block whose id is at home already is not written again, so a second
    run writes nothing. The misplaced copies stay where they are, harmless: a query goes
    to the owner of the series' partition.
    """
    group = f"themis-repartition-{uuid.uuid4().hex}"
    with (
        open_consumer(bootstrap, group, **{"fetch.max.bytes": 64 * 1024 * 1024}) as consumer,
        TopicProducer(bootstrap, topic) as producer,
    ):
        count = producer.partitions
        ends = {p: watermark_offsets(consumer, TopicPartition(topic, p))[1] for p in range(count)}
        ends = {p: end for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        at: dict[int, set[bytes | None]] = {p: set() for p in range(count)}
        away: list[tuple[int, bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                p, offset, value = msg.partition(), msg.offset(), msg.value()
                if msg.error() or p is None or offset is None:
                    continue
                if offset + 1 >= ends.get(p, 0):
                    ends.pop(p, None)
                if value is None:
                    continue
                at[p].add(msg.key())
                try:
                    home = block_partition(decode_block(value).series_key, count)
                except CorruptBlock:
                    continue
                if home != p:
                    away.append((home, msg.key(), value))
        written = 0
        for home, key, value in away:
            if key not in at[home]:  # a replay may have misplaced one block twice
                producer.send(value, key=key, partition=home)
                at[home].add(key)
                written += 1
    return written


def read_durable(  # noqa: PLR0917 - where the blocks are, then the series and its range
    bootstrap: str, blocks_topic: str, store_path: Path, series_key: str, start_ms: int, end_ms: int
) -> Points:
    """Catch the store at ``store_path`` up with ``blocks_topic``, then query one series."""
    store = BlockStore(store_path)
    try:
        store.catch_up(bootstrap, blocks_topic)
        return store.query(series_key, start_ms, end_ms)
    finally:
        store.close()
