"""Benchmarks of the pipeline, run against a real Kafka broker.

``themis bench ts [--quick] [--json]`` (:mod:`pipeline.bench.ts`) measures the
time-series path: Gorilla compression and codec speed, producer -> Kafka -> worker
-> durable block throughput for JSON points and binary frames, a bare consumer on
the same topic, and the auto buffer against one durable write per point.
:mod:`pipeline.bench.harness` holds what benchmarks share: polling with deadlines,
a worker child process, machine facts and output.
"""
