"""What the local broker runs on: a Java runtime, and Apache Kafka's jars resolved once.

``resolve_kafka_jars`` resolves ``org.apache.kafka:kafka_2.13`` and a logging backend
with Maven (``runtime-pom.xml``) into ``<home>/kafka-<version>/libs``, once, under a
file lock, so several processes starting brokers at the same time resolve it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path

from pipeline.errors import BrokerError, EnvironmentProblem

__all__ = ["KAFKA_VERSION", "file_lock", "find_java", "find_maven", "resolve_kafka_jars"]

KAFKA_VERSION = "4.1.1"


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


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created with its parents if missing)."""
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
    with file_lock(home / f"kafka-{version}.lock"):
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
