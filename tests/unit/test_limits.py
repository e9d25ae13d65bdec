"""The limits table is the one place limits are defined, and the docs show it as it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pipeline.limits as limits
from pipeline.limits import LIMITS

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
