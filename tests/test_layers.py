"""Imports only go down: flows -> tasks -> sadtalker, with manifests beside them (used by tasks and flows).

Every module of the project is parsed (no import is run), and each ``import`` / ``from ... import`` in it,
at the top or inside a function, is checked against the layer rules below; so is an ``importlib``
call with a literal module name, so a dependency cannot hide behind one. There are no exceptions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Top-level packages each layer must not import.
FORBIDDEN: dict[str, frozenset[str]] = {
    "sadtalker": frozenset({"tasks", "flows", "manifests", "prefect"}),  # the model knows no orchestration
    "manifests": frozenset({"tasks", "flows"}),
    "tasks": frozenset({"flows"}),
}
_IMPORT_CALLS = {"import_module", "__import__"}


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``tree``, lazy ones and literal importlib calls included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in _IMPORT_CALLS and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def _upward_imports(package: str) -> list[str]:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no modules found under {package}/"
    problems = []
    for path in files:
        for line, module in _imported(ast.parse(path.read_text(), str(path))):
            if module.split(".")[0] in FORBIDDEN[package]:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return problems


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package: str) -> None:
    assert _upward_imports(package) == []


def test_the_check_sees_lazy_and_importlib_imports() -> None:
    source = "def f():\n    from flows import cli\n    importlib.import_module('prefect.tasks')\n"
    assert _imported(ast.parse(source)) == [(2, "flows"), (3, "prefect.tasks")]


def test_importing_the_orchestration_loads_neither_torch_nor_the_pipeline() -> None:
    """The stage tasks and the flow import ``sadtalker.pipeline`` / ``sadtalker.loader`` when they run
    (tasks/__init__.py says why); ``tasks`` and ``flows`` themselves import no Prefect, so the demo can set
    Prefect's home folder after importing them."""
    probe = (
        "import sys, flows, tasks\n"
        "light = [m for m in ('prefect', 'torch') if m in sys.modules]\n"
        "import flows.render_batch, tasks.face, tasks.coeffs, tasks.render, tasks.qc\n"
        "heavy = [m for m in ('torch', 'sadtalker.pipeline', 'sadtalker.loader') if m in sys.modules]\n"
        "print(light, heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip().splitlines()[-1] == "[] []"
