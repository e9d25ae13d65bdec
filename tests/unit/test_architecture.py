"""The layout holds: imports run one way down the layers, no circles, one home per mechanism.

The layers, lowest first (docs/architecture.md draws the same map). A module may import
its own package and the layers below; two packages of one layer do not import each other.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import pipeline
from pipeline.errors import ThemisError

pytestmark = pytest.mark.unit

ROOT = Path(pipeline.__file__).resolve().parent
TESTS = Path(__file__).resolve().parents[1]

LAYERS: list[set[str]] = [
    {"errors", "limits", "throttle"},
    {"config", "metrics", "http_heads"},
    {"pipeline"},
    {"kafka"},
    {"ingest"},
    {"wal"},
    {"binary"},
    {"ts", "vectors"},
    {"validation"},
    {"replication"},
    {"worker"},
    {"facade", "rag"},
    {"bench", "demo", "stack"},
    {"app", "cli"},
]
LAYER_OF = {unit: level for level, units in enumerate(LAYERS) for unit in units}
MAX_MODULE_LINES = 500


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _unit(module: str) -> str:
    """The layer unit of a module: its top-level package or module under ``pipeline``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pipeline"


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _is_submodule(dotted: str) -> bool:
    """Whether ``dotted`` names a module file (Python or compiled) of the package."""
    path = ROOT.parent.joinpath(*dotted.split("."))
    return dotted in MODULES or any(path.parent.glob(path.name + ".*"))


def _imports(module: str, *, runtime_only: bool = False) -> set[str]:
    """The ``pipeline`` modules that ``module`` imports (anywhere in the file)."""
    tree = ast.parse(MODULES[module].read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if runtime_only and _type_checking_only(node, parents):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            attributes = [name for name in submodules if not _is_submodule(name)]
            names = [name for name in submodules if name in MODULES]
            if attributes:
                names.append(base)
        out |= {name for name in names if name in MODULES and name != module}
    return out


def test_every_import_runs_down_the_layers() -> None:
    upward = []
    for module in MODULES:
        source = _unit(module)
        for target in _imports(module):
            dest = _unit(target)
            if dest == source:
                continue
            if LAYER_OF[dest] >= LAYER_OF[source]:
                upward.append(f"{module} -> {target} ({source} is not above {dest})")
    assert upward == []


def test_every_package_has_a_layer() -> None:
    assert {_unit(m) for m in MODULES} <= set(LAYER_OF)


def test_there_is_no_import_circle() -> None:
    graph = {module: _imports(module, runtime_only=True) for module in MODULES}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # A package importing its own submodules in __init__ is not a circle unless they import
    # the package root back; those edges are real and counted above.
    assert circles == []


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        str(path.relative_to(ROOT.parent)): n
        for path in MODULES.values()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_every_themis_error_is_defined_in_the_errors_module() -> None:
    elsewhere = []
    for module in MODULES:
        loaded = importlib.import_module(module)
        for name, value in vars(loaded).items():
            if (
                inspect.isclass(value)
                and issubclass(value, ThemisError)
                and value.__module__ != "pipeline.errors"
            ):
                elsewhere.append(f"{value.__module__}.{name}")
    assert elsewhere == []


def test_every_error_class_is_exported_from_the_errors_module() -> None:
    import pipeline.errors as errors

    classes = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, ThemisError)
    }
    assert classes <= set(errors.__all__)


def _calls(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text())
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == name)
        )
    ]


def test_settings_are_loaded_only_at_the_entry_points() -> None:
    callers = {
        module: lines
        for module, path in MODULES.items()
        if (lines := _calls(path, "load_settings"))
    }
    assert set(callers) <= {"pipeline.cli", "pipeline.app"}


def test_only_the_command_line_has_a_main() -> None:
    mains = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        if module != "pipeline.cli" and any(
            isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body
        ):
            mains.append(module)
        if module != "pipeline.cli" and "__main__" in path.read_text():
            mains.append(f"{module} (__main__ guard)")
    assert mains == []


def test_confluent_consumers_are_created_in_one_place() -> None:
    creators = {
        module
        for module, path in MODULES.items()
        if _calls(path, "Consumer") and module != "pipeline.kafka.consumer"
    }
    assert creators == set()


def test_no_test_imports_the_conftest() -> None:
    importers = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if "tests.conftest" in path.read_text() and path.name != "test_architecture.py"
    ]
    assert importers == []


def _packages() -> list[str]:
    names = ["pipeline"]
    names += [f"pipeline.{info.name}" for info in pkgutil.iter_modules([str(ROOT)]) if info.ispkg]
    return sorted(names)


def _isort_order(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("name", _packages())
def test_every_package_has_a_sorted_complete_all(name: str) -> None:
    package = importlib.import_module(name)
    exported = list(package.__all__)
    assert exported == sorted(exported, key=_isort_order)
    assert all(hasattr(package, item) for item in exported)
    public = {n for n in vars(package) if not n.startswith("_")}
    submodules = {n for n in public if inspect.ismodule(getattr(package, n))}
    assert public - submodules - {"annotations"} <= set(exported)


def test_every_error_descends_from_themis_error() -> None:
    import pipeline.errors as errors

    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert all(issubclass(c, errors.ThemisError) for c in classes)
