"""InfluxDB line protocol into the facade, written by the ``influxdb-client`` library (its
batching ``WriteApi``) and by hand (v1, gzip, a refused body), read back exactly."""

from __future__ import annotations

import gzip
import http.client
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import WriteOptions
from influxdb_client.domain.write_precision import WritePrecision
from themisdb import ThemisClient

from pipeline.kafka.clients import Producer
from pipeline.kafka.consumer import make_consumer, watermark_offsets
from tests.fixtures.stack import stack_of
from tests.fixtures.support import wait_until

pytestmark = pytest.mark.integration

T0_NS = 1_702_645_200_000_000_000
T0_MS = T0_NS // 1_000_000


@pytest.fixture(scope="module")
def stack(live_stack: Path) -> dict[str, Any]:
    return stack_of(live_stack)


def _series(
    stack: dict[str, Any], metric: str, entity: str, **tags: str
) -> list[tuple[int, float]]:
    with ThemisClient(conf=stack["conf"]["http"]) as reader:
        got = reader.timeseries.query(metric, entity, tags or None)
    return [(p["timestamp_ms"], p["value"]) for p in got]


def _post(stack: dict[str, Any], path: str, body: bytes, **headers: str) -> tuple[int, bytes]:
    host, port = stack["http_addr"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=body, headers={
            "Authorization": f"Token {stack['keys']['writer']}", **headers})  # fmt: skip
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_the_influxdb_client_writes_batches_that_come_back_exactly(stack: dict[str, Any]) -> None:
    name = f"cpu{uuid.uuid4().hex[:6]}"
    url = f"http://{stack['http_addr']}"
    options = WriteOptions(batch_size=500, flush_interval=200, max_retries=0)
    influx = InfluxDBClient(url=url, token=stack["keys"]["writer"], org="themis")
    with influx, influx.write_api(write_options=options) as write_api:
        for i in range(2000):
            point = (
                Point(name).tag("host", f"h{i % 2}").tag("region", "eu")  # type: ignore[no-untyped-call]
                .field("usage_idle", 90 + i / 8).field("count", i)
                .time(T0_NS + i * 1_000_000, WritePrecision.NS)
            )  # fmt: skip
            write_api.write(bucket="metrics", record=point)
    expected = [(T0_MS + i, 90 + i / 8) for i in range(0, 2000, 2)]
    wait_until(lambda: _series(stack, f"{name}_usage_idle", "h0", region="eu") == expected,
               timeout_s=60, what="the client's usage_idle points")  # fmt: skip
    counts = _series(stack, f"{name}_count", "h1", region="eu")
    assert counts == [(T0_MS + i, float(i)) for i in range(1, 2000, 2)]


def test_a_body_with_one_bad_line_is_refused_whole_and_names_the_line(
    stack: dict[str, Any],
) -> None:
    name = f"bad{uuid.uuid4().hex[:6]}"
    body = (f"{name},host=a v=1 {T0_NS}\n{name},host=a up=true {T0_NS + 1}\n"
            f"{name},host=a v=3 {T0_NS + 2}\n").encode()  # fmt: skip
    status, answer = _post(stack, "/api/v2/write?bucket=b", body)
    assert status == 400
    assert b"line 2: field 'up' is a boolean" in answer
    good = f"{name},host=a v=5 {T0_NS}\n".encode()
    assert _post(stack, "/api/v2/write?bucket=b", good)[0] == 204
    wait_until(lambda: _series(stack, f"{name}_v", "a") == [(T0_MS, 5.0)], timeout_s=30,
               what="the good body only")  # fmt: skip


def test_v1_writes_with_seconds_and_gzip_bodies_are_stored(stack: dict[str, Any]) -> None:
    name = f"v1{uuid.uuid4().hex[:6]}"
    lines = "\n".join(
        f"{name},host=web\\ 1 load=0.{i},n={i}i {1_702_645_200 + i}" for i in range(5)
    )
    status, _ = _post(stack, "/write?db=telegraf&precision=s", gzip.compress(lines.encode()),
                      **{"Content-Encoding": "gzip"})  # fmt: skip
    assert status == 204
    expected = [(1_702_645_200_000 + i * 1000, float(f"0.{i}")) for i in range(5)]
    wait_until(lambda: _series(stack, f"{name}_load", "web 1") == expected, timeout_s=30,
               what="the v1 points")  # fmt: skip
    assert _series(stack, f"{name}_n", "web 1") == [
        (t, float(i)) for i, (t, _) in enumerate(expected)
    ]
    status, answer = _post(stack, "/write?precision=h", lines.encode())
    assert (status, b"'precision'" in answer) == (400, True)


def _dead_letters(bootstrap: str, topic: str, marker: bytes) -> list[dict[str, bytes]]:
    """The headers of every dead letter on ``topic`` whose value holds ``marker``."""
    consumer = make_consumer(bootstrap, "dead-letters")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: watermark_offsets(consumer, TopicPartition(topic, p))[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        found: list[dict[str, bytes]] = []
        seen = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + 20
        while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            seen[message.partition() or 0] = (message.offset() or 0) + 1
            if marker in (message.value() or b""):
                headers = message.headers() or []
                pairs = headers.items() if isinstance(headers, dict) else headers
                found.append({n: v if isinstance(v, bytes) else str(v).encode() for n, v in pairs})
        return found
    finally:
        consumer.close()


def test_line_protocol_records_on_the_points_topic_are_ingested_and_bad_ones_dead_lettered(
    stack: dict[str, Any],
) -> None:
    """Records as Telegraf's Kafka output writes them: several lines per record."""
    name = f"tg{uuid.uuid4().hex[:6]}"
    bootstrap, topics = stack["bootstrap_servers"], stack["topics"]
    records = [
        "\n".join(
            f"{name},host=h{r},cpu=cpu0 usage_idle={90 + i}.5,usage_user={i}i "
            f"{T0_NS + i * 1_000_000}"
            for i in range(10)
        ).encode()
        for r in range(3)
    ]
    bad = f"{name},host=h9 up=true {T0_NS}\n".encode()
    with Producer({"bootstrap.servers": bootstrap}) as producer:
        for record in [*records, bad]:
            producer.produce(topics["ts.points"], record, key=b"telegraf")
        assert producer.flush(30) == 0
    for r in range(3):
        expected = [(T0_MS + i, 90 + i + 0.5) for i in range(10)]
        wait_until(lambda r=r, e=expected: _series(stack, f"{name}_usage_idle", f"h{r}",  # type: ignore[misc]
                                                   cpu="cpu0") == e,
                   timeout_s=60, what=f"the records of host h{r}")  # fmt: skip
    assert _series(stack, f"{name}_usage_user", "h2", cpu="cpu0")[-1] == (T0_MS + 9, 9.0)
    wait_until(lambda: bool(_dead_letters(bootstrap, topics["deadletter"], b"up=true")),
               timeout_s=60, what="the bad record dead-lettered")  # fmt: skip
    reasons = [
        h.get("themis.reason", b"")
        for h in _dead_letters(bootstrap, topics["deadletter"], b"up=true")
    ]
    assert any(b"line 1: field 'up' is a boolean" in reason for reason in reasons), reasons
