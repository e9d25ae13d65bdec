"""``themis bench ts [--quick|--smoke] [--json]``: how small and how fast the time-series path is.

This module holds the benchmark's definitions, sizes, the order of its steps and its
table; the steps are in :mod:`pipeline.bench.ts_codec` (data and codec),
:mod:`pipeline.bench.ts_pipeline` (worker and bare consumer) and
:mod:`pipeline.bench.ts_writes` (buffered against direct writes).

The broker comes from :func:`pipeline.bench.harness.bench_broker`
(``KAFKA_BOOTSTRAP_SERVERS``, else Docker, else a local JVM started for the run).
Topics live under namespaces of their own, ``bench-<pid>-<random>.<part>`` (deleted
at the end on a given broker); each pipeline measurement runs its own
``themis worker`` child process with a flush interval of :data:`FLUSH_INTERVAL_MS`,
so the time trigger does not dominate the tail.

The figures (:data:`DEFINITIONS` is copied into the result):

``bytes_per_point``, ``compression_ratio``
    Gorilla blocks (:func:`~pipeline.ts.block.encode_block`, header and checksum
    included) of :func:`~pipeline.ts.dataset.devops_dataset` cut into blocks of
    ``max_points_per_buffer`` (1000) points, as the buffer's size trigger cuts them:
    block bytes per point, and 16 raw bytes per point over block bytes.
``encode_points_per_s``, ``decode_points_per_s``
    :func:`~pipeline.ts.gorilla.encode_chunk` / :func:`~pipeline.ts.gorilla.decode_chunk`
    over the same blocks' chunks, one core, the best of several repetitions.
``pipeline_points_per_s_json``
    Producer -> Kafka -> worker -> durable block with one untagged JSON point per
    Kafka message, on a topic of at least 500,000 messages: the records
    ``TSProducer.put`` sends, keyed by series, series interleaved in time order,
    pre-encoded and produced with a plain durable producer and acknowledged *before*
    the worker starts. The clock starts when the worker's ``/ts/buffer/stats`` page
    first shows a consumed point (so JVM, Faust start-up and group join do not
    count) and stops when its ``points_flushed`` covers every point; the rate is the
    points consumed after the clock started over that time.
``pipeline_points_per_s_json_tagged``
    The same with every series tagged (2-4 tags,
    :func:`~pipeline.bench.ts_codec.series_tags`), on a topic and worker of its own.
``pipeline_points_per_s_frames``
    The same with binary batch frames (``TSProducer.put_arrays``, each call carrying
    a slice of every series), many more points.
``bare_consume_msgs_per_s``, ``json_vs_bare_consume``
    A plain confluent-kafka consumer with the stage consumers' fetch settings
    (:data:`~pipeline.bench.ts_pipeline.BARE_FETCH`: ``FETCH_OVERRIDES`` without the
    assignment strategy, with a 10 ms ``fetch.queue.backoff.ms``; new group, every
    partition assigned from the beginning, ``consume`` in batches of ``BATCH_SIZE``,
    value lengths summed, nothing decoded) draining the untagged JSON run's points
    topic in the same run, once its worker stopped, timed from ``assign`` to the last
    message, the best of three drains; and the untagged JSON pipeline rate over it.
``bare_consume_msgs_per_s_tagged``, ``json_tagged_vs_bare_consume``
    The same on the tagged run's topic (its messages are larger, so it has its own
    bare figure), and the tagged pipeline rate over it.
``buffered_points_per_s``, ``direct_points_per_s``, ``buffered_vs_direct``
    Client-observed durable write rates against the blocks topic, in process.
    Buffered: every point goes through ``TSAutoBuffer.add`` (series interleaved in
    time order); each time ``add`` returns batches they are encoded into blocks as
    the worker encodes them, produced with ``acks=all`` and the producer is flushed,
    so those points are acknowledged before the next point is added; a final manual
    flush drains the rest. Direct: one durable record per point (a one-point block),
    produced with ``acks=all`` and flushed before the next. Same producer settings,
    same topic (``ts.blocks`` spec, a namespace of its own); the direct side takes
    the first points of the same sequence (it pays one broker round trip per point),
    so rates, not totals, are compared.

``query_ms_p50``, ``query_ms_p99``, ``query_store_points``, ``store_*catch_up_ms``
    One series of 10,000 points read through ``query_series`` from the worker that owns
    it, over a store of ``query_store_points`` points (10 M full, 1 M quick); the
    store's catch-ups (:mod:`pipeline.bench.ts_query`).

``goals`` holds the two JSON ratios against their goals (at least 0.5 untagged, 0.4
tagged). ``points`` has the counts behind every rate; ``pipeline`` each
measurement's details: seconds, worker start-up, flush reasons and the compression
ratio of the worker's own blocks (cut by the time trigger as well as by size, so
often smaller than 1000 points); then the shared envelope
(:mod:`pipeline.bench.harness`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pipeline.bench.harness import (
    BenchBroker,
    BenchSize,
    bench_broker,
    goal,
    goal_below,
    goal_row,
    progress,
    rounded,
)
from pipeline.bench.ts_codec import SEED, fleet, measure_codec
from pipeline.bench.ts_pipeline import (
    BARE_FETCH,
    BareDrain,
    PipelineRun,
    bare_consume,
    measure_pipeline,
    produce_frames,
    produce_json,
)
from pipeline.bench.ts_query import QUERY_GOAL_MS, QueryRun, measure_query
from pipeline.bench.ts_sizes import FULL, QUICK, SIZES, SMOKE, Sizes
from pipeline.bench.ts_writes import AckedProducer, measure_buffered, measure_direct
from pipeline.config import Settings, with_overrides
from pipeline.ingest.batch_consumer import BATCH_SIZE
from pipeline.kafka.local_broker import free_port
from pipeline.kafka.topics import apply_topics, load_specs
from pipeline.ts.buffer import POINT_BYTES
from pipeline.ts.producer import TSProducer

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

FLUSH_INTERVAL_MS: Final = 200
"""The workers' ``flush_interval_ms`` (milliseconds): the tail waits at most about this."""
_BARE_REPETITIONS: Final = 3
JSON_GOAL: Final = 0.5
"""Goal of ``json_vs_bare_consume``: the untagged JSON pipeline at half the bare consumer."""
JSON_TAGGED_GOAL: Final = 0.4
"""Goal of ``json_tagged_vs_bare_consume``."""

DEFINITIONS: Mapping[str, str] = {
    "bytes_per_point": "Gorilla block bytes (header and CRC included) per point over the "
    "dataset cut into blocks of max_points_per_buffer points",
    "compression_ratio": "16 raw bytes per point (int64 ms + float64) over block bytes",
    "encode_points_per_s": "encode_chunk over the dataset's blocks, one core, best of N",
    "decode_points_per_s": "decode_chunk over the dataset's blocks, one core, best of N",
    "pipeline_points_per_s_json": "points pre-produced as one untagged JSON point per "
    "message (the bytes TSProducer.put sends, keyed by series, series interleaved in time; "
    "a plain durable producer) on a topic of >= 500,000 messages; a themis worker consumes "
    "them into durable blocks; clock from the first consumed point seen on "
    "/ts/buffer/stats to points_flushed covering all; rate = points consumed after the "
    "clock started / seconds",
    "pipeline_points_per_s_json_tagged": "the same with every series tagged (2-4 tags "
    "each, series_tags), its own topic of the same size and its own worker",
    "pipeline_points_per_s_frames": "the same with TSProducer.put_arrays binary batch frames",
    "bare_consume_msgs_per_s": "a plain confluent-kafka Consumer with the stage consumers' "
    "fetch settings (FETCH_OVERRIDES minus partition.assignment.strategy; plus "
    "fetch.queue.backoff.ms 10 unless FETCH_OVERRIDES sets it, so that librdkafka's 1 s "
    "queue backoff does not idle a fast drain), new group, all "
    "partitions assigned from the beginning, consume(BATCH_SIZE), no decoding, draining the "
    "UNTAGGED JSON run's points topic (the one pipeline_points_per_s_json read) after its "
    "worker stopped, timed from assign() to the last message; best of 3 drains",
    "bare_consume_msgs_per_s_tagged": "the same on the TAGGED JSON run's points topic (larger "
    "messages, so a figure of its own)",
    "json_vs_bare_consume": "pipeline_points_per_s_json / bare_consume_msgs_per_s (same run, "
    "same topic; goal >= 0.5)",
    "json_tagged_vs_bare_consume": "pipeline_points_per_s_json_tagged / "
    "bare_consume_msgs_per_s_tagged (same run, same topic; goal >= 0.4)",
    "buffered_points_per_s": "client-observed, in process: TSAutoBuffer.add per point; "
    "every batch add returns is encoded to blocks, produced with acks=all and flushed "
    "(acknowledged) before the next add; a final manual flush; points / seconds",
    "direct_points_per_s": "one durable record (a one-point block) per point, produced "
    "with acks=all and flushed before the next point; points / seconds",
    "buffered_vs_direct": "buffered_points_per_s / direct_points_per_s (same producer "
    "settings, same blocks topic spec, direct side on the first points of the same sequence)",
    "query_ms_p50": "wall clock of query_series for one whole series (points_per_series "
    "points, picked at random) from a worker owning every partition of a store of "
    "query_store_points points: cached owner map, one POST /ts/query over HTTP, the owner "
    "reads the partition's end from the broker, its SQLite store and buffer; after warm-up",
    "query_ms_p99": "the same, 99th percentile (goal < 50 ms over a 10 M-point store)",
    "query_store_points": "points in the query store (devops series of 10,000 points in "
    "max_points_per_buffer-point blocks, produced to their series' partitions of 6)",
    "store_catch_up_ms": "the slowest partition's catch-up of the query worker's stores from "
    "empty files: assignment to its store at the partition's end then",
    "store_move_catch_up_ms": "the same on a second worker of the group, for the partitions "
    "that moved to it (empty files)",
}


def _part_settings(base: Settings, broker: BenchBroker, part: str) -> Settings:
    """``base`` with the namespace, consumer group, web port and data dir of one part."""
    return with_overrides(
        base,
        {
            "kafka": {"topic_namespace": f"{broker.run_id}.{part}"},
            "worker": {
                "app_id": f"{broker.run_id}-{part}",
                "web_port": free_port(),
                "data_dir": broker.work_dir / part,
            },
        },
    )


def _json_run(
    base: Settings, broker: BenchBroker, sizes: Sizes, *, tagged: bool
) -> tuple[PipelineRun, BareDrain]:
    """One JSON-per-message run through a worker, then the bare consumer on its topic."""
    part = "json-tagged" if tagged else "json"
    what = "tagged JSON points" if tagged else "JSON points"
    settings = _part_settings(base, broker, part)
    topic = settings.topic("ts.points")
    series = fleet(sizes.json_series, sizes.json_points_per_series)
    run = measure_pipeline(
        settings,
        broker.work_dir / f"{part}-worker.log",
        lambda: produce_json(broker.bootstrap, topic, series, tagged=tagged),
        what=what,
        min_points_per_s=2_000,
        strict=sizes is not SMOKE,
    )
    progress(f"bare consumer: draining the {what} topic, best of {_BARE_REPETITIONS}")
    drains = [bare_consume(broker.bootstrap, topic, run.messages) for _ in range(_BARE_REPETITIONS)]
    bare = max(drains, key=lambda drain: drain.rate)
    progress(
        f"bare consumer: {bare.rate:,.0f} messages/s "
        f"({bare.value_bytes / bare.messages:.0f} bytes each); {what} / bare "
        f"{run.points_per_s / bare.rate:.3f}"
    )
    return run, bare


def _pipelines(base: Settings, broker: BenchBroker, sizes: Sizes) -> dict[str, Any]:
    """JSON points (untagged, tagged) and frames through a worker each, and the bare
    consumer on each JSON topic."""
    json_run, bare = _json_run(base, broker, sizes, tagged=False)
    tagged_run, bare_tagged = _json_run(base, broker, sizes, tagged=True)
    frames_settings = _part_settings(base, broker, "frames")
    frames_fleet = fleet(sizes.frames_series, sizes.frames_points_per_series)
    frames_run = measure_pipeline(
        frames_settings,
        broker.work_dir / "frames-worker.log",
        lambda: produce_frames(TSProducer(frames_settings), frames_fleet, sizes.frame_slice_points),
        what="frames",
        min_points_per_s=10_000,
        strict=sizes is not SMOKE,
    )
    return {
        "json": json_run,
        "json_tagged": tagged_run,
        "frames": frames_run,
        "bare": bare,
        "bare_tagged": bare_tagged,
    }


def _writes(base: Settings, broker: BenchBroker, sizes: Sizes) -> dict[str, tuple[int, float]]:
    """Buffered against direct durable writes on a blocks topic of their own."""
    settings = _part_settings(base, broker, "direct")
    apply_topics(broker.bootstrap, settings, [s for s in load_specs() if s.name == "ts.blocks"])
    series = fleet(sizes.buffered_series, sizes.buffered_points_per_series)
    with AckedProducer(broker.bootstrap, settings.topic("ts.blocks")) as producer:
        producer.produce(b"warm-up", b"")  # connection and metadata before either clock starts
        producer.flush_acked()
        progress("buffered writes: TSAutoBuffer, one acknowledged flush per returned batch")
        buffered = measure_buffered(producer, series, base.ts_auto_buffer)
        progress(f"direct writes: {sizes.direct_points:,} points, one acknowledged record each")
        direct = measure_direct(producer, series, sizes.direct_points)
    progress(
        f"buffered {buffered[0] / buffered[1]:,.0f} points/s, "
        f"direct {direct[0] / direct[1]:,.0f} points/s"
    )
    return {"buffered": buffered, "direct": direct}


def _query(base: Settings, broker: BenchBroker, sizes: Sizes) -> QueryRun:
    settings = _part_settings(base, broker, "query")
    return measure_query(
        settings, broker.work_dir, series=sizes.query_series,
        points=sizes.query_points_per_series, queries=sizes.queries,
        warm_up=sizes.query_warm_up,
    )  # fmt: skip


def _bare_details(drain: BareDrain) -> dict[str, object]:
    return {
        "messages": drain.messages,
        "seconds": round(drain.seconds, 4),
        "bytes_per_message": round(drain.value_bytes / drain.messages, 1),
        "repetitions": _BARE_REPETITIONS,
    }


def _broker_figures(base: Settings, broker: BenchBroker, sizes: Sizes) -> dict[str, Any]:
    """Every figure measured against the broker, in the result's order and shape."""
    runs = _pipelines(base, broker, sizes)
    json_run, tagged_run, frames_run = runs["json"], runs["json_tagged"], runs["frames"]
    bare, bare_tagged = runs["bare"], runs["bare_tagged"]
    writes = _writes(base, broker, sizes)
    query = _query(base, broker, sizes)
    query_p99 = query.quantile_ms(0.99)
    (buffered_points, buffered_s), (direct_points, direct_s) = writes["buffered"], writes["direct"]
    json_ratio = json_run.points_per_s / bare.rate
    tagged_ratio = tagged_run.points_per_s / bare_tagged.rate
    buffered_rate, direct_rate = buffered_points / buffered_s, direct_points / direct_s
    points_spec = next(spec for spec in load_specs() if spec.name == "ts.points")
    json_shape = {"series": sizes.json_series, "points_per_series": sizes.json_points_per_series}
    return {
        "pipeline_points_per_s_json": rounded(json_run.points_per_s),
        "pipeline_points_per_s_json_tagged": rounded(tagged_run.points_per_s),
        "pipeline_points_per_s_frames": rounded(frames_run.points_per_s),
        "bare_consume_msgs_per_s": rounded(bare.rate),
        "bare_consume_msgs_per_s_tagged": rounded(bare_tagged.rate),
        "json_vs_bare_consume": rounded(json_ratio),
        "json_tagged_vs_bare_consume": rounded(tagged_ratio),
        "buffered_points_per_s": rounded(buffered_rate),
        "direct_points_per_s": rounded(direct_rate),
        "buffered_vs_direct": rounded(buffered_rate / direct_rate),
        "query_ms_p50": rounded(query.quantile_ms(0.5), 4),
        "query_ms_p99": rounded(query_p99, 4),
        "query_store_points": query.store_points,
        "store_catch_up_ms": rounded(query.catch_up_ms, 4),
        "store_move_catch_up_ms": rounded(query.move_catch_up_ms, 4),
        "goals": {
            "json_vs_bare_consume": goal(json_ratio, JSON_GOAL),
            "json_tagged_vs_bare_consume": goal(tagged_ratio, JSON_TAGGED_GOAL),
            "query_ms_p99": goal_below(query_p99, QUERY_GOAL_MS),
        },
        "pipeline": {
            "json": json_run.details() | json_shape | {"tags_per_series": 0},
            "json_tagged": tagged_run.details() | json_shape | {"tags_per_series": "2-4"},
            "frames": frames_run.details()
            | {
                "series": sizes.frames_series,
                "points_per_series": sizes.frames_points_per_series,
                "points_per_series_per_call": sizes.frame_slice_points,
            },
            "bare_consume": _bare_details(bare),
            "bare_consume_tagged": _bare_details(bare_tagged),
            "buffered": {
                "series": sizes.buffered_series,
                "points": buffered_points,
                "seconds": round(buffered_s, 3),
            },
            "direct": {"points": direct_points, "seconds": round(direct_s, 3)},
            "query": query.details(),
        },
        "settings": {
            "flush_interval_ms": FLUSH_INTERVAL_MS,
            "max_points_per_buffer": base.ts_auto_buffer.max_points_per_buffer,
            "points_topic_partitions": points_spec.partitions,
            "producer": "acks=all, idempotent, linger.ms=5, lz4 (durable_producer_config)",
            "json_producer": "plain confluent Producer (durable_producer_config, "
            "partitioner consistent) of pre-encoded DataPoint.to_json records keyed by series",
            "bare_consumer": {"consume_batch": BATCH_SIZE, **BARE_FETCH},
        },
        "points": {
            "pipeline_json": json_run.points,
            "pipeline_json_tagged": tagged_run.points,
            "pipeline_frames": frames_run.points,
            "bare_consume": bare.messages,
            "bare_consume_tagged": bare_tagged.messages,
            "buffered": buffered_points,
            "direct": direct_points,
        },
    }


def run(size: BenchSize, settings: Settings) -> dict[str, object]:
    """Measure everything; the figures described in the module docstring.

    ``size`` picks :data:`FULL` (a few minutes), :data:`QUICK` (about a minute) or
    :data:`SMOKE` (seconds; the test suite's). ``settings`` are the ones ``themis``
    loaded; ``kafka.bootstrap_servers`` (``KAFKA_BOOTSTRAP_SERVERS``) chooses a given broker. Raises
    :class:`~pipeline.errors.BenchmarkFailed` (or another ``ThemisError``) when a
    step fails.
    """
    sizes = SIZES[size]
    block_points = settings.ts_auto_buffer.max_points_per_buffer
    progress(
        f"codec: devops_dataset({sizes.codec_series}, {sizes.codec_points_per_series}, "
        f"seed={SEED}) in {block_points}-point blocks"
    )
    codec = measure_codec(
        sizes.codec_series, sizes.codec_points_per_series, block_points, sizes.codec_repetitions
    )
    with bench_broker(settings, "ts") as broker:
        base = with_overrides(
            settings,
            {
                "kafka": {"bootstrap_servers": broker.bootstrap},
                "ts_auto_buffer": {"flush_interval_ms": FLUSH_INTERVAL_MS},
            },
        )
        measured = _broker_figures(base, broker, sizes)
    points = measured.pop("points")
    return {
        "dataset": {
            "generator": "pipeline.ts.dataset.devops_dataset",
            "series": sizes.codec_series,
            "points_per_series": sizes.codec_points_per_series,
            "seed": SEED,
            "block_points": block_points,
            "description": f"{sizes.codec_series} devops series (counters, gauges, "
            f"near-constant) x {sizes.codec_points_per_series} points at 10 s +-200 ms, "
            f"seed {SEED}, cut into {block_points}-point blocks",
        },
        "bytes_per_point": rounded(codec.block_bytes / codec.points, 4),
        "compression_ratio": rounded(POINT_BYTES * codec.points / codec.block_bytes, 4),
        "encode_points_per_s": rounded(codec.encode_points_per_s),
        "decode_points_per_s": rounded(codec.decode_points_per_s),
        **measured,
        "points": {"codec": codec.points} | points,
        "codec": {"blocks": codec.blocks, "repetitions": sizes.codec_repetitions},
        **broker.fields(),
    }


def _rate(value: Any, unit: str) -> str:
    number = float(value)
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if number >= scale:
            return f"{number / scale:.3g} {prefix} {unit}/s"
    return f"{number:.3g} {unit}/s"


def render(result: Mapping[str, object]) -> str:
    """The result as a readable table (the JSON has every detail)."""
    r: Any = result
    pipe = r["pipeline"]
    machine, broker, dataset = r["machine"], r["broker"], r["dataset"]
    rows = [
        (
            "compression",
            f"{r['bytes_per_point']} bytes/point",
            f"ratio {r['compression_ratio']} (16 raw bytes per point)",
        ),
        (
            "Gorilla encode",
            _rate(r["encode_points_per_s"], "points"),
            f"one core, best of {r['codec']['repetitions']}",
        ),
        ("Gorilla decode", _rate(r["decode_points_per_s"], "points"), ""),
        (
            "pipeline, JSON points",
            _rate(r["pipeline_points_per_s_json"], "points"),
            f"{pipe['json']['points']:,} points, one message each; "
            f"its blocks' ratio {pipe['json']['compression_ratio']}",
        ),
        (
            "pipeline, tagged JSON",
            _rate(r["pipeline_points_per_s_json_tagged"], "points"),
            f"{pipe['json_tagged']['points']:,} points, 2-4 tags each",
        ),
        (
            "pipeline, frames",
            _rate(r["pipeline_points_per_s_frames"], "points"),
            f"{pipe['frames']['points']:,} points in {pipe['frames']['messages']:,} messages; "
            f"its blocks' ratio {pipe['frames']['compression_ratio']}",
        ),
        (
            "bare consumer",
            _rate(r["bare_consume_msgs_per_s"], "msgs"),
            f"the JSON points topic ({pipe['bare_consume']['bytes_per_message']} bytes "
            "a message), no decoding",
        ),
        (
            "bare consumer, tagged",
            _rate(r["bare_consume_msgs_per_s_tagged"], "msgs"),
            f"the tagged topic ({pipe['bare_consume_tagged']['bytes_per_message']} bytes)",
        ),
        goal_row("JSON pipeline / bare", r["goals"]["json_vs_bare_consume"]),
        goal_row("tagged JSON / bare", r["goals"]["json_tagged_vs_bare_consume"]),
        (
            "buffered writes",
            _rate(r["buffered_points_per_s"], "points"),
            f"{pipe['buffered']['points']:,} points, TSAutoBuffer + acked flush per batch",
        ),
        (
            "direct writes",
            _rate(r["direct_points_per_s"], "points"),
            f"{pipe['direct']['points']:,} points, one acked record each",
        ),
        ("buffered / direct", f"{r['buffered_vs_direct']}", ""),
        (
            "one-series query",
            f"p99 {r['query_ms_p99']} ms",
            f"p50 {r['query_ms_p50']} ms, {pipe['query']['points_per_series']:,} points "
            f"over a {r['query_store_points']:,}-point store",
        ),
        goal_row("query p99 (ms)", r["goals"]["query_ms_p99"]),
        (
            "store catch-up",
            f"{r['store_catch_up_ms']} ms",
            f"empty files; {r['store_move_catch_up_ms']} ms for the partitions that moved",
        ),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [
        f"time-series benchmark ({r['size']} run): "
        f"{machine['nproc']} CPUs, Python {machine['python']}; broker {broker['source']} "
        f"(started in {broker['startup_seconds']} s)",
        f"dataset: {dataset['description']}",
        "",
        *(f"  {name:<{width}}  {value:<20}  {note}".rstrip() for name, value, note in rows),
        "",
        f"worker flush interval {r['settings']['flush_interval_ms']} ms; "
        f"{r['seconds_total']} s in all; definitions: --json",
    ]
    return "\n".join(lines)
