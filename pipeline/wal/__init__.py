"""The write-ahead log: every applied mutation, in order, as opaque entries.

``entry`` (WAL records and LSNs), ``writer`` (:class:`WalWriter`, the one way to append),
``batch`` (TWB1 batches: zstd, dictionaries, checksums). The WAL knows nothing of what
its entries carry; the stores above write to it, and ``pipeline.replication`` ships it.
"""

from pipeline.wal.batch import BatchHeader, Codec, Dictionary, decode_batch, encode_batch
from pipeline.wal.entry import EntryType, WalEntry, format_lsn, parse_lsn
from pipeline.wal.writer import WalWriter

__all__ = [
    "BatchHeader",
    "Codec",
    "Dictionary",
    "EntryType",
    "WalEntry",
    "WalWriter",
    "decode_batch",
    "encode_batch",
    "format_lsn",
    "parse_lsn",
]
