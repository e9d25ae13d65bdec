"""``themis worker``, ``themis ts query`` and ``themis vectors search``.

The worker runs the ingest stages; the other two ask running workers through the one
:class:`~pipeline.worker.client.WorkerClient` (``facade.worker_urls``, else the local
worker on ``worker.web_port``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pipeline.config import Settings
from pipeline.errors import InvalidArgument

__all__ = ["add_worker_parsers"]


def _key_value(text: str) -> tuple[str, str]:
    """``--tag`` / ``--where``: ``KEY=VALUE`` (the value may hold ``=``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _parse_vector(text: str) -> list[float]:
    """A JSON array of numbers; ``ValueError`` names what is wrong."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(value, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        raise ValueError("expected a JSON array of numbers, e.g. [0.1, 0.2]")
    return [float(x) for x in value]


def _vector_argument(text: str) -> list[float]:
    try:
        return _parse_vector(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_worker_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``worker``, ``ts query``, ``ts repartition-blocks`` and ``vectors search`` to
    ``themis``'s sub-commands."""
    worker = sub.add_parser("worker", help="run the Faust worker")
    worker.add_argument("-l", "--loglevel", default="warning")
    worker.set_defaults(handler=_worker)

    ts = sub.add_parser("ts", help="the time-series path")
    ts_sub = ts.add_subparsers(dest="action", required=True)
    tsq = ts_sub.add_parser("query", help="the exact points of one series, in timestamp order")
    tsq.add_argument("--metric", required=True)
    tsq.add_argument("--entity", required=True)
    tsq.add_argument("--tag", action="append", default=[], type=_key_value, metavar="KEY=VALUE")
    tsq.add_argument("--start", type=int, default=-(2**63), help="first timestamp, ms (inclusive)")
    tsq.add_argument("--end", type=int, default=2**63 - 1, help="last timestamp, ms (inclusive)")
    tsq.add_argument("--no-buffered", action="store_true", help="durable blocks only")
    tsq.add_argument("--json", action="store_true")
    tsq.set_defaults(handler=_ts_query)
    tsr = ts_sub.add_parser(
        "repartition-blocks",
        help="move blocks written before owner-routed queries to their series' partition "
        "(once, on upgrade; docs/operations.md)",
    )
    tsr.add_argument("--json", action="store_true")
    tsr.set_defaults(handler=_ts_repartition_blocks)

    vectors = sub.add_parser("vectors", help="the vector path")
    vectors_sub = vectors.add_subparsers(dest="action", required=True)
    vs = vectors_sub.add_parser("search", help="k nearest neighbours on the running workers")
    query = vs.add_mutually_exclusive_group(required=True)
    query.add_argument(
        "--vector", type=_vector_argument, default=None, help="the query vector as a JSON array"
    )
    query.add_argument("--vector-file", type=Path, default=None, help="a file holding the array")
    vs.add_argument("-k", type=int, default=10)
    vs.add_argument("--ef", type=int, default=None, help="widen the search (ef_search)")
    vs.add_argument(
        "--where",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="keep hits whose metadata has this value",
    )
    vs.add_argument("--json", action="store_true")
    vs.set_defaults(handler=_vectors_search)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    """Apply topic specs, then run the worker until SIGTERM / SIGINT."""
    from faust import Worker

    from pipeline.kafka.broker import require_broker
    from pipeline.kafka.topics import apply_topics
    from pipeline.worker.app import create_app

    broker = require_broker(settings)
    apply_topics(broker.bootstrap_servers, settings)
    app = create_app(settings, bootstrap_servers=broker.bootstrap_servers)
    Worker(app, loglevel=args.loglevel, quiet=True).execute_from_commandline()


def _ts_query(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.worker.query import query

    tags = dict(args.tag)
    result = query(
        args.metric,
        args.entity,
        args.start,
        args.end,
        tags,
        settings=settings,
        include_buffered=not args.no_buffered,
    )
    if args.json:
        points = [[t, v if math.isfinite(v) else str(v)] for t, v in result.to_list()]
        print(json.dumps({"series": result.series_key, "count": len(result), "points": points}))
        return 0
    print(f"{result.series_key}: {len(result)} points")
    for t, v in result.to_list():
        print(f"{t}\t{v!r}")
    return 0


def _ts_repartition_blocks(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.kafka.broker import require_broker
    from pipeline.ts.store import repartition_blocks

    topic = settings.topic("ts.blocks")
    moved = repartition_blocks(require_broker(settings).bootstrap_servers, topic)
    if args.json:
        print(json.dumps({"topic": topic, "blocks_moved": moved}))
    else:
        print(f"{topic}: {moved} blocks written again to their series' partition")
    return 0


def _vectors_search(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.worker.query import search

    vector = args.vector
    if args.vector_file is not None:
        try:
            vector = _parse_vector(args.vector_file.read_text())
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise InvalidArgument(f"--vector-file {args.vector_file}: {reason}") from None
    dimension = settings.vector_auto_buffer.dimension
    if len(vector) != dimension:
        # Checked here: a worker answers a wrong length with 400, which reads as no answer.
        raise InvalidArgument(
            f"the query vector has {len(vector)} components; the index has {dimension} "
            "(vector_auto_buffer.dimension)"
        )
    where = dict(args.where)
    hits = search(vector, args.k, args.ef, where or None, settings=settings)
    rows = [{"pk": h.pk, "distance": h.distance, "metadata": h.metadata} for h in hits]
    if args.json:
        print(json.dumps({"results": rows}))
    else:
        for row in rows:
            print(f"{row['pk']}\t{row['distance']:.6f}\t{json.dumps(row['metadata'])}")
    return 0
