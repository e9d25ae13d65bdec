"""Kafka clients are registered until closed, close is bounded, and all come from one place."""

from __future__ import annotations

import ast
import gc
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from pipeline.kafka import clients
from pipeline.kafka.clients import AdminClient, Consumer, Producer

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
NOBODY = "127.0.0.1:9"
"""A loopback port nothing listens on (discard): every connection is refused."""

_QUIET = logging.getLogger("tests.kafka_clients.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _config(**extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": NOBODY, "logger": _QUIET, **extra}


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A registry of this test's own, so that what it leaks on purpose stays here."""
    monkeypatch.setattr(clients, "_REGISTRY", clients._Registry())
    yield
    gc.collect()


@pytest.mark.usefixtures("registry")
def test_each_kind_of_client_is_open_until_closed_and_closes_twice_without_error() -> None:
    made: list[Producer | Consumer | AdminClient] = [
        Producer(_config()),
        Consumer(_config(**{"group.id": "g"})),
        AdminClient(_config()),
    ]
    records = clients.open_clients()
    assert [(r.kind, r.bootstrap) for r in records] == [
        ("producer", NOBODY),
        ("consumer", NOBODY),
        ("admin", NOBODY),
    ]
    assert records[0].created_at[-1].startswith(f"{__file__}:")
    assert clients.clients_created() == 3
    for client in made:
        client.close()
        client.close()
    assert clients.open_clients() == []
    assert clients.dropped_clients() == []


@pytest.mark.usefixtures("registry")
def test_a_with_block_closes_the_client() -> None:
    with Producer(_config()) as producer, AdminClient(_config()) as admin:
        assert len(clients.open_clients()) == 2
    assert clients.open_clients() == []
    with pytest.raises(RuntimeError, match="closed"):
        producer.poll(0)
    with pytest.raises(RuntimeError, match="closed"):
        admin.list_topics(timeout=0.1)


@pytest.mark.usefixtures("registry")
def test_a_client_collected_without_close_is_reported_as_dropped() -> None:
    Consumer(_config(**{"group.id": "g"}))  # dropped at once
    gc.collect()
    assert clients.open_clients() == []
    [dropped] = clients.dropped_clients()
    assert (dropped.kind, dropped.serial) == ("consumer", 1)
    assert "test_a_client_collected_without_close" in dropped.describe()


@pytest.mark.usefixtures("registry")
def test_producer_close_purges_what_an_absent_broker_never_acknowledged() -> None:
    # confluent-kafka's own close() waits for ever here (message.timeout.ms is 5 min).
    reports: list[KafkaError | None] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        reports.append(err)

    producer = Producer(_config())
    producer.produce("t", b"v", on_delivery=on_delivery)
    t0 = time.monotonic()
    assert producer.close(timeout_s=0.2) is True
    assert time.monotonic() - t0 < 5
    assert [None if e is None else e.code() for e in reports] == [KafkaError._PURGE_QUEUE]
    assert clients.open_clients() == []


def _raw_client_calls(path: Path) -> list[str]:
    """``Producer(``/``Consumer(``/``AdminClient(`` calls of confluent-kafka's own classes."""
    text = path.read_text()
    if "confluent_kafka" not in text:
        return []
    tree = ast.parse(text)
    raw = {"Producer", "Consumer", "AdminClient"}
    local: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("confluent_kafka"):
            local |= {a.asname or a.name for a in node.names if a.name in raw}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Name) and func.id in local) or (
            isinstance(func, ast.Attribute)
            and func.attr in raw
            and ast.unparse(func.value).startswith("confluent_kafka")
        ):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_every_kafka_client_is_created_through_the_registering_classes() -> None:
    sources = sorted([*(REPO / "pipeline").rglob("*.py"), *(REPO / "tests").rglob("*.py")])
    own = REPO / "pipeline" / "kafka" / "clients.py"
    assert [call for path in sources if path != own for call in _raw_client_calls(path)] == []
