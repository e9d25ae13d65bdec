"""Retrieval-augmented generation input: documents -> chunks -> embeddings -> the vector path.

``themis rag ingest PATH`` (:func:`ingest`, the resumable ingestion job of
:mod:`pipeline.rag.job`) chunks ``.md`` / ``.txt`` files
(:func:`chunk_document`), embeds them (:class:`HashingEmbedder` built in,
:class:`SentenceTransformerEmbedder` with ``pip install themis-pipeline[embeddings]``)
and sends them to the vector operations topic; re-runs are incremental.
"""

from pipeline.rag.chunking import Chunk, chunk_document
from pipeline.rag.embedding import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from pipeline.rag.job import IngestReport, VectorSink, ingest, ingest_files

__all__ = [
    "Chunk",
    "Embedder",
    "HashingEmbedder",
    "IngestReport",
    "SentenceTransformerEmbedder",
    "VectorSink",
    "chunk_document",
    "ingest",
    "ingest_files",
]
