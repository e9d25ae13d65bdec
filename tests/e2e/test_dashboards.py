"""Every panel and template variable of the three Grafana dashboards has data.

A real Prometheus scrapes the session stack's worker and facade and a WAL shipper
(``themis wal ship --metrics-port``) shipping to a replica over mTLS, every second,
while a short bounded load runs through the facade. Then every target of every panel
is asked as Grafana asks it (a range query over the load, the dashboard's variables
substituted as Grafana would with "All" selected) and every ``label_values`` variable
as Grafana's variable editor asks it (``/api/v1/label/<name>/values`` with ``match[]``).
A query that errors, answers no series, or answers only NaN fails the test, naming the
dashboard and the panel.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings, load_settings
from pipeline.kafka.clients import Producer
from pipeline.kafka.local_broker import free_port
from tests.fixtures.facade import http_call
from tests.fixtures.prometheus import PrometheusProcess, prometheus_binary
from tests.fixtures.stack import stack_of
from tests.fixtures.support import REPO, THEMIS, start_process, stop_process, wait_until

pytestmark = pytest.mark.e2e

DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
DASHBOARD_FILES = ("ts_auto_buffer.json", "vector_auto_buffer.json", "compressed_wal_shipping.json")
JOBS = ("themis-worker", "themis-facade", "themis-wal-shipper")
SCRAPE_S = 1
"""The scrape interval of the test's Prometheus (seconds), which Grafana's data source
would be told too: ``$__rate_interval`` follows from it."""
STEP_S = 1
LOAD_ROUNDS = 4


def grafana_variables(range_s: int) -> dict[str, str]:
    """Grafana's built-in variables for a range query with ``STEP_S`` over ``range_s``
    seconds, and the dashboards' own variables with "All" selected (their ``allValue``).

    ``$__rate_interval`` is Grafana's max(``$__interval`` + scrape interval, 4 x scrape
    interval).
    """
    rate_interval = max(STEP_S + SCRAPE_S, 4 * SCRAPE_S)
    return {
        "$__rate_interval": f"{rate_interval}s",
        "$__interval": f"{STEP_S}s",
        "$__range": f"{range_s}s",
        "$job": ".*",
        "$instance": ".*",
        "$replica": ".*",
        "$facade_job": ".*",
    }


def substituted(expr: str, variables: dict[str, str]) -> str:
    # longest names first: $__range must not eat $__rate_interval's prefix, etc.
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    assert "$" not in expr, f"a Grafana variable this test does not know in {expr!r}"
    return expr


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        if panel["type"] != "row":
            yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def variable_queries(board: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(variable, selector, label)`` of every ``label_values(selector, label)`` variable;
    a query variable of another form fails the test (this test cannot ask it)."""
    found = []
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue  # the datasource picker: nothing to ask Prometheus
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text.strip())
        assert match, f"{board['title']}: variable {variable['name']}: {text!r} unsupported"
        found.append((variable["name"], match["selector"], match["label"]))
    return found


def has_data(result: list[dict[str, Any]]) -> bool:
    """Whether a matrix holds at least one sample that is a number (Grafana's "No data"
    is no series or only NaN)."""
    return any(not np.isnan(float(v)) for series in result for _, v in series["values"])


# -- the processes ---------------------------------------------------------------------


def _metrics_up(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/metrics")
        return conn.getresponse().status == 200
    except OSError:
        return False


def stack_settings(stack: dict[str, Any]) -> Settings:
    return load_settings(path=Path(os.devnull), env=stack["facade_env"])


@pytest.fixture
def shipper(live_stack: Path, tmp_path: Path) -> Iterator[int]:
    """A replica over HTTPS with client certificates (the stack's PKI) and ``themis wal
    ship --metrics-port`` shipping the stack's WAL to it; yields the metrics port."""
    stack = stack_of(live_stack)
    pki = Path(stack["replica"]["ca"]).parent
    env = stack["facade_env"] | {"THEMIS_WORKER_DATA_DIR": str(tmp_path / "data")}
    replica_port, metrics_port = free_port(), free_port()
    serve = [
        *THEMIS, "wal", "serve", "--replica", "dashboards", "--port", str(replica_port),
        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--tls-client-ca", str(pki / "ca.pem"),
    ]  # fmt: skip
    replica = start_process(serve, env, tmp_path / "replica.log")
    ship = [
        *THEMIS, "wal", "ship", "--replica", f"dashboards=https://127.0.0.1:{replica_port}",
        "--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.pem"),
        "--tls-key", str(pki / "client.key"), "--metrics-port", str(metrics_port),
        "--primary-id", "dashboards", "--stats-interval", "1",
    ]  # fmt: skip
    proc = start_process(ship, env, tmp_path / "shipper.log")
    try:
        wait_until(lambda: _metrics_up(metrics_port), timeout_s=60, what="the shipper's /metrics")
        yield metrics_port
    finally:
        stop_process(proc)
        stop_process(replica)


# -- the load --------------------------------------------------------------------------


class StackLoad:
    """Points, vectors, searches, flushes, direct writes and one bad record, in bounded
    rounds, through the stack's facade (every series the dashboards read moves)."""

    def __init__(self, stack: dict[str, Any]) -> None:
        self.stack = stack
        self.port = int(stack["http_addr"].rsplit(":", 1)[1])
        self.writer = {"X-API-Key": stack["keys"]["writer"]}
        self.admin = {"X-API-Key": stack["keys"]["admin"]}
        self.dimension = int(stack["vector_dimension"])
        self.tag = f"dash{time.time_ns():x}"
        self.rng = np.random.default_rng(7)

    def call(self, method: str, path: str, body: Any = None, admin: bool = False) -> Any:
        headers = self.admin if admin else self.writer
        if isinstance(body, bytes):
            headers = headers | {"Content-Type": "application/x-ndjson"}
        status, answer, _ = http_call(self.port, method, path, body, headers)
        assert status == 200, f"{method} {path}: {status} {answer}"
        return answer

    def round(self, n: int) -> None:
        t0 = 1_702_645_200_000 + n * 1_000
        base = {"metric": "dash_load", "entity": self.tag}
        lines = (json.dumps(base | {"timestamp_ms": t0 + i, "value": i / 2}) for i in range(200))
        self.call("POST", "/ts/put/buffered/batch", "\n".join(lines).encode())
        point = {"metric": "dash_load", "entity": f"{self.tag}-one", "timestamp_ms": t0,
                 "value": 1.0}  # fmt: skip
        self.call("POST", "/ts/put/buffered", point)
        self.call("POST", "/ts/put", point | {"entity": f"{self.tag}-direct"})
        for i in range(10):
            vector = self.rng.normal(0, 1, self.dimension).tolist()
            body = {"pk": f"{self.tag}-{n}-{i}", "vector": vector, "metadata": {"r": n}}
            self.call("POST", "/vectors/add/buffered", body)
        if n:
            self.remove_once_held(f"{self.tag}-{n - 1}-0")
        for _ in range(3):
            query = {"vector": self.rng.normal(0, 1, self.dimension).tolist(), "k": 3}
            self.call("POST", "/vectors/search", query)
        self.call("POST", "/ts/buffer/flush", admin=True)
        self.call("POST", "/vectors/buffer/flush", admin=True)

    def remove_once_held(self, pk: str) -> None:
        """A buffered remove, sent once a worker holds ``pk`` (before, the facade answers
        404: there is nothing to remove)."""

        def removed() -> bool:
            status, answer, _ = http_call(
                self.port, "DELETE", "/vectors/remove/buffered", {"pk": pk}, self.writer
            )
            assert status in (200, 404), f"remove {pk}: {status} {answer}"
            return status == 200

        wait_until(removed, timeout_s=30, what=f"a worker to hold {pk}")

    def dead_letter(self) -> None:
        with Producer({"bootstrap.servers": self.stack["bootstrap_servers"]}) as producer:
            producer.produce(self.stack["topics"]["ts.points"], b"{not json", key=b"dash")
            assert producer.flush(30) == 0


# -- the test --------------------------------------------------------------------------


def _scraped_since(prometheus: PrometheusProcess, since: float) -> bool:
    """Whether every job was scraped after ``since`` (Unix seconds)."""
    try:
        result = prometheus.api("query", query="timestamp(up)")["result"]
    except (OSError, urllib.error.URLError):
        return False
    seen = {r["metric"]["job"]: float(r["value"][1]) for r in result}
    return all(seen.get(job, 0) > since for job in JOBS)


def _empty_panels(prometheus: PrometheusProcess, start: float, end: float) -> list[str]:
    """``dashboard / panel [refId]: why`` of every target and variable without data."""
    variables = grafana_variables(int(end - start))
    failures = []
    for name in DASHBOARD_FILES:
        board = json.loads((DASHBOARDS / name).read_text())
        for panel in panels(board):
            for target in panel["targets"]:
                where = f"{name} / {panel['title']!r} [{target['refId']}]"
                expr = substituted(target["expr"], variables)
                try:
                    result = prometheus.api(
                        "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                        step=f"{STEP_S}s",
                    )["result"]  # fmt: skip
                except urllib.error.HTTPError as exc:
                    failures.append(f"{where}: {exc.code} {exc.read()[:300]!r} for {expr}")
                    continue
                if not has_data(result):
                    failures.append(f"{where}: no data for {expr}")
        for variable, selector, label in variable_queries(board):
            where = f"{name} / variable ${variable}"
            match = substituted(selector, variables)
            try:
                values = prometheus.api(
                    f"label/{label}/values", **{"match[]": match},
                    start=f"{start:.3f}", end=f"{end:.3f}",
                )  # fmt: skip
            except urllib.error.HTTPError as exc:
                failures.append(f"{where}: {exc.code} {exc.read()[:300]!r} for {match}")
                continue
            if not values:
                failures.append(f"{where}: no values of {label} for {match}")
    return failures


def test_every_dashboard_panel_and_variable_has_data_under_load(
    live_stack: Path, shipper: int, tmp_path: Path
) -> None:
    stack = stack_of(live_stack)
    settings = stack_settings(stack)
    load = StackLoad(stack)
    targets = dict(zip(JOBS, (settings.worker.web_port, load.port, shipper), strict=True))
    prometheus = PrometheusProcess(prometheus_binary(), targets, tmp_path)
    try:
        wait_until(lambda: prometheus.targets_up(JOBS), timeout_s=60, what="the 3 targets up")
        start = time.time()
        wait_until(lambda: _scraped_since(prometheus, start), timeout_s=30, what="a first scrape")
        load.dead_letter()
        for n in range(LOAD_ROUNDS):  # each round lands between two scrapes of every job
            began = time.time()
            load.round(n)
            wait_until(partial(_scraped_since, prometheus, began), timeout_s=30, what="a scrape")
        wait_until(
            lambda: (
                prometheus.value("sum(pipeline_dead_letters_total)") >= 1
                and prometheus.value("sum(wal_shipper_batches_total)") >= 1
            ),
            timeout_s=60,
            what="the dead letter and a shipped WAL batch in Prometheus",
        )
        end = time.time()
        failures = _empty_panels(prometheus, start, end)
        assert not failures, "panels without data:\n" + "\n".join(failures)
    except BaseException:
        print(prometheus.log_tail())
        raise
    finally:
        prometheus.stop()


@pytest.mark.unit
@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_dashboard_query_takes_only_variables_grafana_defines(name: str) -> None:
    board = json.loads((DASHBOARDS / name).read_text())
    variables = grafana_variables(3600)
    targets = [t for p in panels(board) for t in p["targets"]]
    assert targets
    for target in targets:
        substituted(target["expr"], variables)
    assert variable_queries(board)
