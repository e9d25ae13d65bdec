"""``themis stack down`` stops what ``stack.json`` names; ``up`` refuses a folder whose stack
still runs. (``up`` itself runs once per session: ``tests/fixtures/stack.py``.)"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.errors import ThemisError
from pipeline.stack import STACK_FILE, run_stack_down, run_stack_up

pytestmark = pytest.mark.unit


def test_down_stops_the_process_stack_json_names_and_says_so_when_none_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])  # stands in for a supervisor
    (tmp_path / STACK_FILE).write_text(json.dumps({"pid": sleeper.pid}))
    try:
        reaper = threading.Thread(target=sleeper.wait)
        reaper.start()  # a supervisor is not our child: nothing would keep it a zombie
        assert run_stack_down(tmp_path, timeout_s=30) == 0
        reaper.join(10)
        assert sleeper.returncode == -15
        assert "stack stopped" in capsys.readouterr().out
    finally:
        sleeper.kill()
    assert run_stack_down(tmp_path) == 0
    assert "no stack runs" in capsys.readouterr().out
    assert not (tmp_path / STACK_FILE).exists()
    (tmp_path / STACK_FILE).write_text("not json")
    assert run_stack_down(tmp_path) == 0


def test_up_refuses_a_folder_whose_stack_still_runs(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / STACK_FILE).write_text(json.dumps({"pid": sleeper.pid}))
        with pytest.raises(ThemisError, match="a stack already runs"):
            run_stack_up(load_settings(path=Path(os.devnull), env={}), tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
