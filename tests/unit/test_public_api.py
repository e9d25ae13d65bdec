from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.unit

PACKAGES = ["pipeline", "pipeline.ts", "pipeline.vectors", "pipeline.rag"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_names_only_what_the_package_defines(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    assert all(hasattr(module, item) for item in exported)
    public = {n for n in vars(module) if not n.startswith("_")}
    imported_modules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
    assert public - imported_modules - {"annotations"} <= set(exported)


def test_every_error_descends_from_themis_error() -> None:
    import pipeline.errors as errors

    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert all(issubclass(c, errors.ThemisError) for c in classes)
    assert errors.BufferOverflow("full", buffer_size=3).buffer_size == 3
    assert errors.BufferOverflow.retriable is True
    assert errors.ConfigError.retriable is False
