"""``themis bench ts|vectors|wal|http [--quick] [--json]``: the benchmark commands.

Imported when ``themis`` builds its parser, so it imports nothing heavy; each
benchmark module is imported only when its command runs.
"""

from __future__ import annotations

import argparse

from pipeline.config import Settings

__all__ = ["add_bench_arguments", "add_bench_parser"]


def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick`` and ``--json``."""
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes: about one minute instead of minutes"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout instead of a table"
    )
    return parser


def add_bench_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench ts|vectors|wal`` to ``themis``'s sub-commands (cli.py's ``handler`` way).

    ``subparsers`` is what ``ArgumentParser.add_subparsers`` returned.
    """
    bench = subparsers.add_parser("bench", help="benchmarks against a real Kafka broker")
    kinds = bench.add_subparsers(dest="benchmark", required=True)
    ts = kinds.add_parser(
        "ts",
        help="time-series path: compression, codec speed, pipeline throughput, "
        "auto buffer against one durable write per point",
    )
    add_bench_arguments(ts).set_defaults(handler=_bench_ts)
    vectors = kinds.add_parser(
        "vectors",
        help="vector path: Kafka -> searchable throughput against bare hnswlib, recall@10, "
        "buffered against direct writes, bytes per vector",
    )
    add_bench_arguments(vectors).set_defaults(handler=_bench_vectors)
    wal = kinds.add_parser(
        "wal",
        help="compressed WAL shipping: bytes against uncompressed and Kafka's zstd, "
        "codec speed, replication lag",
    )
    add_bench_arguments(wal).set_defaults(handler=_bench_wal)
    http = kinds.add_parser(
        "http",
        help="HTTP facade: buffered-put requests/s against a bare aiohttp server, "
        "server-side p99, batch points/s",
    )
    add_bench_arguments(http).set_defaults(handler=_bench_http)


def _bench_ts(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bench.harness import emit
    from pipeline.bench.ts import render_table, run_ts_bench

    emit(run_ts_bench(args.quick, settings=settings), as_json=args.json, render=render_table)
    return 0


def _bench_wal(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bench.harness import emit
    from pipeline.bench.wal import render_table, run_wal_bench

    emit(run_wal_bench(args.quick, settings=settings), as_json=args.json, render=render_table)
    return 0


def _bench_http(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bench.harness import emit
    from pipeline.bench.http import render_table, run_http_bench

    emit(run_http_bench(args.quick, settings=settings), as_json=args.json, render=render_table)
    return 0


def _bench_vectors(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bench.harness import emit
    from pipeline.bench.vectors import render_table, run_vector_bench

    emit(run_vector_bench(args.quick, settings=settings), as_json=args.json, render=render_table)
    return 0
