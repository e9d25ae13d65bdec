"""A real Apache Kafka broker on loopback, resolved from Maven Central.

``LocalKafka(name).up()`` resolves ``org.apache.kafka:kafka_2.13`` and a logging
backend with Maven into a cache folder outside the repository (once), formats
KRaft storage, starts one combined broker+controller JVM on free loopback ports,
waits until it answers a metadata request and records its bootstrap address in
``<home>/clusters/<name>/cluster.json``. ``down()`` stops it with SIGTERM, then
SIGKILL after a deadline, and removes its data: local clusters are ephemeral.
``restart()`` stops the JVM (or finds it gone, say after a SIGKILL) and starts it
again on the same ports with the same data, so what was acknowledged before is there
after (fault tests; ``themis kafka restart``).

``proxied_at="127.0.0.1:PORT"`` adds a second listener, ``PROXIED``, on a free port
(``ClusterRecord.proxied_upstream``) advertised as ``PORT``: run a TCP proxy (a fault
injector) from ``PORT`` to that upstream, and clients that bootstrap at ``PORT`` keep
every connection behind the proxy, while clients of ``bootstrap_servers`` do not.

Several named clusters (``primary``, ``replica``, ...) run side by side.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import BrokerError, BrokerStartError
from pipeline.kafka.clients import AdminClient
from pipeline.kafka.kafka_runtime import KAFKA_VERSION, file_lock, find_java, resolve_kafka_jars

_LOG = logging.getLogger(__name__)
_QUIET = logging.getLogger("pipeline.kafka.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

# Sized for a 2-core, 24 GB machine running broker, workers and benchmarks together.
_JVM_OPTS = [
    "-Xms512m",
    "-Xmx2g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]


# What a one-node cluster needs, and the sizes and timings the pipeline expects of its
# broker: the local JVM and the container broker (docker_broker.py) share them.
SINGLE_NODE_PROPERTIES: Mapping[str, str] = {
    "num.network.threads": "3",
    "num.io.threads": "4",
    "num.partitions": "1",
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "message.max.bytes": str(16 * 1024 * 1024),
    "log.segment.bytes": str(256 * 1024 * 1024),
    # After a SIGKILL the restarted controller refuses the broker's new registration
    # until the old one's session expires (9 s by default).
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "1000",
}


def themis_home(env: Mapping[str, str] | None = None) -> Path:
    """Cache and state folder: ``$THEMIS_HOME``, else ``~/.cache/themis``."""
    env = os.environ if env is None else env
    if env.get("THEMIS_HOME"):
        return Path(env["THEMIS_HOME"])
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "themis"


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it can be bound on 127.0.0.1, else a free port chosen by the OS."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                _LOG.info("port %s is taken; choosing another free port", candidate)
                continue
            port: int = sock.getsockname()[1]
            return port
    raise BrokerError("no free TCP port on 127.0.0.1")


@dataclass(frozen=True)
class ClusterRecord:
    """What ``themis kafka up`` recorded about a running local cluster."""

    name: str
    bootstrap_servers: str
    controller_port: int
    pid: int
    log_file: str
    startup_seconds: float
    started_at: float
    proxied_upstream: str | None = None
    """Where the ``PROXIED`` listener really listens (``proxied_at`` clusters only)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClusterRecord:
        return cls(**json.loads(text))


def _pid_is_broker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline


def _new_cluster_id() -> str:
    """A KRaft cluster id; never starting with '-', which the storage tool reads as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"


def metadata_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request within the timeout."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _QUIET}
    with AdminClient(config) as admin:
        try:
            admin.list_topics(timeout=timeout_s)
        except Exception:
            return False
    return True


class LocalKafka:
    """One named local Kafka cluster: a single broker+controller JVM on loopback."""

    def __init__(
        self,
        name: str = "primary",
        *,
        home: Path | None = None,
        version: str = KAFKA_VERSION,
        extra_properties: Mapping[str, str] | None = None,
        jvm_options: list[str] | None = None,
        proxied_at: str | None = None,
    ) -> None:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise BrokerError(f"cluster name {name!r} must be letters, digits, '-' or '_'")
        self.name = name
        self.home = home or themis_home()
        self.version = version
        self.extra_properties = dict(extra_properties or {})
        self.jvm_options = list(jvm_options or [])
        self.proxied_at = proxied_at
        self.cluster_dir = self.home / "clusters" / name
        self.record_path = self.cluster_dir / "cluster.json"

    def status(self) -> ClusterRecord | None:
        """The running cluster's record, or ``None`` (a stale record is removed)."""
        try:
            record = ClusterRecord.from_json(self.record_path.read_text())
        except (OSError, ValueError, TypeError):
            return None
        if not _pid_is_broker(record.pid):
            self.record_path.unlink(missing_ok=True)
            return None
        return record

    def up(self, *, port: int | None = None, timeout_s: float = 90.0) -> ClusterRecord:
        """Start the cluster (or return the running one) and wait until it answers."""
        with file_lock(self.home / "clusters" / f"{self.name}.lock"):
            running = self.status()
            if running is not None:
                return running
            java = find_java()
            libs = resolve_kafka_jars(self.home, self.version)
            for attempt in range(3):
                try:
                    return self._start(java, libs, port if attempt == 0 else None, timeout_s)
                except _PortRace:
                    _LOG.warning("a chosen port was taken before the broker bound it; retrying")
            raise BrokerStartError(f"cluster {self.name!r}: ports kept being taken; giving up")

    def restart(
        self, *, kill: bool = False, timeout_s: float = 90.0, stop_timeout_s: float = 30.0
    ) -> ClusterRecord:
        """Stop the JVM if it runs and start it again on the same ports, keeping the data.

        The JVM gets SIGTERM, then SIGKILL after ``stop_timeout_s`` (``kill``: SIGKILL at
        once, a crash); a JVM that is gone already (killed) is just started again.
        Raises :class:`~pipeline.errors.BrokerStartError` when the cluster was never
        started under this home or one of its ports is taken now.
        """
        with file_lock(self.home / "clusters" / f"{self.name}.lock"):
            props_file = self.cluster_dir / "server.properties"
            if not props_file.is_file():
                raise BrokerStartError(
                    f"cluster {self.name!r} has no data to keep in {self.cluster_dir}; "
                    f"start it with `themis kafka up --name {self.name}`"
                )
            running = self.status()
            if running is not None:
                _terminate(running.pid, 0.0 if kill else stop_timeout_s)
            ports = _listener_ports(props_file)
            java, libs = find_java(), resolve_kafka_jars(self.home, self.version)
            try:
                return self._launch(java, libs, ports, timeout_s, time.monotonic())
            except _PortRace:
                raise BrokerStartError(
                    f"cluster {self.name!r}: one of its ports {sorted(ports.values())} is taken "
                    "now, so it cannot restart on them; `themis kafka down` and `up` instead"
                ) from None

    def _start(self, java: str, libs: Path, port: int | None, timeout_s: float) -> ClusterRecord:
        t0 = time.monotonic()
        shutil.rmtree(self.cluster_dir, ignore_errors=True)
        data_dir = self.cluster_dir / "data"
        logs_dir = self.cluster_dir / "logs"
        data_dir.mkdir(parents=True)
        logs_dir.mkdir(parents=True)
        names = ["PLAINTEXT", "CONTROLLER"] + (["PROXIED"] if self.proxied_at else [])
        ports: dict[str, int] = {}
        while len(set(ports.values())) < len(names):
            chosen = [free_port(port)] + [free_port() for _ in names[1:]]
            ports = dict(zip(names, chosen, strict=True))
        props = self._properties(ports, data_dir, logs_dir)
        props_file = self.cluster_dir / "server.properties"
        props_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = self.cluster_dir / "log4j2.properties"
        log4j.write_text(_LOG4J_TEMPLATE.replace("@LOG_FILE@", str(logs_dir / "server.log")))
        base = [java, "-Xshare:auto", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
        fmt = subprocess.run(
            [
                *base,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _new_cluster_id(),
                "-c",
                str(props_file),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise BrokerStartError(
                f"cluster {self.name!r}: formatting KRaft storage failed. Log tail:\n"
                + "\n".join((fmt.stdout + fmt.stderr).splitlines()[-40:])
            )
        return self._launch(java, libs, ports, timeout_s, t0)

    def _launch(
        self, java: str, libs: Path, ports: Mapping[str, int], timeout_s: float, t0: float
    ) -> ClusterRecord:
        """Run the JVM on the formatted storage and wait until it answers; record it."""
        props_file = self.cluster_dir / "server.properties"
        log4j = self.cluster_dir / "log4j2.properties"
        logs_dir = self.cluster_dir / "logs"
        log_file = logs_dir / "server.log"
        base = [java, "-Xshare:auto", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
        stdout_file = logs_dir / "stdout.log"
        with stdout_file.open("ab") as out:
            proc = subprocess.Popen(
                [
                    *base[:1],
                    *_JVM_OPTS,
                    *self.jvm_options,
                    *base[1:],
                    "kafka.Kafka",
                    str(props_file),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # the broker outlives `themis kafka up`
            )
        broker_port = ports["PLAINTEXT"]
        bootstrap = f"127.0.0.1:{broker_port}"
        try:
            self._wait_ready(
                proc,
                broker_port,
                bootstrap=bootstrap,
                timeout_s=timeout_s,
                log_file=log_file,
                stdout_file=stdout_file,
            )
        except BaseException:
            # Ctrl-C during the wait, a port race, a broker that never answered: the JVM
            # must not outlive a start that failed (it was never recorded).
            if proc.poll() is None:
                _terminate(proc.pid, 10.0)
            raise
        record = ClusterRecord(
            name=self.name,
            bootstrap_servers=bootstrap,
            controller_port=ports["CONTROLLER"],
            pid=proc.pid,
            log_file=str(log_file),
            startup_seconds=round(time.monotonic() - t0, 3),
            started_at=time.time(),
            proxied_upstream=f"127.0.0.1:{ports['PROXIED']}" if "PROXIED" in ports else None,
        )
        self.record_path.write_text(record.to_json())
        return record

    def _wait_ready(
        self,
        proc: subprocess.Popen[bytes],
        broker_port: int,
        *,
        bootstrap: str,
        timeout_s: float,
        log_file: Path,
        stdout_file: Path,
    ) -> None:
        """Return once the broker answers a metadata request; raise if it exits or is late."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = _log_tail(log_file) + "\n" + _log_tail(stdout_file)
                if "Address already in use" in tail:
                    raise _PortRace
                raise BrokerStartError(
                    f"cluster {self.name!r}: the broker JVM exited with code {proc.returncode}. "
                    f"Log tail ({log_file}):\n{tail}"
                )
            if _tcp_open(broker_port) and metadata_answers(bootstrap, timeout_s=1.0):
                return
            time.sleep(0.1)
        raise BrokerStartError(
            f"cluster {self.name!r}: the broker did not answer within {timeout_s:.0f} s. "
            f"Log tail ({log_file}):\n{_log_tail(log_file)}"
        )

    def _properties(
        self, ports: Mapping[str, int], data_dir: Path, logs_dir: Path
    ) -> dict[str, str]:
        advertised = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        if self.proxied_at:
            advertised["PROXIED"] = self.proxied_at
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{ports['CONTROLLER']}",
            "listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items()),
            "advertised.listeners": ",".join(
                f"{name}://{address}"
                for name, address in advertised.items()
                if name != "CONTROLLER"
            ),
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(f"{name}:PLAINTEXT" for name in ports),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data_dir),
            **SINGLE_NODE_PROPERTIES,
        }
        props.update(self.extra_properties)
        return props

    def down(self, *, timeout_s: float = 30.0) -> bool:
        """Stop the cluster (SIGTERM, then SIGKILL) and remove its data; False if not running."""
        record = self.status()
        if record is None:
            shutil.rmtree(self.cluster_dir, ignore_errors=True)
            return False
        _terminate(record.pid, timeout_s)
        shutil.rmtree(self.cluster_dir, ignore_errors=True)
        return True


class _PortRace(Exception):
    """A port chosen as free was taken before the JVM bound it."""


def _listener_ports(props_file: Path) -> dict[str, int]:
    """The port of each listener in a ``server.properties`` this module wrote."""
    for line in props_file.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "listeners":
            return {
                name: int(address.rpartition(":")[2])
                for name, _, address in (item.partition("://") for item in value.split(","))
            }
    raise BrokerStartError(f"{props_file} names no listeners; `themis kafka down` and `up` again")


def _tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM the process group, wait up to ``timeout_s``, then SIGKILL it (0: SIGKILL only)."""
    with contextlib.suppress(ProcessLookupError):
        if timeout_s > 0:
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


_LOG4J_TEMPLATE = """\
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = @LOG_FILE@
appender.file.filePattern = @LOG_FILE@.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""
