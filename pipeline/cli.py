"""``themis``: the command line of Themis Pipeline.

Every subcommand reads settings once, here, at the boundary.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.bench.common import add_bench_parser
from pipeline.config import load_settings
from pipeline.errors import ThemisError
from pipeline.facade.cli import add_facade_parser
from pipeline.kafka.local_broker import LocalKafka, themis_home
from pipeline.rag.cli import add_rag_parser
from pipeline.wal.cli import add_wal_parser

Handler = Callable[[argparse.Namespace], int]


def _kafka_up(args: argparse.Namespace) -> int:
    cluster = LocalKafka(args.name)
    already = cluster.status()
    record = cluster.up(port=args.port, timeout_s=args.timeout)
    if already is not None:
        print(f"cluster {record.name!r} already running at {record.bootstrap_servers}")
    else:
        print(
            f"cluster {record.name!r} up at {record.bootstrap_servers} "
            f"(pid {record.pid}, started in {record.startup_seconds:.2f} s)"
        )
    return 0


def _kafka_down(args: argparse.Namespace) -> int:
    stopped = LocalKafka(args.name).down(timeout_s=args.timeout)
    print(f"cluster {args.name!r} {'stopped' if stopped else 'was not running'}")
    return 0


def _kafka_status(args: argparse.Namespace) -> int:
    clusters_dir = themis_home() / "clusters"
    names = (
        [args.name]
        if args.name
        else sorted(p.name for p in clusters_dir.glob("*") if p.is_dir())
        if clusters_dir.exists()
        else []
    )
    rows = []
    for name in names:
        record = LocalKafka(name).status()
        rows.append(
            {"name": name, "running": record is not None}
            | (
                {}
                if record is None
                else {
                    "bootstrap_servers": record.bootstrap_servers,
                    "pid": record.pid,
                    "log_file": record.log_file,
                }
            )
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no local clusters")
    for row in [] if args.json else rows:
        state = (
            f"running at {row['bootstrap_servers']} (pid {row['pid']})"
            if row["running"]
            else "stopped"
        )
        print(f"{row['name']}: {state}")
    return 0 if not args.name or rows[0]["running"] else 1


def _topics_apply(args: argparse.Namespace) -> int:
    from pipeline.kafka.broker import require_broker
    from pipeline.kafka.topics import apply_topics

    settings = load_settings()
    broker = require_broker(settings)
    reports = apply_topics(broker.bootstrap_servers, settings)
    for report in reports:
        details = f" ({'; '.join(report.details)})" if report.details else ""
        print(f"{report.topic}: {report.action}{details}")
    return 3 if any(r.action == "drift" for r in reports) else 0


def _topics_list(args: argparse.Namespace) -> int:
    from pipeline.kafka.broker import require_broker
    from pipeline.kafka.topics import describe_topics

    settings = load_settings()
    rows = describe_topics(require_broker(settings).bootstrap_servers, settings)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        parts = row["partitions"]
        assert isinstance(parts, dict)
        print(
            f"{row['topic']}: exists={row['exists']} partitions spec={parts['spec']} "
            f"actual={parts['actual']}"
        )
        configs = row["configs"]
        assert isinstance(configs, dict)
        for key, pair in configs.items():
            mark = "" if pair["spec"] == pair["actual"] else "  <- differs"
            print(f"    {key}: spec={pair['spec']} actual={pair['actual']}{mark}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from pipeline.worker import run_worker

    return run_worker(loglevel=args.loglevel)


def _ts_query(args: argparse.Namespace) -> int:
    from pipeline.ts.reader import query

    tags = dict(tag.split("=", 1) for tag in args.tag)
    result = query(
        args.metric,
        args.entity,
        args.start,
        args.end,
        tags,
        settings=load_settings(),
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


def _vectors_search(args: argparse.Namespace) -> int:
    from pipeline.vectors.client import search

    vector = json.loads(Path(args.vector_file).read_text()) if args.vector_file else None
    if vector is None:
        vector = json.loads(args.vector)
    where = dict(item.split("=", 1) for item in args.where)
    hits = search(vector, args.k, args.ef, where or None, settings=load_settings())
    rows = [{"pk": h.pk, "distance": h.distance, "metadata": h.metadata} for h in hits]
    if args.json:
        print(json.dumps({"results": rows}))
    else:
        for row in rows:
            print(f"{row['pk']}\t{row['distance']:.6f}\t{json.dumps(row['metadata'])}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    return run_demo()


def _config_show(args: argparse.Namespace) -> int:
    import dataclasses

    settings = load_settings(Path(args.config) if args.config else None)
    shown = dataclasses.asdict(settings)
    if shown["facade"]["api_keys"]:
        shown["facade"]["api_keys"] = "(set, not shown)"
    print(json.dumps(shown, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="themis", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="a local Apache Kafka broker (KRaft) on loopback")
    kafka_sub = kafka.add_subparsers(dest="action", required=True)
    up = kafka_sub.add_parser("up", help="start a local cluster (resolves Kafka once)")
    up.add_argument("--name", default="primary")
    up.add_argument("--port", type=int, default=None, help="preferred port; taken -> a free one")
    up.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    up.set_defaults(handler=_kafka_up)
    down = kafka_sub.add_parser("down", help="stop a local cluster and delete its data")
    down.add_argument("--name", default="primary")
    down.add_argument("--timeout", type=float, default=30.0)
    down.set_defaults(handler=_kafka_down)
    status = kafka_sub.add_parser("status", help="show local clusters")
    status.add_argument("--name", default=None)
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_kafka_status)

    topics = sub.add_parser("topics", help="topics as code (topics/*.yaml)")
    topics_sub = topics.add_subparsers(dest="action", required=True)
    topics_sub.add_parser("apply", help="create missing topics, align configs").set_defaults(
        handler=_topics_apply
    )
    lst = topics_sub.add_parser("list", help="spec against actual")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=_topics_list)

    worker = sub.add_parser("worker", help="run the Faust worker")
    worker.add_argument("-l", "--loglevel", default="warning")
    worker.set_defaults(handler=_worker)

    ts = sub.add_parser("ts", help="the time-series path")
    ts_sub = ts.add_subparsers(dest="action", required=True)
    tsq = ts_sub.add_parser("query", help="the exact points of one series, in timestamp order")
    tsq.add_argument("--metric", required=True)
    tsq.add_argument("--entity", required=True)
    tsq.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    tsq.add_argument("--start", type=int, default=-(2**63), help="first timestamp, ms (inclusive)")
    tsq.add_argument("--end", type=int, default=2**63 - 1, help="last timestamp, ms (inclusive)")
    tsq.add_argument("--no-buffered", action="store_true", help="durable blocks only")
    tsq.add_argument("--json", action="store_true")
    tsq.set_defaults(handler=_ts_query)

    vectors = sub.add_parser("vectors", help="the vector path")
    vectors_sub = vectors.add_subparsers(dest="action", required=True)
    vs = vectors_sub.add_parser("search", help="k nearest neighbours on the running worker")
    vs.add_argument("--vector", default=None, help="the query vector as a JSON array")
    vs.add_argument("--vector-file", default=None, help="a file holding the JSON array")
    vs.add_argument("-k", type=int, default=10)
    vs.add_argument("--ef", type=int, default=None, help="widen the search (ef_search)")
    vs.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep hits whose metadata has this value",
    )
    vs.add_argument("--json", action="store_true")
    vs.set_defaults(handler=_vectors_search)

    demo = sub.add_parser("demo", help="broker, topics, worker, a sample load, printed stats")
    demo.set_defaults(handler=_demo)

    config = sub.add_parser("config", help="show the effective settings")
    config.add_argument("--config", default=None, help="features.yaml path")
    config.set_defaults(handler=_config_show)
    add_bench_parser(sub)
    add_wal_parser(sub)
    add_rag_parser(sub)
    add_facade_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ThemisError as exc:
        print(f"themis: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
