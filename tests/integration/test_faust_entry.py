"""``faust -A pipeline.app worker``: the module builds its one app on first access."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pipeline.app
from pipeline.kafka.broker import BrokerHandle
from pipeline.worker.context import WorkerApp

pytestmark = pytest.mark.integration


def test_the_faust_entry_point_builds_one_app_from_the_environment_on_first_access(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kafka_broker: BrokerHandle
) -> None:
    monkeypatch.setenv("THEMIS_CONFIG", os.devnull)
    monkeypatch.setenv("THEMIS_WORKER_APP_ID", "entry-point-test")
    monkeypatch.setenv("THEMIS_WORKER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap_servers)
    monkeypatch.setattr(pipeline.app, "_app", None)
    app = pipeline.app.app
    try:
        assert isinstance(app, WorkerApp)
        assert app.conf.id == "entry-point-test"
        assert app.context.settings.worker.data_dir == tmp_path
        assert pipeline.app.app is app
    finally:
        app.context.producer.close()
    with pytest.raises(AttributeError, match="nothing"):
        _ = pipeline.app.nothing
