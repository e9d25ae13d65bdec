"""The alerting rules (deploy/prometheus/alerts.yml) and the live ``/metrics`` pages,
checked by Prometheus' own ``promtool``.

``promtool check rules`` and ``promtool test rules`` (deploy/prometheus/alerts_test.yml)
run on the rules; every alert has a case where it fires and one where it stays quiet,
and every metric an expression names is one the pipeline exports. ``promtool check
metrics`` then reads the real pages of a worker, a facade (with its binary door) and a
WAL shipper under a small load, and must find nothing to say.

promtool comes with Debian's ``prometheus`` package (``make prometheus``,
scripts/ensure-prometheus.sh); ``PROMETHEUS_BIN`` names another Prometheus, whose
promtool lies beside it. Without it the tests fail, never skip.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from pipeline.binary.codes import ErrorCode
from pipeline.binary.door_metrics import BinaryMetrics
from pipeline.config import Settings, load_settings
from pipeline.facade import create_facade
from pipeline.facade.app import FACADE_STATE
from pipeline.facade.middleware import FacadeMetrics
from pipeline.ingest.buffer_core import FlushReason
from pipeline.kafka.clients import Producer
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics
from pipeline.metrics import PipelineMetrics, WalShipperMetrics
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import FacadeThread, facade_behind_worker
from tests.fixtures.prometheus import prometheus_binary
from tests.fixtures.support import (
    REPO,
    THEMIS,
    settings_as_env,
    start_process,
    stop_process,
    wait_until,
)

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
EXTERNAL_METRICS = {
    "up": "Prometheus' own scrape health",
    "kafka_consumergroup_lag": "a Kafka exporter's (danielqsj/kafka_exporter); the "
    "pipeline does not export the broker's end offsets",
}
"""Metrics the rules read that the pipeline does not export, and whose they are."""

DIM = 8
WRITER = {"Authorization": "Bearer writer-key"}
ADMIN = {"X-API-Key": "admin-key"}
SHIP_KEY = "alerts-ship-key"


def promtool() -> str:
    """promtool beside the Prometheus binary; fails (never skips) without one."""
    path = Path(prometheus_binary()).with_name("promtool")
    if not path.exists():
        pytest.fail(f"no promtool beside {prometheus_binary()}; run scripts/ensure-prometheus.sh")
    return str(path)


def run_promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        cwd=PROMETHEUS_DIR,
        check=False,
        timeout=120,
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def series_names(registry: CollectorRegistry) -> set[str]:
    """The names Prometheus stores for ``registry``'s metrics (``_total``, ``_bucket``, ...)."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.update((f"{family.name}_total", f"{family.name}_created"))
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum"))
        else:
            names.add(family.name)
    return names


def exported_names() -> set[str]:
    """Every series name a worker, a facade (binary door included) or a shipper exports."""
    facade = FacadeMetrics()
    BinaryMetrics(facade.registry)
    return (
        series_names(PipelineMetrics().registry)
        | series_names(WalShipperMetrics().registry)
        | series_names(facade.registry)
    )


_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{|\[|\)|\s*[=!<>]|$)")
_NOT_METRICS = {"by", "on", "and", "or", "unless", "sum", "max", "min", "rate", "increase"}
_NOT_METRICS |= {"absent", "ignoring", "without", "group_left", "group_right", "avg", "count"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers and strings removed)."""
    bare = re.sub(r"\{[^}]*\}", "{}", expr)
    bare = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", "[]", bare)
    return {m for m in _SELECTOR.findall(bare) if m not in _NOT_METRICS}


# -- the rules ---------------------------------------------------------------------------


@pytest.mark.unit
def test_alert_rules_pass_promtool_check_rules() -> None:
    done = run_promtool("check", "rules", ALERTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


@pytest.mark.unit
def test_alert_unit_tests_pass_promtool_test_rules() -> None:
    done = run_promtool("test", "rules", ALERTS_TEST.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.unit
def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases: dict[str, dict[str, int]] = {}
    for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            outcome = "firing" if case.get("exp_alerts") else "quiet"
            counts = cases.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
            counts[outcome] += 1
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    assert sorted(cases) == sorted(names), "a case for an alert that does not exist, or none"
    for name, counts in cases.items():
        assert counts["firing"] >= 1, f"{name} never fires in alerts_test.yml"
        assert counts["quiet"] >= 1, f"{name} is never shown quiet in alerts_test.yml"


@pytest.mark.unit
def test_issue_18_alerts_are_all_there() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "ThemisReplicationLagHigh",
        "ThemisReplicaUnhealthy",
        "ThemisDeadLetters",
        "ThemisTSBufferOverflowing",
        "ThemisFacadeBufferFull",
        "ThemisTSFlushesFailing",
        "ThemisVectorSnapshotsFailing",
        "ThemisConsumerLagHigh",
        "ThemisTSConsumerStalled",
        "ThemisWorkerDown",
    } <= names


@pytest.mark.unit
def test_alert_expressions_name_only_metrics_the_pipeline_exports() -> None:
    known = exported_names()
    used: set[str] = set()
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        unknown = names - known - set(EXTERNAL_METRICS)
        assert not unknown, f"{rule['alert']} reads {sorted(unknown)}, which nothing exports"
        used |= names
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    assert set(EXTERNAL_METRICS) <= used  # the list says what the rules really need


class _NoProducer:
    def produce(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("the route table needs no broker")

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0

    def close(self) -> None:
        pass


def facade_routes() -> set[str]:
    """The path of every facade endpoint, from the facade's own route table."""
    settings = load_settings(
        path=Path("/dev/null"), env={}, overrides={"facade": {"api_keys": "k:admin"}}
    )
    app = create_facade(
        settings,
        None,
        producer=_NoProducer(),
        partitions={settings.topic("ts.points"): 1, settings.topic("vectors.ops"): 1},
    )
    return {path for _, path in app[FACADE_STATE].guard.routes}


BUFFERED_TS_WRITES = {
    "/ts/put/buffered",
    "/ts/put/buffered/batch",
    "/api/v2/write",
    "/write",
    "/api/v1/write",
}
BUFFERED_VECTOR_WRITES = {
    "/vectors/add/buffered",
    "/vectors/update/buffered",
    "/vectors/remove/buffered",
}


@pytest.mark.unit
def test_label_values_in_the_rules_are_ones_the_code_sets() -> None:
    routes = facade_routes()
    rules = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    matched: dict[str, set[str]] = {}
    for name, expr in rules.items():
        for pattern in re.findall(r'route=~"([^"]*)"', expr):
            matched.setdefault(name, set()).update(r for r in routes if re.fullmatch(pattern, r))
    assert matched == {
        "ThemisFacadeBufferFull": BUFFERED_TS_WRITES | BUFFERED_VECTOR_WRITES,
        "ThemisTSConsumerStalled": BUFFERED_TS_WRITES,
        "ThemisVectorConsumerStalled": BUFFERED_VECTOR_WRITES,
    }
    text = ALERTS.read_text()
    assert set(re.findall(r'reason="(\w+)"', text)) <= {r.value for r in FlushReason}
    assert set(re.findall(r'code="(\w+)"', text)) <= {c.name for c in ErrorCode}


@pytest.mark.unit
def test_metric_names_finds_selectors_not_functions_or_labels() -> None:
    expr = (
        'sum by (job) (rate(a_total{route=~"/x|/y", status="429"}[5m])) > 0 '
        'and on (job) max by (job) (b_seconds) > 30 or absent(up{job="w"})'
    )
    assert metric_names(expr) == {"a_total", "b_seconds", "up"}


@pytest.mark.unit
def test_example_prometheus_config_loads_the_alerts() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == [ALERTS.name]
    done = run_promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


# -- the live pages ----------------------------------------------------------------------


def get_page(port: int, path: str = "/metrics") -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200, f":{port}{path} answered {response.status}"
        return response.read()
    finally:
        conn.close()


def answers(port: int) -> bool:
    try:
        get_page(port)
    except (OSError, AssertionError):
        return False
    return True


@pytest.fixture
def stack(make_settings: MakeSettings, tmp_path: Path) -> Iterator[tuple[FacadeThread, int]]:
    """A worker, the facade (with a binary port) in front of it, and ``themis wal ship
    --metrics-port`` shipping the WAL to a ``themis wal serve`` replica; yields the
    facade and the shipper's metrics port."""
    settings: Settings = make_settings(
        facade={"api_keys": "writer-key:writer,admin-key:admin", "binary_port": free_port()},
        ts_auto_buffer={"flush_interval_ms": 60_000},
        vector_auto_buffer={"dimension": DIM, "flush_interval_ms": 200},
        compressed_wal_shipping={"apply_keys": SHIP_KEY, "ship_key": SHIP_KEY},
    )
    assert settings.kafka.bootstrap_servers
    apply_topics(settings.kafka.bootstrap_servers, settings, partitions_override=2)
    env = settings_as_env(settings)
    replica_port, metrics_port = free_port(), free_port()
    replica_env = env | {"THEMIS_WORKER_DATA_DIR": str(tmp_path / "replica")}
    replica = start_process(
        [*THEMIS, "wal", "serve", "--replica", "alerts", "--port", str(replica_port)],
        replica_env,
        tmp_path / "replica.log",
    )
    ship = [
        *THEMIS, "wal", "ship", "--replica", f"r1=http://127.0.0.1:{replica_port}",
        "--metrics-port", str(metrics_port), "--primary-id", "alerts", "--stats-interval", "1",
    ]  # fmt: skip
    shipper = start_process(ship, env, tmp_path / "shipper.log")
    try:
        with facade_behind_worker(settings, tmp_path, WRITER) as facade:
            wait_until(lambda: answers(metrics_port), timeout_s=60, what="the shipper's /metrics")
            yield facade, metrics_port
    finally:
        stop_process(shipper)
        stop_process(replica)


def _load(facade: FacadeThread) -> None:
    """Points, vectors, a search, flushes and one bad record: histograms and labelled
    series get samples, and the flushes write WAL entries for the shipper."""
    t0 = 1_702_645_200_000
    ndjson = "\n".join(
        json.dumps({"metric": "cpu", "entity": "s1", "timestamp_ms": t0 + i, "value": i * 0.5})
        for i in range(50)
    ).encode()
    headers = WRITER | {"Content-Type": "application/x-ndjson"}
    assert facade.call("POST", "/ts/put/buffered/batch", ndjson, headers)[0] == 200
    rng = np.random.default_rng(5)
    for i in range(5):
        body = {"pk": f"doc{i}", "vector": rng.normal(0, 1, DIM).tolist()}
        assert facade.call("POST", "/vectors/add/buffered", body, WRITER)[0] == 200
    wait_until(
        lambda: facade.call("GET", "/ts/buffer/stats", headers=WRITER)[1]["points_buffered"] == 50,
        timeout_s=60,
        what="50 points in the worker's TS buffer",
    )
    assert facade.call("POST", "/ts/buffer/flush", headers=ADMIN)[0] == 200
    assert facade.call("POST", "/vectors/buffer/flush", headers=ADMIN)[0] == 200
    assert facade.call("POST", "/vectors/search", {"vector": [1.0] * DIM, "k": 3}, WRITER)[0] == 200
    settings = facade.settings
    assert settings.kafka.bootstrap_servers
    with Producer({"bootstrap.servers": settings.kafka.bootstrap_servers}) as producer:
        producer.produce(settings.topic("ts.points"), b"{not json", key=b"bad")
        assert producer.flush(30) == 0


def _value(page: bytes, series: str) -> float:
    for line in page.decode().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return float("nan")


def test_every_live_metrics_page_passes_promtool_check_metrics(
    stack: tuple[FacadeThread, int],
) -> None:
    facade, shipper_port = stack
    _load(facade)
    worker_port = facade.settings.worker.web_port
    wait_until(
        lambda: _value(get_page(worker_port), "ts_auto_buffer_points_flushed_total") == 50,
        timeout_s=60,
        what="the flushed points on the worker's page",
    )
    wait_until(
        lambda: _value(get_page(shipper_port), "wal_shipper_batches_total") >= 1,
        timeout_s=60,
        what="a WAL batch confirmed on the shipper's page",
    )
    pages = {
        "worker": (worker_port, {"pipeline_dead_letters_total", "vector_search_latency_seconds"}),
        "facade": (facade.port, {"facade_request_duration_seconds", "facade_binary_requests"}),
        "shipper": (shipper_port, {'wal_shipper_lag_seconds{replica="r1"}'}),
    }
    for name, (port, expected) in pages.items():
        page = get_page(port)
        for text in expected:
            assert text.encode() in page, f"{name}'s /metrics has no {text}"
        done = run_promtool("check", "metrics", stdin=page)
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
        assert done.stdout + done.stderr == "", f"{name}: {done.stdout}{done.stderr}"
