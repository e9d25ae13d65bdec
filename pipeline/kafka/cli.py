"""``themis kafka up|down|restart|status`` and ``themis topics apply|list``: broker, topics."""

from __future__ import annotations

import argparse
import json

from pipeline.config import Settings
from pipeline.kafka.local_broker import LocalKafka, themis_home

__all__ = ["add_kafka_parsers"]


def _kafka_up(args: argparse.Namespace, settings: Settings) -> int:
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


def _kafka_down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = LocalKafka(args.name).down(timeout_s=args.timeout)
    print(f"cluster {args.name!r} {'stopped' if stopped else 'was not running'}")
    return 0


def _kafka_restart(args: argparse.Namespace, settings: Settings) -> int:
    record = LocalKafka(args.name).restart(
        kill=args.kill, timeout_s=args.timeout, stop_timeout_s=args.stop_timeout
    )
    print(
        f"cluster {record.name!r} restarted at {record.bootstrap_servers} with its data "
        f"(pid {record.pid}, started in {record.startup_seconds:.2f} s)"
    )
    return 0


def _kafka_status(args: argparse.Namespace, settings: Settings) -> int:
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


def _topics_apply(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.kafka.broker import require_broker
    from pipeline.kafka.topics import apply_topics

    broker = require_broker(settings)
    reports = apply_topics(broker.bootstrap_servers, settings)
    for report in reports:
        details = f" ({'; '.join(report.details)})" if report.details else ""
        print(f"{report.topic}: {report.action}{details}")
    return 3 if any(r.action == "drift" for r in reports) else 0


def _topics_list(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.kafka.broker import require_broker
    from pipeline.kafka.topics import describe_topics

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


def add_kafka_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``kafka`` and ``topics`` to ``themis``'s sub-commands."""
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
    restart = kafka_sub.add_parser(
        "restart", help="stop a local cluster (if running) and start it again, keeping its data"
    )
    restart.add_argument("--name", default="primary")
    restart.add_argument("--kill", action="store_true", help="SIGKILL the JVM (a crash)")
    restart.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for readiness"
    )
    restart.add_argument(
        "--stop-timeout", type=float, default=30.0, help="seconds after SIGTERM before SIGKILL"
    )
    restart.set_defaults(handler=_kafka_restart)
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
