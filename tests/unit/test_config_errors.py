"""Every way a setting can be wrong is a ConfigError that names it; retries follow the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError, KafkaOperationFailed, ThemisError, call_with_retries

pytestmark = pytest.mark.unit


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "features.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("features: [unclosed", "not valid YAML"),
        ("- a list\n", "the top level must be a mapping"),
        ("surprise:\n  x: 1\n", "unknown section 'surprise'"),
        ("worker: 5\n", "section 'worker' must be a mapping"),
        ("worker:\n  web_port: true\n", "worker.web_port: True is not an integer"),
        ("worker:\n  web_port: 70000\n", "worker.web_port: 70000 is out of range"),
        ("facade:\n  write_deadline_s: true\n", "facade.write_deadline_s: True is not a number"),
        ("facade:\n  write_deadline_s: [1]\n", "is not a number"),
        ("facade:\n  host: [a]\n", "facade.host: ['a'] is not a string"),
        ("worker:\n  web_port: [1]\n", "is not an integer"),
    ],
)
def test_a_bad_config_file_is_an_error_naming_the_place(
    tmp_path: Path, yaml_text: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(path=_file(tmp_path, yaml_text), env={})
    assert needle in str(info.value)


def test_a_missing_explicit_config_file_and_an_unknown_override_section_are_errors(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="does not exist; set THEMIS_CONFIG"):
        load_settings(env={"THEMIS_CONFIG": str(tmp_path / "nope.yaml")})
    with pytest.raises(ConfigError, match="unknown settings section 'nope'"):
        load_settings(path=_file(tmp_path, ""), env={}, overrides={"nope": {}})


def test_strings_with_underscores_are_integers_and_paths_are_paths(tmp_path: Path) -> None:
    settings = load_settings(
        path=_file(tmp_path, ""),
        env={"THEMIS_TS_AUTO_BUFFER_MAX_POINTS": "1_000", "THEMIS_WORKER_DATA_DIR": "/x/y"},
    )
    assert settings.ts_auto_buffer.max_points_per_buffer == 1000
    assert settings.worker.data_dir == Path("/x/y")


def test_retriable_errors_are_retried_until_they_pass_and_others_raise_at_once() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise KafkaOperationFailed("broker busy", retriable=True)
        return "done"

    assert call_with_retries(flaky, timeout_s=60, sleep=waits.append) == "done"
    assert len(calls) == 3
    assert len(waits) == 2
    assert 0.15 <= waits[0] <= 0.25  # 0.2 s first, +-25 % jitter
    assert 0.3 <= waits[1] <= 0.5  # doubled

    def broken() -> str:
        calls.append(1)
        raise KafkaOperationFailed("bad request", retriable=False)

    calls.clear()
    with pytest.raises(KafkaOperationFailed, match="bad request"):
        call_with_retries(broken, timeout_s=60, sleep=waits.append)
    assert len(calls) == 1


def test_a_retriable_error_is_raised_once_the_deadline_would_pass() -> None:
    waits: list[float] = []

    def always_busy() -> str:
        raise KafkaOperationFailed("still busy", retriable=True)

    with pytest.raises(ThemisError, match="still busy"):
        call_with_retries(always_busy, timeout_s=1.0, sleep=waits.append)
    assert 0 < sum(waits) <= 1.0 * 1.25 + 2.0


@pytest.mark.parametrize(
    ("env", "overrides", "needle"),
    [
        ({"THEMIS_FACADE_PORT": "x"}, {}, "THEMIS_FACADE_PORT (facade.port): 'x' is not"),
        (
            {"THEMIS_WAL_COMPRESSION": "gzip"},
            {},
            "THEMIS_WAL_COMPRESSION (compressed_wal_shipping.compression_type): 'gzip'",
        ),
        ({"THEMIS_FACADE_PORT": "8080"}, {"facade": {"port": "y"}}, "facade.port: 'y' is not"),
    ],
)
def test_a_bad_value_names_the_variable_it_came_from(
    tmp_path: Path, env: dict[str, str], overrides: dict[str, dict[str, object]], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(path=_file(tmp_path, ""), env=env, overrides=overrides)
    assert str(info.value).startswith(needle)
