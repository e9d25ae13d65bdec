"""A retrieval-augmented generation pipeline: documents -> chunks -> embeddings -> buffered
vector writes -> search, then an edited document and a deleted one.

    THEMIS_CLIENT_CONF='http::addr=localhost:8080;api_key=KEY' python rag_pipeline.py DIMENSION

Chunks three Markdown documents at their headings (``pipeline.rag.chunk_document``),
embeds each chunk (``HashingEmbedder``, built in: no model to download; swap in
``SentenceTransformerEmbedder`` for real embeddings) and writes them with the SDK's
buffered upserts, every pk ``<run>/<file>#<chunk>``. Then it edits one section of a
document (its chunk is updated, a chunk the edit removed is removed) and deletes another
document (all its chunks removed), and asks again. Each step prints one JSON line:
``{"step": ..., ...}``; searches are filtered on this run's ``run`` metadata.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from themisdb import ThemisClient

from pipeline.rag import Chunk, HashingEmbedder, chunk_document

DOCUMENTS = {
    "kafka.md": """# Apache Kafka

Kafka keeps records in partitions of a topic, an ordered append-only log.

## Consumer groups

Consumers in a group share the partitions and commit their offsets after processing.

## Retention

Old log segments are deleted after the retention time or compacted by key.
""",
    "baking.md": """# Sourdough

A sourdough starter of wild yeast raises the bread.

## Feeding

Feed the starter flour and water every day and keep it warm.
""",
    "hnsw.md": """# HNSW

A layered proximity graph; a search walks from the top layer down to the nearest neighbours.
""",
}
EDITED = (
    "kafka.md",
    """# Apache Kafka

Kafka keeps records in partitions of a topic, an ordered append-only log.

## Consumer groups

A cooperative rebalance moves only the partitions that change owner between consumers.
""",
)
DELETED = "baking.md"
DEADLINE_S = 60.0


class RagIndex:
    """The chunks of one run's documents in the vector store, kept equal to the files."""

    def __init__(self, client: ThemisClient, dimension: int, run: str) -> None:
        self.client = client
        self.embedder = HashingEmbedder(dimension)
        self.run = run
        self.chunks: dict[str, Chunk] = {}  # pk -> chunk, what the store should hold

    def chunks_of(self, name: str, text: str) -> list[Chunk]:
        return chunk_document(text, f"{self.run}/{name}")

    def write(self, name: str, text: str) -> dict[str, int]:
        """Upsert a document's new or changed chunks, remove the chunks it no longer has."""
        source = f"{self.run}/{name}"
        old = {pk for pk in self.chunks if pk.startswith(source + "#")}
        new = [c for c in self.chunks_of(name, text) if self.chunks.get(c.pk) != c]
        vectors = self.embedder.embed([c.embedding_text for c in new])
        for chunk, vector in zip(new, vectors, strict=True):
            metadata = chunk.metadata | {"run": self.run}
            if chunk.pk in old:
                self.client.vectors.update_buffered(chunk.pk, vector, metadata)
            else:
                self.client.vectors.add_buffered(chunk.pk, vector, metadata)
            self.chunks[chunk.pk] = chunk
        kept = {c.pk for c in self.chunks_of(name, text)}
        gone = sorted(old - kept)
        for pk in gone:
            self.client.vectors.remove_buffered(pk)
            del self.chunks[pk]
        return {"upserted": len(new), "removed": len(gone)}

    def delete(self, name: str) -> int:
        source = f"{self.run}/{name}#"
        gone = sorted(pk for pk in self.chunks if pk.startswith(source))
        for pk in gone:
            self.client.vectors.remove_buffered(pk)
            del self.chunks[pk]
        return len(gone)

    def search(self, question: str, k: int = 3) -> list[dict[str, Any]]:
        vector = self.embedder.embed([question])[0]
        return self.client.vectors.search(vector, k=k, filter={"run": self.run})

    def held(self) -> set[str]:
        """The pks of this run a search over everything finds (k = all the run holds + 5)."""
        probe = self.embedder.embed(["kafka sourdough graph"])[0]
        hits = self.client.vectors.search(probe, k=len(self.chunks) + 5, filter={"run": self.run})
        return {hit["pk"] for hit in hits}

    def settle(self) -> None:
        """Flush the writer and wait until the store holds exactly :attr:`chunks`."""
        self.client.flush()
        deadline = time.monotonic() + DEADLINE_S
        while self.held() != set(self.chunks):
            if time.monotonic() > deadline:
                raise SystemExit(f"the store did not hold {sorted(self.chunks)} in time")
            time.sleep(0.1)


def say(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


def top(index: RagIndex, question: str) -> None:
    hits = index.search(question)
    pk, text = (hits[0]["pk"], hits[0]["metadata"]["text"]) if hits else (None, None)
    say("search", question=question, pk=pk, text=text)


def main(dimension: int) -> None:
    run = f"rag{time.time_ns():x}"
    with ThemisClient() as client:
        index = RagIndex(client, dimension, run)
        for name, text in DOCUMENTS.items():
            say("ingest", source=f"{run}/{name}", **index.write(name, text))
        index.settle()
        say("indexed", run=run, chunks=sorted(index.chunks))
        top(index, "when do consumers commit their offsets")
        top(index, "how often do I feed the sourdough starter")

        say("edit", source=f"{run}/{EDITED[0]}", **index.write(*EDITED))
        say("delete", source=f"{run}/{DELETED}", removed=index.delete(DELETED))
        index.settle()
        say("indexed", run=run, chunks=sorted(index.chunks))
        top(index, "cooperative rebalance partitions change owner")
        top(index, "how often do I feed the sourdough starter")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(int(sys.argv[1]))
