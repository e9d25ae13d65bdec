"""The worker's fastest door for JSON points: a whole batch of records into columns.

Producers naturally write one JSON point per Kafka record. Decoding each into Python
objects and grouping them by series one by one costs microseconds a record; a
bare consumer costs about one. So a consumed batch is first read by a compiled scan
(``_jsonscan.c``) that parses records of the plainest shape (printable ASCII strings
without escapes, an integer timestamp, a finite number, string tags) straight into
columns: per record its series number, partition, offset, timestamp and value, and per
distinct series its metric, entity and raw tags. The series keys come from the same
:class:`~pipeline.ts.json_batch.SeriesKeys` (and so the same checks and limits) as the
typed decoder's. Then numpy groups the columns by partition and series, in record
order, into runs of arrays the buffer keeps as chunks.

A batch that holds any record of another shape (escapes, non-ASCII, a frame, a bad
record) returns ``None`` and is decoded record by record as before: the scan accepts a
subset of what the reference :func:`~pipeline.ts.point.decode_point_json` accepts and
reads every value it takes exactly as the reference does (``tests/unit/
test_json_columns.py`` checks both, differentially and by fuzzing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from confluent_kafka import Message

from pipeline.errors import InvalidRecord
from pipeline.ts._jsonscan import scan_points
from pipeline.ts.buffer import PointRun
from pipeline.ts.json_batch import FAST_FAILURES, SeriesKeys

__all__ = ["GroupedBatch", "PointColumns", "scan_columns"]

GroupedBatch = tuple[
    dict[int, dict[str, list[PointRun]]], dict[int, tuple[int, int]], dict[int, int]
]
"""Points by partition and series key (runs in record order); each partition's next
offset and record count; each partition's point count."""


@dataclass(frozen=True, slots=True)
class PointColumns:
    """One batch of JSON point records as columns, one row per record."""

    keys: list[str]
    """Series key of each series number."""
    runs: list[tuple[int, int, int]]
    """``(partition, next offset, records)`` of each run of one partition's records."""
    index: npt.NDArray[np.int32]
    """Series number of each record."""
    partitions: npt.NDArray[np.int32]
    timestamps: npt.NDArray[np.int64]
    """Milliseconds since the Unix epoch."""
    values: npt.NDArray[np.float64]

    def grouped(self) -> GroupedBatch:
        """The rows by partition and series, each series' rows in record order."""
        parts: dict[int, dict[str, list[PointRun]]] = {}
        ends: dict[int, tuple[int, int]] = {}
        units: dict[int, int] = {}
        if not self.runs:
            return parts, ends, units
        count = len(self.keys)
        group = self.partitions.astype(np.int64) * count + self.index
        order = np.argsort(group, kind="stable")
        group, ts, vs = group[order], self.timestamps[order], self.values[order]
        cuts = np.flatnonzero(group[1:] != group[:-1]) + 1
        starts, stops = [0, *cuts.tolist()], [*cuts.tolist(), len(group)]
        for start, stop in zip(starts, stops, strict=True):
            partition, number = divmod(int(group[start]), count)
            runs: list[PointRun] = [(ts[start:stop], vs[start:stop])]
            parts.setdefault(partition, {})[self.keys[number]] = runs
        for partition, end, records in self.runs:
            _, earlier = ends.get(partition, (0, 0))
            ends[partition] = (end, earlier + records)
            units[partition] = units.get(partition, 0) + records
        return parts, ends, units


def scan_columns(messages: list[Message], keys: SeriesKeys) -> PointColumns | None:
    """The batch as columns, or ``None`` when a record must be decoded on its own."""
    scanned = scan_points(messages)
    if scanned is None:
        return None
    series, runs, index, partitions, timestamps, values = scanned
    found = keys.cache.get
    numbers: dict[str, int] = {}
    number_of = np.empty(len(series), dtype=np.int32)
    for scanned_number, (metric, entity, raw_tags) in enumerate(series):
        key = found((metric, entity, raw_tags))
        if key is None:
            try:
                key = keys.key(metric, entity, raw_tags)
            except (InvalidRecord, *FAST_FAILURES):  # the reference names the reason
                return None
        # Two spellings of one series (tags in another order, other spaces) are one.
        number_of[scanned_number] = numbers.setdefault(key, len(numbers))
    rows = np.frombuffer(index, dtype=np.int32)
    return PointColumns(
        keys=list(numbers),
        runs=runs,
        index=rows if len(numbers) == len(series) else number_of[rows],
        partitions=np.frombuffer(partitions, dtype=np.int32),
        timestamps=np.frombuffer(timestamps, dtype=np.int64),
        values=np.frombuffer(values, dtype=np.float64),
    )
