"""A real Prometheus scrapes a worker and a facade; the Grafana dashboards use real names.

The scrape test needs the ``prometheus`` binary (``make prometheus`` installs Debian's
package; ``PROMETHEUS_BIN`` names another one). Without it the test fails: it never
skips.
"""

from __future__ import annotations

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

from pipeline.config import Settings
from pipeline.facade.middleware import FacadeMetrics
from pipeline.kafka.clients import Producer
from pipeline.kafka.topics import apply_topics
from pipeline.metrics import PipelineMetrics, WalShipperMetrics
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import FacadeThread, facade_behind_worker
from tests.fixtures.prometheus import PrometheusProcess, prometheus_binary
from tests.fixtures.support import (
    REPO,
    wait_until,
)

pytestmark = pytest.mark.integration

DIM = 8
WRITER = {"Authorization": "Bearer writer-key"}
ADMIN = {"X-API-Key": "admin-key"}
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
DASHBOARD_FILES = ("ts_auto_buffer.json", "vector_auto_buffer.json", "compressed_wal_shipping.json")
WORKER_JOB = "themis-worker"
FACADE_JOB = "themis-facade"


def series_names(registry: CollectorRegistry) -> set[str]:
    """The names Prometheus stores for ``registry``'s metrics (``_total``, ``_bucket``, ...)."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum"))
        else:
            names.add(family.name)
    return names


_NAME = re.compile(r"(?<![\w$])(?:ts_auto_buffer|vector|wal_shipper|pipeline|facade)_[a-z0-9_]+")
_GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
    "$replica": ".*",
    "$facade_job": ".*",
}


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def dashboard(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARDS / name).read_text())
    return loaded


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target."""
    return [t["expr"] for p in _panels(board) if p["type"] != "row" for t in p["targets"]]


def as_promql(expr: str) -> str:
    """``expr`` with Grafana's variables replaced as Grafana would (all values selected)."""
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def worker_series_names() -> set[str]:
    """The time-series and vector metrics of ``pipeline.metrics`` (the WAL shipper's aside:
    no process the worker or facade runs ships WAL, so they carry no data there)."""
    return {n for n in series_names(PipelineMetrics().registry) if not n.startswith("wal_")}


def facade_series_names() -> set[str]:
    return series_names(FacadeMetrics().registry)


@pytest.fixture
def worker_and_facade(make_settings: MakeSettings, tmp_path: Path) -> Iterator[FacadeThread]:
    settings: Settings = make_settings(
        facade={"api_keys": "writer-key:writer,admin-key:admin"},
        ts_auto_buffer={"flush_interval_ms": 60_000},
        vector_auto_buffer={"dimension": DIM, "flush_interval_ms": 200},
    )
    assert settings.kafka.bootstrap_servers
    apply_topics(settings.kafka.bootstrap_servers, settings, partitions_override=2)
    with facade_behind_worker(settings, tmp_path, WRITER) as facade:
        yield facade


def _load(facade: FacadeThread) -> None:
    """Points, vectors, a search, manual flushes and one bad record: every metric gets data."""
    t0 = 1_702_645_200_000
    ndjson = "\n".join(
        json.dumps({"metric": "cpu", "entity": "s1", "timestamp_ms": t0 + i, "value": i * 0.5})
        for i in range(50)
    ).encode()
    headers = WRITER | {"Content-Type": "application/x-ndjson"}
    assert facade.call("POST", "/ts/put/buffered/batch", ndjson, headers)[0] == 200
    rng = np.random.default_rng(3)
    for i in range(10):
        vector = rng.normal(0, 1, DIM).tolist()
        body = {"pk": f"doc{i}", "vector": vector}
        assert facade.call("POST", "/vectors/add/buffered", body, WRITER)[0] == 200
    wait_until(
        lambda: facade.call("GET", "/ts/buffer/stats", headers=WRITER)[1]["points_buffered"] == 50,
        timeout_s=60,
        what="50 points in the worker's TS buffer",
    )
    assert facade.call("POST", "/ts/buffer/flush", headers=ADMIN)[0] == 200
    assert facade.call("POST", "/vectors/buffer/flush", headers=ADMIN)[0] == 200
    query = {"vector": [1.0] * DIM, "k": 3}
    wait_until(
        lambda: len(facade.call("POST", "/vectors/search", query, WRITER)[1]["results"]) == 3,
        timeout_s=60,
        what="searchable vectors",
    )
    settings = facade.settings
    assert settings.kafka.bootstrap_servers
    with Producer({"bootstrap.servers": settings.kafka.bootstrap_servers}) as producer:
        producer.produce(settings.topic("ts.points"), b"{not json", key=b"bad")
        assert producer.flush(30) == 0


@pytest.fixture
def prometheus_bin() -> str:
    return prometheus_binary()


def test_prometheus_scrapes_every_worker_and_facade_metric(
    prometheus_bin: str, worker_and_facade: FacadeThread, tmp_path: Path
) -> None:
    facade = worker_and_facade
    _load(facade)
    targets = {WORKER_JOB: facade.settings.worker.web_port, FACADE_JOB: facade.port}
    prometheus = PrometheusProcess(prometheus_bin, targets, tmp_path)
    try:
        wait_until(
            lambda: prometheus.targets_up(targets),
            timeout_s=60,
            what=f"Prometheus targets {sorted(targets)} up",
        )
        expected = {WORKER_JOB: worker_series_names(), FACADE_JOB: facade_series_names()}

        def missing() -> dict[str, set[str]]:
            return {job: names - prometheus.names(job) for job, names in expected.items()}

        wait_until(
            lambda: not any(missing().values()),
            timeout_s=60,
            what="every metric name in Prometheus",
        )
        assert missing() == {WORKER_JOB: set(), FACADE_JOB: set()}
        wait_until(
            lambda: prometheus.value("pipeline_dead_letters_total") >= 1,
            timeout_s=30,
            what="the dead-lettered record in Prometheus",
        )
        assert prometheus.value("ts_auto_buffer_points_buffered_total") == 50
        assert prometheus.value("ts_auto_buffer_points_flushed_total") == 50
        assert prometheus.value('ts_auto_buffer_flush_count_total{reason="manual"}') >= 1
        assert prometheus.value("ts_auto_buffer_compression_ratio") > 1.0
        assert prometheus.value("vector_auto_buffer_vectors_flushed_total") == 10
        assert prometheus.value("vector_search_latency_seconds_count") >= 1
        route = '{route="/ts/put/buffered/batch",method="POST",status="200"}'
        assert prometheus.value(f"facade_request_duration_seconds_count{route}") == 1
        p99 = prometheus.value(
            "histogram_quantile(0.99, sum by (le) (facade_request_duration_seconds_bucket))"
        )
        assert 0 < p99 <= 10.0
        for name in DASHBOARD_FILES:  # Prometheus answers 400 to a query it cannot parse
            for expr in dashboard_exprs(dashboard(name)):
                prometheus.api("query", query=as_promql(expr))
    except BaseException:
        print(prometheus.log_tail())
        raise
    finally:
        prometheus.stop()


@pytest.mark.unit
@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_queries_name_only_metrics_the_pipeline_exports(name: str) -> None:
    board = dashboard(name)
    known = (
        series_names(PipelineMetrics().registry)
        | series_names(WalShipperMetrics().registry)
        | facade_series_names()
    )
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels(board):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    queries = dashboard_exprs(board) + [
        v["definition"] for v in variables.values() if v["type"] == "query"
    ]
    assert queries
    for query in queries:
        used = set(_NAME.findall(query))
        assert used, f"{name}: {query!r} names no pipeline metric"
        assert used <= known, f"{name}: {query!r} uses unknown {sorted(used - known)}"
        as_promql(query)


@pytest.mark.unit
def test_dashboards_have_distinct_uids() -> None:
    uids = [dashboard(n)["uid"] for n in DASHBOARD_FILES]
    assert len(set(uids)) == len(DASHBOARD_FILES)


def test_example_scrape_config_passes_promtool_and_names_both_jobs() -> None:
    """``deploy/prometheus/prometheus.yml`` as Prometheus itself would load it."""
    promtool = str(Path(prometheus_binary()).with_name("promtool"))
    example = REPO / "deploy" / "prometheus" / "prometheus.yml"
    check = subprocess.run(
        [promtool, "check", "config", str(example)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    jobs = {job["job_name"] for job in yaml.safe_load(example.read_text())["scrape_configs"]}
    assert {WORKER_JOB, FACADE_JOB} <= jobs
