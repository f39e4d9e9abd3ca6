"""The package keeps the pipeline's shape: stages import only from earlier stages, modules stay
small, and the CLI's lazy command table matches the commands its modules define."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pytei"

# The stages in data-flow order; a module may import from its own stage or an earlier one.
STAGES: list[tuple[str, ...]] = [
    ("pytei._version", "pytei.errors"),
    ("pytei.config", "pytei._secrets", "pytei._subprocess"),
    ("pytei.cache",),
    ("pytei.engine",),
    ("pytei.client",),
    ("pytei.fork",),
    ("pytei.build",),
    ("pytei.models",),
    ("pytei.serving",),
    ("pytei.local",),
    ("pytei.bench",),
    ("pytei.deploy",),
    ("pytei.cli", "pytei.pytest_plugin", "pytei.server", "pytei.__main__", "pytei"),
]
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> int:
    best: tuple[int, int] | None = None  # (length of the matching prefix, stage)
    for index, prefixes in enumerate(STAGES):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    if best is None:
        raise AssertionError(f"{module} belongs to no stage: add it to STAGES")
    return best[1]


def imports_of(path: Path) -> set[str]:
    """Every pytei module ``path`` imports, at any depth (function-level and TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "pytei"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pytei":
            found.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("pytei."):
                found.add(arg.value)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_no_import_from_a_later_stage(path: Path) -> None:
    module = module_name(path)
    mine = stage_of(module)
    later = sorted(m for m in imports_of(path) if stage_of(m) > mine)
    assert not later, f"{module} (stage {STAGES[mine][0]}) imports from later stages: {later}"


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_modules_stay_under_the_size_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module_name(path)} has {lines} lines; split it"


def test_the_root_keeps_only_the_facade_and_cross_cutting_modules() -> None:
    root = {p.name for p in PACKAGE.glob("*.py")}
    assert root == {
        "__init__.py", "__main__.py", "_version.py", "errors.py", "config.py", "cache.py",
        "_subprocess.py", "_secrets.py", "pytest_plugin.py", "server.py",
    }  # fmt: skip


def test_lazy_command_table_matches_the_modules() -> None:
    from pytei.cli._app import LAZY_COMMANDS

    defined: dict[str, str] = {}
    for module in sorted(set(LAZY_COMMANDS.values())):
        for command in importlib.import_module(f"pytei.cli.{module}").COMMANDS:
            assert command.name not in defined, f"{command.name} is defined twice"
            defined[str(command.name)] = module
    assert defined == LAZY_COMMANDS


def test_the_old_import_paths_keep_working() -> None:
    import pytei
    from pytei.client import Client, Embeddings, Engine, hybrid_scores
    from pytei.server import RouterSpec, ServerProcess, serve

    assert pytei.Client is Client and pytei.serve is serve and pytei.ServerProcess is ServerProcess
    assert pytei.hybrid_scores is hybrid_scores and pytei.Engine is Engine
    assert Embeddings.__module__ == "pytei.engine.types" and RouterSpec.__module__ == "pytei.serving.spec"
