"""``search``: k-NN over the shards of a running worker, from any process.

The index lives in the worker's memory; this asks the worker's web server
(``worker.web_port``). ``filter`` here is a metadata equality match, e.g.
``{"category": "technology"}``; in-process code can pass any callable to
:meth:`pipeline.vectors.index.VectorIndex.search` instead.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.config import Settings, load_settings
from pipeline.errors import ThemisError


@dataclass(frozen=True)
class Hit:
    """One search result: pk, distance (smaller is closer) and metadata."""

    pk: str
    distance: float
    metadata: dict[str, Any]


def worker_request(
    settings: Settings, path: str, body: Mapping[str, Any] | None = None, timeout_s: float = 30.0
) -> dict[str, Any]:
    """POST (with ``body``) or GET a JSON page of the worker."""
    url = f"http://127.0.0.1:{settings.worker.web_port}{path}"
    data = None if body is None else orjson.dumps(dict(body), option=orjson.OPT_SERIALIZE_NUMPY)
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310
            result: dict[str, Any] = orjson.loads(resp.read())
    except OSError as exc:
        raise ThemisError(
            f"no worker answers at {url}: start one with `themis worker` ({exc})"
        ) from exc
    return result


def search(
    vector: Sequence[float] | Any,
    k: int,
    ef: int | None = None,
    filter: Mapping[str, Any] | None = None,  # the roadmap's name
    *,
    settings: Settings | None = None,
) -> list[Hit]:
    """The ``k`` nearest live vectors, closest first; fewer when fewer exist."""
    settings = settings or load_settings()
    body: dict[str, Any] = {"vector": vector, "k": k}
    if ef is not None:
        body["ef"] = ef
    if filter:
        body["filter"] = dict(filter)
    result = worker_request(settings, "/vectors/search", body)
    if not result.get("success"):
        raise ThemisError(f"search failed: {result.get('error')}")
    return [Hit(r["pk"], float(r["distance"]), r["metadata"]) for r in result["results"]]
