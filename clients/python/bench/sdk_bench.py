"""The Python SDK's benchmark against a live stack; one JSON object on stdout.

    python clients/python/bench/sdk_bench.py --stack STACK_JSON [--size smoke|quick|full]

Measured side by side, in rounds that alternate the three (the median of each is
reported):

* ``raw_protocol_points_per_s``: the points pre-encoded as TS_PUT_BUFFERED_BATCH frames of
  the SDK's batch size, written pipelined on one connection (HELLO and AUTH first), every
  WriteAck awaited: the protocol's ceiling from Python, no client logic at all;
* ``points_per_s_binary``: the same points through ``ThemisClient.timeseries.put_buffered``
  on the binary transport, from the first call until ``flush()`` returned;
* ``points_per_s_http``: the same through the HTTP transport.

``memory_mb_per_1m_queued``: what queueing costs, measured with ``tracemalloc`` while
points are queued and nothing is sent (``auto_flush=off``), scaled to a million points.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import tracemalloc
import uuid
from typing import Any

from themisdb import ThemisClient
from themisdb import protocol as wire

SIZES = {"smoke": (20_000, 1), "quick": (200_000, 3), "full": (1_000_000, 3)}
BATCH = 5000
SERIES = 100
T0 = 1_702_645_200_000


def _points(n: int, metric: str) -> list[tuple[str, str, int, float, dict[str, str]]]:
    tags = {"dc": "eu"}
    return [(metric, f"host{i % SERIES}", T0 + i // SERIES, float(i), tags) for i in range(n)]


async def _raw(stack: dict[str, Any], n: int) -> float:
    host, port = stack["binary_addr"].rsplit(":", 1)
    points = _points(n, f"raw{uuid.uuid4().hex[:8]}")
    frames = [
        wire.encode_frame(wire.Opcode.TS_PUT_BUFFERED_BATCH, 3 + i,
                          wire.encode_ts_batch(points[at : at + BATCH]))
        for i, at in enumerate(range(0, n, BATCH))
    ]  # fmt: skip
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 22)
    writer.write(wire.encode_frame(wire.Opcode.HELLO, 1, wire.encode_hello("sdk-bench-raw")))
    writer.write(wire.encode_frame(wire.Opcode.AUTH, 2, wire.encode_auth(stack["keys"]["writer"])))
    for _ in range(2):
        _, _, length, _ = wire.HEADER.unpack(await reader.readexactly(wire.HEADER.size))
        await reader.readexactly(length)
    started = time.perf_counter()
    for frame in frames:
        writer.write(frame)
    await writer.drain()
    for _ in frames:
        opcode, _, length, _ = wire.HEADER.unpack(await reader.readexactly(wire.HEADER.size))
        payload = await reader.readexactly(length)
        if opcode == wire.Opcode.ERROR:
            raise RuntimeError(wire.decode_error(payload).message)
    elapsed = time.perf_counter() - started
    writer.close()
    return n / elapsed


def _sdk(conf: str, n: int) -> float:
    metric = f"sdk{uuid.uuid4().hex[:8]}"
    with ThemisClient(conf=conf, auto_flush_rows=BATCH, max_buffer_rows=n + 1) as client:
        put = client.timeseries.put_buffered
        tags = {"dc": "eu"}
        started = time.perf_counter()
        for i in range(n):
            put(metric, f"host{i % SERIES}", T0 + i // SERIES, float(i), tags)
        client.flush()
        elapsed = time.perf_counter() - started
        assert client.counters.sent == n, client.counters
    return n / elapsed


def _memory_mb_per_million(conf: str, n: int) -> float:
    with ThemisClient(conf=conf, auto_flush="off", max_buffer_rows=n + 1,
                      max_buffer_bytes=1 << 34) as client:  # fmt: skip
        put, tags = client.timeseries.put_buffered, {"dc": "eu"}
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            put("mem", f"host{i % SERIES}", T0 + i // SERIES, float(i), tags)
        queued = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    return queued / n * 1_000_000 / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", required=True)
    parser.add_argument("--size", choices=tuple(SIZES), default="quick")
    args = parser.parse_args()
    with open(args.stack, encoding="utf-8") as described:
        stack = json.load(described)
    n, rounds = SIZES[args.size]
    raw, binary, http = [], [], []
    for _ in range(rounds):
        raw.append(asyncio.run(_raw(stack, n)))
        binary.append(_sdk(stack["conf"]["themis"], n))
        http.append(_sdk(stack["conf"]["http"], n))
    memory = _memory_mb_per_million(stack["conf"]["themis"], min(n, 200_000))
    runs = {"raw": raw, "binary": binary, "http": http}
    result = {
        "lang": "python",
        "points": n,
        "rounds": rounds,
        "batch_points": BATCH,
        "points_per_s_binary": round(statistics.median(binary)),
        "points_per_s_http": round(statistics.median(http)),
        "raw_protocol_points_per_s": round(statistics.median(raw)),
        "binary_vs_raw": round(statistics.median(binary) / statistics.median(raw), 3),
        "memory_mb_per_1m_queued": round(memory, 1),
        "runs": {name: [round(x) for x in xs] for name, xs in runs.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
