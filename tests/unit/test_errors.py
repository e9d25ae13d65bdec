"""The retry loop reads ``retriable``: a full buffer is retried, a bad setting is not."""

from __future__ import annotations

import pytest

from pipeline.errors import BufferOverflow, ConfigError, call_with_retries

pytestmark = pytest.mark.unit


def test_a_buffer_overflow_is_retried_with_growing_delays_until_the_call_succeeds() -> None:
    outcomes: list[Exception | str] = [
        BufferOverflow("full", buffer_size=3),
        BufferOverflow("full", buffer_size=2),
        "done",
    ]
    delays: list[float] = []

    def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert call_with_retries(call, timeout_s=60, first_delay_s=0.2, sleep=delays.append) == "done"
    assert outcomes == []
    assert len(delays) == 2
    assert 0.15 <= delays[0] <= 0.25  # 0.2 s +-25 %
    assert 0.3 <= delays[1] <= 0.5  # doubled


def test_a_config_error_is_raised_at_once_without_a_retry() -> None:
    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        raise ConfigError("kafka.bootstrap_servers is empty")

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"a config error was retried (after {seconds:.2f} s)")

    with pytest.raises(ConfigError, match="bootstrap_servers"):
        call_with_retries(call, timeout_s=60, sleep=no_sleep)
    assert calls == [1]


def test_a_buffer_overflow_carries_the_buffer_size_it_hit() -> None:
    assert BufferOverflow("full", buffer_size=3).buffer_size == 3
