"""Child processes of ``themis``: the one harness the demo, the benchmarks and the tests share.

:class:`ChildProcess` runs a command in its own session (so a signal reaches its
whole process group) with its output in a log file; :meth:`ChildProcess.stop` sends
SIGTERM (the worker flushes and commits, the facade delivers what it accepted) and
SIGKILL after a deadline. :class:`WorkerProcess` is ``themis worker`` with given
settings, and knows the worker's URL. :func:`themis_command` is how ``themis`` is
started: the console script next to this interpreter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.config import Settings, child_env
from pipeline.errors import ChildExited

__all__ = [
    "ChildProcess",
    "WorkerProcess",
    "stop_process_group",
    "themis_command",
]


def themis_command() -> list[str]:
    """``themis`` as installed beside this interpreter (a virtualenv's ``bin/themis``)."""
    script = Path(sys.executable).with_name("themis")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "pipeline.cli"]  # a source checkout without the script


def stop_process_group(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout_s: float = 30.0
) -> int:
    """Send ``sig`` to ``proc``'s process group and wait; SIGKILL after ``timeout_s`` seconds.

    Returns the exit code (negative: the signal that ended it).
    """
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


class ChildProcess:
    """``args`` as a child in its own session with ``env``; output appended to ``log_path``."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        cwd: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=dict(env),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log written)"

    def check_alive(self) -> None:
        """Raise :class:`ChildExited` with the log tail if the child has exited."""
        if self.proc.poll() is not None:
            raise ChildExited(
                f"{' '.join(self.args[-2:])} exited with code {self.proc.returncode}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child's process group (if it still runs)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, *, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig`` to the process group and wait; SIGKILL after ``timeout_s`` seconds."""
        return stop_process_group(self.proc, sig=sig, timeout_s=timeout_s)


class WorkerProcess(ChildProcess):
    """``themis worker`` loading exactly ``settings``; its pages at :attr:`url`."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *,
        loglevel: str = "warning",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.worker.web_port}"
        super().__init__(
            [*themis_command(), "worker", "-l", loglevel],
            child_env(settings, env),
            log_path,
        )
