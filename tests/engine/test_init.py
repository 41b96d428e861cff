"""engine/__init__.py: the public API is lazy (no Polars on `import engine`) yet visible to dir() and editors."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parents[2]


def test_dir_lists_the_public_api_before_first_use():
    code = "import engine, sys; names = dir(engine); print(sorted(set(engine.__all__) - set(names))); " \
           "print('polars' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "False"]  # every public name, and Polars still not imported


def test_every_lazy_name_is_exported_importable_and_typed():
    lazy = set(engine._LAZY)
    assert lazy <= set(engine.__all__)
    for name in engine.__all__:
        assert getattr(engine, name) is not None
    # editors and type checkers read the TYPE_CHECKING imports: they must cover every lazy name, from the
    # module the lazy import uses
    tree = ast.parse((ROOT / "engine" / "__init__.py").read_text())
    typed = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                typed.update({alias.name: imp.module for alias in imp.names})
    assert typed == {name: module for name, (module, _) in engine._LAZY.items()}
