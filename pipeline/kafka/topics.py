"""Topics as code: one YAML spec per topic in ``topics/``, applied through the admin API.

``apply_topics`` creates missing topics and sets configs that differ, idempotently.
It never deletes or repartitions: a partition count that differs from the spec is
reported as drift, because adding partitions would move keys (series, pks) to new
partitions and removing them would destroy data.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from pipeline.config import Settings
from pipeline.errors import KafkaOperationFailed, TopicError, call_with_retries
from pipeline.kafka.clients import AdminClient

SPEC_DIR = Path(__file__).resolve().parents[2] / "topics"
"""The specs in a checkout (an editable install): ``topics/`` beside ``pipeline/``."""
INSTALLED_SPEC_DIR = Path(sys.prefix) / "share" / "themis" / "topics"
"""The specs of a wheel install (pyproject's ``data-files``), where no checkout is."""
_NAME = re.compile(r"^[a-z][a-z0-9]*(\.[a-z][a-z0-9]*)*$")
_REQUIRED = ("name", "purpose", "partitions", "replication_factor", "key_format", "value_format")


@dataclass(frozen=True)
class TopicSpec:
    """The declared shape of one topic; ``name`` is relative to the topic namespace."""

    name: str
    purpose: str
    partitions: int
    replication_factor: int
    key_format: str
    value_format: str
    configs: dict[str, str] = field(default_factory=dict)


@dataclass
class TopicReport:
    """What ``apply`` did or found for one topic."""

    topic: str
    action: str  # created | updated | unchanged | drift
    details: list[str] = field(default_factory=list)


def load_specs(spec_dir: Path | None = None) -> list[TopicSpec]:
    """Read and validate every ``*.yaml`` spec in ``spec_dir``, sorted by name.

    By default the checkout's ``topics/``, else the installed copy.
    """
    if spec_dir is None:
        spec_dir = SPEC_DIR if SPEC_DIR.is_dir() else INSTALLED_SPEC_DIR
    specs = []
    for path in sorted(spec_dir.glob("*.yaml")):
        raw: Any = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict):
            raise TopicError(f"{path}: a topic spec must be a mapping")
        missing = [key for key in _REQUIRED if key not in raw]
        if missing:
            raise TopicError(f"{path}: missing keys {', '.join(missing)}")
        name = str(raw["name"])
        if not _NAME.match(name):
            raise TopicError(f"{path}: name {name!r} must be lowercase words joined by '.'")
        if not isinstance(raw["partitions"], int) or raw["partitions"] < 1:
            raise TopicError(f"{path}: partitions must be a positive integer")
        specs.append(
            TopicSpec(
                name=name,
                purpose=str(raw["purpose"]),
                partitions=int(raw["partitions"]),
                replication_factor=int(raw["replication_factor"]),
                key_format=str(raw["key_format"]),
                value_format=str(raw["value_format"]),
                configs={str(k): str(v) for k, v in (raw.get("configs") or {}).items()},
            )
        )
    if not specs:
        raise TopicError(f"no topic specs found in {spec_dir}")
    return specs


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def _actual_configs(admin: AdminClient, topics: list[str]) -> dict[str, dict[str, str]]:
    """Configs of ``topics``; retried while a topic created a moment ago is not known yet."""
    if not topics:
        return {}

    def describe() -> dict[str, dict[str, str]]:
        resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
        result: dict[str, dict[str, str]] = {}
        for resource, future in admin.describe_configs(resources).items():
            try:
                entries = future.result(timeout=30)
            except KafkaException as exc:
                raise KafkaOperationFailed(
                    f"describing {resource.name} failed: {exc}", retriable=_not_yet_known(exc)
                ) from exc
            result[resource.name] = {k: str(v.value) for k, v in entries.items()}
        return result

    return call_with_retries(describe, timeout_s=30)


def _not_yet_known(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (
        error.retriable() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    )


def wait_until_listed(admin: AdminClient, partitions: dict[str, int], timeout_s: float) -> None:
    """Return once the cluster's metadata lists every topic with all its partitions.

    A topic is created on the controller first; brokers learn of it a moment later, and
    a producer asking before then is told it does not exist.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=10)
        missing = [
            t
            for t, n in partitions.items()
            if t not in metadata.topics
            or metadata.topics[t].error is not None
            or len(metadata.topics[t].partitions) < n
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics {', '.join(missing)} were created but are not listed yet")
        time.sleep(0.1)


def apply_topics(
    bootstrap: str,
    settings: Settings,
    specs: list[TopicSpec] | None = None,
    *,
    partitions_override: int | None = None,
) -> list[TopicReport]:
    """Create missing topics and align configs; report partition drift without fixing it.

    ``partitions_override`` replaces every spec's partition count (tests use small topics).
    """
    with _admin(bootstrap) as admin:
        return _apply_topics(admin, settings, specs, partitions_override)


def _apply_topics(
    admin: AdminClient,
    settings: Settings,
    specs: list[TopicSpec] | None,
    partitions_override: int | None,
) -> list[TopicReport]:
    specs = specs if specs is not None else load_specs()
    metadata = admin.list_topics(timeout=30)
    brokers = max(1, len(metadata.brokers))
    reports: dict[str, TopicReport] = {}
    to_create: list[NewTopic] = []
    for spec in specs:
        topic = settings.topic(spec.name)
        want_partitions = partitions_override or spec.partitions
        existing = metadata.topics.get(topic)
        if existing is None:
            rf = min(spec.replication_factor, brokers)
            details = [f"{want_partitions} partitions, replication factor {rf}"]
            if rf < spec.replication_factor:
                details.append(
                    f"replication factor lowered from {spec.replication_factor}: "
                    f"the cluster has {brokers} broker(s)"
                )
            to_create.append(NewTopic(topic, want_partitions, rf, config=dict(spec.configs)))
            reports[topic] = TopicReport(topic, "created", details)
            continue
        have = len(existing.partitions)
        report = TopicReport(topic, "unchanged")
        if have != want_partitions:
            report.action = "drift"
            report.details.append(
                f"partitions: spec {want_partitions}, actual {have} (not changed: "
                "repartitioning moves keys between partitions; migrate to a new topic)"
            )
        reports[topic] = report
    if to_create:
        for topic, future in admin.create_topics(to_create, operation_timeout=30).items():
            try:
                future.result(timeout=60)
            except Exception as exc:  # a topic created concurrently is fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise TopicError(f"creating {topic} failed: {exc}") from exc
                reports[topic] = TopicReport(topic, "unchanged", ["created concurrently"])
        created = {
            t.topic: t.num_partitions for t in to_create if reports[t.topic].action == "created"
        }
        wait_until_listed(admin, created, 30.0)
    existing_topics = [t for t, r in reports.items() if r.action != "created"]
    actual = _actual_configs(admin, existing_topics)
    alter = []
    for spec in specs:
        topic = settings.topic(spec.name)
        if topic not in actual:
            continue
        changes = {
            key: value for key, value in spec.configs.items() if actual[topic].get(key) != value
        }
        if not changes:
            continue
        entries = [
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in changes.items()
        ]
        alter.append(ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries))
        report = reports[topic]
        if report.action == "unchanged":
            report.action = "updated"
        report.details.extend(
            f"{key}: {actual[topic].get(key)} -> {value}" for key, value in changes.items()
        )
    if alter:
        for resource, future in admin.incremental_alter_configs(alter).items():
            try:
                future.result(timeout=30)
            except Exception as exc:
                raise TopicError(f"updating configs of {resource.name} failed: {exc}") from exc
    return [reports[settings.topic(spec.name)] for spec in specs]


def describe_topics(
    bootstrap: str, settings: Settings, specs: list[TopicSpec] | None = None
) -> list[dict[str, object]]:
    """Spec against actual for each topic: partitions and each declared config."""
    with _admin(bootstrap) as admin:
        return _describe_topics(admin, settings, specs)


def _describe_topics(
    admin: AdminClient, settings: Settings, specs: list[TopicSpec] | None
) -> list[dict[str, object]]:
    specs = specs if specs is not None else load_specs()
    metadata = admin.list_topics(timeout=30)
    names = [settings.topic(s.name) for s in specs]
    actual = _actual_configs(admin, [n for n in names if n in metadata.topics])
    rows: list[dict[str, object]] = []
    for spec, topic in zip(specs, names, strict=True):
        meta = metadata.topics.get(topic)
        configs = {
            key: {"spec": value, "actual": actual.get(topic, {}).get(key)}
            for key, value in spec.configs.items()
        }
        rows.append(
            {
                "topic": topic,
                "exists": meta is not None,
                "partitions": {
                    "spec": spec.partitions,
                    "actual": None if meta is None else len(meta.partitions),
                },
                "configs": configs,
                "purpose": spec.purpose,
            }
        )
    return rows
