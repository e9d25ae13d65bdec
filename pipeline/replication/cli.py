"""``themis wal ship | apply | serve``: WAL shipping from the command line.

Mounted into ``themis`` by :func:`add_wal_parser`; the handlers get the settings
``themis`` loaded.

``themis wal ship --replica ID=ENDPOINT [--replica ...] [--once] [--dictionary FILE]``
    Ships the primary's WAL (``KAFKA_BOOTSTRAP_SERVERS``) to every replica until
    SIGTERM or SIGINT, printing the stats as one JSON line every ``--stats-interval``
    seconds; ``--once`` exits 0 once every replica confirmed the WAL's end.
    ``--dictionary`` (default: ``compressed_wal_shipping.dictionary_file``) compresses
    the ``meta`` section of every zstd batch with that dictionary.
``themis wal train-dictionary --out FILE [--entries N] [--size BYTES]``
    Trains that dictionary on the primary's WAL (:mod:`pipeline.replication.dictionary`)
    and prints its id and size as one JSON line.
``themis wal apply --replica NAME [--bootstrap HOST:PORT] [--once]``
    Applies ``<namespace>.wal.replica`` of the replica cluster (default: the local
    cluster named NAME) into ``<data_dir>/replica-<NAME>``.
``themis wal serve --replica NAME --port P [--tls-cert C --tls-key K [--tls-client-ca CA]]``
    Serves ``POST /api/v1/wal/apply`` for ``<data_dir>/replica-<NAME>`` to callers
    presenting one of ``compressed_wal_shipping.apply_keys`` (``THEMIS_WAL_APPLY_KEYS``)
    or, with ``--tls-client-ca``, a certificate signed by that CA. It refuses to start
    with neither: an apply endpoint is never open.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import ssl
import threading
import time
from pathlib import Path

from pipeline.config import Settings
from pipeline.errors import ThemisError

__all__ = ["add_wal_arguments", "add_wal_parser", "main_partitions"]

_LOG = logging.getLogger(__name__)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _client_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.tls_ca or args.tls_cert):
        return None
    context = ssl.create_default_context(cafile=args.tls_ca)
    if args.tls_cert:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def _ship(args: argparse.Namespace, settings: Settings) -> int:
    from prometheus_client import start_http_server

    from pipeline.metrics import WalShipperMetrics
    from pipeline.replication.shipper import WalShipper
    from pipeline.wal.batch import Dictionary

    if not settings.kafka.bootstrap_servers:
        raise ThemisError("themis wal ship needs the primary cluster: set KAFKA_BOOTSTRAP_SERVERS")
    replicas = []
    for spec in args.replica:
        replica_id, sep, endpoint = spec.partition("=")
        if not sep or not replica_id or not endpoint:
            raise ThemisError(
                f"--replica {spec!r}: expected ID=ENDPOINT, e.g. r1=kafka://host:9092"
            )
        replicas.append((replica_id, endpoint))
    stop = _stop_on_signals()
    metrics = WalShipperMetrics()
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    shipper = WalShipper(
        settings,
        primary_id=args.primary_id,
        ssl_context=_client_ssl(args),
        metrics=metrics,
        max_batch_entries=args.max_batch_entries,
        dictionary=Dictionary.from_file(args.dictionary, "--dictionary")
        if args.dictionary
        else None,
    )
    if args.compression:
        shipper.configure_compression(
            args.compression, args.level or settings.compressed_wal_shipping.compression_level
        )
    try:
        for replica_id, endpoint in replicas:
            shipper.add_replica(replica_id, endpoint)
        deadline = time.monotonic() + args.timeout
        next_print = time.monotonic() + args.stats_interval
        while not stop.wait(0.2):
            if args.once and shipper.caught_up():
                break
            if args.once and time.monotonic() > deadline:
                print(json.dumps(shipper.stats()), flush=True)
                raise ThemisError(f"replicas not caught up within {args.timeout:.0f} s")
            if time.monotonic() >= next_print:
                print(json.dumps(shipper.stats()), flush=True)
                next_print += args.stats_interval
        print(json.dumps(shipper.stats()), flush=True)
    finally:
        shipper.close()
    return 0


def _train_dictionary(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.replication.dictionary import train_wal_dictionary

    if not settings.kafka.bootstrap_servers:
        raise ThemisError(
            "themis wal train-dictionary reads the primary's WAL: set KAFKA_BOOTSTRAP_SERVERS"
        )
    dictionary = train_wal_dictionary(
        settings.kafka.bootstrap_servers, settings, entries=args.entries, size=args.size
    )
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(dictionary.data)
    tmp.replace(out)
    print(
        json.dumps(
            {
                "dictionary_id": dictionary.dictionary_id,
                "bytes": len(dictionary.data),
                "file": str(out),
            }
        ),
        flush=True,
    )
    return 0


def main_partitions(args: argparse.Namespace, settings: Settings) -> int:
    """``themis wal partitions --count N``: grow the WAL topic, print before and after."""
    from pipeline.replication.topics import grow_wal_partitions

    if not settings.kafka.bootstrap_servers:
        raise ThemisError(
            "themis wal partitions changes the primary's WAL: set KAFKA_BOOTSTRAP_SERVERS"
        )
    before, after = grow_wal_partitions(settings.kafka.bootstrap_servers, settings, args.count)
    print(json.dumps({"topic": settings.topic("wal"), "before": before, "after": after}))
    return 0


def _replica_dir(settings: Settings, name: str) -> Path:
    return settings.worker.data_dir / f"replica-{name}"


def _apply(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.kafka.local_broker import LocalKafka
    from pipeline.replication.kafka_applier import run_kafka_applier
    from pipeline.replication.replica import ReplicaState

    bootstrap = args.bootstrap
    if not bootstrap:
        record = LocalKafka(args.replica).status()
        if record is None:
            raise ThemisError(
                f"no --bootstrap given and no local cluster named {args.replica!r} runs; "
                f"start one with `themis kafka up --name {args.replica}`"
            )
        bootstrap = record.bootstrap_servers
    stop = _stop_on_signals()
    state = ReplicaState(_replica_dir(settings, args.replica), settings)
    try:
        stats = run_kafka_applier(
            state, bootstrap, settings, args.replica, stop=stop, until_caught_up=args.once
        )
        print(json.dumps(vars(stats) | state.status()), flush=True)
    finally:
        state.close()
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.replication.replica import ReplicaState
    from pipeline.replication.server import ApplyAuth, ReplicaServer, server_ssl_context
    from pipeline.throttle import FailureThrottle

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ThemisError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise ThemisError("--tls-client-ca needs --tls-cert and --tls-key")
    context = (
        server_ssl_context(
            Path(args.tls_cert),
            Path(args.tls_key),
            Path(args.tls_client_ca) if args.tls_client_ca else None,
        )
        if args.tls_cert
        else None
    )
    wal = settings.compressed_wal_shipping
    auth = ApplyAuth(
        [key.strip() for key in wal.apply_keys.split(",")],
        client_certificates=bool(args.tls_client_ca),
        failures=FailureThrottle(wal.apply_auth_failures_per_min),
    )
    if auth.closed:
        raise ThemisError(
            "themis wal serve: WAL apply would be closed to everyone; set replicator keys "
            "(THEMIS_WAL_APPLY_KEYS) or require client certificates (--tls-client-ca)"
        )
    stop = _stop_on_signals()
    state = ReplicaState(_replica_dir(settings, args.replica), settings)
    server = ReplicaServer(
        state,
        auth=auth,
        host=args.host,
        port=args.port,
        ssl_context=context,
        binary_port=args.binary_port,
    )
    port = server.start()
    scheme = "https" if context else "http"
    print(f"replica {args.replica!r} serving {scheme}://{args.host}:{port}", flush=True)
    if server.binary_port is not None:
        binary = "themis+tls" if context else "themis"
        where = f"{binary}://{args.host}:{server.binary_port}"
        print(f"replica {args.replica!r} serving {where}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
        state.close()
    return 0


def add_wal_arguments(wal: argparse.ArgumentParser) -> None:
    """The ``ship``, ``apply`` and ``serve`` sub-commands under ``wal``."""
    sub = wal.add_subparsers(dest="wal_action", required=True)
    ship = sub.add_parser("ship", help="ship the primary's WAL to replicas")
    ship.add_argument(
        "--replica",
        action="append",
        required=True,
        metavar="ID=ENDPOINT",
        help="kafka://, themis[+tls]:// (a facade's binary door) or http(s)://host:port; "
        "repeat for several replicas",
    )
    ship.add_argument("--once", action="store_true", help="exit once every replica caught up")
    ship.add_argument(
        "--metrics-port", type=int, default=None, help="serve /metrics on 127.0.0.1:PORT"
    )
    ship.add_argument("--timeout", type=float, default=300.0, help="--once deadline, seconds")
    ship.add_argument("--stats-interval", type=float, default=10.0, help="seconds between stats")
    ship.add_argument("--primary-id", default=None, help="default: the worker's app id")
    ship.add_argument(
        "--max-batch-entries", type=int, default=1000, help="entries per batch at most"
    )
    ship.add_argument("--compression", choices=("zstd", "none"), default=None)
    ship.add_argument("--level", type=int, default=None, help="zstd level 1-22")
    ship.add_argument(
        "--dictionary",
        default=None,
        metavar="FILE",
        help="zstd dictionary for the meta section (themis wal train-dictionary); "
        "default: compressed_wal_shipping.dictionary_file",
    )
    ship.add_argument(
        "--tls-ca", default=None, help="CA file to verify https and themis+tls replicas"
    )
    ship.add_argument("--tls-cert", default=None, help="client certificate (mTLS)")
    ship.add_argument("--tls-key", default=None, help="client key (mTLS)")
    ship.set_defaults(handler=_ship)

    train = sub.add_parser("train-dictionary", help="train a zstd dictionary on the primary's WAL")
    train.add_argument("--out", required=True, metavar="FILE")
    train.add_argument("--entries", type=int, default=5000, help="WAL entries to learn from")
    train.add_argument("--size", type=int, default=16 * 1024, help="dictionary bytes at most")
    train.set_defaults(handler=_train_dictionary)

    grow = sub.add_parser(
        "partitions", help="add partitions to the primary's WAL topic (docs/operations.md)"
    )
    grow.add_argument("--count", type=int, required=True, help="the WAL's new partition count")
    grow.set_defaults(handler=main_partitions)

    apply = sub.add_parser("apply", help="apply WAL batches from the replica cluster")
    apply.add_argument("--replica", required=True, metavar="NAME")
    apply.add_argument("--bootstrap", default=None, help="replica cluster; default: local NAME")
    apply.add_argument("--once", action="store_true", help="exit at the topic's end")
    apply.set_defaults(handler=_apply)

    serve = sub.add_parser("serve", help="serve POST /api/v1/wal/apply for a replica")
    serve.add_argument("--replica", default="http", metavar="NAME")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument(
        "--binary-port",
        type=int,
        default=None,
        help="also serve WAL_APPLY_COMPRESSED over the binary protocol on this port "
        "(0 picks one; ship with --replica ID=themis://host:port)",
    )
    serve.add_argument("--tls-cert", default=None)
    serve.add_argument("--tls-key", default=None)
    serve.add_argument("--tls-client-ca", default=None, help="require client certs (mTLS)")
    serve.set_defaults(handler=_serve)


def add_wal_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wal`` to ``themis``'s sub-commands (the ``handler`` convention of cli.py)."""
    add_wal_arguments(subparsers.add_parser("wal", help="compressed WAL shipping to replicas"))
