"""``themis bench vectors [--quick|--smoke] [--json]``: how fast, exact and big the vector path is.

This module holds the benchmark's definitions, sizes, settings, the order of its
steps and its table; the steps are in :mod:`pipeline.bench.vectors_steps`, the data
model in :mod:`pipeline.bench.embeddings`.

The broker comes from :func:`pipeline.bench.harness.bench_broker`
(``KAFKA_BOOTSTRAP_SERVERS``, else Docker, else a local JVM started for the run);
topics live under a namespace of their own, ``bench-<pid>-<random>`` (deleted at
the end on a given broker). One ``themis worker`` child process serves every
pipeline measurement, with ``flush_interval_ms`` = :data:`FLUSH_INTERVAL_MS` and the
other index settings (space, M, ef_construction, ef_search) from the settings
(defaults: cosine, 16, 200, 64); the dimension is always
:data:`~pipeline.bench.embeddings.DIMENSION`.

Data
    :class:`~pipeline.bench.embeddings.ClusteredEmbeddings`: unit vectors in
    clusters on low-rank subspaces, shaped like text embeddings; seed
    :data:`~pipeline.bench.embeddings.SEED`; queries and updates are fresh draws
    from the same model. Both the worker and bare hnswlib find every neighbour on
    it, so the recall that discriminates is measured on a second dataset,
    :func:`~pipeline.bench.embeddings.random_unit_vectors`, with a worker of its own
    (:mod:`pipeline.bench.vectors_recall`), after the main worker stopped.

Figures
    see :data:`DEFINITIONS`; ``vectors`` has the counts behind every rate,
    ``pipeline`` each step's details, ``memory`` the figures behind
    ``bytes_per_vector``, ``hard`` the random-vector run's details, ``goals`` the
    ratios against their goals (``indexed_vs_bare`` at least 0.9,
    ``recall_at_10_hard`` at least ``bare_recall_at_10_hard`` - 0.01,
    ``filtered_recall_at_10`` at least 0.95), ``settings`` the index and buffer
    settings; then the shared envelope (:mod:`pipeline.bench.harness`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from pipeline.bench import vectors_steps as steps
from pipeline.bench.embeddings import CLUSTERS, DIMENSION, RANK, SEED, ClusteredEmbeddings
from pipeline.bench.harness import (
    BenchBroker,
    BenchSize,
    bench_broker,
    goal,
    goal_row,
    progress,
    rounded,
    worker_running,
)
from pipeline.bench.vectors_recall import FILTER_PARTS, HARD_SEED, HardRecall, measure_hard
from pipeline.config import Settings, with_overrides
from pipeline.errors import BenchmarkFailed
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.vectors.producer import VectorProducer
from pipeline.worker.client import run_with_client, worker_urls

__all__ = [
    "DEFINITIONS",
    "FLUSH_INTERVAL_MS",
    "FULL",
    "QUICK",
    "SIZES",
    "SMOKE",
    "Sizes",
    "render",
    "run",
]

FLUSH_INTERVAL_MS: Final = 100
"""The worker's ``flush_interval_ms`` (milliseconds): how long a lone operation waits."""
INDEXED_GOAL: Final = 0.9
"""Goal of ``indexed_vs_bare``."""
RECALL_SLACK: Final = 0.01
"""Goal of ``recall_at_10_hard``: at least ``bare_recall_at_10_hard`` minus this."""
FILTERED_RECALL_GOAL: Final = 0.95
"""Goal of ``filtered_recall_at_10``."""

DEFINITIONS: Mapping[str, str] = {
    "indexed_vectors_per_s": "sustained Kafka -> searchable: N ADDs pre-produced in binary "
    "frames (send_many, 1000 per call) and flushed before a themis worker starts; clock "
    "from the first consumed op seen on /vectors/buffer/stats to vectors_flushed and "
    "live_vectors covering all N; rate = vectors applied after the clock started / seconds",
    "bare_hnswlib_vectors_per_s": "hnswlib Index.add_items of the same N vectors in this "
    "process, same space, M, ef_construction and threads (all cores), split into the same "
    "shards as the worker (one index per topic partition, pk -> partition as the "
    "producer does), one add_items call per shard, capacity preallocated; N / seconds",
    "indexed_vs_bare": "indexed_vectors_per_s / bare_hnswlib_vectors_per_s",
    "recall_at_10": "after a mix of updates, removes and adds through the pipeline, the "
    "mean over fresh queries of |search(q, 10) via the worker ∩ exact top 10| / 10; exact = "
    "brute-force cosine over the live set as the client knows it; searched at the "
    "configured ef_search (see ef_search)",
    "recall_at_10_hard": "recall@10 where it can discriminate: N random unit vectors "
    "(random_unit_vectors, no clusters) sent as ADDs to a topic and worker of their own; the "
    "mean over fresh random queries of |search(q, 10) via the worker ∩ exact top 10| / 10, "
    "exact = brute-force cosine over the N vectors; at the configured ef_search",
    "bare_recall_at_10_hard": "the same queries against bare hnswlib holding the same N "
    "vectors in the same shards (one index per partition, same space, M, ef_construction "
    "and ef_search, one add_items per shard), each shard asked for 10, merged by distance",
    "filtered_recall_at_10": "on the same N vectors, each with metadata part = i % 10: "
    "query j searched via the worker with filter {part: j % 10} (the --where / filter "
    "path; a tenth of the vectors pass), |hits ∩ exact top 10 of that part| / 10, mean "
    "over the queries",
    "bare_filtered_recall_at_10": "the same filtered queries against the bare shards "
    "with hnswlib's own filter (knn_query filter=)",
    "buffered_vectors_per_s": "client-observed, durable and searchable: M new ADDs sent "
    "with VectorProducer.send_many (binary frames), producer flushed (acks=all), then "
    "/vectors/buffer/stats polled until live_vectors covers all M; M / seconds from the "
    "first send",
    "direct_vectors_per_s": "client-observed, durable and searchable, one at a time: per "
    "vector, VectorProducer.add (one JSON op, acks=all) and flush, then search(vector, 1) "
    "polled every 10 ms until it returns that pk, before the next vector; D / seconds. A "
    "lone op is applied by the worker's time trigger (flush_interval_ms), so this is the "
    "latency a client pays without batching",
    "buffered_vs_direct": "buffered_vectors_per_s / direct_vectors_per_s (same worker, "
    "same generator; the direct side uses fewer vectors, so rates are compared)",
    "bytes_per_vector": "VectorIndex.memory_bytes() of the worker's shards (loaded from "
    "their final snapshots) / live vectors: hnswlib's allocated slots (vector, links, "
    "label) plus pks, metadata and Python bookkeeping; free slots (preallocated capacity, "
    "removed vectors) count, so small runs overstate it; "
    "bytes_per_vector_without_free_slots subtracts (capacity - live) * "
    "(4 * dimension + 8 * M + 32); raw_bytes_per_vector = 4 * dimension",
}


@dataclass(frozen=True)
class Sizes:
    """How many vectors each measurement uses."""

    indexed: int
    mix_fraction: float
    """Of ``indexed``: this fraction updated, this fraction removed, this fraction added."""
    queries: int
    buffered: int
    direct: int
    hard: int
    """Random unit vectors of the recall measurement that discriminates."""
    hard_queries: int


QUICK: Final = Sizes(
    indexed=20_000,
    mix_fraction=0.1,
    queries=200,
    buffered=5_000,
    direct=25,
    hard=8_000,
    hard_queries=300,
)
FULL: Final = Sizes(
    indexed=100_000,
    mix_fraction=0.1,
    queries=500,
    buffered=20_000,
    direct=100,
    hard=30_000,
    hard_queries=500,
)
SMOKE: Final = Sizes(
    indexed=2_000,
    mix_fraction=0.1,
    queries=50,
    buffered=500,
    direct=10,
    hard=5_000,
    hard_queries=100,
)
SIZES: Final[Mapping[BenchSize, Sizes]] = {"smoke": SMOKE, "quick": QUICK, "full": FULL}


@dataclass(frozen=True)
class _Measured:
    """What every step measured, in the order they ran."""

    produce_seconds: float
    bare_seconds: float
    bare_shards: int
    indexed: steps.Indexed
    mixed: int
    """Updates, removes and adds of the mix, each."""
    live_after_mix: int
    recall: float
    search_latencies: list[float]
    buffered_seconds: float
    direct_seconds: float
    direct_latencies: list[float]
    worker_exit_code: int
    memory: dict[str, Any]


def _measure(settings: Settings, sizes: Sizes, broker: BenchBroker, partitions: int) -> _Measured:
    """Every step in order (:mod:`pipeline.bench.vectors_steps`)."""
    model = ClusteredEmbeddings()
    n = sizes.indexed
    vectors, labels = model.draw(n)
    pks = [f"v{i}" for i in range(n)]
    producer = VectorProducer(settings)
    t0 = time.perf_counter()
    steps.send(producer, steps.adds(pks, vectors, labels))
    produce_s = time.perf_counter() - t0
    progress(f"indexed: {n:,} ADDs produced in {produce_s:.1f} s")
    progress(f"bare hnswlib: add_items of the same {n:,} vectors")
    bare_s, shards = steps.bare_hnswlib(pks, vectors, settings, partitions)
    progress(f"bare hnswlib: {n / bare_s:,.0f} vectors/s over {shards} shards")

    with producer, worker_running(settings, broker.work_dir / "worker.log") as worker:
        run = steps.VectorRun(
            settings,
            worker,
            producer,
            model,
            time.monotonic(),
            dict(zip(pks, vectors, strict=True)),
            n,
        )
        indexed = steps.measure_indexed(worker, run.launched, n)
        progress(
            f"indexed: {indexed.rate:,.0f} vectors/s ({indexed.timed:,} in "
            f"{indexed.seconds:.2f} s after a {indexed.ready_seconds:.1f} s start-up)"
        )
        mixed = steps.apply_mix(run, sizes.mix_fraction)
        progress(f"mix: {mixed:,} updates, {mixed:,} removes, {mixed:,} adds")
        live_after_mix = len(run.live)
        recall, search_latencies = steps.measure_recall(run, sizes.queries)
        progress(f"recall@{steps.RECALL_K}: {recall:.4f} over {sizes.queries} queries")
        buffered_s = steps.measure_buffered(run, sizes.buffered)
        progress(f"buffered: {sizes.buffered / buffered_s:,.0f} vectors/s")
        direct_s, direct_latencies = steps.measure_direct(run, sizes.direct)
        progress(f"direct: {sizes.direct / direct_s:,.1f} vectors/s")
        final = run.stats()
        run_with_client(worker_urls(settings), lambda c: c.flush_vectors())
    if final["dead_letters"]:
        raise BenchmarkFailed(f"the worker dead-lettered {final['dead_letters']} records")
    return _Measured(
        produce_s,
        bare_s,
        shards,
        indexed,
        mixed,
        live_after_mix,
        recall,
        search_latencies,
        buffered_s,
        direct_s,
        direct_latencies,
        worker_exit_code=worker.stop(),  # stopped when the block ended: its exit code
        memory=steps.memory(settings),
    )


def _figures(m: _Measured, hard: HardRecall, sizes: Sizes, settings: Settings) -> dict[str, Any]:
    """The measured figures in the result's order and shape."""
    bare_rate = sizes.indexed / m.bare_seconds
    indexed_vs_bare = m.indexed.rate / bare_rate
    buffered_rate = sizes.buffered / m.buffered_seconds
    direct_rate = sizes.direct / m.direct_seconds
    live = m.memory["live_vectors"]
    return {
        "indexed_vectors_per_s": rounded(m.indexed.rate),
        "bare_hnswlib_vectors_per_s": rounded(bare_rate),
        "indexed_vs_bare": rounded(indexed_vs_bare),
        "recall_at_10": round(m.recall, 4),
        "ef_search": settings.vector_auto_buffer.ef_search,
        "recall_at_10_hard": round(hard.recall, 4),
        "bare_recall_at_10_hard": round(hard.bare_recall, 4),
        "filtered_recall_at_10": round(hard.filtered_recall, 4),
        "bare_filtered_recall_at_10": round(hard.bare_filtered_recall, 4),
        "buffered_vectors_per_s": rounded(buffered_rate),
        "direct_vectors_per_s": rounded(direct_rate),
        "buffered_vs_direct": rounded(buffered_rate / direct_rate),
        "direct_latency_ms": {
            "p50": _percentile_ms(m.direct_latencies, 50),
            "p90": _percentile_ms(m.direct_latencies, 90),
            "max": _percentile_ms(m.direct_latencies, 100),
        },
        "search_latency_ms": {
            "p50": _percentile_ms(m.search_latencies, 50),
            "p90": _percentile_ms(m.search_latencies, 90),
        },
        "bytes_per_vector": rounded(m.memory["bytes"] / live),
        "bytes_per_vector_without_free_slots": rounded(
            (m.memory["bytes"] - m.memory["free_slot_bytes"]) / live
        ),
        "raw_bytes_per_vector": 4 * settings.vector_auto_buffer.dimension,
        "vectors": {
            "indexed": sizes.indexed,
            "bare_hnswlib": sizes.indexed,
            "mix": {"updates": m.mixed, "removes": m.mixed, "adds": m.mixed},
            "live_after_mix": m.live_after_mix,
            "queries": sizes.queries,
            "buffered": sizes.buffered,
            "direct": sizes.direct,
            "live_at_end": live,
        },
        "pipeline": {
            "produce_seconds": round(m.produce_seconds, 3),
            "worker_ready_seconds": round(m.indexed.ready_seconds, 3),
            "indexed_timed": m.indexed.timed,
            "indexed_seconds": round(m.indexed.seconds, 3),
            "indexed_flush_count": m.indexed.flush_count,
            "bare_seconds": round(m.bare_seconds, 3),
            "bare_shards": m.bare_shards,
            "buffered_seconds": round(m.buffered_seconds, 3),
            "direct_seconds": round(m.direct_seconds, 3),
            "worker_exit_code": m.worker_exit_code,
        },
        "memory": m.memory,
        "hard": {
            "vectors": hard.vectors,
            "queries": hard.queries,
            "filter_parts": FILTER_PARTS,
            "shards": hard.shards,
            "indexed_vectors_per_s": rounded(hard.indexed.rate),
            "bare_hnswlib_vectors_per_s": rounded(hard.vectors / hard.bare_seconds),
            "worker_ready_seconds": round(hard.indexed.ready_seconds, 3),
            "worker_exit_code": hard.worker_exit_code,
        },
        "goals": {
            "indexed_vs_bare": goal(indexed_vs_bare, INDEXED_GOAL),
            "recall_at_10_hard": goal(hard.recall, hard.bare_recall - RECALL_SLACK),
            "filtered_recall_at_10": goal(hard.filtered_recall, FILTERED_RECALL_GOAL),
        },
    }


def _percentile_ms(values: list[float], q: float) -> float:
    return rounded(float(np.percentile(np.asarray(values) * 1000, q)))


def _bench_settings(base: Settings, broker: BenchBroker, part: str | None = None) -> Settings:
    """The settings of the main run, or of ``part`` (a namespace, group and directory
    of its own)."""
    name = broker.run_id if part is None else f"{broker.run_id}.{part}"
    return with_overrides(
        base,
        {
            "kafka": {"bootstrap_servers": broker.bootstrap, "topic_namespace": name},
            "worker": {
                "app_id": name.replace(".", "-"),
                "web_port": free_port(),
                "data_dir": broker.work_dir / (part or "data"),
            },
            "vector_auto_buffer": {"dimension": DIMENSION, "flush_interval_ms": FLUSH_INTERVAL_MS},
        },
    )


def run(size: BenchSize, settings: Settings) -> dict[str, object]:
    """Measure everything; the figures described in :data:`DEFINITIONS`.

    ``size`` picks :data:`FULL`, :data:`QUICK` (about a minute) or :data:`SMOKE`
    (seconds; the test suite's).
    ``settings`` are the ones ``themis`` loaded; ``kafka.bootstrap_servers``
    (``KAFKA_BOOTSTRAP_SERVERS``) chooses a given broker. Raises
    :class:`~pipeline.errors.BenchmarkFailed` when a step fails.
    """
    sizes = SIZES[size]
    spec = next(s for s in load_specs() if s.name == "vectors.ops")
    with bench_broker(settings, "vectors") as broker:
        bench = _bench_settings(settings, broker)
        apply_topics(broker.bootstrap, bench)
        main = _measure(bench, sizes, broker, spec.partitions)
        hard_settings = _bench_settings(settings, broker, "hard")
        apply_topics(broker.bootstrap, hard_settings)
        progress(f"hard data: {sizes.hard:,} random unit vectors, {sizes.hard_queries} queries")
        hard = measure_hard(
            hard_settings,
            broker.work_dir / "hard-worker.log",
            sizes.hard,
            sizes.hard_queries,
            spec.partitions,
        )
    measured = _figures(main, hard, sizes, bench)
    config = bench.vector_auto_buffer
    return {
        "dataset": {
            "generator": "pipeline.bench.embeddings.ClusteredEmbeddings",
            "dimension": DIMENSION,
            "clusters": CLUSTERS,
            "rank": RANK,
            "seed": SEED,
            "description": f"unit {DIMENSION}-dim vectors: 0.5 * a shared direction + one of "
            f"{CLUSTERS} cluster centres + a point of that cluster's random {RANK}-dim "
            "subspace (sd 0.25) + isotropic noise (sd 0.3/sqrt(d)), normalised; cosine about "
            "0.5 within a cluster, 0.1 across",
        },
        "dataset_hard": {
            "generator": "pipeline.bench.embeddings.random_unit_vectors",
            "dimension": DIMENSION,
            "seed": HARD_SEED,
            "vectors": sizes.hard,
            "queries": sizes.hard_queries,
            "description": f"{sizes.hard:,} unit {DIMENSION}-dim vectors uniform on the sphere "
            f"(no clusters; any two nearly orthogonal), metadata part = i % {FILTER_PARTS}; "
            f"{sizes.hard_queries} fresh queries from the same distribution",
        },
        **measured,
        "settings": {
            "space": config.space,
            "m": config.m,
            "ef_construction": config.ef_construction,
            "ef_search": config.ef_search,
            "threads": "all cores (hnswlib num_threads=-1), worker and bare alike",
            "partitions": spec.partitions,
            "max_vectors_per_buffer": config.max_vectors_per_buffer,
            "flush_interval_ms": config.flush_interval_ms,
            "snapshot_interval_ms": config.snapshot_interval_ms,
            "producer": "acks=all, idempotent, linger.ms=5, lz4 (VectorProducer)",
        },
        **broker.fields(),
    }


def _rate(value: float) -> str:
    return f"{value:,.0f} vectors/s" if value >= 100 else f"{value:.3g} vectors/s"


def render(result: Mapping[str, object]) -> str:
    """The result as a readable table (the JSON has every detail)."""
    r: Any = result
    v, s = r["vectors"], r["settings"]
    rows = [
        (
            "indexed (Kafka -> searchable)",
            _rate(r["indexed_vectors_per_s"]),
            f"{v['indexed']:,} vectors, {s['partitions']} shards",
        ),
        (
            "bare hnswlib add_items",
            _rate(r["bare_hnswlib_vectors_per_s"]),
            "same vectors, parameters, threads and shards",
        ),
        goal_row("indexed / bare", r["goals"]["indexed_vs_bare"]),
        (
            f"recall@{steps.RECALL_K}",
            f"{r['recall_at_10']}",
            f"ef_search {r['ef_search']}, {v['queries']} queries after a mix of "
            f"{v['mix']['updates']:,} updates, removes and adds each",
        ),
        goal_row(
            f"recall@{steps.RECALL_K}, random vectors",
            r["goals"]["recall_at_10_hard"],
            f"bare hnswlib {r['bare_recall_at_10_hard']}; {r['hard']['vectors']:,} vectors",
        ),
        goal_row(
            f"filtered recall@{steps.RECALL_K}",
            r["goals"]["filtered_recall_at_10"],
            f"bare hnswlib {r['bare_filtered_recall_at_10']}; 1 in {r['hard']['filter_parts']} "
            "pass the filter",
        ),
        (
            "buffered writes",
            _rate(r["buffered_vectors_per_s"]),
            f"{v['buffered']:,} vectors in frames, durable and searchable",
        ),
        (
            "direct writes",
            _rate(r["direct_vectors_per_s"]),
            f"{v['direct']} vectors, one durable op and a search poll each; "
            f"p50 {r['direct_latency_ms']['p50']} ms",
        ),
        ("buffered / direct", f"{r['buffered_vs_direct']}", ""),
        (
            "memory",
            f"{r['bytes_per_vector']:,.0f} bytes/vector",
            f"raw {r['raw_bytes_per_vector']:,} bytes (4 * {r['dataset']['dimension']})",
        ),
    ]
    width = max(len(name) for name, _, _ in rows)
    machine, broker = r["machine"], r["broker"]
    lines = [
        f"vector benchmark ({r['size']} run): {machine['nproc']} CPUs, "
        f"Python {machine['python']}; broker {broker['source']}",
        f"dataset: {r['dataset']['description']}",
        f"index: {s['space']}, M {s['m']}, ef_construction {s['ef_construction']}, "
        f"ef_search {s['ef_search']}; flush interval {s['flush_interval_ms']} ms",
        "",
        *(f"  {name:<{width}}  {value:<22}  {note}".rstrip() for name, value, note in rows),
        "",
        f"{r['seconds_total']} s in all; definitions: --json",
    ]
    return "\n".join(lines)
