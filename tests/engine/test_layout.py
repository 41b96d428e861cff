"""Guards on the project's layout and layering."""

from __future__ import annotations

import ast
import subprocess
import sys
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


# ------------------------------------------------ engine/ knows no built-in by name
def _builtins() -> tuple[set[str], set[str]]:
    """The built-in classifiers' names and output columns, and the plugin packages' module names.

    Read from what is installed and from plugins/, not written out here, so a built-in added
    later is covered too.
    """
    from engine.registry import get_registry

    packages = {p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()}
    registry = get_registry(allow=sorted(packages), strict=False)
    names = set(packages)
    for clf in registry.classifiers.values():
        if clf.expressions.__module__.split(".")[0] == "plugins":
            names.add(clf.name)
            names.update(o.column for o in clf.output_specs())
    return names, {f"plugins.{p}" for p in packages}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes: documentation may use a built-in as an example."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                out.add(id(first.value))
    return out


def _words(text: str) -> set[str]:
    """Words of an identifier or text: split at non-letters and camel case (``_AbcEvaluator`` -> abc, evaluator)."""
    import re

    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return {w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w}


def builtin_mentions(source: str, names: set[str], modules: set[str]) -> list[str]:
    """Where ``source`` names a built-in classifier, one of its columns or a plugins.* module.

    Checked: every identifier (names, attributes, definitions, arguments, keywords, imports) and every
    string that is not a docstring (f-string parts included), i.e. everything the running code can use
    to find, select or mention a built-in. Words are whole (``tabcd`` is not ``abc``), so ``abc``
    may only appear as the standard library's ``abc`` / ``collections.abc`` in an import or attribute.
    Column names with an underscore (``rfm_segment``) are matched as whole snake-case names.
    """
    import re

    tree = ast.parse(source)
    docs = _docstrings(tree)
    stdlib_abc_attr = set()
    # names bound by the standard library's abc ("from abc import ABC"): their uses are the stdlib's
    stdlib = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level
              and n.module in ("abc", "collections.abc") for a in n.names}
    found = []
    plain = {n for n in names if "_" not in n}
    snake = {n for n in names if "_" in n}

    def check(text: str, what: str, line: int) -> None:
        hits = sorted(_words(text) & plain)
        hits += sorted(n for n in snake if re.search(rf"(?<![A-Za-z0-9]){re.escape(n)}(?![A-Za-z0-9])", text))
        hits += sorted(m for m in modules if re.search(rf"(?<![\w.]){re.escape(m)}(?![\w])", text))
        found.extend(f"line {line}: {what} {text!r} names {h}" for h in hits)

    for node in ast.walk(tree):
        # the standard library's abc: "import abc", "from abc import ...", "from collections.abc import ...",
        # "collections.abc.Mapping"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in ("abc", "collections.abc"):
                    check(alias.name, "import", node.lineno)
                if alias.asname:
                    check(alias.asname, "import as", node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module not in ("abc", "collections.abc"):
                check(node.module or "", "from-import", node.lineno)
                for alias in node.names:
                    check(alias.name, "imported name", node.lineno)
                    if alias.asname:
                        check(alias.asname, "import as", node.lineno)
        elif isinstance(node, ast.Attribute):
            if node.attr == "abc" and isinstance(node.value, ast.Name) and node.value.id == "collections":
                stdlib_abc_attr.add(id(node))
            else:
                check(node.attr, "attribute", node.lineno)
        elif isinstance(node, ast.Name) and node.id not in stdlib:
            check(node.id, "name", node.lineno)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            check(node.name, "definition", node.lineno)
        elif isinstance(node, ast.arg):
            check(node.arg, "argument", node.lineno)
        elif isinstance(node, ast.keyword) and node.arg:
            check(node.arg, "keyword", node.value.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            check(node.value, "string", node.lineno)
    return found


def test_the_mention_check_is_meaningful():
    names, modules = {"abc", "rfm", "rfm_segment"}, {"plugins.abc"}
    ok = ('"""Docs may say abc."""\nimport abc\nfrom abc import ABC\nfrom collections.abc import Mapping\n'
          'import collections.abc\nx = collections.abc.Mapping\ny = "tabcd rfmx plugins.md"\nclass K(ABC): pass\n')
    assert builtin_mentions(ok, names, modules) == []
    for bad in ('x = "abc"', 'x = f"{n}.abc"', "def f(abc): pass", "class _AbcEvaluator: pass", "x.rfm = 1",
                'x = "rfm_segment"', 'import_module("plugins.abc")', "from plugins.abc import X", "f(rfm=1)", "from x import Rfm",
                'x = "use RFM scores"', "from .plugins.abc import X"):
        assert builtin_mentions(bad, names, modules), bad


def test_engine_names_no_builtin_classifier():
    """The core knows classifiers only through the registry: engine/ names no built-in, strings included."""
    names, modules = _builtins()
    assert {"abc", "adc", "rfm", "rfm_segment", "value_tier"} <= names  # what is looked for is really there
    offenders = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        offenders += [f"{path.relative_to(ROOT)}: {m}" for m in builtin_mentions(path.read_text(), names, modules)]
    assert offenders == []


def _script(name: str) -> str:
    script = Path(sys.executable).with_name(name)
    assert script.exists(), f"{name} is not installed next to {sys.executable}: install the test extra"
    return str(script)


def test_import_contracts():
    # pyproject.toml [tool.importlinter]: engine's layers, engine never imports plugins, the built-in plugins
    # independent of each other (docs/decisions/0008-lint-rules.md). Imports inside functions count too.
    proc = subprocess.run([_script("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_ruff():
    # pyproject.toml [tool.ruff]: rules that find real problems (docs/decisions/0008-lint-rules.md);
    # `ruff check --fix` repairs most of what it reports.
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
