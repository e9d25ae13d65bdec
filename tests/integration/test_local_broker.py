"""`themis kafka up/status/down/restart` and the local broker's failure modes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from pipeline.errors import BrokerStartError
from pipeline.kafka.clients import AdminClient, Consumer, Producer
from pipeline.kafka.local_broker import LocalKafka, metadata_answers
from tests.fixtures.support import THEMIS, settings_env, wait_until

pytestmark = pytest.mark.e2e


def _themis(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*THEMIS, *args],
        env=env or settings_env({}),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _broker_processes(name: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and f"/clusters/{name}/".encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_up_status_down_twice_leaves_no_java_process() -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        up = _themis("kafka", "up", "--name", name)
        assert up.returncode == 0, up.stderr
        assert "started in" in up.stdout
        status = _themis("kafka", "status", "--name", name)
        assert status.returncode == 0
        assert "running at 127.0.0.1:" in status.stdout
        record = LocalKafka(name).status()
        assert record is not None
        assert metadata_answers(record.bootstrap_servers)
        down = _themis("kafka", "down", "--name", name)
        assert down.returncode == 0, down.stderr
        assert _broker_processes(name) == []
        assert _themis("kafka", "status", "--name", name).returncode == 1


def test_primary_and_replica_run_at_the_same_time() -> None:
    tag = uuid.uuid4().hex[:8]
    primary, replica = LocalKafka(f"primary-{tag}"), LocalKafka(f"replica-{tag}")
    try:
        a, b = primary.up(), replica.up()
        assert a.bootstrap_servers != b.bootstrap_servers
        assert metadata_answers(a.bootstrap_servers)
        assert metadata_answers(b.bootstrap_servers)
    finally:
        primary.down()
        replica.down()
    assert _broker_processes(primary.name) == _broker_processes(replica.name) == []


def test_missing_java_gives_a_message_saying_what_to_install(tmp_path: Path) -> None:
    env = settings_env({})
    env.pop("JAVA_HOME", None)
    env["PATH"] = os.path.dirname(sys.executable)
    result = _themis("kafka", "up", "--name", f"t-{uuid.uuid4().hex[:8]}", env=env)
    assert result.returncode == 2
    assert "Java was not found" in result.stderr
    assert "apt-get install openjdk-17-jre-headless" in result.stderr


def test_taken_port_leads_to_another_free_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = LocalKafka(f"t-{uuid.uuid4().hex[:8]}")
        try:
            record = cluster.up(port=port)
            assert not record.bootstrap_servers.endswith(f":{port}")
            assert metadata_answers(record.bootstrap_servers)
        finally:
            cluster.down()


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"extra_properties": {"num.network.threads": "zero"}}, "num.network.threads"),
        ({"jvm_options": ["-XX:+ThisOptionDoesNotExist"]}, "ThisOptionDoesNotExist"),
    ],
    ids=["bad-config-at-format", "jvm-exits-at-start"],
)
def test_broker_that_fails_to_start_shows_its_log_tail(
    options: dict[str, object], needle: str
) -> None:
    cluster = LocalKafka(f"t-{uuid.uuid4().hex[:8]}", **options)  # type: ignore[arg-type]
    try:
        with pytest.raises(BrokerStartError) as info:
            cluster.up(timeout_s=60)
    finally:
        cluster.down()
    message = str(info.value)
    assert "Log tail" in message
    assert needle in message


def test_a_start_interrupted_during_the_readiness_wait_leaves_no_java_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    seen: list[list[int]] = []

    def interrupt(bootstrap: str, timeout_s: float = 1.0) -> bool:
        # Ctrl-C comes once the JVM runs (a moment after Popen, it may not have exec'd).
        deadline = time.monotonic() + 30
        while not _broker_processes(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.append(_broker_processes(name))
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.kafka.local_broker.metadata_answers", interrupt)
    monkeypatch.setattr("pipeline.kafka.local_broker._tcp_open", lambda port: True)
    cluster = LocalKafka(name)
    with pytest.raises(KeyboardInterrupt):
        cluster.up(timeout_s=60)
    assert seen
    assert seen[0] != []
    assert _broker_processes(name) == []
    assert cluster.status() is None


def _produce_acked(bootstrap: str, topic: str, values: list[bytes]) -> None:
    with Producer({"bootstrap.servers": bootstrap, "acks": "all"}) as producer:
        for value in values:
            producer.produce(topic, value)
        assert producer.flush(30) == 0


def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is None:
                    values.append(msg.value() or b"")
    finally:
        consumer.close()
    return values


def test_restart_after_sigkill_and_after_sigterm_keeps_every_acked_record_on_the_same_port() -> (
    None
):
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster = LocalKafka(name)
    try:
        first = cluster.up()
        bootstrap = first.bootstrap_servers
        with AdminClient({"bootstrap.servers": bootstrap}) as admin:
            admin.create_topics([NewTopic("kept", 1, 1)])["kept"].result(30)
        before = [f"record-{i}".encode() for i in range(2_000)]
        _produce_acked(bootstrap, "kept", before)

        os.kill(first.pid, signal.SIGKILL)
        wait_until(lambda: cluster.status() is None, timeout_s=10, what="the JVM to die")
        restarted = _themis("kafka", "restart", "--name", name)
        assert restarted.returncode == 0, restarted.stderr
        assert "restarted at " + bootstrap in restarted.stdout
        second = cluster.status()
        assert second is not None
        assert (second.bootstrap_servers, second.controller_port) == (
            bootstrap,
            first.controller_port,
        )
        assert second.pid != first.pid
        assert _read_all(bootstrap, "kept", len(before)) == before

        after = [f"later-{i}".encode() for i in range(500)]
        _produce_acked(bootstrap, "kept", after)
        third = cluster.restart()  # running: SIGTERM, a clean stop
        assert third.bootstrap_servers == bootstrap
        assert _broker_processes(name) == [third.pid]
        assert _read_all(bootstrap, "kept", len(before) + len(after)) == before + after
    finally:
        cluster.down()
    assert _broker_processes(name) == []


def test_restart_of_a_cluster_never_started_says_to_start_it() -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    result = _themis("kafka", "restart", "--name", name)
    assert result.returncode != 0
    assert f"themis kafka up --name {name}" in result.stderr
