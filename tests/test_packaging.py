"""Packaging: every third-party module seqtool imports is declared in pyproject.toml.

A fresh `pip install .` gets only the declared dependencies; an import that some other package happens
to bring in (click came with transformers) passes every in-process test and breaks every new machine.
.ci/run also installs into a new venv without extras; this test names the culprit in seconds.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import name → distribution name, where they differ or the package may be absent here
DIST_OF = {"yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow"}


def _requirements() -> tuple[set[str], set[str]]:
    """(required, optional) distribution names from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}

    optional = set().union(*(names(v) for v in project.get("optional-dependencies", {}).values()))
    return names(project["dependencies"]), optional


def _imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(top-level module, line, at module level?) for every absolute import in a file."""
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name.split(".")[0], node.lineno, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node.lineno, id(node) in top_level))
    return found


def _third_party_imports() -> list[tuple[str, str, bool]]:
    """(distribution, 'file:line', at module level?) for every non-stdlib, non-seqtool import."""
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    out = []
    for path in sorted((ROOT / "seqtool").rglob("*.py")):
        for module, line, top in _imports(ast.parse(path.read_text(), str(path))):
            if module in sys.stdlib_module_names or module in ("seqtool", "__future__"):
                continue
            dist = DIST_OF.get(module) or (dists.get(module) or [module])[0]
            out.append((dist.lower().replace("_", "-"), f"{path.relative_to(ROOT)}:{line}", top))
    return out


def test_every_import_is_a_declared_dependency():
    required, optional = _requirements()
    undeclared = [f"{where} imports {dist}" for dist, where, _ in _third_party_imports()
                  if dist not in required | optional]
    assert not undeclared, "declare these in pyproject.toml [project] dependencies: " + "; ".join(undeclared)


def test_optional_packages_are_imported_only_where_used():
    # An extra's package imported at module level would break `import seqtool...` without the extra.
    required, optional = _requirements()
    eager = [f"{where} imports {dist}" for dist, where, top in _third_party_imports()
             if dist in optional - required and top]
    assert not eager, "import these inside the function that needs them: " + "; ".join(eager)


def test_the_checker_sees_click_in_the_cli():
    # The test above must not pass vacuously: the CLI's own `import click` is found and declared.
    found = {(dist, where.split(":")[0]) for dist, where, _ in _third_party_imports()}
    assert ("click", "seqtool/cli/__init__.py") in found
    assert "click" in _requirements()[0]
