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
    worker -> durable block throughput for JSON points and binary frames, a bare
    consumer on the same topic, and the auto buffer against one durable write per point.
``vectors``, ``vectors_steps``, ``embeddings``
    The vector path: Kafka -> searchable against bare hnswlib, recall@10, buffered
    against direct writes, bytes per vector, on clustered embedding-like vectors.
``wal``, ``wal_streams``
    Compressed WAL shipping: bytes against uncompressed and Kafka's zstd, codec
    speed, replication lag.
``http``, ``http_load``, ``http_metrics``
    The HTTP facade against a bare aiohttp server: requests/s, the facade's own
    p50/p99 from its histogram, batch points/s.

docs/benchmarks.md records the figures.
"""

__all__: list[str] = []
