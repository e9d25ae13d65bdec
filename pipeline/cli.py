"""``themis``: the command line of Themis Pipeline.

Settings are read once, here, at the boundary (``themis config --config PATH`` names
another file), and passed to the handler of the sub-command. Each package with
commands brings its own ``cli.py`` with an ``add_*_parser(s)`` function that this
module mounts; a handler is ``handler(args, settings) -> exit code``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.bench.cli import add_bench_parser
from pipeline.config import Settings, load_settings
from pipeline.errors import ThemisError
from pipeline.facade.cli import add_facade_parser
from pipeline.kafka.cli import add_kafka_parsers
from pipeline.rag.cli import add_rag_parser
from pipeline.replication.cli import add_wal_parser
from pipeline.worker.cli import add_worker_parsers

__all__ = ["Handler", "build_parser", "main"]

Handler = Callable[[argparse.Namespace, Settings], int]
"""What a sub-command runs: its parsed arguments and the settings, to an exit code."""


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.demo import run_demo

    return run_demo(settings)


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.stack import run_stack_down, run_stack_up

    if args.action == "up":
        return run_stack_up(settings, Path(args.dir))
    return run_stack_down(Path(args.dir))


def _config_show(args: argparse.Namespace, settings: Settings) -> int:
    shown = dataclasses.asdict(settings)
    secrets = (
        ("facade", "api_keys"),
        ("worker", "page_key"),
        ("compressed_wal_shipping", "apply_keys"),
        ("compressed_wal_shipping", "ship_key"),
    )
    for section, name in secrets:
        if shown[section][name]:
            shown[section][name] = "(set, not shown)"
    print(json.dumps(shown, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="themis", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    add_kafka_parsers(sub)
    add_worker_parsers(sub)
    demo = sub.add_parser("demo", help="broker, topics, worker, a sample load, printed stats")
    demo.set_defaults(handler=_demo)
    stack = sub.add_parser(
        "stack", help="a whole live stack (broker, worker, facade, replica) for SDK tests"
    )
    stack.add_argument("action", choices=("up", "down"))
    stack.add_argument("--dir", required=True, help="where stack.json, logs and data go")
    stack.set_defaults(handler=_stack)
    config = sub.add_parser("config", help="show the effective settings")
    config.add_argument("--config", dest="config_path", default=None, help="features.yaml path")
    config.set_defaults(handler=_config_show)
    add_bench_parser(sub)
    add_wal_parser(sub)
    add_rag_parser(sub)
    add_facade_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, load the settings once, run the sub-command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    handler: Handler = args.handler
    try:
        config_path = getattr(args, "config_path", None)
        settings = load_settings(Path(config_path) if config_path else None)
        return handler(args, settings)
    except ThemisError as exc:
        print(f"themis: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
