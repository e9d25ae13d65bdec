"""One buffer of vector operations, coalesced per pk, that drains on size, age or memory.

:class:`VectorAutoBuffer` collects :class:`~pipeline.vectors.ops.VectorOp` objects
and hands them back as one :class:`VectorBatch` when the index should be updated:

- **size**: ``max_vectors_per_buffer`` distinct pks are buffered -> ``add``/``add_many``
  return the batch;
- **memory**: the buffer holds more than ``max_memory_bytes`` -> ``add``/``add_many``
  return the batch;
- **time**: :meth:`VectorAutoBuffer.due` returns the batch once the oldest buffered
  operation was added ``flush_interval_ms`` or longer ago (by the injected clock);
- **manual** / **revoke**: :meth:`VectorAutoBuffer.flush`.

Coalescing keeps only the LAST operation of each pk, in the order the operations
were added (for a Kafka partition: offset order):

=====================  ==============================================================
operations of one pk   what the batch holds
=====================  ==============================================================
add, remove            remove: the pk is absent after the batch is applied
remove, add            add: the pk holds the new vector
update, update         the last update: its vector and its metadata
update (pk unknown)    an upsert: update of a pk the index does not hold adds it
=====================  ==============================================================

An operation is a whole replacement, so metadata is never merged: the metadata
of the last add or update wins. A batch lists each pk once, in the order of each
pk's last operation.

The buffer never writes anything: the caller applies the batch to the index and
reports it with :meth:`VectorAutoBuffer.record_durable`. The hard cap
``max_total_vectors`` counts distinct buffered pks (removes included): an
``add``/``add_many`` that would pass it raises
:class:`~pipeline.errors.BufferOverflow` and accepts nothing from that call.

Memory accounting is the logical payload, not the Python heap::

    bytes = sum over buffered pks (4 * dimension  [add/update only; 0 for remove]
                                   + UTF-8 length of the pk
                                   + length of the metadata as compact JSON
                                   + 128)

(a float32 per component; 128 bytes per entry for its bookkeeping).

``enabled`` in the settings is for the caller to read; this class always buffers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Final

from pipeline.config import VectorAutoBufferSettings
from pipeline.errors import InvalidArgument
from pipeline.ingest.buffer_core import BufferCore, FlushReason
from pipeline.vectors.ops import OpType, VectorOp, op_metadata_bytes

__all__ = [
    "ENTRY_OVERHEAD_BYTES",
    "VectorAutoBuffer",
    "VectorBatch",
    "VectorBufferStats",
]

ENTRY_OVERHEAD_BYTES: Final = 128
"""Bytes counted per buffered pk on top of its vector, pk and metadata."""


@dataclass(frozen=True, slots=True)
class VectorBatch:
    """The coalesced operations drained from the buffer.

    ``upserts`` are the adds and updates to write (vector and metadata replace
    whatever the index holds for the pk); ``removes`` are the pks to delete. A pk
    appears at most once in both lists together. ``tokens`` lists, in add order,
    ``(token, n)`` for each ``add``/``add_many`` call with a token that contributed
    ``n`` operations to this batch (calls without a token are left out), so the
    ``n`` count operations before coalescing. ``ops_in`` is the number of
    operations before coalescing, with or without token.
    """

    upserts: list[VectorOp]
    removes: list[str]
    tokens: list[tuple[object, int]]
    ops_in: int

    @property
    def vectors(self) -> int:
        """Pks the batch changes: ``len(upserts) + len(removes)``."""
        return len(self.upserts) + len(self.removes)


@dataclass(frozen=True, slots=True)
class VectorBufferStats:
    """A consistent snapshot of :class:`VectorAutoBuffer` counters.

    A flush is one drain of the buffer; a call that drains nothing counts nothing.
    """

    vectors_buffered: int
    """Operations accepted since the buffer was created (before coalescing)."""
    vectors_flushed: int
    """Vectors reported applied through :meth:`VectorAutoBuffer.record_durable`."""
    flush_count: int
    """Drains for any reason."""
    current_buffer_size: int
    """Distinct pks buffered now."""
    current_buffer_memory: int
    """Bytes buffered now, by the formula in the module docstring."""
    compression_type: str
    """Always ``"none"``: the buffer holds raw float32 vectors."""
    last_flush_time: str | None
    """ISO-8601 UTC time of the last flush (``"2025-12-15T12:30:00Z"``), ``None`` before."""

    def to_dict(self) -> dict[str, object]:
        """The fields by name, in declaration order."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Entry:
    op: VectorOp
    memory: int


@dataclass(frozen=True, slots=True)
class _Drained:
    entries: dict[str, _Entry]
    tokens: list[tuple[object, int]]
    ops_in: int


class VectorAutoBuffer:
    """Thread-safe coalescing buffer of vector operations; see the module docstring.

    ``clock`` is a monotonic clock in seconds used for the time trigger; tests
    inject a fake one. Every public method may be called from any thread.
    """

    def __init__(
        self, settings: VectorAutoBufferSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._core = BufferCore(
            what="vector buffer",
            unit="vectors",
            max_total=settings.max_total_vectors,
            cap_setting="features.vector_auto_buffer.max_total_vectors",
            clock=clock,
        )
        self._lock = self._core.lock
        self._clock = clock
        self._dimension = settings.dimension
        self._max_vectors = settings.max_vectors_per_buffer
        self._max_memory = settings.max_memory_bytes
        self._interval_s = settings.flush_interval_ms / 1000.0
        # Re-adding a pk moves it to the end: iteration is last-operation order.
        self._pending: dict[str, _Entry] = {}
        self._tokens: list[tuple[object, int]] = []
        self._ops_in = 0
        self._first_added: float | None = None
        self._memory = 0
        self._accepted = 0
        self._durable = 0

    # -- adding -------------------------------------------------------------

    def add(self, op: VectorOp, token: object | None = None) -> VectorBatch | None:
        """Buffer one operation, replacing any buffered operation of the same pk.

        Returns the whole buffer as a batch when it passed ``max_memory_bytes``
        (reason memory) or holds ``max_vectors_per_buffer`` pks (reason size), else
        ``None``. Raises ``ValueError`` for a vector of the wrong dimension and
        :class:`~pipeline.errors.BufferOverflow` (keeping nothing) when a new pk
        would pass ``max_total_vectors``.
        """
        entry = self._entry(op)
        with self._lock:
            if op.pk not in self._pending:
                self._core.check_capacity(len(self._pending), 1)
            self._put(entry)
            self._accepted += 1
            self._ops_in += 1
            if token is not None:
                self._tokens.append((token, 1))
            drained = self._drain_if_full()
        return None if drained is None else _to_batch(drained)

    def add_many(self, ops: Sequence[VectorOp], token: object | None = None) -> VectorBatch | None:
        """Buffer many operations in order, as if each were given to :meth:`add`.

        Triggers are checked once, after all of them: a batch may then hold more
        than ``max_vectors_per_buffer`` pks. ``token`` is recorded once, with
        ``len(ops)``; an empty ``ops`` records nothing and returns ``None``. Raises
        like :meth:`add`; on ``BufferOverflow`` none of ``ops`` is kept.
        """
        if not ops:
            return None
        entries = [self._entry(op) for op in ops]
        with self._lock:
            new_pks = sum(1 for pk in {op.pk for op in ops} if pk not in self._pending)
            self._core.check_capacity(len(self._pending), new_pks)
            for entry in entries:
                self._put(entry)
            self._accepted += len(ops)
            self._ops_in += len(ops)
            if token is not None:
                self._tokens.append((token, len(ops)))
            drained = self._drain_if_full()
        return None if drained is None else _to_batch(drained)

    # -- draining -----------------------------------------------------------

    def due(self) -> VectorBatch | None:
        """Drain the buffer if its oldest operation is ``flush_interval_ms`` old (reason time).

        The oldest operation is the first one added since the last drain, even if
        a later operation on the same pk has replaced it: its effect is still
        waiting.
        """
        with self._lock:
            first = self._first_added
            if first is None or self._clock() - first < self._interval_s:
                return None
            drained = self._detach(FlushReason.TIME)
        return _to_batch(drained)

    def flush(self, *, reason: FlushReason = FlushReason.MANUAL) -> VectorBatch | None:
        """Drain the buffer (``None`` when empty); ``reason`` is counted: manual or revoke."""
        with self._lock:
            if not self._pending:
                return None
            drained = self._detach(reason)
        return _to_batch(drained)

    # -- reading ------------------------------------------------------------

    def pending(self, pk: str) -> VectorOp | None:
        """The buffered (coalesced) operation of ``pk``, ``None`` if none is buffered."""
        with self._lock:
            entry = self._pending.get(pk)
        return None if entry is None else entry.op

    def record_durable(self, vectors: int) -> None:
        """Account ``vectors`` applied to the index (adds to ``vectors_flushed``)."""
        if vectors < 0:
            raise InvalidArgument(f"record_durable: vectors must be >= 0, got {vectors}")
        with self._lock:
            self._durable += vectors

    def stats(self) -> VectorBufferStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            core = self._core
            return VectorBufferStats(
                vectors_buffered=self._accepted,
                vectors_flushed=self._durable,
                flush_count=core.flush_count,
                current_buffer_size=len(self._pending),
                current_buffer_memory=self._memory,
                compression_type="none",
                last_flush_time=core.last_flush_time,
            )

    def flush_reason_counts(self) -> dict[str, int]:
        """Drains per reason (``"size"``, ``"time"``, ...), every reason present."""
        with self._lock:
            return self._core.reason_counts()

    # -- internals ------------------------------------------------------------

    def _entry(self, op: VectorOp) -> _Entry:
        """The entry of ``op`` with its memory (computed outside the lock)."""
        memory = ENTRY_OVERHEAD_BYTES + len(op.pk.encode("utf-8")) + op_metadata_bytes(op.metadata)
        if op.vector is not None:
            if op.vector.shape != (self._dimension,):
                raise InvalidArgument(
                    f"{op.op.value} of {op.pk!r}: vector has {op.vector.shape[0]} dimensions; "
                    f"the buffer has {self._dimension}"
                )
            memory += 4 * self._dimension
        return _Entry(op, memory)

    def _put(self, entry: _Entry) -> None:
        """Store ``entry`` as the last operation of its pk (caller holds the lock)."""
        old = self._pending.pop(entry.op.pk, None)
        if old is not None:
            self._memory -= old.memory
        elif self._first_added is None:
            self._first_added = self._clock()
        self._pending[entry.op.pk] = entry
        self._memory += entry.memory

    def _drain_if_full(self) -> _Drained | None:
        if self._memory > self._max_memory:
            return self._detach(FlushReason.MEMORY)
        if len(self._pending) >= self._max_vectors:
            return self._detach(FlushReason.SIZE)
        return None

    def _detach(self, reason: FlushReason) -> _Drained:
        drained = _Drained(self._pending, self._tokens, self._ops_in)
        self._pending = {}
        self._tokens = []
        self._ops_in = 0
        self._first_added = None
        self._memory = 0
        self._core.record_flushes(reason, 1)
        return drained


def _to_batch(drained: _Drained) -> VectorBatch:
    """Split detached entries into upserts and removes (outside the lock: no longer shared)."""
    upserts: list[VectorOp] = []
    removes: list[str] = []
    for pk, entry in drained.entries.items():
        if entry.op.op is OpType.REMOVE:
            removes.append(pk)
        else:
            upserts.append(entry.op)
    return VectorBatch(upserts, removes, drained.tokens, drained.ops_in)
