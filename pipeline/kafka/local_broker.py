"""A real Apache Kafka broker on loopback, resolved from Maven Central.

``LocalKafka(name).up()`` resolves ``org.apache.kafka:kafka_2.13`` and a logging
backend with Maven into a cache folder outside the repository (once), formats
KRaft storage, starts one combined broker+controller JVM on free loopback ports,
waits until it answers a metadata request and records its bootstrap address in
``<home>/clusters/<name>/cluster.json``. ``down()`` stops it with SIGTERM, then
SIGKILL after a deadline, and removes its data: local clusters are ephemeral.

Several named clusters (``primary``, ``replica``, ...) run side by side.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from pipeline.errors import BrokerError, BrokerStartError, EnvironmentProblem

KAFKA_VERSION = "4.1.1"
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


def themis_home(env: Mapping[str, str] | None = None) -> Path:
    """Cache and state folder: ``$THEMIS_HOME``, else ``~/.cache/themis``."""
    env = os.environ if env is None else env
    if env.get("THEMIS_HOME"):
        return Path(env["THEMIS_HOME"])
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "themis"


def find_java(env: Mapping[str, str] | None = None) -> str:
    """The ``java`` executable: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    env = os.environ if env is None else env
    java_home = env.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java", path=env.get("PATH"))
    if found is None:
        raise EnvironmentProblem(
            "Java was not found: the local Kafka broker needs a Java 17+ runtime. "
            "Install one (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) "
            "or set JAVA_HOME; or give an existing broker with KAFKA_BOOTSTRAP_SERVERS."
        )
    return found


def find_maven(env: Mapping[str, str] | None = None) -> str:
    """The ``mvn`` executable on PATH."""
    env = os.environ if env is None else env
    found = shutil.which("mvn", path=env.get("PATH"))
    if found is None:
        raise EnvironmentProblem(
            "Maven was not found: it resolves the Kafka jars from Maven Central once. "
            "Install it (Debian/Ubuntu: apt-get install maven), "
            "or give an existing broker with KAFKA_BOOTSTRAP_SERVERS."
        )
    return found


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


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_kafka_jars(home: Path, version: str = KAFKA_VERSION) -> Path:
    """Resolve the broker's jars with Maven into ``<home>/kafka-<version>/libs`` once."""
    target = home / f"kafka-{version}" / "libs"
    with _file_lock(home / f"kafka-{version}.lock"):
        if (target / ".complete").exists():
            return target
        mvn = find_maven()
        find_java()
        work = home / f"kafka-{version}" / "resolve"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        pom = resources.files("pipeline.kafka").joinpath("runtime-pom.xml").read_text()
        (work / "pom.xml").write_text(pom.replace("@KAFKA_VERSION@", version))
        staging = work / "libs"
        print(f"resolving Apache Kafka {version} from Maven Central (once) ...", flush=True)
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(work / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(
                f"Maven could not resolve org.apache.kafka:kafka_2.13:{version}:\n"
                + (result.stdout + result.stderr)[-3000:]
            )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        (target / ".complete").write_text(version)
        shutil.rmtree(work, ignore_errors=True)
        return target


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
    admin = AdminClient(config)
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
    ) -> None:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise BrokerError(f"cluster name {name!r} must be letters, digits, '-' or '_'")
        self.name = name
        self.home = home or themis_home()
        self.version = version
        self.extra_properties = dict(extra_properties or {})
        self.jvm_options = list(jvm_options or [])
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
        with _file_lock(self.home / "clusters" / f"{self.name}.lock"):
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

    def _start(self, java: str, libs: Path, port: int | None, timeout_s: float) -> ClusterRecord:
        t0 = time.monotonic()
        shutil.rmtree(self.cluster_dir, ignore_errors=True)
        data_dir = self.cluster_dir / "data"
        logs_dir = self.cluster_dir / "logs"
        data_dir.mkdir(parents=True)
        logs_dir.mkdir(parents=True)
        broker_port = free_port(port)
        controller_port = free_port()
        if controller_port == broker_port:
            controller_port = free_port()
        props = self._properties(broker_port, controller_port, data_dir, logs_dir)
        props_file = self.cluster_dir / "server.properties"
        props_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = self.cluster_dir / "log4j2.properties"
        log_file = logs_dir / "server.log"
        log4j.write_text(_LOG4J_TEMPLATE.replace("@LOG_FILE@", str(log_file)))
        classpath = f"{libs}/*"
        base = [java, "-Xshare:auto", f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
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
        stdout_file = logs_dir / "stdout.log"
        with stdout_file.open("wb") as out:
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
            controller_port=controller_port,
            pid=proc.pid,
            log_file=str(log_file),
            startup_seconds=round(time.monotonic() - t0, 3),
            started_at=time.time(),
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
        self, broker_port: int, controller_port: int, data_dir: Path, logs_dir: Path
    ) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data_dir),
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


def _tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM the process group, wait up to ``timeout_s``, then SIGKILL it."""
    with contextlib.suppress(ProcessLookupError):
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
