"""Set up WAL shipping to a replica cluster and watch it (needs an admin key).

    THEMIS_CLIENT_CONF='http::addr=localhost:8080;api_key=ADMIN_KEY' \
        python replication_setup.py REPLICA_ID ENDPOINT

``ENDPOINT`` is ``kafka://host:port``, ``https://host:port`` or ``themis://host:port``.
Configures zstd level 3, adds the replica, writes a point directly (durable), waits
until the replica confirmed an LSN, prints the stats, and removes the replica again.
"""

from __future__ import annotations

import sys
import time

from themisdb import ThemisClient


def main(replica_id: str, endpoint: str) -> None:
    with ThemisClient() as client:
        print(client.replication.configure_compression("zstd", 3))
        print(client.replication.add_replica(replica_id, endpoint))
        client.timeseries.put("replication_example", "primary", value=1.0)
        deadline = time.monotonic() + 60
        row: dict[str, object] = {}
        while time.monotonic() < deadline:
            stats = client.replication.get_replication_stats()
            row = next((r for r in stats["replicas"] if r["replica_id"] == replica_id), {})
            if int(str(row.get("last_confirmed_lsn", "0")), 16) > 0:
                break
            time.sleep(0.25)
        print(f"replica {replica_id}: last_confirmed_lsn={row.get('last_confirmed_lsn')} "
              f"healthy={row.get('is_healthy')}")  # fmt: skip
        print(client.replication.remove_replica(replica_id))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
