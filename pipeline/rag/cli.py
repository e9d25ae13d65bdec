"""``themis rag``: ingest a folder of documents into the vector path, and search it.

Imported when ``themis`` builds its parser, so it imports nothing heavy; the
ingest machinery is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Settings
from pipeline.rag.chunking import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP

if TYPE_CHECKING:
    from pipeline.rag.embedding import Embedder

__all__ = ["add_rag_parser"]


def add_rag_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``rag ingest`` and ``rag search`` to ``themis``'s sub-commands (``handler`` convention).

    ``subparsers`` is what ``ArgumentParser.add_subparsers`` returned.
    """
    rag = subparsers.add_parser("rag", help="documents -> chunks -> embeddings -> vector index")
    actions = rag.add_subparsers(dest="action", required=True)

    ingest = actions.add_parser(
        "ingest",
        help="chunk, embed and send .md/.txt files; re-runs skip unchanged files and "
        "remove chunks of changed or deleted ones",
    )
    ingest.add_argument("path", type=Path, help="a .md/.txt file or a folder of them")
    ingest.add_argument("--json", action="store_true", help="print the report as JSON")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    ingest.add_argument(
        "--state",
        type=Path,
        default=None,
        help="state file (default <worker.data_dir>/rag/ingest-state.json)",
    )
    _embedder_arguments(ingest)
    ingest.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS)
    ingest.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    ingest.set_defaults(handler=_rag_ingest)

    search = actions.add_parser("search", help="embed a query and search a running worker")
    search.add_argument("query", help="the question or text to look for")
    search.add_argument("-k", type=int, default=5, help="hits to return")
    search.add_argument("--json", action="store_true")
    _embedder_arguments(search)
    search.set_defaults(handler=_rag_search)


def _embedder_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embedder",
        choices=("hashing", "sentence-transformers"),
        default="hashing",
        help="hashing: built in, no download; sentence-transformers: needs "
        "`pip install themis-pipeline[embeddings]`",
    )
    parser.add_argument("--model", default=None, help="sentence-transformers model name")


def _embedder(args: argparse.Namespace, dimension: int) -> Embedder:
    from pipeline.rag.embedding import (
        DEFAULT_SENTENCE_MODEL,
        HashingEmbedder,
        SentenceTransformerEmbedder,
    )

    if args.embedder == "sentence-transformers":
        return SentenceTransformerEmbedder(args.model or DEFAULT_SENTENCE_MODEL)
    return HashingEmbedder(dimension)


def _rag_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.kafka.broker import require_broker
    from pipeline.rag.job import ingest

    broker = require_broker(settings)
    settings = replace(
        settings, kafka=replace(settings.kafka, bootstrap_servers=broker.bootstrap_servers)
    )
    embedder = _embedder(args, settings.vector_auto_buffer.dimension)
    report = ingest(
        args.path,
        settings,
        embedder=embedder,
        progress=not args.no_progress,
        state_path=args.state,
        max_chars=args.max_chars,
        overlap=args.overlap,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"{report.files_seen} files: {report.files_ingested} ingested, "
            f"{report.files_skipped_unchanged} unchanged, {report.files_deleted} deleted; "
            f"{report.chunks_sent} chunks sent, {report.chunks_removed} removed "
            f"in {report.seconds:.2f} s (state {report.state_path})"
        )
    return 0


def _rag_search(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.worker.query import search

    embedder = _embedder(args, settings.vector_auto_buffer.dimension)
    vector = embedder.embed([args.query])[0]
    hits = search(vector, args.k, settings=settings)
    if args.json:
        rows = [{"pk": h.pk, "distance": h.distance, "metadata": h.metadata} for h in hits]
        print(json.dumps(rows, indent=2))
        return 0
    for hit in hits:
        meta = hit.metadata
        where = " > ".join(p for p in (meta.get("source", hit.pk), meta.get("heading")) if p)
        text = str(meta.get("text", "")).replace("\n", " ")
        print(f"{hit.distance:.4f}  {where}\n        {text[:160]}", file=sys.stdout)
    return 0
