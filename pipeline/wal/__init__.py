"""The write-ahead log: every applied mutation, in order, as opaque entries.

``entry`` (WAL records and LSNs), ``writer`` (:class:`WalWriter`, the one way to append),
``batch`` (TWB1 and TWB2 batches: zstd, dictionaries, checksums), ``sections`` (the
TWB2 body) and ``columns`` (payloads cut by content). Beyond the byte layouts of Gorilla
blocks and ``VOF1`` frames, which TWB2 cuts into columns, the WAL knows nothing of what
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
