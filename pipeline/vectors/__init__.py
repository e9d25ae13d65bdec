"""The vector path: operations -> VectorAutoBuffer -> HNSW shards -> search."""

from pipeline.vectors.buffer import VectorAutoBuffer, VectorBatch, VectorBufferStats
from pipeline.vectors.client import Hit, search
from pipeline.vectors.index import SearchHit, VectorIndex
from pipeline.vectors.ops import OpType, VectorOp
from pipeline.vectors.producer import VectorProducer

__all__ = [
    "Hit",
    "OpType",
    "SearchHit",
    "VectorAutoBuffer",
    "VectorBatch",
    "VectorBufferStats",
    "VectorIndex",
    "VectorOp",
    "VectorProducer",
    "search",
]
