"""docs/operations.md "Backing up and restoring a worker's shards", done as written: the
snapshot each ``vectors/p<N>/CURRENT`` names is copied from a running worker; after more
writes the worker is stopped, its shards are wiped and the backup put back; the restarted
worker replays the operations after the backup and holds exactly what was written."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.errors import WorkerUnavailable
from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import ADMIN, DIM, WRITER, FacadeThread, facade_settings
from tests.fixtures.support import settings_as_env, start_themis_worker, stop_process, wait_until
from tests.fixtures.worker import vector_dump

pytestmark = pytest.mark.e2e


def back_up(shards: Path, backup: Path) -> int:
    """Copy ``CURRENT`` and the snapshot it names of every shard; the shards copied."""
    copied = 0
    for shard in sorted(shards.glob("p*")):
        if not (shard / "CURRENT").is_file():
            continue
        snapshot = (shard / "CURRENT").read_text().strip()
        target = backup / shard.name
        target.mkdir(parents=True)
        shutil.copy2(shard / "CURRENT", target / "CURRENT")
        shutil.copytree(shard / snapshot, target / snapshot)
        copied += 1
    return copied


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return facade_settings(make_settings, rate_flush_per_min=100_000)


class Worker:
    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        self.proc = start_themis_worker(settings_as_env(settings), log)

    def stop(self) -> None:
        assert stop_process(self.proc, timeout_s=60) == 0, self.log.read_text()[-3000:]


@pytest.fixture
def facade(settings: Settings) -> Iterator[FacadeThread]:
    thread = FacadeThread(settings)
    yield thread
    thread.close()


def test_a_worker_restored_from_a_shard_backup_replays_what_came_after_it(
    settings: Settings, facade: FacadeThread, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    shards = settings.worker.data_dir / "vectors"

    def add(pk: str) -> None:
        body = {"pk": pk, "vector": rng.normal(0, 1, DIM).tolist(), "metadata": {"pk": pk}}
        assert facade.call("POST", "/vectors/add/buffered", body, WRITER)[0] == 200

    def held() -> set[str]:
        try:
            return set(vector_dump(settings))
        except WorkerUnavailable:
            return set()  # starting

    worker = Worker(settings, tmp_path / "worker-1.log")
    try:
        wait_until(
            lambda: facade.call("GET", "/vectors/buffer/stats", headers=WRITER)[0] == 200,
            timeout_s=90,
            what="the worker behind the facade",
        )
        before = {f"a{i}" for i in range(20)}
        for pk in sorted(before):
            add(pk)
        wait_until(lambda: held() == before, timeout_s=60, what="the first 20 vectors")
        assert facade.call("POST", "/vectors/buffer/flush", headers=ADMIN)[0] == 200
        wait_until(  # a snapshot covers the flush (snapshot_interval_ms is 300)
            lambda: sum(1 for p in shards.glob("p*/CURRENT")) == 2,
            timeout_s=30,
            what="a snapshot of both shards",
        )
        assert back_up(shards, tmp_path / "backup") == 2  # while the worker runs

        after = {f"b{i}" for i in range(10)}
        for pk in sorted(after):
            add(pk)
        wait_until(lambda: held() == before | after, timeout_s=60, what="10 more vectors")
        for pk in ("a0", "a1"):
            status, answer, _ = facade.call(
                "DELETE", "/vectors/remove/buffered", {"pk": pk}, WRITER
            )
            assert status == 200, answer
        expected = before - {"a0", "a1"} | after
        wait_until(lambda: held() == expected, timeout_s=60, what="two vectors removed")
    finally:
        worker.stop()

    shutil.rmtree(shards)  # the disk is lost; the backup comes back
    shutil.copytree(tmp_path / "backup", shards)
    worker = Worker(settings, tmp_path / "worker-2.log")
    try:
        wait_until(lambda: held() == expected, timeout_s=90, what="the restored worker's index")
        replays = worker.log.read_text().count("rebuilt from offsets")
        assert replays >= 1, worker.log.read_text()[-3000:]  # caught up from the backup
        status, answer, _ = facade.call(
            "POST", "/vectors/search", {"vector": [1.0] * DIM, "k": 40}, WRITER
        )
        assert status == 200, answer
        assert {hit["pk"] for hit in answer["results"]} == expected
    finally:
        worker.stop()
