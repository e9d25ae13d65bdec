"""Topic specs that are wrong name the file and the key; a child process reports its exit
with its log."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import ChildExited, TopicError
from pipeline.kafka import topics
from pipeline.kafka.topics import load_specs
from pipeline.worker.process import ChildProcess, stop_process_group

pytestmark = pytest.mark.unit

GOOD = (
    "name: ts.points\npurpose: p\npartitions: 2\nreplication_factor: 1\n"
    "key_format: k\nvalue_format: v\n"
)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- a list\n", "a topic spec must be a mapping"),
        ("name: x\n", "missing keys purpose, partitions"),
        (GOOD.replace("ts.points", "Bad-Name"), "name 'Bad-Name' must be lowercase words"),
        (GOOD.replace("partitions: 2", "partitions: 0"), "partitions must be a positive integer"),
    ],
)
def test_a_wrong_topic_spec_names_its_file_and_what_is_wrong(
    tmp_path: Path, text: str, needle: str
) -> None:
    (tmp_path / "one.yaml").write_text(text)
    with pytest.raises(TopicError) as refused:
        load_specs(tmp_path)
    assert str(refused.value).startswith(str(tmp_path / "one.yaml"))
    assert needle in str(refused.value)


def test_a_folder_without_specs_is_an_error_and_configs_are_strings(tmp_path: Path) -> None:
    with pytest.raises(TopicError, match="no topic specs found"):
        load_specs(tmp_path)
    (tmp_path / "a.yaml").write_text(GOOD + "configs:\n  retention.ms: 1000\n")
    [spec] = load_specs(tmp_path)
    assert (spec.name, spec.partitions, spec.configs) == ("ts.points", 2, {"retention.ms": "1000"})


def test_specs_come_from_the_checkout_else_from_where_a_wheel_installed_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "share" / "themis" / "topics"
    installed.mkdir(parents=True)
    (installed / "a.yaml").write_text(GOOD)
    monkeypatch.setattr(topics, "INSTALLED_SPEC_DIR", installed)
    in_checkout = {spec.name for spec in load_specs()}
    assert {"ts.points", "ts.blocks", "wal"} <= in_checkout  # topics/ of this checkout
    monkeypatch.setattr(topics, "SPEC_DIR", tmp_path / "no-checkout")
    assert [spec.name for spec in load_specs()] == ["ts.points"]


def test_a_child_that_exited_is_reported_with_its_log_and_a_stubborn_one_is_killed(
    tmp_path: Path,
) -> None:
    log = tmp_path / "child.log"
    child = ChildProcess([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], {}, log)
    assert child.proc.wait(timeout=30) == 3
    assert child.returncode == 3
    with pytest.raises(ChildExited, match=r"exited with code 3; log .*\n.*hello"):
        child.check_alive()
    child.send_signal(signal.SIGTERM)  # gone already: nothing to signal
    assert "hello" in child.log_tail()
    done = ChildProcess(["true"], {}, tmp_path / "new-folder" / "x.log")
    assert done.proc.wait(timeout=30) == 0
    assert done.stop() == 0  # exited already: its exit code, no signal
    missing = ChildProcess(["true"], {}, tmp_path / "y.log")
    missing.proc.wait(timeout=30)
    missing.log_path.unlink()
    assert missing.log_tail() == "(no log written)"
    # A child that ignores SIGTERM is killed once the grace period ends.
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal,time; signal.signal(15, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert stubborn.stdout is not None
    assert stubborn.stdout.readline() == b"ready\n"
    assert stop_process_group(stubborn, timeout_s=0.5) == -signal.SIGKILL
    stubborn.stdout.close()
