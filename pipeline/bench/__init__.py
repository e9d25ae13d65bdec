"""Benchmarks of the pipeline, run against a real Kafka broker: ``themis bench NAME``.

``cli``
    The one table of benchmarks (``ts``, ``vectors``, ``wal``, ``http``) and their
    sub-commands, plus the two hidden children of ``bench http``.
``harness``
    What they share: the ``Benchmark`` protocol, the one runner and the JSON
    envelope it builds, a broker and scratch directory per run, polling with
    deadlines, a worker child process and its pages.
``ts``, ``ts_codec``, ``ts_pipeline``, ``ts_writes``
    The time-series path: Gorilla compression and codec speed, producer -> Kafka ->
    worker -> durable block throughput for JSON points (untagged and tagged, 500,000
    messages and more) and binary frames, a bare consumer with the stages' fetch
    settings on each JSON topic, and the auto buffer against one durable write per point.
``vectors``, ``vectors_steps``, ``vectors_bare``, ``vectors_recall``, ``embeddings``
    The vector path: Kafka -> searchable against bare hnswlib (sharded as the worker
    shards), recall@10, buffered against direct writes, bytes per vector, on clustered
    embedding-like vectors; recall against bare hnswlib and filtered recall on random
    unit vectors, where a graph index misses neighbours.
``wal``, ``wal_streams``
    Compressed WAL shipping: bytes against uncompressed and Kafka's zstd, codec
    speed, replication lag.
``http``, ``http_load``, ``http_metrics``
    The HTTP facade against a bare aiohttp server: requests/s, the facade's own
    p50/p99 from its histogram, its handler time under a steady light load (an
    open-loop load generator), batch points/s.

docs/benchmarks.md records the figures.
"""

__all__: list[str] = []
