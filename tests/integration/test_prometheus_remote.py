"""A real Prometheus remote-writes what it scrapes into the facade; every sample of the
chosen series comes back from ``GET /ts/query`` timestamp by timestamp and bit by bit."""

from __future__ import annotations

import http.client
import json
import struct
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from pipeline.ts.prom_remote import WRITE_REQUEST, encode_snappy
from tests.fixtures.prometheus import PrometheusProcess, prometheus_binary
from tests.fixtures.stack import stack_of
from tests.fixtures.support import wait_until

pytestmark = pytest.mark.integration

JOB = "themis-facade"
CHOSEN = ("up", "facade_requests_in_flight", "scrape_samples_scraped")


@pytest.fixture(scope="module")
def stack(live_stack: Path) -> dict[str, Any]:
    return stack_of(live_stack)


def _http(stack: dict[str, Any], method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:  # fmt: skip
    host, port = stack["http_addr"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers={
            "Authorization": f"Bearer {stack['keys']['writer']}", **(headers or {})})  # fmt: skip
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def remote_write_config(stack: dict[str, Any]) -> dict[str, Any]:
    """The ``remote_write`` block of docs/api/ECOSYSTEM.md, pointed at the stack's facade."""
    return {
        "remote_write": [
            {
                "url": f"http://{stack['http_addr']}/api/v1/write",
                "authorization": {"credentials": stack["keys"]["writer"]},
                "queue_config": {
                    "batch_send_deadline": "1s",
                    "max_samples_per_send": 1000,
                    "retry_on_http_429": True,
                },
                "metadata_config": {"send": False},
            }
        ]
    }


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


def test_prometheus_remote_writes_every_sample_bit_for_bit(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    port = int(stack["http_addr"].rsplit(":", 1)[1])
    prometheus = PrometheusProcess(prometheus_binary(), {JOB: port}, tmp_path,
                                   remote_write_config(stack))  # fmt: skip
    try:
        wait_until(lambda: prometheus.targets_up([JOB]), timeout_s=60, what="the target up")

        def local(name: str) -> list[tuple[int, bytes]]:
            result = prometheus.api("query", query=f'{name}{{job="{JOB}"}}[10m]')["result"]
            assert len(result) == 1, result
            return [(round(float(t) * 1000), _bits(float(v))) for t, v in result[0]["values"]]

        wait_until(lambda: all(len(local(n)) >= 4 for n in CHOSEN), timeout_s=60,
                   what="four scrapes of each chosen series")  # fmt: skip
        snapshot = {name: local(name) for name in CHOSEN}
        entity = f"127.0.0.1:{port}"

        def stored(name: str) -> list[tuple[int, bytes]]:
            query = urllib.parse.urlencode({"metric": name, "entity": entity, "tag": f"job:{JOB}"})
            status, body = _http(stack, "GET", f"/ts/query?{query}")
            assert status == 200, body
            points = json.loads(body)["points"]
            return [(p["timestamp_ms"], _bits(float(p["value"]))) for p in points]

        def arrived(name: str) -> bool:
            return set(snapshot[name]) <= set(stored(name))

        for name, samples in snapshot.items():
            wait_until(lambda: arrived(name), timeout_s=60,  # noqa: B023 - waited for at once
                       what=f"{name}'s samples through remote write")  # fmt: skip
            got = dict(stored(name))
            assert [(t, got[t]) for t, _ in samples] == samples
        at = min(samples[-1][0] for samples in snapshot.values()) / 1000
        _read_back_through_a_second_prometheus(stack, prometheus, at, tmp_path / "reader")
    except BaseException:
        print(prometheus.log_tail())
        raise
    finally:
        prometheus.stop()


def remote_read_config(stack: dict[str, Any]) -> dict[str, Any]:
    """The ``remote_read`` block of docs/api/ECOSYSTEM.md, pointed at the stack's facade."""
    return {
        "remote_read": [
            {
                "url": f"http://{stack['http_addr']}/api/v1/read",
                "authorization": {"credentials": stack["keys"]["writer"]},
                "read_recent": True,
            }
        ]
    }


PROMQL = (
    f'up{{job="{JOB}"}}',
    f'facade_requests_in_flight{{job="{JOB}"}}[1m]',
    f'rate(scrape_samples_scraped{{job="{JOB}"}}[1m])',
    '{__name__=~"up|scrape_samples_scraped", job=~"themis-.*", instance!=""}',
)


def _read_back_through_a_second_prometheus(
    stack: dict[str, Any], local: PrometheusProcess, at: float, workdir: Path
) -> None:
    """A Prometheus with no data of its own, reading Themis remotely, answers PromQL as the
    Prometheus that scraped the data answers it from its own TSDB."""
    workdir.mkdir()
    reader = PrometheusProcess(prometheus_binary(), {}, workdir, remote_read_config(stack))
    try:

        def answers(p: PrometheusProcess, promql: str) -> list[Any]:
            result = p.api("query", query=promql, time=f"{at:.3f}")["result"]
            return sorted(result, key=lambda r: sorted(r["metric"].items()))

        wait_until(lambda: reader.proc.poll() is None and _ready(reader), timeout_s=60,
                   what="the reading Prometheus")  # fmt: skip
        for promql in PROMQL:
            expected = answers(local, promql)
            assert expected, promql
            assert answers(reader, promql) == expected, promql
    except BaseException:
        print(reader.log_tail())
        raise
    finally:
        reader.stop()


def _ready(p: PrometheusProcess) -> bool:
    try:
        p.api("status/buildinfo")
    except OSError:
        return False
    return True


def _write_body(series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> bytes:
    request = WRITE_REQUEST()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name, value in labels.items():
            ts.labels.add(name=name, value=value)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
    return encode_snappy(request.SerializeToString())


PROTOBUF = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}


def test_a_stale_marker_keeps_its_bits_and_a_bad_series_refuses_the_whole_request(
    stack: dict[str, Any],
) -> None:
    stale = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
    labels = {"__name__": "rw_probe", "instance": "i1", "job": "j"}
    body = _write_body([(labels, [(1000, 1.5), (2000, stale)])])
    assert _http(stack, "POST", "/api/v1/write", body, PROTOBUF)[0] == 204
    bad = _write_body([({"__name__": "rw_refused", "instance": "i1"}, [(1, 1.0)]),
                       ({"__name__": "rw_refused"}, [(2, 2.0)])])  # fmt: skip
    status, answer = _http(stack, "POST", "/api/v1/write", bad, PROTOBUF)
    assert status == 400
    assert b"series 1 (rw_refused): no 'instance' label" in answer
    v2 = PROTOBUF | {"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"}
    assert _http(stack, "POST", "/api/v1/write", body, v2)[0] == 415
    assert _http(stack, "POST", "/api/v1/write", b"not snappy", PROTOBUF)[0] == 400

    def points(metric: str) -> list[Any]:
        query = urllib.parse.urlencode({"metric": metric, "entity": "i1", "tag": "job:j"})
        return list(json.loads(_http(stack, "GET", f"/ts/query?{query}")[1])["points"])

    wait_until(lambda: len(points("rw_probe")) == 2, timeout_s=30, what="the probe")
    assert points("rw_probe") == [{"timestamp_ms": 1000, "value": 1.5},
                                  {"timestamp_ms": 2000, "value": "NaN"}]  # fmt: skip
    query = urllib.parse.urlencode({"metric": "rw_refused", "entity": "i1"})
    assert json.loads(_http(stack, "GET", f"/ts/query?{query}")[1])["points"] == []
