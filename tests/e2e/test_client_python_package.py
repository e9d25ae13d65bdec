"""The Python SDK as users get it: the package builds, passes ``twine check`` and installs
into a clean virtualenv; the examples in ``examples/python`` run against the live stack."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from themisdb import ThemisClient

from tests.fixtures.stack import stack_of
from tests.fixtures.support import REPO, wait_until

pytestmark = pytest.mark.e2e

CLIENT = REPO / "clients" / "python"
EXAMPLES = REPO / "examples" / "python"


def _run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_package_builds_checks_and_installs_into_a_clean_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(CLIENT)])
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert [w.name for w in wheels] == ["themisdb_client-1.2.0-py3-none-any.whl"]
    assert len(sdists) == 1
    _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists)])
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "themisdb/py.typed" in names
    assert not [n for n in names if n.startswith("pipeline")]  # nothing of the server
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "pip"), "install", "-q", str(wheels[0])], timeout=600)
    probe = (
        "import themisdb, pathlib; print(themisdb.__version__, "
        "pathlib.Path(themisdb.__file__).parent.joinpath('py.typed').exists())"
    )
    shown = _run([str(venv / "bin" / "python"), "-c", probe])
    assert shown.split() == ["1.2.0", "True"]


def _example(name: str, conf: str, *args: str) -> str:
    env = {**os.environ, "THEMIS_CLIENT_CONF": conf}
    return _run([sys.executable, str(EXAMPLES / name), *args], env=env, timeout=180)


def test_the_examples_run_and_store_what_they_say(live_stack: Path) -> None:
    stack: dict[str, Any] = stack_of(live_stack)
    writer = stack["conf"]["themis"]
    admin = stack["conf"]["http"].replace(stack["keys"]["writer"], stack["keys"]["admin"])

    out = _example("stream_host_metrics.py", writer, "1")
    fields = dict(part.split("=") for part in out.split())
    assert int(fields["queued"]) >= 10
    assert fields["queued"] == fields["sent"]
    assert fields["failed"] == "0"
    with ThemisClient(conf=stack["conf"]["http"]) as reader:
        tags, half = {"source": "example"}, int(fields["queued"]) // 2
        wait_until(
            lambda: len(reader.timeseries.query("host_load1", socket.gethostname(), tags)) >= half,
            timeout_s=60,
            what="the host's samples",
        )

    out = _example("rag_loader.py", writer, str(stack["vector_dimension"]))
    first_hit = out.splitlines()[1]
    assert ":kafka:" in first_hit, out

    out = _example("replication_setup.py", admin, "example-replica",
                   f"kafka://{stack['bootstrap_servers']}")  # fmt: skip
    last = [line for line in out.splitlines() if line.startswith("replica example-replica")]
    assert last, out
    lsn = last[0].split("last_confirmed_lsn=")[1].split()[0]
    assert int(lsn, 16) > 0, out
