"""Every curl example of docs/api/AUTO_BUFFER_REST_API.md, run as written against a live facade.

A worker (vector dimension 3, as the examples use) and the facade run against the
session broker with the document's keys (``w-secret`` writer, ``a-secret`` admin).
Each ``sh`` block is cut into commands (a line ending in ``\\`` or ``|``, or inside an open
quote, continues it);
every command holding ``curl`` runs through ``bash -o pipefail`` in document order with
``localhost:8080`` pointed at the facade. Each must answer 2xx (the document shows
no other status in an example) and, unless piped on, a JSON body with the keys the
``# {...}`` comment under it shows.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.kafka.topics import apply_topics
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import FacadeThread, facade_behind_worker
from tests.fixtures.support import REPO

pytestmark = pytest.mark.integration

DOC = REPO / "docs" / "api" / "AUTO_BUFFER_REST_API.md"
DOC_KEYS = "w-secret:writer,a-secret:admin"
DOC_DIMENSION = 3
WRITER = {"X-API-Key": "w-secret"}
EVENTUAL_S = 30.0
_SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
_KEY = re.compile(r'"(\w+)":')


@dataclass(frozen=True)
class CurlExample:
    """One documented command and the answer shown under it (``# ...`` lines)."""

    command: str
    shown: str

    @property
    def piped_on(self) -> bool:
        """The curl output goes into another command (e.g. ``| grep``)."""
        return bool(re.search(r"curl .*\|", self.command, re.DOTALL))


def _complete(command: str) -> bool:
    """No trailing ``\\`` or ``|`` and no quote left open (a JSON body may span lines)."""
    if command.rstrip().endswith(("\\", "|")):
        return False
    try:
        shlex.split(command)
    except ValueError:
        return False
    return True


def curl_examples(markdown: str) -> list[CurlExample]:
    """The curl commands of every ``sh`` block, continuation lines joined, in order."""
    examples: list[CurlExample] = []
    for block in _SH_BLOCK.findall(markdown):
        command: list[str] = []
        shown: list[str] = []
        for line in block.splitlines():
            if line.startswith("#"):
                shown.append(line.lstrip("#").strip())
                continue
            if command and _complete("\n".join(command)):
                examples.append(CurlExample("\n".join(command), " ".join(shown)))
                command, shown = [], []
            if line.strip():
                command.append(line)
        if command:
            examples.append(CurlExample("\n".join(command), " ".join(shown)))
    return [e for e in examples if "curl " in e.command]


def test_the_document_has_a_curl_example_for_every_endpoint() -> None:
    commands = " ".join(e.command for e in curl_examples(DOC.read_text()))
    for path in (
        "/ts/put/buffered ",
        "/ts/put/buffered/batch",
        "/ts/put ",
        "/ts/buffer/stats",
        "/ts/buffer/flush",
        "/ts/query",
        "/vectors/add/buffered",
        "/vectors/update/buffered",
        "/vectors/remove/buffered",
        "/vectors/add ",
        "/vectors/buffer/stats",
        "/vectors/buffer/flush",
        "/vectors/search",
        "/metrics",
    ):
        assert path in commands, path


@pytest.fixture
def doc_facade(make_settings: MakeSettings, tmp_path: Path) -> Iterator[FacadeThread]:
    config = make_settings(
        facade={"api_keys": DOC_KEYS},
        vector_auto_buffer={"dimension": DOC_DIMENSION, "flush_interval_ms": 200},
    )
    assert config.kafka.bootstrap_servers
    apply_topics(config.kafka.bootstrap_servers, config, partitions_override=2)
    with facade_behind_worker(config, tmp_path, WRITER) as facade:
        yield facade


def _run(example: CurlExample, port: int, headers_file: Path) -> tuple[int, str]:
    """``(status, stdout)``: the command with the facade's address and ``-D`` for the status."""
    command = example.command.replace("localhost:8080", f"127.0.0.1:{port}")
    command = command.replace("curl -s ", f"curl -s -D {headers_file} ", 1)
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{command}\nexit {done.returncode}: {done.stderr}"
    status_line = headers_file.read_text().splitlines()[0]
    return int(status_line.split()[1]), done.stdout


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _check(example: CurlExample, status: int, out: str) -> str | None:
    """What differs from the document, or ``None``."""
    if not 200 <= status < 300:
        return f"{status} {out}"
    if example.piped_on:
        return None if out.strip() else "no output"
    try:
        body = json.loads(out)
    except ValueError:
        return f"not JSON: {out[:300]}"
    missing = set(_KEY.findall(example.shown)) - _keys(body)
    return f"lacks documented keys {sorted(missing)}: {out}" if missing else None


def test_every_curl_example_answers_2xx_with_the_documented_json(
    doc_facade: FacadeThread, tmp_path: Path
) -> None:
    examples = curl_examples(DOC.read_text())
    problems: list[str] = []
    for number, example in enumerate(examples):
        headers_file = tmp_path / f"headers-{number}"
        # Buffered writes become visible once a worker consumed them (the document says
        # so for remove and for buffer_size): an example is retried until it shows what
        # the document shows, for at most EVENTUAL_S seconds.
        deadline = time.monotonic() + EVENTUAL_S
        while True:
            problem = _check(example, *_run(example, doc_facade.port, headers_file))
            if problem is None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if problem is not None:
            problems.append(f"{example.command}\n-> {problem}")
    assert len(examples) >= 14
    assert not problems, "\n\n".join(problems)
