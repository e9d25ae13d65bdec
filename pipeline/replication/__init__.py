"""WAL replication: the primary's shipper, where it ships to, and the replica that applies.

Batches flow one way, from the primary's WAL to a replica's state:

``shipper``
    :class:`WalShipper`: the replicas of a primary, their batch limits and codec, stats.
``link``
    ``ReplicaLink``: one replica's thread, reading the WAL from its position and shipping.
``targets``
    ``ShipTarget`` and its two kinds: a replica cluster's topic, a replica's HTTP(S) door.
``topics``
    The replica cluster's topics (:data:`REPLICA_TOPIC`, :data:`REPLICA_STATUS_TOPIC`),
    created by :func:`ensure_replica_topics`.
``replica``
    :class:`ReplicaState`: the blocks and vector index a replica serves, applied batch
    by batch (:class:`ApplyResult`).
``kafka_applier``
    :func:`run_kafka_applier`: applies the replica cluster's topic, reports status.
``server``
    :class:`ReplicaServer` and the routes of the replica's HTTP door.
``cli``
    ``themis wal ship | apply | serve``.
"""

from pipeline.replication.kafka_applier import ApplierStats, run_kafka_applier
from pipeline.replication.replica import ApplyResult, ReplicaState
from pipeline.replication.server import (
    APPLY_AUTH,
    REPLICA_STATE,
    ApplyAuth,
    ReplicaServer,
    add_wal_routes,
    handle_replica_status,
    handle_wal_apply,
    make_replica_app,
    server_ssl_context,
)
from pipeline.replication.shipper import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    MAX_BATCH_INTERVAL_MS,
    WalShipper,
)
from pipeline.replication.topics import REPLICA_STATUS_TOPIC, REPLICA_TOPIC, ensure_replica_topics

__all__ = [
    "APPLY_AUTH",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ENTRIES",
    "MAX_BATCH_INTERVAL_MS",
    "REPLICA_STATE",
    "REPLICA_STATUS_TOPIC",
    "REPLICA_TOPIC",
    "ApplierStats",
    "ApplyAuth",
    "ApplyResult",
    "ReplicaServer",
    "ReplicaState",
    "WalShipper",
    "add_wal_routes",
    "ensure_replica_topics",
    "handle_replica_status",
    "handle_wal_apply",
    "make_replica_app",
    "run_kafka_applier",
    "server_ssl_context",
]
