"""The vector path: operations -> VectorAutoBuffer -> HNSW shards.

``ops`` (VectorOp JSON and VOF1 frames), ``buffer`` (:class:`VectorAutoBuffer`,
coalescing per pk), ``index`` (:class:`VectorIndex`, hnswlib behind a readers-writer
lock), ``shard`` (:class:`ShardStore`: open, replay, snapshot one shard per
partition), ``producer`` (:class:`VectorProducer`).
"""

from pipeline.vectors.buffer import VectorAutoBuffer, VectorBatch, VectorBufferStats
from pipeline.vectors.index import SearchHit, VectorIndex
from pipeline.vectors.ops import OpType, VectorOp
from pipeline.vectors.producer import VectorProducer
from pipeline.vectors.shard import ShardStore, VectorShard

__all__ = [
    "OpType",
    "SearchHit",
    "ShardStore",
    "VectorAutoBuffer",
    "VectorBatch",
    "VectorBufferStats",
    "VectorIndex",
    "VectorOp",
    "VectorProducer",
    "VectorShard",
]
