"""How :class:`~pipeline.worker.client.WorkerClient` reads what a worker answers, against a
real HTTP server in process that answers as a broken or misconfigured worker might."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.errors import InvalidRequest
from pipeline.worker.client import WorkerClient

pytestmark = pytest.mark.unit


def _worker() -> web.Application:
    app = web.Application()
    answers: dict[str, Callable[[], web.Response]] = {
        "/ok": lambda: web.json_response({"points": 3}),
        "/list": lambda: web.json_response([1, 2]),
        "/not-json": lambda: web.Response(text="<html>a proxy page</html>"),
        "/crashed": lambda: web.Response(status=502, text="Bad Gateway"),
        "/busy": lambda: web.json_response({"error": "try later"}, status=503),
        "/refused": lambda: web.json_response({"error": {"field": "series"}}, status=400),
        "/refused-text": lambda: web.json_response({"error": "series is missing"}, status=400),
    }
    for path, answer in answers.items():

        async def handler(
            request: web.Request, answer: Callable[[], web.Response] = answer
        ) -> web.Response:
            return answer()

        app.router.add_get(path, handler)
    return app


def _with_client(scenario: Callable[[WorkerClient, str], Awaitable[None]]) -> None:
    async def main() -> None:
        server = TestServer(_worker())
        await server.start_server()
        url = str(server.make_url("")).rstrip("/")
        try:
            async with WorkerClient([url], timeout_s=5) as client:
                await scenario(client, url)
        finally:
            await server.close()

    asyncio.run(main())


def test_a_worker_client_needs_a_url() -> None:
    with pytest.raises(InvalidRequest, match="at least one worker URL"):
        WorkerClient([])


def test_exchange_gives_every_status_with_a_json_object_even_for_text_errors() -> None:
    async def scenario(client: WorkerClient, url: str) -> None:
        assert await client.exchange(url, "GET", "/ok") == (200, {"points": 3})
        assert await client.exchange(url, "GET", "/list") == (200, {"value": [1, 2]})
        assert await client.exchange(url, "GET", "/crashed") == (502, {"error": "Bad Gateway"})
        assert await client.exchange(url, "GET", "/not-json") is None  # 200 without JSON
        assert await client.exchange("http://127.0.0.1:9", "GET", "/ok") is None  # nobody there

    _with_client(scenario)


def test_page_answers_none_for_a_worker_that_cannot_answer_and_raises_for_a_refusal() -> None:
    async def scenario(client: WorkerClient, url: str) -> None:
        assert await client.page(url, "GET", "/ok") == {"points": 3}
        assert await client.page(url, "GET", "/busy") is None
        assert await client.page(url, "GET", "/crashed") is None
        with pytest.raises(InvalidRequest, match=r"refused /refused-text: series is missing$"):
            await client.page(url, "GET", "/refused-text")
        with pytest.raises(InvalidRequest, match=r'refused /refused: \{"error":\{"field":"series"'):
            await client.page(url, "GET", "/refused")

    _with_client(scenario)
