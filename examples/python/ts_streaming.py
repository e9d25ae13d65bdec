"""Time-series streaming: a producer streams a sensor's readings, a dashboard reads them.

    THEMIS_CLIENT_CONF='themis::addr=localhost:9000;api_key=KEY' python ts_streaming.py [POINTS]

Streams POINTS (default 120) readings of ``room_temperature`` for one sensor, one a
second ending now, through the SDK's batching writer (``put_buffered``), flushes, then
reads them back as a dashboard panel would (``timeseries.query``) until all are there.
It prints one JSON line with what it sent and what it read: the series, the first
timestamp (ms), the step (ms), the count, and the values read equal to those sent.
Grafana reads the same series through Prometheus' remote-read (docs/api/ECOSYSTEM.md):
``room_temperature{instance="<entity>", site="lab"}``.
"""

from __future__ import annotations

import json
import sys
import time

from themisdb import ThemisClient

METRIC = "room_temperature"
TAGS = {"site": "lab"}
STEP_MS = 1000
DEADLINE_S = 60.0


def reading(i: int) -> float:
    """The i-th reading: quarter degrees, exact in binary floating point."""
    return 20.0 + (i % 40) * 0.25


def main(points: int) -> None:
    entity = f"sensor-{time.time_ns():x}"
    start = (time.time_ns() // 1_000_000 // STEP_MS - points) * STEP_MS
    sent = [(start + i * STEP_MS, reading(i)) for i in range(points)]
    with ThemisClient() as client:
        for timestamp_ms, value in sent:
            client.timeseries.put_buffered(METRIC, entity, timestamp_ms, value, TAGS)
        client.flush()
        deadline = time.monotonic() + DEADLINE_S
        while True:
            read = client.timeseries.query(METRIC, entity, TAGS, start, start + points * STEP_MS)
            if len(read) >= points or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    got = [(p["timestamp_ms"], p["value"]) for p in read]
    report = {
        "metric": METRIC,
        "entity": entity,
        "tags": TAGS,
        "start_ms": start,
        "step_ms": STEP_MS,
        "sent": points,
        "read": len(got),
        "equal": got == sent,
        "promql": f'{METRIC}{{instance="{entity}", site="lab"}}',
    }
    print(json.dumps(report), flush=True)
    if got != sent:
        raise SystemExit(f"read {len(got)} points, not the {points} sent")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 120)
