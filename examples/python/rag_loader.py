"""Load documents into the vector store for retrieval-augmented generation, then ask.

    THEMIS_CLIENT_CONF='http::addr=localhost:8080;api_key=KEY' python rag_loader.py DIMENSION

Splits a few documents into chunks, embeds each chunk (a hashing embedder stands in for
a real model, so this runs anywhere), upserts them with ``add_buffered`` (pk = document
and chunk number, metadata = title and text), flushes, waits until they are searchable,
and prints the nearest chunks to a question.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time

from themisdb import ThemisClient

DOCUMENTS = {
    "gorilla": "Gorilla compresses time series with delta-of-delta timestamps and XOR values. "
    "Blocks are byte-identical to Prometheus chunks.",
    "hnsw": "HNSW builds a layered proximity graph. Searches walk from the top layer down "
    "to find nearest neighbours quickly.",
    "kafka": "Kafka keeps records in partitions. Consumers commit offsets only after what "
    "they read is durable, so nothing is lost.",
}


def embed(text: str, dimension: int) -> list[float]:
    """A bag-of-words hashing embedding, normalised (a stand-in for a sentence model)."""
    vector = [0.0] * dimension
    for word in text.lower().replace(".", " ").replace(",", " ").split():
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[int.from_bytes(digest[:4], "little") % dimension] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def main(dimension: int) -> None:
    run = f"{time.time_ns():x}"
    with ThemisClient() as client:
        for doc, text in DOCUMENTS.items():
            for n, chunk in enumerate(s.strip() for s in text.split(". ") if s.strip()):
                metadata = {"title": doc, "text": chunk, "run": run}
                client.vectors.add_buffered(f"{run}:{doc}:{n}", embed(chunk, dimension), metadata)
        client.flush()
        question = "how are offsets committed so nothing is lost"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            hits = client.vectors.search(embed(question, dimension), k=2, filter={"run": run})
            if hits:
                break
            time.sleep(0.2)
        print(f"question: {question}")
        for hit in hits:
            print(f"  {hit['pk']}  distance={hit['distance']:.3f}  {hit['metadata']['text']}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 384)
