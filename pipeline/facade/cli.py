"""``themis facade``: run the HTTP ingest facade until SIGTERM / SIGINT.

On SIGTERM the server stops accepting connections, lets requests in flight finish
(up to ``--shutdown-timeout`` seconds), then waits until the broker acknowledged every
record accepted (``queued`` mode included) before the process exits.

The process runs on uvloop's event loop: the same requests cost it less CPU than the
standard loop (``themis bench http``, whose bare aiohttp baseline runs on it too).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import ssl
from pathlib import Path

import uvloop

from pipeline.config import Settings, with_overrides
from pipeline.errors import ConfigError

_LOG = logging.getLogger(__name__)


def add_facade_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``facade`` to ``themis``'s sub-commands (the ``handler`` convention of cli.py)."""
    parser = subparsers.add_parser("facade", help="run the HTTP ingest facade (REST API)")
    parser.add_argument("--host", default=None, help="bind address (default: facade.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: facade.port)")
    parser.add_argument(
        "--binary-port",
        type=int,
        default=None,
        help="port of the binary protocol server, 0 = off (default: facade.binary_port)",
    )
    parser.add_argument(
        "--response-mode",
        choices=("acked", "queued"),
        default=None,
        help="what a 200 means by default (default: facade.response_mode)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds to let requests in flight finish on SIGTERM",
    )
    parser.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", default=None, help="the certificate's private key")
    parser.add_argument(
        "--tls-client-ca", default=None, help="require client certificates signed by this CA"
    )
    parser.set_defaults(handler=run_facade)


GC_GEN0_THRESHOLD = 10_000
"""Allocations between young-generation collections (Python's default: 700)."""


async def _settle_heap(app: object) -> None:
    """Keep the garbage collector off the request path of this process.

    What start-up made (modules, the application, the producer) lives as long as the
    process: :func:`gc.freeze` takes it out of the collector's generations, so a full
    collection no longer walks it (one took up to 57 ms under 1,000-point batches,
    stalling every request), and a request's short-lived objects are collected less
    often (:data:`GC_GEN0_THRESHOLD`). Only for the ``themis facade`` process: tests
    that run the facade in their own process keep their collector as it is.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's TLS from ``--tls-cert``, ``--tls-key`` and ``--tls-client-ca`` (none
    without ``--tls-cert``); :class:`ConfigError` names a flag missing or the files that
    cannot be loaded, before anything starts."""
    if not args.tls_cert:
        if args.tls_key or args.tls_client_ca:
            raise ConfigError(
                "--tls-key and --tls-client-ca need --tls-cert (the server certificate); "
                "without it the facade serves plain HTTP"
            )
        return None
    if not args.tls_key:
        raise ConfigError("--tls-cert needs --tls-key (the certificate's private key)")
    from pipeline.replication import server_ssl_context

    ca = Path(args.tls_client_ca) if args.tls_client_ca else None
    try:
        return server_ssl_context(Path(args.tls_cert), Path(args.tls_key), ca)
    except OSError as exc:  # ssl.SSLError included
        files = f"--tls-cert {args.tls_cert}, --tls-key {args.tls_key}"
        if ca is not None:
            files += f", --tls-client-ca {ca}"
        raise ConfigError(f"cannot load the TLS files ({files}): {exc}") from None


def run_facade(args: argparse.Namespace, settings: Settings) -> int:
    """Find the broker, serve until a signal; returns the exit code."""
    from pipeline.facade.app import create_facade
    from pipeline.facade.connections import serve
    from pipeline.facade.replication_routes import install_replication, replication_routes
    from pipeline.kafka.broker import require_broker

    ssl_context = _tls_context(args)  # a bad flag fails before a broker is looked for
    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.binary_port is not None:
        overrides["binary_port"] = args.binary_port
    if args.response_mode is not None:
        overrides["response_mode"] = args.response_mode
    settings = with_overrides(settings, {"facade": overrides})
    bootstrap = settings.kafka.bootstrap_servers or require_broker(settings).bootstrap_servers
    app = create_facade(
        settings, bootstrap, extra_routes=replication_routes(), ssl_context=ssl_context
    )
    install_replication(app, settings, bootstrap, client_certificates=bool(args.tls_client_ca))
    app.on_startup.append(_settle_heap)
    _LOG.info("facade listening on %s:%s", settings.facade.host, settings.facade.port)
    # Until SIGINT or SIGTERM; then stop accepting, finish requests, run the cleanup
    # (which flushes the producer), then return.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(
            serve(
                app,
                settings.facade.host,
                settings.facade.port,
                ssl_context=ssl_context,
                shutdown_timeout_s=args.shutdown_timeout,
            )
        )
    return 0
