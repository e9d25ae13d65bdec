"""Stream this host's metrics into ThemisDB through the buffered writer.

    THEMIS_CLIENT_CONF="http::addr=localhost:8080;api_key=KEY" \
        python stream_host_metrics.py [SECONDS]

Samples the load average and memory every 100 ms, queues each as a point, and closes
the client at the end (which flushes). Prints what was queued and acknowledged.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from themisdb import ThemisClient


def _memory_available_kb() -> float:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1])
    return 0.0


def main(seconds: float) -> None:
    host = socket.gethostname()
    with ThemisClient() as client:  # the connection string comes from THEMIS_CLIENT_CONF
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            now = time.time_ns() // 1_000_000
            load1, _, _ = os.getloadavg()
            client.timeseries.put_buffered("host_load1", host, now, load1, {"source": "example"})
            memory = _memory_available_kb()
            client.timeseries.put_buffered("host_mem_kb", host, now, memory, {"source": "example"})
            time.sleep(0.1)
        client.flush()
        counters = client.counters
        print(f"host={host} queued={counters.queued} sent={counters.sent} failed={counters.failed}")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)
