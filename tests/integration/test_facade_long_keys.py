"""Series keys too long for a URL, through the facade and a real worker process.

A key over aiohttp's 8,190-byte request line can be written (it travels in the body)
and read back with ``POST /ts/query``, whose body carries the query; the facade asks
the worker for the key's buffered points in a body too.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import (
    ADMIN,
    WRITER,
    FacadeThread,
    facade_behind_worker,
    facade_settings,
)
from tests.fixtures.support import wait_until

pytestmark = pytest.mark.integration

T0 = 1_702_645_200_000


@pytest.fixture
def with_worker(make_settings: MakeSettings, tmp_path: Path) -> Iterator[FacadeThread]:
    with facade_behind_worker(facade_settings(make_settings), tmp_path, WRITER) as facade:
        yield facade


def _query(facade: FacadeThread, body: object) -> tuple[int, Any]:
    status, answer, _ = facade.call("POST", "/ts/query", body, WRITER)
    return status, answer


def test_a_20_kb_series_key_is_written_and_read_back_exactly_through_post_ts_query(
    with_worker: FacadeThread,
) -> None:
    facade = with_worker
    tags = {"a": "x" * 10_000, "b": "y" * 10_000, "dc": "eu"}  # a 20 KB series key
    series: dict[str, Any] = {"metric": "cpu", "entity": "s1", "tags": tags}
    batch = [series | {"timestamp_ms": T0 + i, "value": i * 0.5} for i in range(50)]
    status, body, _ = facade.call("POST", "/ts/put/buffered/batch", batch, WRITER)
    assert (status, body["points"]) == (200, 50), body
    status, body, _ = facade.call("POST", "/ts/put", series | {"timestamp_ms": T0 + 99}, WRITER)
    assert status == 400  # no value: refused
    point = series | {"timestamp_ms": T0 + 100, "value": 7.25}
    assert facade.call("POST", "/ts/put", point, WRITER)[0] == 200
    expected = [[T0 + i, i * 0.5] for i in range(50)] + [[T0 + 100, 7.25]]

    def points(query: dict[str, object]) -> list[list[Any]]:
        status, answer = _query(facade, query)
        assert status == 200, answer
        assert json.loads(answer["series"]) == ["cpu", "s1", dict(sorted(tags.items()))]
        return [[p["timestamp_ms"], p["value"]] for p in answer["points"]]

    # The batch is still in the worker's buffer (flush interval: a minute).
    wait_until(lambda: points(series) == expected, timeout_s=60, what="buffered and durable points")
    assert points(series | {"start": T0 + 48, "end": T0 + 100}) == expected[48:]
    status, answer, _ = facade.call("POST", "/ts/buffer/flush", headers=ADMIN)
    assert (status, answer["points_flushed"]) == (200, 50)
    assert points(series) == expected

    # The same key in a URL is over the request line's limit: 431, naming the way out.
    query = urllib.parse.urlencode(
        [("metric", "cpu"), ("entity", "s1")] + [("tag", f"{k}:{v}") for k, v in tags.items()]
    )
    status, answer, _ = facade.call("GET", f"/ts/query?{query}", headers=WRITER)
    assert status == 431
    assert "POST /ts/query" in answer["error"]


def test_the_workers_buffered_points_page_answers_400_without_its_parameters(
    with_worker: FacadeThread,
) -> None:
    port = with_worker.settings.worker.web_port
    for method, path, body in [
        ("GET", "/ts/buffered?series=x&end=1", None),
        ("GET", "/ts/buffered?series=x&start=a&end=1", None),
        ("POST", "/ts/buffered", b'{"series": "x", "end": 1}'),
        ("POST", "/ts/buffered", b'{"series": 1, "start": 0, "end": 1}'),
        ("POST", "/ts/buffered", b"not json"),
    ]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            answer = json.loads(response.read())
        finally:
            conn.close()
        assert response.status == 400, (method, path, body, answer)
        assert "'start'" in answer["error"]
