"""``themis stack up|down --dir DIR``: a whole live stack on loopback, described in one file.

``up`` brings up a broker (the one order of preference: ``KAFKA_BOOTSTRAP_SERVERS``,
a Docker engine, a local JVM broker that it stops again), the topics in a namespace of
their own, a worker, the facade with its HTTP and binary doors (replication routes
included) and a replica (``themis wal serve`` over HTTPS with client certificates and a
binary door), with API keys and a throwaway PKI made for it. Once every part answers it
writes ``DIR/stack.json`` (see :func:`describe`), then supervises until SIGTERM or
SIGINT (``down`` sends it): the children are stopped, a broker it started is stopped,
``stack.json`` is removed. A child that exits stops the whole stack (exit code 1).

The SDKs' tests (Python, TypeScript, Go) share one stack per test session this way:
the suite starts it and hands its ``stack.json`` to each (``THEMIS_STACK``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from pipeline.config import Settings, child_env, with_overrides
from pipeline.errors import ChildExited, ThemisError
from pipeline.kafka.broker import provide_broker
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics
from pipeline.worker.process import ChildProcess, WorkerProcess, themis_command

__all__ = ["STACK_FILE", "describe", "make_pki", "run_stack_down", "run_stack_up"]

STACK_FILE: Final = "stack.json"
VECTOR_DIMENSION: Final = 16
_EC: Final = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
_READY_S: Final = 120.0


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def make_pki(d: Path) -> Path:
    """``ca.pem``, ``server.pem``/``.key`` (SAN IP 127.0.0.1) and ``client.pem``/``.key``
    in ``d`` (EC keys, valid two days), made with ``openssl``."""
    d.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=themis-stack-ca")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=themis-stack-{name}")  # fmt: skip
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extra)  # fmt: skip
    return d


def _stack_settings(
    settings: Settings, bootstrap: str, data: Path, keys: dict[str, str]
) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return with_overrides(
        settings,
        {
            "kafka": {"bootstrap_servers": bootstrap, "topic_namespace": f"stack{tag}"},
            "worker": {
                "app_id": f"themis-stack-{tag}",
                "data_dir": str(data),
                "web_port": free_port(),
            },
            "facade": {
                "port": free_port(),
                "binary_port": free_port(),
                "api_keys": ",".join(f"{key}:{role}" for role, key in keys.items()),
                # a shared test stack: quotas far above what the suites send
                "rate_ts_put_per_min": 1_000_000,
                "rate_vectors_add_per_min": 1_000_000,
                "rate_flush_per_min": 100_000,
            },
            "vector_auto_buffer": {
                "dimension": VECTOR_DIMENSION,
                "flush_interval_ms": 200,
                "snapshot_interval_ms": 1000,
            },
            "compressed_wal_shipping": {"apply_keys": keys["replicator"]},
        },
    )


def describe(
    settings: Settings, keys: dict[str, str], pki: Path, replica: tuple[int, int], root: Path
) -> dict[str, Any]:
    """What ``stack.json`` holds: addresses, keys, connection strings, the replica's TLS files,
    and ``facade_env``, the environment under which ``themis facade --port P --binary-port Q``
    runs another facade on the same broker and worker."""
    http = f"127.0.0.1:{settings.facade.port}"
    binary = f"127.0.0.1:{settings.facade.binary_port}"
    writer = keys["writer"]
    return {
        "pid": os.getpid(),
        "dir": str(root),
        "bootstrap_servers": settings.kafka.bootstrap_servers,
        "topics": {name: settings.topic(name) for name in ("ts.points", "deadletter")},
        "http_addr": http,
        "binary_addr": binary,
        "keys": keys,
        "conf": {
            "http": f"http::addr={http};api_key={writer}",
            "themis": f"themis::addr={binary};api_key={writer};http_addr={http}",
        },
        "vector_dimension": settings.vector_auto_buffer.dimension,
        "themis": themis_command(),
        "facade_env": {
            key: value
            for key, value in child_env(settings, {}).items()
            if key.startswith("THEMIS_") or key == "KAFKA_BOOTSTRAP_SERVERS"
        },
        "replica": {
            "https_url": f"https://127.0.0.1:{replica[0]}",
            "binary_addr": f"127.0.0.1:{replica[1]}",
            "ca": str(pki / "ca.pem"),
            "client_cert": str(pki / "client.pem"),
            "client_key": str(pki / "client.key"),
        },
    }


def _answers(url: str, headers: dict[str, str], context: ssl.SSLContext | None = None) -> bool:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:  # noqa: S310
            return int(resp.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def _wait(ready: Callable[[], bool], children: list[ChildProcess], what: str) -> None:
    deadline = time.monotonic() + _READY_S
    while not ready():
        for child in children:
            child.check_alive()
        if time.monotonic() > deadline:
            raise ThemisError(f"themis stack: {what} did not answer within {_READY_S:.0f} s")
        time.sleep(0.25)


def _client_context(pki: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return context


@contextlib.contextmanager
def _children(
    settings: Settings, root: Path, pki: Path
) -> Iterator[tuple[list[ChildProcess], tuple[int, int]]]:
    """Worker, facade and replica as child processes; all stopped when the block ends."""
    env = child_env(settings)
    replica_ports = (free_port(), free_port())
    started: list[ChildProcess] = []
    try:
        started.append(WorkerProcess(settings, root / "worker.log", loglevel="info"))
        started.append(ChildProcess([*themis_command(), "facade"], env, root / "facade.log"))
        serve = [
            *themis_command(), "wal", "serve", "--replica", "stack",
            "--port", str(replica_ports[0]), "--binary-port", str(replica_ports[1]),
            "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
            "--tls-client-ca", str(pki / "ca.pem"),
        ]  # fmt: skip
        started.append(ChildProcess(serve, env, root / "replica.log"))
        yield started, replica_ports
    finally:
        for child in reversed(started):
            child.stop()


def run_stack_up(settings: Settings, root: Path) -> int:
    """``themis stack up --dir ROOT``: bring everything up, describe it, supervise."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    described = root / STACK_FILE
    if described.exists() and _alive(_read(described).get("pid")):
        raise ThemisError(f"a stack already runs from {root} (themis stack down --dir {root})")
    described.unlink(missing_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    keys = {role: secrets.token_hex(16) for role in ("writer", "admin", "replicator")}
    local_name = f"stack-{uuid.uuid5(uuid.NAMESPACE_URL, str(root)).hex[:8]}"
    with provide_broker(settings, local_name=local_name) as broker:
        _say(f"broker at {broker.bootstrap_servers} ({broker.source})")
        settings = _stack_settings(settings, broker.bootstrap_servers, root / "data", keys)
        apply_topics(broker.bootstrap_servers, settings, partitions_override=2)
        pki = make_pki(root / "pki")
        with _children(settings, root, pki) as (children, replica_ports):
            writer = {"X-API-Key": keys["writer"]}
            facade = f"http://127.0.0.1:{settings.facade.port}"
            _wait(lambda: _answers(f"{facade}/ts/buffer/stats", writer), children, "the facade")
            _wait(
                lambda: _answers(f"{facade}/vectors/buffer/stats", writer),
                children,
                "the worker behind the facade",
            )
            status = f"https://127.0.0.1:{replica_ports[0]}/api/v1/replica/status"
            context = _client_context(pki)
            _wait(lambda: _answers(status, {}, context), children, "the replica")
            body = describe(settings, keys, pki, replica_ports, root)
            tmp = described.with_suffix(".tmp")
            tmp.write_text(json.dumps(body, indent=2))
            tmp.replace(described)
            replica = body["replica"]["https_url"]
            _say(f"stack up: {described} (facade http://{body['http_addr']}, replica {replica})")
            code = _supervise(children, stop)
            described.unlink(missing_ok=True)
    _say("stack down")
    return code


def _supervise(children: list[ChildProcess], stop: threading.Event) -> int:
    while not stop.wait(0.5):
        for child in children:
            try:
                child.check_alive()
            except ChildExited as exc:
                _say(f"stopping the stack: {exc}")
                return 1
    return 0


def _read(described: Path) -> dict[str, Any]:
    try:
        body = json.loads(described.read_text())
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_stack_down(root: Path, *, timeout_s: float = 90.0) -> int:
    """``themis stack down --dir ROOT``: SIGTERM to the stack's supervisor, wait until gone."""
    described = root.resolve() / STACK_FILE
    pid = _read(described).get("pid")
    if not _alive(pid):
        _say(f"no stack runs from {root}")
        described.unlink(missing_ok=True)
        return 0
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            raise ThemisError(f"the stack (pid {pid}) did not stop within {timeout_s:.0f} s")
        time.sleep(0.2)
    _say("stack stopped")
    return 0
