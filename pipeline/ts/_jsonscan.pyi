"""Compiled columnar scan of JSON point records; see ``_jsonscan.c``."""

from confluent_kafka import Message

def scan_points(
    messages: list[Message], /
) -> (
    tuple[list[tuple[str, str, bytes]], list[tuple[int, int, int]], bytes, bytes, bytes, bytes]
    | None
):
    """Every record of the plainest JSON point shape, as columns; ``None`` if any is not.

    Returns ``(series, runs, index, partitions, timestamps, values)``: the distinct
    ``(metric, entity, raw tags)`` of the batch; ``(partition, next offset, records)`` of
    each run of consecutive records of one partition; then native int32 series numbers,
    int32 partitions, int64 timestamps (ms) and float64 values, one per record.
    """
