"""Guards on the project's layout and layering."""

from __future__ import annotations

import ast
from pathlib import Path

import engine
import plugins

ROOT = Path(__file__).resolve().parents[2]


def test_packages_are_this_projects():
    # `engine` and `plugins` are generic names: make sure we import ours.
    assert Path(engine.__file__).resolve().is_relative_to(ROOT)
    assert Path(plugins.__file__).resolve().is_relative_to(ROOT)


def test_engine_never_imports_plugins():
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n == "plugins" or n.startswith("plugins.")]
    assert offenders == []
