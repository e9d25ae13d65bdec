"""The limits table is the one place limits are defined, the docs show it as it is, and a
refusal names the limit it enforces."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

import pipeline.limits as limits
from pipeline.errors import ThemisError
from pipeline.limits import LIMITS
from pipeline.ts.point import decode_point_json
from pipeline.validation import search_request
from pipeline.vectors.ops import decode_op_json

pytestmark = pytest.mark.unit

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _doc_rows() -> list[str]:
    text = OPERATIONS.read_text()
    table = text.split("### Limits", 1)[1].split("\n\n| limit |", 1)[1].split("\n\n", 1)[0]
    return [line for line in table.splitlines()[2:] if line.startswith("| `")]


def test_the_operations_table_lists_every_limit_with_its_value() -> None:
    expected = [
        f"| `{row.name}` | {row.value:,} | {row.applies_to} | {row.refused_with} |"
        if isinstance(row.value, int)
        else f"| `{row.name}` | {row.value} | {row.applies_to} | {row.refused_with} |"
        for row in LIMITS
    ]
    assert _doc_rows() == expected


def test_every_constant_of_the_module_is_a_row_of_the_table() -> None:
    constants = {name for name in limits.__all__ if name.startswith("MAX_")}
    rows = {row.name: row.value for row in LIMITS}
    assert constants <= set(rows)
    for name in constants:
        assert rows[name] == getattr(limits, name)


def test_no_other_module_defines_a_limit_of_the_table_again() -> None:
    root = Path(limits.__file__).resolve().parent
    names = "|".join(name for name in limits.__all__ if name.startswith("MAX_"))
    pattern = re.compile(rf"^({names})\s*(:\s*\w+(\[\w+\])?)?\s*=", re.M)
    defined = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "limits.py" and pattern.search(path.read_text())
    ]
    assert defined == []


def _point(**fields: object) -> bytes:
    return orjson.dumps({"metric": "m", "entity": "e", "timestamp_ms": 1, "value": 1.0} | fields)


def _op(**fields: object) -> bytes:
    return orjson.dumps({"op": "add", "pk": "a", "vector": [0.5] * 4} | fields)


_REFUSALS: list[tuple[str, Callable[[], object]]] = [
    ("MAX_METRIC_BYTES", lambda: decode_point_json(_point(metric="m" * 4097))),
    ("MAX_ENTITY_BYTES", lambda: decode_point_json(_point(entity="e" * 4097))),
    ("MAX_TAGS", lambda: decode_point_json(_point(tags={f"t{i}": "v" for i in range(257)}))),
    ("MAX_TAG_NAME_BYTES", lambda: decode_point_json(_point(tags={"n" * 1025: "v"}))),
    ("MAX_TAG_VALUE_BYTES", lambda: decode_point_json(_point(tags={"t": "v" * 16_385}))),
    (
        "MAX_SERIES_KEY_BYTES",
        lambda: decode_point_json(_point(tags={f"t{i:03}": "v" * 400 for i in range(200)})),
    ),
    ("MAX_PK_BYTES", lambda: decode_op_json(_op(pk="p" * 65_536), dimension=4)),
    (
        "vector_auto_buffer.max_metadata_bytes",
        lambda: decode_op_json(_op(metadata={"k": "v" * 20}), dimension=4, max_metadata_bytes=16),
    ),
    ("MAX_SEARCH_K", lambda: search_request({"vector": [0.5] * 4, "k": 10_001}, 4)),
    ("MAX_SEARCH_EF", lambda: search_request({"vector": [0.5] * 4, "ef": 100_001}, 4)),
]


@pytest.mark.parametrize(("name", "refuse"), _REFUSALS, ids=[name for name, _ in _REFUSALS])
def test_a_value_over_a_limit_is_refused_naming_the_limit(
    name: str, refuse: Callable[[], object]
) -> None:
    assert name in {row.name for row in LIMITS}
    with pytest.raises(ThemisError) as refused:
        refuse()
    assert f"({name})" in str(refused.value)
