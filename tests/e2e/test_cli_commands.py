"""Every ``themis`` command as a user runs it: a child process against the session broker.

One worker (module scope) holds a few known points and vectors; the commands that read
(``ts query``, ``vectors search``, ``rag search``) must print exactly those, and the WAL
the worker wrote is shipped to an HTTP replica (``wal serve``) and to a Kafka replica
(``kafka up`` + ``wal apply``). Bad settings and bad arguments exit 2 naming what was wrong.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import math
import os
import re
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from pipeline import cli
from pipeline.bench.ts_writes import AckedProducer
from pipeline.config import Settings, load_settings
from pipeline.kafka.broker import BrokerHandle
from pipeline.kafka.clients import AdminClient
from pipeline.kafka.consumer import open_consumer
from pipeline.kafka.local_broker import LocalKafka, free_port
from pipeline.kafka.topics import load_specs
from pipeline.rag import HashingEmbedder
from pipeline.replication import ReplicaState
from pipeline.stack import make_pki
from pipeline.ts.block import encode_blocks
from pipeline.ts.point import series_key
from pipeline.ts.producer import TSProducer
from pipeline.ts.writer import block_partition
from pipeline.vectors.producer import VectorProducer
from pipeline.wal.entry import format_lsn
from pipeline.wal.writer import topic_partition_count
from pipeline.worker import query, search
from tests.fixtures.facade import http_call
from tests.fixtures.support import (
    REPO,
    THEMIS,
    settings_as_env,
    settings_env,
    start_process,
    start_themis_worker,
    stop_process,
    wait_until,
)
from tests.fixtures.worker import worker_answers

pytestmark = pytest.mark.e2e

DIM = 64
METRIC = "cpu.load"
ENTITY = "host-1"
TAGS = {"dc": "a"}
KEY = series_key(METRIC, ENTITY, TAGS)
T0 = 1_700_000_000_000
MAX_POINTS = 4
DURABLE = [(T0, 0.5), (T0 + 1000, 1.25), (T0 + 2000, math.inf), (T0 + 3000, -3.0)]
"""Exactly ``MAX_POINTS`` points: the worker flushes them into a block by size."""
BUFFERED = [(T0 + 10_000, 7.5), (T0 + 11_000, 8.0)]
"""Fewer than ``MAX_POINTS``, flushed only after ten minutes: still in the worker's buffer."""
OTHER_TAGS = {"dc": "b"}
OTHER = [(T0 + 500, 42.0)]
COLORS = {"v-red-1": "red", "v-red-2": "red", "v-blue-1": "blue", "v-blue-2": "blue"}
SECRETS = {
    "THEMIS_FACADE_API_KEYS": ("facade", "api_keys", "sekrit-writer:writer"),
    "THEMIS_WORKER_PAGE_KEY": ("worker", "page_key", "sekrit-page"),
    "THEMIS_WAL_APPLY_KEYS": ("compressed_wal_shipping", "apply_keys", "sekrit-apply"),
    "THEMIS_WAL_SHIP_KEY": ("compressed_wal_shipping", "ship_key", "sekrit-ship"),
}


def themis(
    env: Mapping[str, str], *args: str, timeout_s: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """``themis ARGS`` in a child process with ``env`` on top of this one's environment."""
    return subprocess.run(
        [*THEMIS, *args],
        cwd=REPO,
        env=settings_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def themis_many(
    runs: Sequence[tuple[Mapping[str, str], Sequence[str]]],
) -> list[subprocess.CompletedProcess[str]]:
    """Several independent ``themis`` commands, two at a time; results in order."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda run: themis(run[0], *run[1]), runs))


def ok_stdout(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-3000:]}"
    return done.stdout


def last_json_line(text: str) -> Any:
    return json.loads(text.strip().splitlines()[-1])


def module_settings(bootstrap: str, data_dir: Path, **sections: dict[str, object]) -> Settings:
    """Settings of their own namespace, group and data dir (``make_settings`` for modules)."""
    tag = uuid.uuid4().hex[:10]
    overrides: dict[str, dict[str, object]] = {
        "kafka": {"bootstrap_servers": bootstrap, "topic_namespace": f"t{tag}"},
        "worker": {
            "app_id": f"themis-cli-{tag}",
            "data_dir": str(data_dir),
            "web_port": free_port(),
        },
    }
    for name, body in sections.items():
        overrides.setdefault(name, {}).update(body)
    return load_settings(path=Path(os.devnull), env={}, overrides=overrides)


@pytest.fixture(scope="module")
def base_settings(kafka_broker: BrokerHandle, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return module_settings(kafka_broker.bootstrap_servers, tmp_path_factory.mktemp("base"))


@dataclasses.dataclass(frozen=True)
class Stack:
    """The module's worker and what it holds."""

    settings: Settings
    env: dict[str, str]
    vectors: dict[str, np.ndarray]

    @property
    def bootstrap(self) -> str:
        assert self.settings.kafka.bootstrap_servers
        return self.settings.kafka.bootstrap_servers


def _points(tags: dict[str, str], points: list[tuple[int, float]]) -> list[dict[str, object]]:
    return [
        {"metric": METRIC, "entity": ENTITY, "tags": tags, "timestamp_ms": t, "value": v}
        for t, v in points
    ]


def series_points(
    settings: Settings, tags: dict[str, str], store: Path, *, buffered: bool = True
) -> list[tuple[int, float]]:
    """The series' points as this process reads them (its own block store at ``store``)."""
    found = query(
        METRIC,
        ENTITY,
        T0,
        T0 + 60_000,
        tags,
        settings=settings,
        include_buffered=buffered,
        store_path=store,
    )
    return found.to_list()


@pytest.fixture(scope="module")
def stack(kafka_broker: BrokerHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A ``themis worker`` holding DURABLE (in a block), BUFFERED and OTHER, and 4 vectors."""
    tmp = tmp_path_factory.mktemp("stack")
    settings = module_settings(
        kafka_broker.bootstrap_servers,
        tmp / "data",
        ts_auto_buffer={"max_points_per_buffer": MAX_POINTS, "flush_interval_ms": 600_000},
        vector_auto_buffer={
            "dimension": DIM,
            "flush_interval_ms": 100,
            "snapshot_interval_ms": 200,
        },
    )
    env = settings_as_env(settings)
    worker = start_themis_worker(env, tmp / "worker.log")
    probe = tmp / "probe-blocks.sqlite"
    try:
        wait_until(lambda: worker_answers(settings), timeout_s=120, what="the worker's pages")
        with TSProducer(settings) as producer:
            for point in _points(TAGS, DURABLE):
                producer.put(point)
        wait_until(
            lambda: series_points(settings, TAGS, probe, buffered=False) == DURABLE,
            timeout_s=60,
            what="the first four points flushed into a block",
        )
        with TSProducer(settings) as producer:
            for point in _points(TAGS, BUFFERED) + _points(OTHER_TAGS, OTHER):
                producer.put(point)
        wait_until(
            lambda: (
                series_points(settings, TAGS, probe) == DURABLE + BUFFERED
                and series_points(settings, OTHER_TAGS, probe) == OTHER
            ),
            timeout_s=60,
            what="the buffered points on the worker's /ts/buffered page",
        )
        rng = np.random.default_rng(7)
        vectors = {pk: rng.normal(0, 1, DIM).astype(np.float32) for pk in COLORS}
        with VectorProducer(settings) as producer:
            for pk, vector in vectors.items():
                producer.add(pk, vector, {"color": COLORS[pk], "kind": "cli-test"})
        wait_until(
            lambda: all(
                (hits := search(vector, 1, settings=settings)) and hits[0].pk == pk
                for pk, vector in vectors.items()
            ),
            timeout_s=60,
            what="the four vectors searchable",
        )
        yield Stack(settings, env, vectors)
    finally:
        stop_process(worker)


# -- themis config ------------------------------------------------------------------------


def test_config_prints_the_effective_settings_as_json_and_hides_every_secret(
    base_settings: Settings,
) -> None:
    env = settings_as_env(base_settings)
    with_secrets = env | {name: value for name, (_, _, value) in SECRETS.items()}
    with_secrets["THEMIS_TS_AUTO_BUFFER_FLUSH_INTERVAL_MS"] = "1234"
    plain, hidden = themis_many([(env, ["config"]), (with_secrets, ["-v", "config"])])

    shown = json.loads(ok_stdout(plain))
    assert shown == json.loads(json.dumps(dataclasses.asdict(base_settings), default=str))
    for section, name, _ in SECRETS.values():
        assert shown[section][name] == ""
    as_module = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "config"],
        cwd=REPO,
        env=settings_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok_stdout(as_module) == plain.stdout

    text = ok_stdout(hidden)
    shown = json.loads(text)
    for section, name, _ in SECRETS.values():
        assert shown[section][name] == "(set, not shown)"
    assert "sekrit" not in text
    assert "sekrit" not in hidden.stderr
    assert shown["ts_auto_buffer"]["flush_interval_ms"] == 1234
    assert shown["kafka"]["topic_namespace"] == base_settings.kafka.topic_namespace


def test_config_reads_the_file_given_with_config_and_refuses_a_missing_or_bad_one(
    tmp_path: Path,
) -> None:
    good = tmp_path / "features.yaml"
    good.write_text(
        "worker:\n  web_port: 7071\nfeatures:\n  ts_auto_buffer:\n    max_points_per_buffer: 77\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("features:\n  turbo_mode:\n    enabled: true\n")
    env: dict[str, str] = {}
    shown_run, missing, unknown = themis_many(
        [
            (env, ["config", "--config", str(good)]),
            (env, ["config", "--config", str(tmp_path / "absent.yaml")]),
            (env, ["config", "--config", str(bad)]),
        ]
    )
    shown = json.loads(ok_stdout(shown_run))
    assert shown["ts_auto_buffer"]["max_points_per_buffer"] == 77
    assert shown["worker"]["web_port"] == 7071
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == (
        f"themis: error: config file {tmp_path / 'absent.yaml'} does not exist; "
        "set THEMIS_CONFIG to a valid path\n"
    )
    assert (unknown.returncode, unknown.stdout) == (2, "")
    assert f"themis: error: {bad}: unknown section 'turbo_mode'" in unknown.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "THEMIS_FACADE_PORT",
            "not-a-port",
            "THEMIS_FACADE_PORT (facade.port): 'not-a-port' is not an integer",
        ),
        (
            "THEMIS_VECTOR_AUTO_BUFFER_SPACE",
            "hamming",
            "THEMIS_VECTOR_AUTO_BUFFER_SPACE (vector_auto_buffer.space): 'hamming' is not "
            "allowed; allowed: cosine, l2, ip",
        ),
        (
            "THEMIS_WAL_COMPRESSION_LEVEL",
            "23",
            "THEMIS_WAL_COMPRESSION_LEVEL (compressed_wal_shipping.compression_level): 23 is "
            "out of range",
        ),
        (
            "THEMIS_TS_AUTO_BUFFER_ENABLED",
            "maybe",
            "THEMIS_TS_AUTO_BUFFER_ENABLED (ts_auto_buffer.enabled): 'maybe' is not a",
        ),
    ],
)
def test_an_invalid_themis_variable_exits_2_naming_the_setting(
    base_settings: Settings, variable: str, value: str, message: str
) -> None:
    done = themis(settings_as_env(base_settings) | {variable: value}, "config")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("themis: error: " + message), done.stderr


# -- argument errors ----------------------------------------------------------------------

USAGE_ERRORS: list[tuple[list[str], str]] = [
    ([], "the following arguments are required: command"),
    (["ts", "query", "--entity", "e"], "the following arguments are required: --metric"),
    (
        ["ts", "query", "--metric", "m", "--entity", "e", "--tag", "dc"],
        "argument --tag: expected KEY=VALUE, got 'dc'",
    ),
    (
        ["ts", "query", "--metric", "m", "--entity", "e", "--start", "yesterday"],
        "argument --start: invalid int value: 'yesterday'",
    ),
    (["vectors", "search"], "one of the arguments --vector --vector-file is required"),
    (["vectors", "search", "--vector", "[1, 2"], "argument --vector: not JSON"),
    (
        ["vectors", "search", "--vector", '{"x": 1}'],
        "argument --vector: expected a JSON array of numbers",
    ),
    (
        ["vectors", "search", "--vector", "[1]", "--where", "color"],
        "argument --where: expected KEY=VALUE, got 'color'",
    ),
    (["vectors", "search", "--vector", "[1]", "-k", "ten"], "argument -k: invalid int value"),
    (["kafka", "up", "--port", "abc"], "argument --port: invalid int value: 'abc'"),
    (["kafka", "frobnicate"], "argument action: invalid choice: 'frobnicate'"),
    (["wal", "ship"], "the following arguments are required: --replica"),
    (
        ["wal", "ship", "--replica", "r=kafka://h:1", "--compression", "lz4"],
        "argument --compression: invalid choice: 'lz4'",
    ),
    (["rag", "search", "q", "--embedder", "word2vec"], "argument --embedder: invalid choice"),
    (["topics", "list", "--jsn"], "unrecognized arguments: --jsn"),
]


def test_a_bad_argument_exits_2_with_usage_and_a_message_naming_it() -> None:
    results = themis_many([({}, args) for args, _ in USAGE_ERRORS])
    wrong = []
    for (args, message), done in zip(USAGE_ERRORS, results, strict=True):
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        if done.returncode != 2 or done.stdout or "usage: themis" not in done.stderr:
            wrong.append(f"{args}: exit {done.returncode}, stderr {done.stderr[-500:]!r}")
        elif message not in last or not last.startswith("themis"):
            wrong.append(f"{args}: {last!r} does not say {message!r}")
    assert wrong == []


def test_a_command_that_cannot_do_its_job_exits_2_with_a_themis_error(
    base_settings: Settings, tmp_path: Path
) -> None:
    env = settings_as_env(base_settings)
    no_broker = {"THEMIS_CONFIG": os.devnull, "KAFKA_BOOTSTRAP_SERVERS": ""}
    nobody = free_port()
    dim = base_settings.vector_auto_buffer.dimension
    cases: list[tuple[Mapping[str, str], list[str], str]] = [
        (env, ["wal", "ship", "--replica", "r1"], "--replica 'r1': expected ID=ENDPOINT"),
        (
            env,
            ["wal", "ship", "--replica", "r1=ftp://127.0.0.1:1"],
            "replica endpoint 'ftp://127.0.0.1:1': use kafka://host:port, "
            "themis[+tls]://host:port or http(s)://host:port",
        ),
        (
            no_broker,
            ["wal", "ship", "--replica", "r1=kafka://127.0.0.1:1"],
            "themis wal ship needs the primary cluster: set KAFKA_BOOTSTRAP_SERVERS",
        ),
        (env, ["wal", "serve", "--port", "0"], "WAL apply would be closed to everyone"),
        (env, ["wal", "serve", "--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (
            env,
            ["wal", "serve", "--tls-client-ca", "ca.pem"],
            "--tls-client-ca needs --tls-cert and --tls-key",
        ),
        (
            env,
            ["wal", "apply", "--replica", "absent-7f3a"],
            "no --bootstrap given and no local cluster named 'absent-7f3a' runs; "
            "start one with `themis kafka up --name absent-7f3a`",
        ),
        (
            env,
            ["vectors", "search", "--vector-file", str(tmp_path / "absent.json")],
            f"--vector-file {tmp_path / 'absent.json'}: No such file or directory",
        ),
        (
            env | {"THEMIS_WORKER_WEB_PORT": str(nobody)},
            ["vectors", "search", "--vector", json.dumps([1.0] * dim)],
            f"no worker answers at http://127.0.0.1:{nobody}",
        ),
    ]
    results = themis_many([(case_env, args) for case_env, args, _ in cases])
    wrong = []
    for (_, args, message), done in zip(cases, results, strict=True):
        if done.returncode != 2 or not done.stderr.startswith("themis: error: "):
            wrong.append(f"{args}: exit {done.returncode}, stderr {done.stderr[-800:]!r}")
        elif message not in done.stderr or "Traceback" in done.stderr:
            wrong.append(f"{args}: {done.stderr!r} does not say {message!r}")
    assert wrong == []


def test_an_interrupted_command_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> Settings:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_settings", interrupted)
    assert cli.main(["config"]) == 130


# -- themis topics ------------------------------------------------------------------------


def test_topics_apply_creates_the_spec_and_reports_drift_and_list_shows_spec_against_actual(
    base_settings: Settings,
) -> None:
    bootstrap = base_settings.kafka.bootstrap_servers
    assert bootstrap
    settings = module_settings(bootstrap, base_settings.worker.data_dir / "topics")
    env = settings_as_env(settings)
    specs = {settings.topic(spec.name): spec for spec in load_specs()}
    drifted = settings.topic("ts.blocks")
    with AdminClient({"bootstrap.servers": bootstrap}) as admin:
        future = admin.create_topics([NewTopic(drifted, 2, 1, config={"retention.ms": "1000"})])
        future[drifted].result(timeout=60)

    before = ok_stdout(themis(env, "topics", "list"))
    for topic, spec in specs.items():
        if topic != drifted:
            assert f"{topic}: exists=False partitions spec={spec.partitions} actual=None" in before
    assert f"{drifted}: exists=True partitions spec={specs[drifted].partitions} actual=2" in before
    assert (
        f"    retention.ms: spec={specs[drifted].configs['retention.ms']} actual=1000  <- differs"
        in before
    )

    first = themis(env, "topics", "apply")
    assert first.returncode == 3, first.stderr
    lines = dict(line.split(": ", 1) for line in first.stdout.splitlines())
    assert set(lines) == set(specs)
    for topic, spec in specs.items():
        if topic != drifted:
            assert lines[topic] == f"created ({spec.partitions} partitions, replication factor 1)"
    assert lines[drifted].startswith(
        f"drift (partitions: spec {specs[drifted].partitions}, actual 2 (not changed"
    )
    assert f"retention.ms: 1000 -> {specs[drifted].configs['retention.ms']}" in lines[drifted]

    second, listed = themis(env, "topics", "apply"), themis(env, "topics", "list", "--json")
    assert second.returncode == 3
    again = dict(line.split(": ", 1) for line in second.stdout.splitlines())
    assert {topic: again[topic] for topic in specs if topic != drifted} == {
        topic: "unchanged" for topic in specs if topic != drifted
    }
    assert again[drifted].startswith("drift (partitions:")
    rows = {row["topic"]: row for row in json.loads(ok_stdout(listed))}
    assert set(rows) == set(specs)
    for topic, spec in specs.items():
        row = rows[topic]
        assert row["exists"] is True
        assert row["partitions"] == {
            "spec": spec.partitions,
            "actual": 2 if topic == drifted else spec.partitions,
        }
        assert row["configs"] == {
            key: {"spec": value, "actual": value} for key, value in spec.configs.items()
        }
        assert row["purpose"] == spec.purpose


# -- themis ts query / vectors search / rag -----------------------------------------------


def test_ts_query_prints_exactly_the_durable_and_buffered_points_of_the_series(
    stack: Stack,
) -> None:
    span = ["--metric", METRIC, "--entity", ENTITY]
    both = json.loads(ok_stdout(themis(stack.env, "ts", "query", *span, "--tag", "dc=a", "--json")))
    assert both == {
        "series": KEY,
        "count": 6,
        "points": [[t, v if math.isfinite(v) else str(v)] for t, v in DURABLE + BUFFERED],
    }
    durable = json.loads(
        ok_stdout(
            themis(stack.env, "ts", "query", *span, "--tag", "dc=a", "--no-buffered", "--json")
        )
    )
    assert durable["points"] == [
        [T0, 0.5],
        [T0 + 1000, 1.25],
        [T0 + 2000, "inf"],
        [T0 + 3000, -3.0],
    ]
    ranged = ok_stdout(
        themis(
            stack.env,
            "ts",
            "query",
            *span,
            "--tag",
            "dc=a",
            "--start",
            str(T0 + 1000),
            "--end",
            str(T0 + 10_000),
        )
    )
    assert ranged.splitlines() == [
        f"{KEY}: 4 points",
        f"{T0 + 1000}\t1.25",
        f"{T0 + 2000}\tinf",
        f"{T0 + 3000}\t-3.0",
        f"{T0 + 10_000}\t7.5",
    ]
    other = json.loads(
        ok_stdout(themis(stack.env, "ts", "query", *span, "--tag", "dc=b", "--json"))
    )
    assert other == {
        "series": series_key(METRIC, ENTITY, OTHER_TAGS),
        "count": 1,
        "points": [[T0 + 500, 42.0]],
    }
    untagged = ok_stdout(themis(stack.env, "ts", "query", *span))
    assert untagged.splitlines() == [f"{series_key(METRIC, ENTITY, {})}: 0 points"]


def test_ts_repartition_blocks_moves_a_block_written_before_home_once_and_query_finds_it(
    stack: Stack,
) -> None:
    # A block as written before owner-routed queries: in its id's partition, not its
    # series' one, so the series' owner does not hold it until it is moved home.
    settings = stack.settings
    topic = settings.topic("ts.blocks")
    partitions = topic_partition_count(settings.kafka.bootstrap_servers or "", topic)
    metric = "cli.moved"
    for n in range(1_000):
        key = series_key(metric, f"host-{n}", {})
        (block,) = encode_blocks(key, np.array([T0, T0 + 1]), np.array([1.5, 2.5]))
        if block_partition(block.block_id, partitions) != block_partition(key, partitions):
            break
    entity = f"host-{n}"
    with AckedProducer(settings.kafka.bootstrap_servers or "", topic) as producer:
        producer.produce(
            block.block_id.encode(),
            block.to_bytes(),
            partition=block_partition(block.block_id, partitions),
        )
        producer.flush_acked()

    first = json.loads(ok_stdout(themis(stack.env, "ts", "repartition-blocks", "--json")))
    again = json.loads(ok_stdout(themis(stack.env, "ts", "repartition-blocks", "--json")))

    assert first == {"topic": topic, "blocks_moved": 1}
    assert again == {"topic": topic, "blocks_moved": 0}
    span = ["--metric", metric, "--entity", entity, "--json"]
    wait_until(
        lambda: (
            json.loads(ok_stdout(themis(stack.env, "ts", "query", *span)))["points"]
            == [[T0, 1.5], [T0 + 1, 2.5]]
        ),
        timeout_s=60,
        what="the moved block read by its series' owner",
    )


def test_vectors_search_finds_the_added_vectors_with_filters_and_a_vector_file(
    stack: Stack, tmp_path: Path
) -> None:
    target = "v-red-2"
    probe = json.dumps(stack.vectors[target].tolist())
    vector_file = tmp_path / "probe.json"
    vector_file.write_text(json.dumps(stack.vectors["v-blue-1"].tolist()))
    nearest, reds, from_file, wrong_dim = themis_many(
        [
            (stack.env, ["vectors", "search", "--vector", probe, "-k", "2", "--json"]),
            (
                stack.env,
                [
                    "vectors",
                    "search",
                    "--vector",
                    probe,
                    "-k",
                    "10",
                    "--where",
                    "color=red",
                    "--where",
                    "kind=cli-test",
                    "--json",
                ],
            ),
            (
                stack.env,
                ["vectors", "search", "--vector-file", str(vector_file), "-k", "1", "--ef", "100"],
            ),
            (stack.env, ["vectors", "search", "--vector", "[0.5, 0.5]"]),
        ]
    )
    hits = json.loads(ok_stdout(nearest))["results"]
    assert len(hits) == 2
    assert hits[0]["pk"] == target
    assert hits[0]["distance"] == pytest.approx(0.0, abs=1e-4)
    assert hits[0]["metadata"] == {"color": "red", "kind": "cli-test"}
    assert hits[1]["distance"] > hits[0]["distance"]

    red = json.loads(ok_stdout(reds))["results"]
    assert sorted(hit["pk"] for hit in red) == ["v-red-1", "v-red-2"]
    assert red[0]["pk"] == target

    line = ok_stdout(from_file).strip()
    pk, distance, metadata = line.split("\t")
    assert pk == "v-blue-1"
    assert float(distance) == pytest.approx(0.0, abs=1e-4)
    assert json.loads(metadata) == {"color": "blue", "kind": "cli-test"}

    assert wrong_dim.returncode == 2, wrong_dim.stderr
    assert wrong_dim.stderr == (
        f"themis: error: the query vector has 2 components; the index has {DIM} "
        "(vector_auto_buffer.dimension)\n"
    )


def test_rag_ingest_and_search_print_a_readable_report_and_the_best_chunk(
    stack: Stack, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "sourdough.md").write_text(
        "# Sourdough\n\n## Feeding the starter\n\n"
        "Feed the sourdough starter flour and water every morning and keep it warm.\n"
    )
    (docs / "comets.md").write_text(
        "# Comets\n\nA comet's icy nucleus grows a glowing tail near the sun.\n"
    )
    state = tmp_path / "rag-state.json"
    ingest = ["rag", "ingest", str(docs), "--no-progress", "--state", str(state)]
    first = ok_stdout(themis(stack.env, *ingest))
    report = re.fullmatch(
        r"2 files: 2 ingested, 0 unchanged, 0 deleted; (\d+) chunks sent, 0 removed "
        r"in [0-9.]+ s \(state (.+)\)\n",
        first,
    )
    assert report, first
    assert report.group(2) == str(state)
    embedder = HashingEmbedder(DIM)
    question = "how do I feed the sourdough starter"
    wait_until(
        lambda: any(
            hit.metadata.get("source") == "sourdough.md"
            for hit in search(embedder.embed([question])[0], 3, settings=stack.settings)
        ),
        timeout_s=60,
        what="the ingested chunks searchable",
    )
    answer = ok_stdout(themis(stack.env, "rag", "search", question, "-k", "1")).splitlines()
    assert len(answer) == 2
    score, where = answer[0].split("  ", 1)
    assert 0.0 <= float(score) < 1.0
    assert where == "sourdough.md > Sourdough > Feeding the starter"
    assert answer[1] == (
        "        Feed the sourdough starter flour and water every morning and keep it warm."
    )
    second = ok_stdout(themis(stack.env, *ingest))
    assert second.startswith("2 files: 0 ingested, 2 unchanged, 0 deleted; 0 chunks sent")


# -- themis wal serve / ship / apply and themis kafka -------------------------------------


def wal_end(stack: Stack) -> int:
    """The sum of the WAL partitions' last LSNs (LSN = offset + 1): with one partition,
    the LSN of the WAL's last entry; what ``last_confirmed_lsn`` reaches when caught up."""
    topic = stack.settings.topic("wal")
    with open_consumer(stack.bootstrap, f"probe-{uuid.uuid4().hex[:8]}") as consumer:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            int(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[
                    1
                ]
            )
            for p in partitions
        )


def replica_status(port: int) -> dict[str, Any]:
    status, body, _ = http_call(port, "GET", "/api/v1/replica/status")
    assert status == 200
    assert isinstance(body, dict)
    return body


def metrics_text(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def stats_in_log(log: Path) -> list[Any]:
    """The stats lines ``themis wal ship`` printed so far (one JSON object a line)."""
    lines = log.read_text().splitlines()
    return [json.loads(line) for line in lines[:-1] if line.startswith("{")] + [
        json.loads(line) for line in lines[-1:] if line.startswith("{") and line.endswith("}")
    ]


def confirmed_in_log(log: Path) -> str | None:
    stats = stats_in_log(log)
    return str(stats[-1]["replicas"][0]["last_confirmed_lsn"]) if stats else None


def metric_value(text: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_wal_serve_applies_what_wal_ship_sends_with_the_replicator_key_and_refuses_others(
    stack: Stack, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    end = wal_end(stack)
    assert end >= 2  # at least the block and the vector batch
    serve_env = stack.env | {"THEMIS_WAL_APPLY_KEYS": "retired-key, ship-key"}
    serve = start_process(
        [*THEMIS, "wal", "serve", "--replica", "http-r", "--port", str(port)],
        serve_env,
        tmp_path / "serve.log",
    )
    try:
        wait_until(
            lambda: (
                f"replica 'http-r' serving http://127.0.0.1:{port}"
                in (tmp_path / "serve.log").read_text()
            ),
            timeout_s=60,
            what="wal serve to listen",
        )
        assert replica_status(port)["entries_applied_total"] == 0
        status, body, _ = http_call(port, "POST", "/api/v1/wal/apply", b"x")
        assert status == 401
        assert "replicator key" in body["error"]

        intruder = themis(
            stack.env | {"THEMIS_WAL_SHIP_KEY": "guessed-key"},
            "wal",
            "ship",
            "--replica",
            f"intruder=http://127.0.0.1:{port}",
            "--once",
            "--timeout",
            "3",
        )
        assert intruder.returncode == 2
        assert "themis: error: replicas not caught up within 3 s" in intruder.stderr
        refused = last_json_line(intruder.stdout)
        assert refused["replicas"][0]["last_confirmed_lsn"] == format_lsn(0)
        assert refused["stats"]["failed_ships"] >= 1
        assert replica_status(port)["entries_applied_total"] == 0

        ship_log = tmp_path / "ship.log"
        shipper = start_process(
            [
                *THEMIS,
                "wal",
                "ship",
                "--replica",
                f"http-r=http://127.0.0.1:{port}",
                "--compression",
                "zstd",
                "--level",
                "5",
                "--max-batch-entries",
                "1",
                "--stats-interval",
                "0.3",
                "--metrics-port",
                str(metrics_port),
            ],
            stack.env | {"THEMIS_WAL_SHIP_KEY": "ship-key"},
            ship_log,
        )
        try:
            wait_until(
                lambda: confirmed_in_log(ship_log) == format_lsn(end),
                timeout_s=90,
                what="the shipper to confirm the whole WAL",
            )
            wait_until(
                lambda: (
                    metric_value(metrics_text(metrics_port), "wal_shipper_batches_total") == end
                ),
                timeout_s=30,
                what="one batch per entry on the shipper's /metrics",
            )
        finally:
            shipper_exit = stop_process(shipper)
        assert shipper_exit == 0
        stats = stats_in_log(ship_log)[-1]
        assert stats["replicas"][0]["replica_id"] == "http-r"
        assert stats["replicas"][0]["last_confirmed_lsn"] == format_lsn(end)
        assert stats["stats"]["total_entries_shipped"] == end
        assert stats["stats"]["total_batches"] == end  # --max-batch-entries 1
        applied = replica_status(port)
        assert applied["last_applied_lsn"] == format_lsn(end)
        assert applied["entries_applied_total"] == end
        assert applied["blocks"] >= 1
    finally:
        serve_exit = stop_process(serve)
    assert serve_exit == 0
    state = ReplicaState(stack.settings.worker.data_dir / "replica-http-r", stack.settings)
    try:
        assert (
            list(zip(*(a.tolist() for a in state.query_ts(KEY, T0, T0 + 60_000)), strict=True))
            == DURABLE
        )
        dump = state.vector_dump()
        for pk, color in COLORS.items():
            assert dump[pk] == {"color": color, "kind": "cli-test"}
    finally:
        state.close()


def https_status(port: int, context: ssl.SSLContext) -> dict[str, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("GET", "/api/v1/replica/status")
        response = conn.getresponse()
        assert response.status == 200
        body: dict[str, Any] = json.loads(response.read())
        return body
    finally:
        conn.close()


def test_wal_serve_over_mutual_tls_applies_what_wal_ship_sends_with_a_client_certificate(
    stack: Stack, tmp_path: Path
) -> None:
    """Over the binary door (themis+tls://) first, then HTTPS, which finds it all applied."""
    pki = make_pki(tmp_path / "pki")
    port, binary_port, end = free_port(), free_port(), wal_end(stack)
    log = tmp_path / "serve.log"
    serve = start_process(
        [
            *THEMIS,
            "wal",
            "serve",
            "--replica",
            "tls-r",
            "--port",
            str(port),
            "--tls-cert",
            str(pki / "server.pem"),
            "--tls-key",
            str(pki / "server.key"),
            "--tls-client-ca",
            str(pki / "ca.pem"),
            "--binary-port",
            str(binary_port),
        ],
        stack.env,  # no replicator keys: the client certificate is the credential
        log,
    )
    try:
        wait_until(
            lambda: f"serving themis+tls://127.0.0.1:{binary_port}" in log.read_text(),
            timeout_s=60,
            what="wal serve to listen over TLS",
        )
        assert f"replica 'tls-r' serving https://127.0.0.1:{port}" in log.read_text()
        anonymous = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_status(port, anonymous)
        tls_flags = [
            "--tls-ca",
            str(pki / "ca.pem"),
            "--tls-cert",
            str(pki / "client.pem"),
            "--tls-key",
            str(pki / "client.key"),
        ]
        over_binary = themis(
            stack.env,
            "wal",
            "ship",
            "--replica",
            f"tls-r=themis+tls://127.0.0.1:{binary_port}",
            "--once",
            "--timeout",
            "60",
            *tls_flags,
        )
        stats = last_json_line(ok_stdout(over_binary))
        assert stats["replicas"][0]["last_confirmed_lsn"] == format_lsn(end)
        client = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        client.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
        applied = https_status(port, client)
        assert applied["last_applied_lsn"] == format_lsn(end)
        assert applied["entries_applied_total"] == end
        shipped = themis(
            stack.env,
            "wal",
            "ship",
            "--replica",
            f"tls-r=https://127.0.0.1:{port}",
            "--once",
            "--timeout",
            "60",
            *tls_flags,
        )
        stats = last_json_line(ok_stdout(shipped))
        assert stats["replicas"][0]["last_confirmed_lsn"] == format_lsn(end)
        assert stats["replicas"][0]["is_healthy"] is True
        again = https_status(port, client)
        assert again["entries_applied_total"] == end  # nothing applied twice
    finally:
        serve_exit = stop_process(serve)
    assert serve_exit == 0


def test_kafka_up_status_down_and_wal_ship_then_wal_apply_through_a_named_replica_cluster(
    stack: Stack, tmp_path: Path
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    env = stack.env
    try:
        up = ok_stdout(themis(env, "kafka", "up", "--name", name))
        started = re.fullmatch(
            rf"cluster '{name}' up at (127\.0\.0\.1:\d+) \(pid (\d+), started in [0-9.]+ s\)\n", up
        )
        assert started, up
        bootstrap, pid = started.group(1), int(started.group(2))
        again = ok_stdout(themis(env, "kafka", "up", "--name", name))
        assert again == f"cluster '{name}' already running at {bootstrap}\n"
        one, every = themis_many(
            [(env, ["kafka", "status", "--name", name, "--json"]), (env, ["kafka", "status"])]
        )
        [row] = json.loads(ok_stdout(one))
        assert {k: row[k] for k in ("name", "running", "bootstrap_servers", "pid")} == {
            "name": name,
            "running": True,
            "bootstrap_servers": bootstrap,
            "pid": pid,
        }
        assert Path(row["log_file"]).exists()
        assert f"{name}: running at {bootstrap} (pid {pid})" in ok_stdout(every).splitlines()

        end = wal_end(stack)
        shipped = last_json_line(
            ok_stdout(
                themis(
                    env,
                    "wal",
                    "ship",
                    "--replica",
                    f"{name}=kafka://{bootstrap}",
                    "--once",
                    "--timeout",
                    "120",
                    "--compression",
                    "none",
                )
            )
        )
        confirmed = shipped["replicas"][0]["last_confirmed_lsn"]
        assert int(confirmed, 16) >= end
        assert 0.5 < shipped["stats"]["avg_compression_ratio"] <= 1.0  # none: headers only

        applied = json.loads(ok_stdout(themis(env, "wal", "apply", "--replica", name, "--once")))
        assert applied["entries_applied"] == int(confirmed, 16)
        assert applied["errors"] == []
        assert applied["corrupt_batches"] == 0
        assert applied["last_applied_lsn"] == confirmed
        assert applied["entries_applied_total"] == int(confirmed, 16)
        resumed = json.loads(
            ok_stdout(
                themis(env, "wal", "apply", "--replica", name, "--bootstrap", bootstrap, "--once")
            )
        )
        assert resumed["entries_applied"] == 0
        assert resumed["last_applied_lsn"] == confirmed
        state = ReplicaState(stack.settings.worker.data_dir / f"replica-{name}", stack.settings)
        try:
            assert state.query_ts(KEY, T0, T0 + 60_000)[0].tolist() == [t for t, _ in DURABLE]
            assert set(COLORS) <= set(state.vector_dump())
        finally:
            state.close()

        down = ok_stdout(themis(env, "kafka", "down", "--name", name))
        assert down == f"cluster '{name}' stopped\n"
        assert LocalKafka(name).status() is None
        down_again, stopped, stopped_json = themis_many(
            [
                (env, ["kafka", "down", "--name", name]),
                (env, ["kafka", "status", "--name", name]),
                (env, ["kafka", "status", "--name", name, "--json"]),
            ]
        )
        assert ok_stdout(down_again) == f"cluster '{name}' was not running\n"
        assert (stopped.returncode, stopped.stdout) == (1, f"{name}: stopped\n")
        assert stopped_json.returncode == 1
        assert json.loads(stopped_json.stdout) == [{"name": name, "running": False}]
    finally:
        LocalKafka(name).down()


def test_kafka_status_without_any_cluster_says_so(tmp_path: Path) -> None:
    empty = {"THEMIS_HOME": str(tmp_path / "home")}
    text, as_json = themis_many(
        [(empty, ["kafka", "status"]), (empty, ["kafka", "status", "--json"])]
    )
    assert ok_stdout(text) == "no local clusters\n"
    assert json.loads(ok_stdout(as_json)) == []
