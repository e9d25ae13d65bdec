"""Settings: one typed object, read at one boundary.

Precedence, lowest to highest:

1. the defaults in these dataclasses,
2. ``config/features.yaml`` (or the file named by ``THEMIS_CONFIG``),
3. ``THEMIS_*`` environment variables (and ``KAFKA_BOOTSTRAP_SERVERS``),
4. explicit overrides passed by the caller (CLI flags, test fixtures).

Nothing here runs at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from pipeline.errors import ConfigError
from pipeline.limits import MAX_VECTOR_DIMENSION

DEFAULT_CONFIG_PATH = Path("config/features.yaml")

_MiB = 1024 * 1024


def _rng(lo: float, hi: float | None = None) -> dict[str, Any]:
    return {"min": lo, "max": hi}


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


@dataclass(frozen=True)
class KafkaSettings:
    """Where the broker is and how topics are named."""

    bootstrap_servers: str | None = None
    """``host:port[,host:port]``; ``None`` means: find or start a local broker."""
    cluster: str = "primary"
    """Name of the local JVM cluster used when no bootstrap address is given."""
    topic_namespace: str = "themis"
    """Prefix of every topic name: ``<namespace>.<spec name>``."""
    container_image: str = "apache/kafka:4.1.1"
    """The image of the broker started in a container engine, when no bootstrap address
    is given and an engine answers (``pipeline/kafka/docker_broker.py``)."""


@dataclass(frozen=True)
class WorkerSettings:
    """The Faust worker process."""

    app_id: str = "themis-pipeline"
    """Faust app id, also the consumer group id."""
    web_host: str = "127.0.0.1"
    """Address the worker's web server binds (``0.0.0.0`` in a container)."""
    web_port: int = field(default=6066, metadata=_rng(0, 65535))
    """Port of the worker's web server (metrics); 0 picks a free port."""
    data_dir: Path = Path("var/data")
    """Directory for the worker's local state (block store, snapshots)."""
    page_key: str = ""
    """Key every worker page but ``/metrics`` requires (``Authorization: Bearer``); must be
    set when ``web_host`` is not a loopback address. Clients of the pages send it."""
    page_auth_failures_per_min: int = field(default=20, metadata=_rng(1))
    """Wrong page keys one client address may send (a burst of this many, then this many
    a minute); beyond it the pages answer 429 without comparing the key."""
    header_timeout_s: float = field(default=10.0, metadata=_rng(0.05, 3600))
    """Seconds a connection to the pages may take to send a whole request head (and may
    stay idle between requests); then it is closed."""
    body_timeout_s: float = field(default=30.0, metadata=_rng(0.05, 3600))
    """Seconds a page request may take to send its body once its head arrived; then the
    page answers 408 and the connection is closed."""


@dataclass(frozen=True)
class TSAutoBufferSettings:
    """Thresholds of the time-series auto buffer."""

    enabled: bool = True
    max_points_per_buffer: int = field(default=1000, metadata=_rng(1, 65535))
    """Flush one series when its buffer holds this many points."""
    flush_interval_ms: int = field(default=5000, metadata=_rng(1))
    """Flush a series whose oldest buffered point is this old (milliseconds)."""
    max_memory_bytes: int = field(default=64 * _MiB, metadata=_rng(1024))
    """Flush everything when the buffers together hold this many bytes."""
    max_total_points: int = field(default=2_000_000, metadata=_rng(1))
    """Hard limit: ``add`` raises ``BufferOverflow`` above it."""
    line_protocol_entity_tag: str = "host"
    """The InfluxDB line-protocol tag that is a point's ``entity`` (the facade's
    ``/api/v2/write`` and ``/write``, and line-protocol records on the points topic)."""
    line_protocol_precision: str = field(default="ns", metadata=_choices("ns", "us", "ms", "s"))
    """The unit of line-protocol timestamps on the points topic (Telegraf writes ns)."""


@dataclass(frozen=True)
class VectorAutoBufferSettings:
    """Thresholds of the vector auto buffer and the HNSW index parameters."""

    enabled: bool = True
    max_vectors_per_buffer: int = field(default=1000, metadata=_rng(1))
    flush_interval_ms: int = field(default=1000, metadata=_rng(1))
    max_memory_bytes: int = field(default=256 * _MiB, metadata=_rng(1024))
    max_total_vectors: int = field(default=100_000, metadata=_rng(1))
    dimension: int = field(default=768, metadata=_rng(1, MAX_VECTOR_DIMENSION))
    space: str = field(default="cosine", metadata=_choices("cosine", "l2", "ip"))
    m: int = field(default=16, metadata=_rng(2, 256))
    ef_construction: int = field(default=200, metadata=_rng(1))
    ef_search: int = field(default=64, metadata=_rng(1))
    snapshot_interval_ms: int = field(default=5000, metadata=_rng(1))
    """Snapshot each index shard at most this often; input records are acked after it."""
    max_metadata_bytes: int = field(default=65536, metadata=_rng(2))


@dataclass(frozen=True)
class WalSettings:
    """Compressed WAL shipping."""

    enabled: bool = True
    compression_type: str = field(default="zstd", metadata=_choices("zstd", "none"))
    compression_level: int = field(default=3, metadata=_rng(1, 22))
    apply_keys: str = ""
    """Comma-separated keys a replica (``themis wal serve``) accepts on WAL apply; never
    logged. Empty and no ``--tls-client-ca``: the replica's apply endpoint is closed."""
    apply_auth_failures_per_min: int = field(default=20, metadata=_rng(1))
    """Failed key checks one client address may make on ``themis wal serve`` (a burst of
    this many, then this many a minute); beyond it 429 / RATE_LIMITED, no key checked."""
    ship_key: str = ""
    """The key the shipper presents to HTTP(S) replicas (``Authorization: Bearer``)."""
    dictionary_file: str = ""
    """A zstd dictionary (``themis wal train-dictionary``) for the ``meta`` section of zstd
    batches; empty = none. Its zstd id is its version: batches name it, it rides along
    with the first batch to each replica, and replicas keep every one they received."""


@dataclass(frozen=True)
class FacadeSettings:
    """The HTTP ingest facade (``themis facade``)."""

    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=_rng(0, 65535))
    binary_port: int = field(default=0, metadata=_rng(0, 65535))
    """Port of the binary protocol server (docs/api/BINARY_PROTOCOL_EXTENSIONS.md) beside
    the HTTP app, on ``host``; 0 = off."""
    response_mode: str = field(default="acked", metadata=_choices("acked", "queued"))
    """What a 200 means: ``acked`` = the broker acknowledged (acks=all); ``queued`` = in
    the facade's producer queue only."""
    auth_enabled: bool = True
    api_keys: str = ""
    """Comma-separated ``key:role`` pairs (roles ``writer``, ``admin``); never logged."""
    api_keys_file: str = ""
    """A file with one ``key:role`` per line, read at start-up."""
    worker_urls: str = ""
    """Comma-separated worker base URLs; empty = ``http://127.0.0.1:<worker.web_port>``."""
    max_body_bytes: int = field(default=8 * _MiB, metadata=_rng(1024))
    max_in_flight: int = field(default=100_000, metadata=_rng(1))
    """Requests accepted but not yet acknowledged by the broker; above it: 429."""
    rate_ts_put_per_min: int = field(default=10_000, metadata=_rng(1))
    rate_vectors_add_per_min: int = field(default=5_000, metadata=_rng(1))
    rate_flush_per_min: int = field(default=10, metadata=_rng(1))
    rate_auth_failures_per_min: int = field(default=20, metadata=_rng(1))
    """Failed key checks one client address may make per minute (a burst of this many);
    beyond it the address is answered 429 without its key being checked."""
    write_deadline_s: float = field(default=5.0, metadata=_rng(0.05, 600))
    """How long a write that waits for the broker (``acked`` buffered writes, batches,
    direct puts) waits at most (seconds); then 503 with ``Retry-After``."""
    header_timeout_s: float = field(default=10.0, metadata=_rng(0.05, 3600))
    """Time a connection has to send a complete request head, counted from its opening or
    from the previous answer (seconds); an idle keep-alive connection closes after it too."""
    remote_write_entity_label: str = "instance"
    """The Prometheus label that is a sample's ``entity`` (``/api/v1/write``)."""
    body_timeout_s: float = field(default=30.0, metadata=_rng(0.05, 3600))
    """Time a request has to send its whole body once its head arrived (seconds); then 408."""


@dataclass(frozen=True)
class Settings:
    """Every setting of the pipeline."""

    kafka: KafkaSettings = KafkaSettings()
    worker: WorkerSettings = WorkerSettings()
    ts_auto_buffer: TSAutoBufferSettings = TSAutoBufferSettings()
    vector_auto_buffer: VectorAutoBufferSettings = VectorAutoBufferSettings()
    compressed_wal_shipping: WalSettings = WalSettings()
    facade: FacadeSettings = FacadeSettings()

    def topic(self, spec_name: str) -> str:
        """The full topic name for a spec name such as ``ts.points``."""
        return f"{self.kafka.topic_namespace}.{spec_name}"


# Where each section lives in features.yaml.
_FEATURE_SECTIONS = ("ts_auto_buffer", "vector_auto_buffer", "compressed_wal_shipping")
_TOP_SECTIONS = ("kafka", "worker", "facade")

# Environment prefix of each section; every field is THEMIS_<PREFIX>_<FIELD>.
ENV_PREFIX: Mapping[str, str] = {
    "kafka": "THEMIS_KAFKA_",
    "worker": "THEMIS_WORKER_",
    "ts_auto_buffer": "THEMIS_TS_AUTO_BUFFER_",
    "vector_auto_buffer": "THEMIS_VECTOR_AUTO_BUFFER_",
    "compressed_wal_shipping": "THEMIS_WAL_",
    "facade": "THEMIS_FACADE_",
}

# The roadmap's names, kept as aliases of the generic ones.
ENV_ALIASES: Mapping[str, tuple[str, str]] = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "THEMIS_TS_AUTO_BUFFER_MAX_POINTS": ("ts_auto_buffer", "max_points_per_buffer"),
    "THEMIS_VECTOR_AUTO_BUFFER_MAX_VECTORS": ("vector_auto_buffer", "max_vectors_per_buffer"),
    "THEMIS_WAL_COMPRESSION": ("compressed_wal_shipping", "compression_type"),
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

_T = TypeVar("_T")


def _coerce(key: str, raw: object, kind: object, meta: Mapping[str, Any]) -> object:
    """Turn a YAML or environment value into the field's type and check its range."""
    value: object
    if raw is None and kind == (str | None):
        return None
    if kind is bool:
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            value = raw.strip().lower() in _TRUE
        else:
            raise ConfigError(f"{key}: {raw!r} is not a boolean; allowed: true or false")
    elif kind is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: {raw!r} is not an integer")
        try:
            value = int(str(raw).replace("_", "")) if isinstance(raw, str) else int(raw)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {raw!r} is not an integer") from None
        lo, hi = meta.get("min"), meta.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            upper = "" if hi is None else f" and <= {hi}"
            raise ConfigError(f"{key}: {value} is out of range; allowed: >= {lo}{upper}")
    elif kind is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: {raw!r} is not a number")
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {raw!r} is not a number") from None
        lo, hi = meta.get("min"), meta.get("max")
        if (
            not math.isfinite(value)
            or (lo is not None and value < lo)
            or (hi is not None and value > hi)
        ):
            raise ConfigError(f"{key}: {value} is out of range; allowed: >= {lo} and <= {hi}")
    elif kind is Path:
        value = Path(str(raw))
    else:
        if not isinstance(raw, str | int | float):
            raise ConfigError(f"{key}: {raw!r} is not a string")
        value = str(raw)
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed: {', '.join(choices)}")
    return value


def _build_section(
    cls: type[_T],
    section: str,
    values: Mapping[str, object],
    origin: str,
    env_names: Mapping[str, str],
) -> _T:
    """``cls`` from ``values``; an error names the variable a value came from, if one did."""
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, object] = {}
    for name, raw in values.items():
        if name not in known:
            raise ConfigError(
                f"{origin}: unknown key {section}.{name}; known keys: {', '.join(sorted(known))}"
            )
        key = f"{section}.{name}"
        if name in env_names:
            key = f"{env_names[name]} ({key})"
        kwargs[name] = _coerce(key, raw, hints[name], known[name].metadata)
    return cls(**kwargs)


def _yaml_sections(path: Path) -> dict[str, dict[str, object]]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    sections: dict[str, dict[str, object]] = {}
    features = loaded.pop("features", None) or {}
    for name, body in [*loaded.items(), *dict(features).items()]:
        allowed = _TOP_SECTIONS if name in _TOP_SECTIONS else _FEATURE_SECTIONS
        if name not in allowed:
            raise ConfigError(
                f"{path}: unknown section {name!r}; known: "
                f"{', '.join(_TOP_SECTIONS)}, features.{{{', '.join(_FEATURE_SECTIONS)}}}"
            )
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: section {name!r} must be a mapping")
        sections[name] = dict(body)
    return sections


def _env_sections(
    env: Mapping[str, str],
) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, str]]]:
    """The values the environment sets, by section, and the variable each came from."""
    sections: dict[str, dict[str, object]] = {}
    names: dict[str, dict[str, str]] = {}
    found = [
        (prefix + f.name.upper(), section, f.name)
        for section, prefix in ENV_PREFIX.items()
        for f in dataclasses.fields(_SECTION_TYPES[section])
        if prefix + f.name.upper() in env
    ]
    found += [
        (env_name, section, name)
        for env_name, (section, name) in ENV_ALIASES.items()
        if env.get(env_name, "") != ""
    ]
    for env_name, section, name in found:
        sections.setdefault(section, {})[name] = env[env_name]
        names.setdefault(section, {})[name] = env_name
    return sections, names


_SECTION_TYPES: Mapping[str, type] = {
    "kafka": KafkaSettings,
    "worker": WorkerSettings,
    "ts_auto_buffer": TSAutoBufferSettings,
    "vector_auto_buffer": VectorAutoBufferSettings,
    "compressed_wal_shipping": WalSettings,
    "facade": FacadeSettings,
}


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> Settings:
    """Read settings: defaults, then the YAML file, then the environment, then ``overrides``.

    ``path`` defaults to ``$THEMIS_CONFIG`` or ``config/features.yaml`` (a missing default
    file is fine; a missing explicit file is an error). ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    explicit = path is not None or "THEMIS_CONFIG" in env
    path = path or Path(env.get("THEMIS_CONFIG", str(DEFAULT_CONFIG_PATH)))
    merged: dict[str, dict[str, object]] = {name: {} for name in _SECTION_TYPES}
    if path.exists():
        for name, body in _yaml_sections(path).items():
            merged[name].update(body)
    elif explicit:
        raise ConfigError(f"config file {path} does not exist; set THEMIS_CONFIG to a valid path")
    from_env, env_names = _env_sections(env)
    for name, env_body in from_env.items():
        merged[name].update(env_body)
    for name, override in (overrides or {}).items():
        if name not in merged:
            raise ConfigError(f"unknown settings section {name!r}")
        merged[name].update(override)
        for key in override:
            env_names.get(name, {}).pop(key, None)
    origin = str(path)
    return Settings(
        **{
            name: _build_section(
                _SECTION_TYPES[name], name, merged[name], origin, env_names.get(name, {})
            )
            for name in _SECTION_TYPES
        }
    )


def with_overrides(settings: Settings, overrides: Mapping[str, Mapping[str, object]]) -> Settings:
    """``settings`` with ``overrides`` (``{section: {field: value}}``) applied and checked
    like every other source (CLI flags on top of the settings ``themis`` loaded)."""
    sections: dict[str, object] = {}
    for name, cls in _SECTION_TYPES.items():
        current: dict[str, object] = dataclasses.asdict(getattr(settings, name))
        current.update(overrides.get(name, {}))
        sections[name] = _build_section(cls, name, current, "overrides", {})
    return Settings(**sections)  # type: ignore[arg-type]


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load exactly ``settings``.

    Every field of every section as ``THEMIS_<SECTION>_<FIELD>``, the config file
    switched off, and the bootstrap address as ``KAFKA_BOOTSTRAP_SERVERS``.
    """
    env = {"THEMIS_CONFIG": os.devnull}
    for section, prefix in ENV_PREFIX.items():
        values = getattr(settings, section)
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if value is None:
                continue
            env[prefix + f.name.upper()] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap_servers or ""
    return env


def child_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without Themis settings, plus ``settings``.

    Inherited ``THEMIS_*`` variables (other than ``THEMIS_HOME``) are dropped: an alias
    such as ``THEMIS_TS_AUTO_BUFFER_MAX_POINTS`` would otherwise override a field.
    """
    base = os.environ if base is None else base
    env = {
        key: value
        for key, value in base.items()
        if not (key.startswith("THEMIS_") and key != "THEMIS_HOME")
        and key != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(settings_to_env(settings))
    return env
