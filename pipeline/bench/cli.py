"""``themis bench ts|vectors|wal|http|binary|sdk [--quick|--smoke] [--json]``: the benchmarks.

:data:`BENCHMARKS` is the one table of benchmarks: a name, a help line and the
module that measures (its ``DEFINITIONS``, ``run(size, settings)`` and
``render(result)``, :class:`BenchmarkModule`). Every command runs through
:func:`pipeline.bench.harness.run_benchmark`, which builds the shared envelope.

Four more sub-commands are child processes, left out of the help: those of
``themis bench http``, ``themis bench http-bare-server --port N`` (the bare aiohttp
server) and ``themis bench http-load --plan JSON`` (the load generator; prints its
result as one JSON line), and the same two of ``themis bench binary``,
``binary-bare-server`` (the bare framing server) and ``binary-load``.

Imported when ``themis`` builds its parser, so it imports nothing heavy; a
benchmark's module is imported only when its command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from pipeline.config import Settings

if TYPE_CHECKING:
    from pipeline.bench.harness import Benchmark, BenchSize

__all__ = ["BENCHMARKS", "BenchmarkModule", "ListedBenchmark", "add_bench_parser"]


class BenchmarkModule(Protocol):
    """What a benchmark module defines (mypy checks each module of the table against it)."""

    DEFINITIONS: Mapping[str, str]

    def run(self, size: BenchSize, settings: Settings) -> dict[str, object]: ...

    def render(self, result: Mapping[str, object]) -> str: ...


@dataclass(frozen=True)
class ListedBenchmark:
    """A :class:`~pipeline.bench.harness.Benchmark` whose module loads on first use."""

    name: str
    help: str
    load: Callable[[], BenchmarkModule]

    @property
    def definitions(self) -> Mapping[str, str]:
        return self.load().DEFINITIONS

    def run(self, size: BenchSize, settings: Settings) -> dict[str, object]:
        return self.load().run(size, settings)

    def render(self, result: Mapping[str, object]) -> str:
        return self.load().render(result)


def _ts() -> BenchmarkModule:
    from pipeline.bench import ts

    return ts


def _vectors() -> BenchmarkModule:
    from pipeline.bench import vectors

    return vectors


def _wal() -> BenchmarkModule:
    from pipeline.bench import wal

    return wal


def _http() -> BenchmarkModule:
    from pipeline.bench import http

    return http


def _binary() -> BenchmarkModule:
    from pipeline.bench import binary

    return binary


def _sdk() -> BenchmarkModule:
    from pipeline.bench.sdk import SdkBenchmark

    return SdkBenchmark("python")  # ``--lang`` picks another (see _run)


def _remote_read() -> BenchmarkModule:
    from pipeline.bench.remote_read import RemoteReadBenchmark

    return RemoteReadBenchmark()  # ``--stack`` gives a running stack (see _run)


BENCHMARKS: Final[tuple[Benchmark, ...]] = (
    ListedBenchmark(
        "ts",
        "time-series path: compression, codec speed, pipeline throughput (JSON, tagged "
        "JSON, frames) against a bare consumer, auto buffer against one durable write per point",
        _ts,
    ),
    ListedBenchmark(
        "vectors",
        "vector path: Kafka -> searchable throughput against bare hnswlib, recall@10 "
        "(also on random vectors against bare hnswlib, and filtered), buffered against "
        "direct writes, bytes per vector",
        _vectors,
    ),
    ListedBenchmark(
        "wal",
        "compressed WAL shipping: bytes against uncompressed and Kafka's zstd, "
        "codec speed, replication lag",
        _wal,
    ),
    ListedBenchmark(
        "http",
        "HTTP facade: buffered-put requests/s against a bare aiohttp server, "
        "server-side p99, handler time under a light load, batch points/s",
        _http,
    ),
    ListedBenchmark(
        "binary",
        "binary protocol: pipelined TS puts and batches, vector batches against bare "
        "framing and the HTTP batch endpoint, handler time under a light load",
        _binary,
    ),
    ListedBenchmark(
        "sdk",
        "an SDK (--lang python|typescript|go): buffered puts on the binary and HTTP "
        "transports against raw pipelined protocol frames, on a live stack",
        _sdk,
    ),
    ListedBenchmark(
        "remote-read",
        "Prometheus remote-read of one series of a million samples on a live stack",
        _remote_read,
    ),
)


def add_bench_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench ts|vectors|wal|http|binary`` (and the children of ``bench http`` and
    ``bench binary``) to ``themis``.

    ``subparsers`` is what ``ArgumentParser.add_subparsers`` returned.
    """
    bench = subparsers.add_parser("bench", help="benchmarks against a real Kafka broker")
    kinds = bench.add_subparsers(
        dest="benchmark",
        required=True,
        metavar="{" + ",".join(b.name for b in BENCHMARKS) + "}",
    )
    for benchmark in BENCHMARKS:
        parser = kinds.add_parser(benchmark.name, help=benchmark.help)
        sizes = parser.add_mutually_exclusive_group()
        sizes.add_argument(
            "--quick",
            action="store_const",
            const="quick",
            dest="size",
            help="smaller sizes: about one minute instead of minutes",
        )
        sizes.add_argument(
            "--smoke",
            action="store_const",
            const="smoke",
            dest="size",
            help="the smallest loads that run every step (the test suite's size; "
            "its figures say nothing about speed)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="print one JSON object on stdout instead of a table",
        )
        if benchmark.name == "sdk":
            parser.add_argument("--lang", choices=("python", "typescript", "go"), default="python")
        if benchmark.name in ("sdk", "remote-read"):
            parser.add_argument(
                "--stack", default=None, help="measure on this running stack (its stack.json)"
            )
        parser.set_defaults(handler=_run, listed=benchmark, size="full")
    # The children of `bench http`. No help= at all: argparse (3.11) would print
    # help=SUPPRESS as "==SUPPRESS==" in the list; the metavar above hides the names.
    bare = kinds.add_parser("http-bare-server")
    bare.add_argument("--port", type=int, required=True)
    bare.set_defaults(handler=_http_bare_server)
    load = kinds.add_parser("http-load")
    load.add_argument("--plan", required=True, help="a LoadPlan as a JSON object")
    load.set_defaults(handler=_http_load)
    binary_bare = kinds.add_parser("binary-bare-server")
    binary_bare.add_argument("--port", type=int, required=True)
    binary_bare.set_defaults(handler=_binary_bare_server)
    binary_load = kinds.add_parser("binary-load")
    binary_load.add_argument("--plan", required=True, help="a BinaryLoadPlan as a JSON object")
    binary_load.set_defaults(handler=_binary_load)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bench.harness import print_result, run_benchmark

    listed = args.listed
    if listed.name == "remote-read" and args.stack:
        from pipeline.bench.remote_read import RemoteReadBenchmark

        reader = RemoteReadBenchmark(Path(args.stack))
        listed = ListedBenchmark(listed.name, listed.help, lambda: reader)
    if getattr(args, "lang", None) is not None:
        from pipeline.bench.sdk import SdkBenchmark

        chosen = SdkBenchmark(args.lang, Path(args.stack) if args.stack else None)
        listed = ListedBenchmark(listed.name, listed.help, lambda: chosen)
    result = run_benchmark(listed, args.size, settings)
    print_result(result, listed, as_json=args.json)
    return 0


def _http_bare_server(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bench.http_load import serve_bare

    serve_bare(args.port)
    return 0


def _http_load(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bench.http_load import run_load_command

    run_load_command(args.plan)
    return 0


def _binary_bare_server(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bench.binary_load import serve_bare

    serve_bare(args.port)
    return 0


def _binary_load(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bench.binary_load import run_load_command

    run_load_command(args.plan)
    return 0
