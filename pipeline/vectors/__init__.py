"""The vector path: operations -> VectorAutoBuffer -> HNSW index -> search."""
