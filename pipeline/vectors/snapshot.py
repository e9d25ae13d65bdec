"""Crash-safe snapshot directories: the newest complete snapshot is always the current one.

Layout of one directory::

    <directory>/CURRENT              name of the current snapshot, replaced atomically
    <directory>/snap-<n>/...         the files the writer put there (e.g. index.bin)
    <directory>/snap-<n>/state.json  the state the writer returned, JSON

A new snapshot is written to a temporary directory, fsynced, renamed to ``snap-<n>``,
and only then named in ``CURRENT`` (``os.replace`` + directory fsync); older snapshots
are deleted afterwards. A crash at any point leaves ``CURRENT`` naming a complete
snapshot, the old one or the new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson

from pipeline.errors import ThemisError

__all__ = ["INDEX_FILE", "current_snapshot", "has_snapshot", "read_state", "write_snapshot"]

INDEX_FILE: Final = "index.bin"
"""Where a vector index writes its hnswlib file inside a snapshot."""
_CURRENT: Final = "CURRENT"
_STATE_FILE: Final = "state.json"


def has_snapshot(directory: Path) -> bool:
    """Whether ``directory`` holds a snapshot written by :func:`write_snapshot`."""
    return (directory / _CURRENT).is_file()


def current_snapshot(directory: Path) -> Path:
    """The snapshot directory ``CURRENT`` names; ``FileNotFoundError`` without one."""
    try:
        name = (directory / _CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"no vector index snapshot in {directory}") from None
    return directory / name


def read_state(snapshot: Path) -> dict[str, Any]:
    """The state saved in ``snapshot``; :class:`~pipeline.errors.ThemisError` if unreadable."""
    try:
        state: dict[str, Any] = orjson.loads((snapshot / _STATE_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ThemisError(f"vector index snapshot {snapshot} is unreadable: {exc}") from None
    return state


def write_snapshot(directory: Path, write: Callable[[Path], dict[str, Any]]) -> None:
    """Make a new current snapshot in ``directory`` (created if missing).

    ``write(tmp)`` puts its files into the temporary directory ``tmp`` and returns the
    state to save beside them; every file is fsynced before the snapshot becomes current.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = f"snap-{_current_number(directory) + 1}"
    tmp = directory / f".tmp-{name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        state = write(tmp)
        with (tmp / _STATE_FILE).open("wb") as out:
            out.write(orjson.dumps(state))
            out.flush()
            os.fsync(out.fileno())
        for path in tmp.iterdir():
            _fsync_file(path)
        _fsync_dir(tmp)
        target = directory / name
        if target.exists():  # left by a crash after its rename, before CURRENT named it
            shutil.rmtree(target)
        tmp.rename(target)
        _fsync_dir(directory)
        pointer = directory / f".{_CURRENT}.tmp"
        with pointer.open("w", encoding="utf-8") as out:
            out.write(name + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(pointer, directory / _CURRENT)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in directory.iterdir():
        if stale.name != name and stale.name.startswith(("snap-", ".tmp-snap-")):
            shutil.rmtree(stale, ignore_errors=True)


def _current_number(directory: Path) -> int:
    try:
        name = (directory / _CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return 0
    with contextlib.suppress(ValueError):
        return int(name.removeprefix("snap-"))
    return 0


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":  # directories cannot be opened for fsync there
        return
    _fsync_file(path)
