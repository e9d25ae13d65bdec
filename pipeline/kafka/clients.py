"""confluent-kafka's clients, registered from creation until closed.

Every Kafka client the project creates is one of these: :class:`Producer`,
:class:`Consumer` and :class:`AdminClient` are confluent-kafka's own classes that
record themselves in a process-wide registry when created and leave it when closed.
A client left open keeps librdkafka's threads reconnecting (and logging "Connection
refused") after its broker is gone, so the test suite fails a run that leaves one
(:func:`open_clients`) or lets one be garbage-collected unclosed
(:func:`dropped_clients`).

Closing is idempotent, and a producer's close is bounded: it waits up to
``timeout_s`` seconds for deliveries, then purges what is left (whose delivery reports
fail) instead of waiting for ever, as confluent-kafka's ``close`` does when the
broker does not answer. An admin client closes through its context manager.
"""

from __future__ import annotations

import inspect
import os
import sysconfig
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Literal

import confluent_kafka
import confluent_kafka.admin

__all__ = [
    "AdminClient",
    "ClientRecord",
    "Consumer",
    "Producer",
    "clients_created",
    "dropped_clients",
    "open_clients",
]

ClientKind = Literal["producer", "consumer", "admin"]

_SITE_FRAMES: Final = 6
"""How many frames of the creating call stack a record keeps."""


@dataclass(frozen=True)
class ClientRecord:
    """One client: what it is, where it was created (innermost frame last)."""

    serial: int
    """Creation order in this process, from 1 (see :func:`clients_created`)."""
    kind: ClientKind
    bootstrap: str
    thread: str
    created_at: tuple[str, ...]
    """``path:line in function`` of the frames of the project that created it (up to
    six; the standard library's and installed packages' are left out), outermost first."""

    def describe(self) -> str:
        """One line: kind, serial, broker, thread and the creating frames."""
        return (
            f"{self.kind} #{self.serial} for {self.bootstrap} (thread {self.thread}), "
            f"created at {' <- '.join(reversed(self.created_at))}"
        )


class _Registry:
    """The clients open in this process and those collected unclosed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[int, ClientRecord] = {}
        self.dropped: list[ClientRecord] = []
        self.created = 0
        # Garbage-collection callbacks only append here (no lock: a collection may run
        # inside a locked section of the same thread); ``settle`` moves them under it.
        self.collected: deque[int] = deque()

    def settle(self) -> None:
        """Under ``lock``: move clients collected unclosed from ``open`` to ``dropped``."""
        while self.collected:
            record = self.open.pop(self.collected.popleft(), None)
            if record is not None:
                self.dropped.append(record)

    def register(
        self, client: object, kind: ClientKind, config: dict[str, Any]
    ) -> weakref.finalize[[int], object]:
        """Record ``client`` as open; the finalizer returned notices its collection."""
        site = _creation_site()
        with self.lock:
            self.settle()
            self.created += 1
            serial = self.created
            self.open[serial] = ClientRecord(
                serial,
                kind,
                str(config.get("bootstrap.servers", "")),
                threading.current_thread().name,
                site,
            )
        finalizer = weakref.finalize(client, self.collected.append, serial)
        finalizer.atexit = False
        return finalizer

    def unregister(self, finalizer: weakref.finalize[[int], object]) -> None:
        """The client of ``finalizer`` closed: forget it (idempotent)."""
        details = finalizer.detach()
        if details is not None:
            _, _, (serial,), _ = details
            with self.lock:
                self.open.pop(serial, None)


_REGISTRY: Final = _Registry()


_LIBRARIES: Final = (sysconfig.get_paths()["stdlib"], f"{os.sep}site-packages{os.sep}")


def _creation_site() -> tuple[str, ...]:
    """The innermost frames of the caller's own code (not this module, stdlib or packages)."""
    sites: list[str] = []
    frame = inspect.currentframe()
    while frame is not None and len(sites) < _SITE_FRAMES:
        path = frame.f_code.co_filename
        if path != __file__ and not path.startswith(_LIBRARIES[0]) and _LIBRARIES[1] not in path:
            sites.append(f"{path}:{frame.f_lineno} in {frame.f_code.co_name}")
        frame = frame.f_back
    return tuple(reversed(sites))


def open_clients() -> list[ClientRecord]:
    """Clients created and neither closed nor collected yet, oldest first."""
    with _REGISTRY.lock:
        _REGISTRY.settle()
        return sorted(_REGISTRY.open.values(), key=lambda r: r.serial)


def dropped_clients() -> list[ClientRecord]:
    """Clients that were garbage-collected without being closed, in the order seen."""
    with _REGISTRY.lock:
        _REGISTRY.settle()
        return list(_REGISTRY.dropped)


def clients_created() -> int:
    """How many clients this process created so far (the last serial given)."""
    with _REGISTRY.lock:
        return _REGISTRY.created


class Producer(confluent_kafka.Producer):
    """confluent-kafka's producer, registered until :meth:`close`."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._finalizer = _REGISTRY.register(self, "producer", config)
        self._closed = False

    def close(self, timeout_s: float = 30.0) -> bool:
        """Deliver what is queued (up to ``timeout_s`` seconds), purge the rest, release.

        Purged records fail their delivery reports (served here). Safe to call twice;
        never from a delivery callback (librdkafka deadlocks).
        """
        if self._closed:
            return True
        self._closed = True
        try:
            if super().flush(timeout_s):
                super().purge()
                super().flush(0)
            return super().close()
        finally:
            _REGISTRY.unregister(self._finalizer)

    def __exit__(self, exc_type: Any, exc_value: Any, exc_traceback: Any) -> None:
        self.close()


class Consumer(confluent_kafka.Consumer):
    """confluent-kafka's consumer, registered until :meth:`close`."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._finalizer = _REGISTRY.register(self, "consumer", config)
        self._closed = False

    def close(self) -> None:
        """Leave the group and release the consumer (no offsets are committed here)."""
        if self._closed:
            return
        self._closed = True
        try:
            super().close()
        finally:
            _REGISTRY.unregister(self._finalizer)

    def __exit__(self, exc_type: Any, exc_value: Any, exc_traceback: Any) -> None:
        self.close()


class AdminClient(confluent_kafka.admin.AdminClient):
    """confluent-kafka's admin client, registered until :meth:`close` (or its ``with``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._finalizer = _REGISTRY.register(self, "admin", config)
        self._closed = False

    def close(self) -> None:
        """Release the client (confluent-kafka 2.16 closes an admin client on ``__exit__``)."""
        if self._closed:
            return
        self._closed = True
        try:
            super().__exit__(None, None, None)
        finally:
            _REGISTRY.unregister(self._finalizer)

    def __exit__(self, exc_type: Any, exc_value: Any, exc_traceback: Any) -> None:
        self.close()
