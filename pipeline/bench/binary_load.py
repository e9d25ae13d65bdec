"""The binary benchmark's child processes: the load generator and the bare framing server.

* ``themis bench binary-load --plan JSON`` runs :func:`generate_load` for one
  :class:`BinaryLoadPlan` and prints its result as one JSON line; :func:`run_load` is
  how the benchmark starts it and reads that line. The generator is one
  :class:`~pipeline.binary.client.BinaryClient` (one connection, HELLO and AUTH first)
  whose requests pipeline: the payloads are encoded before the clock starts and each is
  written behind its header with :meth:`~pipeline.binary.client.BinaryClient.submit`,
  no task per request. Closed loop (``rate_per_s`` 0): ``window`` requests in flight,
  the next written as soon as one is answered. Open loop (``rate_per_s`` > 0): request
  ``i`` written at ``i / rate_per_s`` seconds whether or not earlier ones were answered
  (at most ``window`` in flight). Either until ``max_requests`` were sent or
  ``max_seconds`` passed.
* ``themis bench binary-bare-server --port N`` (:func:`serve_bare`): an asyncio TCP
  server that reads the 10-byte header, reads (and ignores) the payload and answers a
  fixed reply with the request's id: HelloOk to HELLO, AuthOk to AUTH, and to
  everything else the facade's reply to a put, a WriteAck (8 bytes), so that the client
  reads the same replies from both servers.

Both are hidden sub-commands of ``themis bench`` (:mod:`pipeline.bench.cli`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from pipeline.bench.http_load import API_KEY, ENTITIES
from pipeline.binary.bodies import (
    AuthOk,
    Body,
    Frame,
    HelloOk,
    TsBatch,
    TsPoint,
    VectorBatch,
    WriteAck,
)
from pipeline.binary.client import BinaryClient
from pipeline.binary.codes import HEADER, HEADER_BYTES, Flags, Opcode
from pipeline.binary.frames import encode_frame
from pipeline.errors import BenchmarkFailed, RequestRefused
from pipeline.limits import MAX_FRAME_BYTES
from pipeline.worker.process import themis_command

__all__ = [
    "OPCODE_OF",
    "BinaryLoadPlan",
    "generate_load",
    "run_load",
    "run_load_command",
    "serve_bare",
]

OPCODE_OF: Final = {
    "point": Opcode.TS_PUT_BUFFERED,
    "batch": Opcode.TS_PUT_BUFFERED_BATCH,
    "vectors": Opcode.VECTOR_ADD_BUFFERED_BATCH,
}
"""The opcode of each kind of load."""
_BASE_TS_MS: Final = 1_702_645_200_000
_DISTINCT_POINTS: Final = 4096  # single-put payloads encoded up front, then sent in turn
_DRAIN_EVERY: Final = 64  # requests written between two waits for the write buffer


@dataclass(frozen=True)
class BinaryLoadPlan:
    """One load generator run: where, what, how many in flight, and for how long."""

    port: int
    kind: str
    """``point`` (TS_PUT_BUFFERED), ``batch`` (TS_PUT_BUFFERED_BATCH of ``batch_points``)
    or ``vectors`` (VECTOR_ADD_BUFFERED_BATCH of ``batch_vectors`` x ``dimension``)."""
    window: int
    """Requests in flight at most on the one connection."""
    max_requests: int
    max_seconds: float
    queued: bool = False
    """Set the ACK_QUEUED flag (answered once queued in the producer, not once acked)."""
    batch_points: int = 1000
    batch_vectors: int = 100
    dimension: int = 768
    rate_per_s: float = 0.0
    """0: closed loop; above 0: requests written at this steady rate (open loop)."""

    def argv(self) -> list[str]:
        """The ``themis bench binary-load`` command line that runs this plan."""
        plan = json.dumps(dataclasses.asdict(self))
        return [*themis_command(), "bench", "binary-load", "--plan", plan]

    @property
    def items_per_request(self) -> int:
        """Points or vectors one request carries."""
        return {"point": 1, "batch": self.batch_points}.get(self.kind, self.batch_vectors)


def _point(n: int) -> TsPoint:
    """The ``n``-th point: :data:`ENTITIES` series, one millisecond apart within a series
    (the same points as ``themis bench http``'s)."""
    return TsPoint("bench_binary", f"e{n % ENTITIES}", _BASE_TS_MS + n // ENTITIES, n % 1000 + 0.25)


def _payload(opcode: Opcode, body: Body) -> bytes:
    """The encoded payload of a request of ``opcode`` (the header is written per request)."""
    return encode_frame(Frame(opcode, Flags.NONE, 0, body))[HEADER_BYTES:]


def payloads(plan: BinaryLoadPlan) -> list[bytes]:
    """The payloads the plan sends in turn (a batch run sends the same one each time: last
    write wins)."""
    opcode = OPCODE_OF[plan.kind]
    if plan.kind == "point":
        count = min(plan.max_requests, _DISTINCT_POINTS)
        return [_payload(opcode, _point(n)) for n in range(count)]
    if plan.kind == "batch":
        return [_payload(opcode, TsBatch(tuple(_point(n) for n in range(plan.batch_points))))]
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((plan.batch_vectors, plan.dimension), dtype=np.float32)
    pks = tuple(f"bench-{i}" for i in range(plan.batch_vectors))
    return [_payload(opcode, VectorBatch(pks, vectors))]


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def generate_load(plan: BinaryLoadPlan) -> dict[str, Any]:
    """Run ``plan``; returns requests, answered, errors by code, seconds and client
    round-trip times (µs). The clock starts before the first request and stops after
    the last answer."""
    opcode, flags = OPCODE_OF[plan.kind], Flags.ACK_QUEUED if plan.queued else Flags.NONE
    sent = payloads(plan)
    client = await BinaryClient.connect(
        "127.0.0.1", plan.port, client_id=f"bench-binary-{plan.kind}", api_key=API_KEY
    )
    assert client.hello is not None
    window = min(plan.window, client.hello.max_in_flight)
    slots = asyncio.Semaphore(window)
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []

    def answered(begun: float, future: asyncio.Future[Frame]) -> None:
        slots.release()
        error = future.exception()
        if error is None:
            outcomes["ok"] += 1
            latencies.append(time.perf_counter() - begun)
        else:
            outcomes[str(error)[:200] if isinstance(error, RequestRefused) else repr(error)] += 1

    issued = 0
    begun = time.perf_counter()
    deadline = begun + plan.max_seconds
    try:
        while issued < plan.max_requests:
            now = time.perf_counter()
            if plan.rate_per_s > 0:
                due = begun + issued / plan.rate_per_s
                if due > deadline:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
            elif now > deadline:
                break
            if slots.locked():  # the window is full: send what is queued, wait for a reply
                await client.drain()
            await slots.acquire()
            future = client.submit(opcode, sent[issued % len(sent)], flags)
            future.add_done_callback(functools.partial(answered, time.perf_counter()))
            issued += 1
            if plan.rate_per_s > 0 or issued % _DRAIN_EVERY == 0:
                await client.drain()
        await client.drain()
        for _ in range(window):  # every slot back: every request answered
            await slots.acquire()
        seconds = time.perf_counter() - begun
    finally:
        await client.close()
    latencies.sort()
    ok = outcomes.pop("ok", 0)
    return {
        "requests": issued,
        "ok": ok,
        "errors": dict(outcomes),
        "seconds": seconds,
        "window": window,
        "payload_bytes": len(sent[0]),
        "client_p50_us": 1e6 * _percentile(latencies, 0.50),
        "client_p99_us": 1e6 * _percentile(latencies, 0.99),
    }


def run_load_command(plan_json: str) -> None:
    """``themis bench binary-load --plan JSON``: run the plan, print its result as one line."""
    plan = BinaryLoadPlan(**json.loads(plan_json))
    print(json.dumps(asyncio.run(generate_load(plan))), flush=True)


def run_load(plan: BinaryLoadPlan) -> dict[str, Any]:
    """Run ``plan`` in a load generator child process; its result.

    Raises :class:`BenchmarkFailed` if the child fails or any request was answered ERROR.
    """
    done = subprocess.run(
        plan.argv(), capture_output=True, text=True, timeout=plan.max_seconds + 120, check=False
    )
    if done.returncode != 0:
        raise BenchmarkFailed(f"the binary load generator failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    if result["errors"] or not result["ok"]:
        raise BenchmarkFailed(
            f"{OPCODE_OF[plan.kind].name} on port {plan.port}: {result['ok']} answered, "
            f"errors {result['errors']}; expected only replies"
        )
    return result


def _reply(opcode: Opcode, body: Body) -> bytes:
    """The encoded reply frame of ``opcode`` (request id 0, patched in per reply)."""
    return encode_frame(Frame(opcode, Flags.REPLY, 0, body))


_BARE_SESSION: Final = {
    Opcode.HELLO: _reply(Opcode.HELLO, HelloOk(1, MAX_FRAME_BYTES, 1024, ("api_key",))),
    Opcode.AUTH: _reply(Opcode.AUTH, AuthOk("writer")),
}
"""The bare server's replies to HELLO and AUTH (bytes 6-9, the request id, patched)."""
_BARE_ACK: Final = _reply(Opcode.TS_PUT_BUFFERED, WriteAck(1, 0))[HEADER_BYTES:]


async def _bare_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Header, payload, fixed reply with the request's id; until the client closes."""
    try:
        while True:
            opcode, _, length, request_id = HEADER.unpack(await reader.readexactly(HEADER_BYTES))
            if length:
                await reader.readexactly(length)
            session = _BARE_SESSION.get(opcode)
            if session is not None:
                data = session[:6] + request_id.to_bytes(4, "little") + session[10:]
            else:
                data = HEADER.pack(opcode, Flags.REPLY, len(_BARE_ACK), request_id) + _BARE_ACK
            writer.write(data)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def serve_bare(port: int) -> None:
    """``themis bench binary-bare-server``: the bare server on 127.0.0.1:``port`` until
    SIGTERM."""

    async def serve() -> None:
        server = await asyncio.start_server(_bare_session, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())
