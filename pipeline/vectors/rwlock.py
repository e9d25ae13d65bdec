"""A writer-preferring readers-writer lock for threads.

Many readers may hold the lock together; a writer holds it alone. A writer that
is waiting blocks readers that arrive after it, so a steady stream of searches
cannot starve a batch apply. The lock is not reentrant: a thread that holds it
(for reading or writing) must not acquire it again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ReadWriteLock"]


class ReadWriteLock:
    """Shared :meth:`read` and exclusive :meth:`write` sections; see the module docstring."""

    __slots__ = ("_cond", "_readers", "_writer", "_writers_waiting")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared for the ``with`` block."""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock exclusively for the ``with`` block."""
        with self._cond:
            self._writers_waiting += 1
            acquired = False
            try:
                while self._writer or self._readers:
                    self._cond.wait()
                acquired = True
            finally:
                self._writers_waiting -= 1
                if not acquired:  # interrupted: let the readers we held back proceed
                    self._cond.notify_all()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
