"""The worker's pages: a key when one is set, and no open pages beyond loopback."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import ConfigError, InvalidRequest
from pipeline.worker.app import create_app
from tests.fixtures.broker import MakeSettings
from tests.fixtures.support import (
    UNPARSABLE_HEADS,
    raw_exchange,
    send_unparsable_head,
    settings_as_env,
    start_themis_worker,
    stop_process,
    wait_until,
)
from tests.fixtures.worker import worker_page

pytestmark = pytest.mark.integration


def _status(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
    body = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


KEY = "page-key-7f3a9c"

PAGES = [
    ("GET", "/ts/buffer/stats"),
    ("POST", "/ts/buffer/flush"),
    ("GET", "/ts/buffered?series=x&start=0&end=1"),
    ("POST", "/ts/buffered"),
    ("GET", "/ts/buffered/series"),
    ("GET", "/vectors/buffer/stats"),
    ("POST", "/vectors/buffer/flush"),
    ("POST", "/vectors/search"),
    ("GET", "/vectors/get?pk=a"),
    ("GET", "/vectors/dump"),
]
"""Every page but /metrics: the issue's flushes, dump, buffered points and search."""


def test_pages_need_the_page_key_when_one_is_set_and_metrics_stay_open(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    # 30 wrong keys below: a budget that does not throttle them (see the next test).
    settings: Settings = make_settings(worker={"page_key": KEY, "page_auth_failures_per_min": 100})
    base = f"http://127.0.0.1:{settings.worker.web_port}"
    worker = start_themis_worker(settings_as_env(settings), tmp_path / "worker.log")
    try:
        wait_until(lambda: _status(base + "/metrics") == 200, timeout_s=60, what="the worker")
        for method, page in PAGES:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY}):
                assert _status(base + page, headers, method) == 401, (method, page, headers)
            # With the key the page itself answers: its result, or 400 for the empty body.
            keyed = _status(base + page, {"Authorization": f"Bearer {KEY}"}, method)
            assert keyed in (200, 400), (method, page, keyed)
        assert _status(base + "/ts/buffer/stats", {"Authorization": f"Bearer {KEY}"}) == 200
        # The one client of the pages sends the key from the settings.
        assert "points_buffered" in worker_page(settings, "/ts/buffer/stats")
        # A request the worker refuses (400) is the caller's error, not "no worker answers".
        refused = r"refused /ts/buffered\?series=x: .* \(integer milliseconds\) are required"
        with pytest.raises(InvalidRequest, match=refused):
            worker_page(settings, "/ts/buffered?series=x")
        # A head aiohttp cannot parse is answered without a byte of the key in it.
        for header, status in UNPARSABLE_HEADS.values():
            answer = send_unparsable_head(settings.worker.web_port, "/vectors/dump", header, KEY)
            assert answer.split(b" ", 2)[1] == b"%d" % status, answer[:300]
            assert KEY.encode() not in answer
    finally:
        assert stop_process(worker) == 0
    assert KEY not in (tmp_path / "worker.log").read_text()


def test_wrong_page_keys_from_one_address_get_429_without_the_key_being_compared(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(worker={"page_key": KEY, "page_auth_failures_per_min": 2})
    base = f"http://127.0.0.1:{settings.worker.web_port}"
    worker = start_themis_worker(settings_as_env(settings), tmp_path / "worker.log")
    try:
        wait_until(lambda: _status(base + "/metrics") == 200, timeout_s=60, what="the worker")
        guesses = [
            _status(base + "/vectors/dump", {"Authorization": f"Bearer guess-{i}"})
            for i in range(2)
        ]
        assert guesses == [401, 401]
        request = urllib.request.Request(
            base + "/vectors/dump", headers={"Authorization": f"Bearer {KEY}"}
        )
        with pytest.raises(urllib.error.HTTPError) as throttled:
            urllib.request.urlopen(request, timeout=5)
        assert throttled.value.code == 429
        assert int(throttled.value.headers["Retry-After"]) >= 1
        assert b"worker.page_auth_failures_per_min" in throttled.value.read()
        assert _status(base + "/metrics") == 200  # the open page stays open
    finally:
        assert stop_process(worker) == 0


def test_a_half_sent_head_is_cut_off_and_a_half_sent_body_answers_408_on_the_pages(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(
        worker={"page_key": KEY, "header_timeout_s": 1.0, "body_timeout_s": 2.0}
    )
    port = settings.worker.web_port
    worker = start_themis_worker(settings_as_env(settings), tmp_path / "worker.log")
    try:
        wait_until(
            lambda: _status(f"http://127.0.0.1:{port}/metrics") == 200,
            timeout_s=60,
            what="the worker",
        )
        head = b"POST /vectors/search HTTP/1.1\r\nHost: worker\r\nAuthorization: Bea"
        answer, _, closed = raw_exchange(port, head, drip=b"rer " + KEY.encode())
        assert answer == b""
        assert 1.0 <= closed < 2.5, closed

        body = b'{"vector": [0.5, 0.5, 0.5, 0.5], "k": 3}'
        head = (
            b"POST /vectors/search HTTP/1.1\r\nHost: worker\r\n"
            b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (KEY.encode(), len(body))
        )
        answer, first, _ = raw_exchange(port, head + body[:5], until=b"}")
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in answer.lower()
        assert b"worker.body_timeout_s" in answer
        assert 2.0 <= first < 3.5, first
        # A whole request on a fresh connection goes through.
        assert (
            _status(
                f"http://127.0.0.1:{port}/vectors/buffer/stats",
                {"Authorization": f"Bearer {KEY}"},
            )
            == 200
        )
    finally:
        assert stop_process(worker) == 0


def test_a_worker_bound_beyond_loopback_refuses_to_start_without_a_page_key(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(worker={"web_host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="THEMIS_WORKER_PAGE_KEY"):
        create_app(settings, bootstrap_servers="127.0.0.1:9")
