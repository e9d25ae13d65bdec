"""The metrics of a binary-protocol door: requests by opcode, errors by code, bytes in,
handler time (the facade's ``facade_binary_*``, ``wal serve``'s ``wal_binary_*``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from pipeline.binary.codes import ErrorCode, Opcode
from pipeline.metrics import LATENCY_BUCKETS

__all__ = ["BinaryMetrics"]


class BinaryMetrics:
    """The binary door's metrics: requests by opcode, errors by code, bytes in, handler time."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "facade_binary") -> None:
        self.requests = Counter(
            f"{prefix}_requests",
            "Binary-protocol requests answered, by opcode.",
            ["opcode"],
            registry=registry,
        )
        self.errors = Counter(
            f"{prefix}_errors",
            "Binary-protocol ERROR replies, by error code.",
            ["code"],
            registry=registry,
        )
        self.bytes_in = Counter(
            f"{prefix}_received_bytes",
            "Bytes of binary-protocol frames received (headers and payloads).",
            registry=registry,
        )
        self.handler_seconds = Histogram(
            f"{prefix}_handler_seconds",
            "Time from a request's whole frame being read to its reply being written, by opcode.",
            ["opcode"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        self._answered: dict[Opcode, tuple[Callable[[], None], Callable[[float], None]]] = {}

    def error(self, code: ErrorCode) -> None:
        """Count one ERROR reply of ``code``."""
        self.errors.labels(code.name).inc()

    def answered(self, opcode: Opcode, seconds: float) -> None:
        """Count one answered request of ``opcode`` that took ``seconds``."""
        children = self._answered.get(opcode)
        if children is None:
            count = self.requests.labels(opcode.name).inc
            observe = self.handler_seconds.labels(opcode.name).observe
            children = self._answered[opcode] = (count, observe)
        children[0]()
        children[1](seconds)
