"""The time-series path: points -> TSAutoBuffer -> Gorilla blocks -> block store.

``point`` (JSON points, TSF1 frames, series keys), ``gorilla`` and ``block`` (the
codec and the block around it), ``buffer`` (:class:`TSAutoBuffer`), ``writer``
(:class:`BlockWriter`: blocks + WAL entries, durable), ``store`` (:class:`BlockStore`,
the queryable view of the blocks topic), ``producer`` (:class:`TSProducer`),
``dataset`` (synthetic data for demos and benchmarks).
"""

from pipeline.ts.block import GorillaBlock, decode_block, encode_block, encode_blocks
from pipeline.ts.buffer import SeriesBatch, TSAutoBuffer, TSBufferStats
from pipeline.ts.point import DataPoint, series_key
from pipeline.ts.producer import TSProducer
from pipeline.ts.store import BlockStore, SeriesPoints
from pipeline.ts.writer import BlockWrite, BlockWriter

__all__ = [
    "BlockStore",
    "BlockWrite",
    "BlockWriter",
    "DataPoint",
    "GorillaBlock",
    "SeriesBatch",
    "SeriesPoints",
    "TSAutoBuffer",
    "TSBufferStats",
    "TSProducer",
    "decode_block",
    "encode_block",
    "encode_blocks",
    "series_key",
]
