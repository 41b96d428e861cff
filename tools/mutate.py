"""Mutation testing: small deliberate bugs, one at a time, each run against the tests that guard its module.

    nice -n 19 .venv/bin/python tools/mutate.py [MODULE ...] [--max N] [--results FILE] [--list]

MODULE is a key of TARGETS (rules, playbook, features, io, abc, adc, rfm); default: all, in that order.
Each mutant changes one token of the module's code (comparison, arithmetic, boolean and bitwise
operators, ``and``/``or``, ``not``/``~`` removed, ``True``/``False``, whole numbers +1) and runs the
module's test files with ``pytest -x`` and hypothesis shrinking off (TIERBOOK_NO_SHRINK=1); a
failing run (or one taking 5x the unmutated run) kills it. The work happens in a copy of the
repository in a temporary directory, so the working tree is never touched and a run can be
stopped at any time; results go to one JSON line per mutant (default
test-artifacts/mutation/results.jsonl) and a re-run skips the mutants already there. ``--report``
prints the score per module and every survivor. docs/testing.md has the scores and what the
survivors mean; docs/decisions/0012-mutation-testing.md why this tool and not mutmut or cosmic-ray.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: module key -> (source file, functions to mutate or None for the whole file, test files and pytest options)
TARGETS: dict[str, tuple[str, tuple[str, ...] | None, tuple[str, ...]]] = {
    "rules": ("engine/rules.py", None,
              ("tests/engine/test_rules.py", "tests/engine/test_rules_sql.py")),
    "playbook": ("engine/playbook/evaluate.py", ("evaluate_rules", "_playbook_result"),
                 ("tests/engine/test_playbook_semantics.py",
                  "tests/engine/test_playbook.py::test_capacity_keeps_the_highest_monetary_and_lists_the_rest",
                  "tests/engine/test_playbook.py::test_hit_policy_all_gives_every_matching_rule")),
    "features": ("engine/features.py", None,
                 ("tests/engine/test_features.py", "tests/engine/test_properties.py", "-k",
                  "not identical_across and not threads_and_row_order")),
    "io": ("engine/io.py", None, ("tests/engine/test_io.py", "tests/engine/test_crash_safety.py",
                                  "tests/engine/test_security.py")),
    "abc": ("plugins/abc/__init__.py", None, ("tests/plugins/abc",)),
    "adc": ("plugins/adc/__init__.py", None, ("tests/plugins/adc",)),
    "rfm": ("plugins/rfm/__init__.py", None, ("tests/plugins/rfm",)),
}

OPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==", "+": "-", "-": "+", "*": "/",
       "/": "*", "//": "/", "&": "|", "|": "&", "%": "*"}
NAMES = {"and": "or", "or": "and", "True": "False", "False": "True", "not": "", "is": "is not"}


@dataclass(frozen=True)
class Mutant:
    module: str
    line: int
    col: int
    old: str
    new: str

    @property
    def key(self) -> str:
        return f"{self.module}:{self.line}:{self.col}:{self.old}->{self.new}"


def _code_lines(source: str, functions: tuple[str, ...] | None) -> tuple[set[int], list[tuple]]:
    """Lines that may be mutated (inside the named functions, or anywhere), and the spans of type
    annotations, which never run (``from __future__ import annotations``): mutating them is no test."""
    tree = ast.parse(source)
    lines: set[int] = set()
    spans = []
    for node in ast.walk(tree):
        if functions is None and isinstance(node, ast.Module):
            lines |= set(range(1, len(source.splitlines()) + 1))
        if functions is not None and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.name in functions:
            lines |= set(range(node.lineno, node.end_lineno + 1))
        annotations = []
        if isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        if isinstance(node, ast.arg) and node.annotation is not None:
            annotations.append(node.annotation)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            annotations.append(node.returns)
        spans += [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in annotations]
    return lines, spans


def mutants(module: str) -> list[Mutant]:
    path, functions, _ = TARGETS[module]
    source = (ROOT / path).read_text()
    allowed, annotations = _code_lines(source, functions)
    out = []
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for i, tok in enumerate(tokens):
        line, col = tok.start
        if line not in allowed or any(a <= tok.start < b for a, b in annotations):
            continue
        text = tok.string
        if tok.type == tokenize.OP and text in OPS:
            out.append(Mutant(module, line, col, text, OPS[text]))
        elif tok.type == tokenize.OP and text == "~":
            out.append(Mutant(module, line, col, "~", ""))
        elif tok.type == tokenize.NAME and text in NAMES:
            if text == "is" and i + 1 < len(tokens) and tokens[i + 1].string == "not":
                out.append(Mutant(module, line, col, "is not", "is"))
                continue
            if text == "not" and i > 0 and tokens[i - 1].string == "is":
                continue
            if text == "not" and i + 1 < len(tokens) and tokens[i + 1].string == "in":
                out.append(Mutant(module, line, col, "not in", "in"))
                continue
            out.append(Mutant(module, line, col, text, NAMES[text]))
        elif tok.type == tokenize.NUMBER and text.isdigit():
            out.append(Mutant(module, line, col, text, str(int(text) + 1)))
    return out


def apply(source: str, m: Mutant) -> str:
    lines = source.splitlines(keepends=True)
    row = lines[m.line - 1]
    assert row[m.col:m.col + len(m.old)] == m.old, (m, row)
    lines[m.line - 1] = row[:m.col] + m.new + row[m.col + len(m.old):]
    return "".join(lines)


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in files.splitlines():
        src = ROOT / rel
        if src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def _run_tests(copy: Path, tests: tuple[str, ...], timeout: float | None) -> tuple[bool, float]:
    """True if the tests pass. The copy comes first on sys.path (cwd), ahead of the editable install."""
    env = {**os.environ, "TIERBOOK_NO_SHRINK": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "TIERBOOK_LOAD_PLUGINS": os.environ.get("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")}
    env.pop("CI", None)
    start = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", *tests],
                           cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - start
    return r.returncode == 0, time.perf_counter() - start


def _stop(signum, frame):  # a stopped run (kill PID) still removes its copy of the repository
    raise KeyboardInterrupt


def run(modules: list[str], results: Path, max_mutants: int | None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    done = {}
    if results.exists():
        for line in results.read_text().splitlines():
            rec = json.loads(line)
            done[rec["key"]] = rec
    results.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tierbook-mutants-") as tmp:
        copy = Path(tmp)
        _copy_repo(copy)
        for module in modules:
            path, _, tests = TARGETS[module]
            source = (copy / path).read_text()
            ok, baseline = _run_tests(copy, tests, None)
            if not ok:
                print(f"{module}: the tests fail without any mutation; skipped", flush=True)
                continue
            todo = [m for m in mutants(module) if m.key not in done][:max_mutants]
            print(f"{module}: {len(todo)} mutants to run (baseline {baseline:.1f} s)", flush=True)
            for m in todo:
                (copy / path).write_text(apply(source, m))
                try:
                    passed, seconds = _run_tests(copy, tests, timeout=max(30.0, 5 * baseline))
                finally:
                    (copy / path).write_text(source)
                rec = {**asdict(m), "key": m.key, "killed": not passed, "seconds": round(seconds, 1)}
                done[m.key] = rec
                with results.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"  {'killed  ' if not passed else 'SURVIVED'} {path}:{m.line} {m.old!r} -> {m.new!r}"
                      f" ({seconds:.1f} s)", flush=True)
    return report(results)


def report(results: Path) -> int:
    recs = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    for module in TARGETS:
        current = {m.key for m in mutants(module)}  # results of code that has changed since do not count
        mine = [r for r in recs if r["module"] == module and r["key"] in current]
        total = len(current)
        if not mine:
            print(f"{module}: not measured ({total} mutants)")
            continue
        killed = sum(r["killed"] for r in mine)
        print(f"{module}: {killed}/{len(mine)} killed ({100 * killed / len(mine):.1f}%), "
              f"{len(mine)} of {total} mutants run")
        for r in mine:
            if not r["killed"]:
                print(f"  survived: {TARGETS[module][0]}:{r['line']} {r['old']!r} -> {r['new']!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--max", type=int, default=None, help="at most N new mutants per module")
    parser.add_argument("--results", type=Path, default=ROOT / "test-artifacts" / "mutation" / "results.jsonl")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--report", action="store_true", help="print the scores of the results file and exit")
    args = parser.parse_args(argv)
    modules = args.modules or list(TARGETS)
    unknown = [m for m in modules if m not in TARGETS]
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; modules: {', '.join(TARGETS)}")
    if args.list:
        for module in modules:
            for m in mutants(module):
                print(m.key)
        return 0
    if args.report:
        return report(args.results)
    return run(modules, args.results, args.max)


if __name__ == "__main__":
    sys.exit(main())
