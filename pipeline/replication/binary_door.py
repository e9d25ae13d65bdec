"""WAL apply over the binary protocol: what a replica serves on ``themis wal serve --binary-port``.

:func:`apply_wal_frame` is the one WAL_APPLY_COMPRESSED handler (the facade's door calls
it too): the frame's ``primary_id`` must be the batch's, then the batch is applied as
``POST /api/v1/wal/apply`` applies it; a gap is WAL_GAP (its message ends with the LSN
to send from), a batch needing a dictionary NEED_DICTIONARY, a corrupt one CORRUPT_BATCH.

:class:`WalApplyDoor` is the :class:`~pipeline.binary.session.SessionHost` of a replica:
the only opcode is WAL_APPLY_COMPRESSED; AUTH takes a replicator key of its
:class:`~pipeline.replication.server.ApplyAuth`, and a connection whose client
certificate the TLS context verified needs no AUTH.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry

from pipeline.binary import Body, Frame, JsonBody, Opcode, WalApply
from pipeline.binary.session import BinaryListener, BinaryMetrics, Handler, Principal
from pipeline.errors import InvalidRequest
from pipeline.limits import MAX_WAL_BODY_BYTES
from pipeline.wal.batch import read_header

if TYPE_CHECKING:
    from pipeline.replication.replica import ReplicaState
    from pipeline.replication.server import ApplyAuth

__all__ = ["BODY_TIMEOUT_S", "WalApplyDoor", "apply_wal_frame"]

BODY_TIMEOUT_S: Final = 60.0
"""How long a WAL batch's payload may take to arrive (seconds; batches are large)."""
_REPLICATOR: Final = "replicator"


async def apply_wal_frame(state: ReplicaState, sent: WalApply) -> JsonBody:
    """Apply one WAL_APPLY_COMPRESSED request on ``state``; the REST answer's body."""
    header = read_header(sent.batch)
    if header.primary_id != sent.primary_id:
        raise InvalidRequest(
            f"primary_id is {sent.primary_id!r} but the batch was written by {header.primary_id!r}"
        )
    result = await asyncio.to_thread(state.apply_batch, sent.batch)
    return JsonBody(result.to_json())


class WalApplyDoor:
    """A replica's binary door: WAL_APPLY_COMPRESSED for replicators only."""

    max_frame_bytes: Final = MAX_WAL_BODY_BYTES
    body_timeout_s: Final = BODY_TIMEOUT_S

    def __init__(self, state: ReplicaState, auth: ApplyAuth) -> None:
        self.state = state
        self.auth = auth
        self.metrics = BinaryMetrics(CollectorRegistry(), prefix="wal_binary")
        self.auth_methods: tuple[str, ...] = ("api_key",)
        self.raw_opcodes: frozenset[int] = frozenset()
        self.operations: Mapping[Opcode, Handler] = {Opcode.WAL_APPLY_COMPRESSED: self._apply}
        self.listener = BinaryListener(self)

    def open_principal(self, writer: asyncio.StreamWriter) -> Principal | None:
        """A connection with a verified client certificate is a replicator from HELLO on."""
        return Principal(_REPLICATOR, "certificate") if self._certified(writer) else None

    def _certified(self, writer: asyncio.StreamWriter) -> bool:
        return self.auth.certified(writer.get_extra_info("peercert"))

    def authenticate(self, address: str, method: str, credential: bytes) -> Principal:
        """A replicator key of the door's :class:`ApplyAuth`."""
        key = credential.decode("utf-8", "surrogateescape") or None
        self.auth.check_key(address, key)
        return Principal(_REPLICATOR, f"peer:{address}")

    async def _apply(self, principal: Principal, frame: Frame) -> Body:
        assert isinstance(frame.body, WalApply)
        return await apply_wal_frame(self.state, frame.body)
