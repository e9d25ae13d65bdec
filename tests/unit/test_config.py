from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError

pytestmark = pytest.mark.unit


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "features.yaml"
    path.write_text(text)
    return path


def test_defaults_match_the_roadmap(tmp_path: Path) -> None:
    settings = load_settings(path=_yaml(tmp_path, ""), env={})
    assert settings.ts_auto_buffer.max_points_per_buffer == 1000
    assert settings.ts_auto_buffer.flush_interval_ms == 5000
    assert settings.vector_auto_buffer.max_vectors_per_buffer == 1000
    assert settings.compressed_wal_shipping.compression_type == "zstd"
    assert settings.compressed_wal_shipping.compression_level == 3


def test_yaml_then_environment_then_overrides(tmp_path: Path) -> None:
    path = _yaml(
        tmp_path,
        "features:\n  ts_auto_buffer:\n    max_points_per_buffer: 10\n    flush_interval_ms: 7\n",
    )
    env = {"THEMIS_TS_AUTO_BUFFER_FLUSH_INTERVAL_MS": "99"}
    settings = load_settings(path=path, env=env)
    assert settings.ts_auto_buffer.max_points_per_buffer == 10
    assert settings.ts_auto_buffer.flush_interval_ms == 99
    overridden = load_settings(
        path=path, env=env, overrides={"ts_auto_buffer": {"flush_interval_ms": 5}}
    )
    assert overridden.ts_auto_buffer.flush_interval_ms == 5


def test_roadmap_environment_names_are_honoured(tmp_path: Path) -> None:
    env = {
        "THEMIS_TS_AUTO_BUFFER_ENABLED": "false",
        "THEMIS_TS_AUTO_BUFFER_MAX_POINTS": "250",
        "THEMIS_TS_AUTO_BUFFER_FLUSH_INTERVAL_MS": "100",
        "THEMIS_VECTOR_AUTO_BUFFER_ENABLED": "0",
        "THEMIS_VECTOR_AUTO_BUFFER_MAX_VECTORS": "64",
        "THEMIS_WAL_COMPRESSION": "none",
        "THEMIS_WAL_COMPRESSION_LEVEL": "19",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9999",
    }
    settings = load_settings(path=_yaml(tmp_path, ""), env=env)
    assert settings.ts_auto_buffer.enabled is False
    assert settings.ts_auto_buffer.max_points_per_buffer == 250
    assert settings.ts_auto_buffer.flush_interval_ms == 100
    assert settings.vector_auto_buffer.enabled is False
    assert settings.vector_auto_buffer.max_vectors_per_buffer == 64
    assert settings.compressed_wal_shipping.compression_type == "none"
    assert settings.compressed_wal_shipping.compression_level == 19
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9999"


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        (
            {"THEMIS_WAL_COMPRESSION": "gzip"},
            ["compressed_wal_shipping.compression_type", "zstd, none"],
        ),
        ({"THEMIS_WAL_COMPRESSION_LEVEL": "23"}, ["compression_level", "<= 22"]),
        ({"THEMIS_TS_AUTO_BUFFER_MAX_POINTS": "lots"}, ["max_points_per_buffer", "not an integer"]),
        ({"THEMIS_TS_AUTO_BUFFER_ENABLED": "maybe"}, ["ts_auto_buffer.enabled", "true or false"]),
        ({"THEMIS_FACADE_WRITE_DEADLINE_S": "soon"}, ["facade.write_deadline_s", "not a number"]),
        ({"THEMIS_FACADE_BODY_TIMEOUT_S": "0"}, ["facade.body_timeout_s", ">= 0.05"]),
        ({"THEMIS_FACADE_HEADER_TIMEOUT_S": "nan"}, ["facade.header_timeout_s", "out of range"]),
    ],
)
def test_invalid_value_names_the_key_and_allowed_values(
    tmp_path: Path, env: dict[str, str], needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(path=_yaml(tmp_path, ""), env=env)
    for needle in needles:
        assert needle in str(info.value)


def test_facade_timeouts_are_seconds_with_fractions(tmp_path: Path) -> None:
    env = {"THEMIS_FACADE_WRITE_DEADLINE_S": "2.5", "THEMIS_FACADE_HEADER_TIMEOUT_S": "4"}
    facade = load_settings(path=_yaml(tmp_path, ""), env=env).facade
    assert (facade.write_deadline_s, facade.header_timeout_s, facade.body_timeout_s) == (
        2.5,
        4.0,
        30.0,
    )


def test_unknown_yaml_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "features:\n  ts_auto_buffer:\n    max_pointz: 5\n")
    with pytest.raises(ConfigError, match=r"ts_auto_buffer\.max_pointz"):
        load_settings(path=path, env={})


def test_repository_features_yaml_loads() -> None:
    repo = Path(__file__).resolve().parents[2]
    settings = load_settings(path=repo / "config" / "features.yaml", env={})
    assert settings.kafka.topic_namespace == "themis"
    assert settings.topic("ts.points") == "themis.ts.points"
