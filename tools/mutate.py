"""Mutation testing: small deliberate bugs, one at a time, each run against the tests that guard its module.

    nice -n 19 .venv/bin/python tools/mutate.py [MODULE ...] [--max N] [--only TEXT ...] [--survivors]
    .venv/bin/python tools/mutate.py --report | --list

MODULE is a key of TARGETS (rules, playbook, features, io, abc, adc, rfm, clv); default: all, in that order.
Each mutant changes one token of the module's code (comparison, arithmetic, boolean and bitwise
operators, ``and``/``or``, ``not``/``~`` removed, ``True``/``False``, whole numbers +1) and runs the
tests that guard the module with ``pytest -x`` and hypothesis shrinking off (TIERBOOK_NO_SHRINK=1);
a failing run (or one taking 10x the unmutated run) kills it.

The tests that reach a mutant run first. Before its mutants, the module's test files run once,
unmutated, with a line tracer on the module's files (this file is also the pytest plugin that does
it, ``-p mutate``): it records which test executes which line. A mutant then runs the tests that
executed its statement first, then all the others; a mutant of a line that runs at import time (a
constant, a decorator) or that no test executed in-process runs them all. Within each group the
tests run cheapest first: by their time over one plus the mutants of the module they have killed so
far (each result records the test that killed it, ``killed_by``), so a test that often kills comes
before one as slow that never has.
Each run is forked from this process, which has imported the heavy libraries (not tierbook) once.
Mutants run in a fixed random order per module: a partial run (or ``--max N``) is a uniform sample.

The work happens in a copy of the repository in a temporary directory, so the working tree is
never touched and a run can be stopped at any time; results go to one JSON line per mutant
(default test-artifacts/mutation/results.jsonl) and a re-run skips the mutants already there.
``--report`` prints the score per module and every survivor. docs/testing.md has the scores and
what the survivors mean; docs/decisions/0012-mutation-testing.md why this tool and not mutmut or
cosmic-ray.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: module key -> (the code mutated: (source file, functions to mutate or None for the whole file), ...),
#: and the test files (and pytest options) that guard it: the mutated file itself too, for its doctests.
TARGETS: dict[str, tuple[tuple[tuple[str, tuple[str, ...] | None], ...], tuple[str, ...]]] = {
    "rules": ((("engine/rules.py", None),),
              ("engine/rules.py", "tests/engine/test_rules.py", "tests/engine/test_rules_sql.py",
               # not the data-file fuzzer (a third of the module's test time): it runs `classify`, in-process, on
               # generated CSV bytes and compiles no rule (the tracer sees no line of rules.py in it)
               "tests/engine/test_fuzz.py", "-k", "not test_fuzz_data_files")),
    "playbook": ((("engine/playbook/evaluate.py", None),),
                 ("tests/engine/test_playbook_semantics.py", "tests/engine/test_playbook.py",
                  "tests/engine/test_reconciliation.py", "tests/engine/test_holdout.py")),
    "features": ((("engine/features.py", None), ("engine/feature_table.py", None)),
                 ("engine/features.py", "tests/engine/test_features.py", "tests/engine/test_features_ordered.py",
                  "tests/engine/test_features_dense.py",
                  # the dense pass's bucket mode (the snapshot scan's) lives in engine/features.py
                  "tests/engine/test_snapshots_dense.py",
                  "tests/engine/test_feature_table.py", "tests/engine/test_properties.py", "-k",
                  "not identical_across and not threads_and_row_order")),
    "io": ((("engine/io.py", None), ("engine/playbook/write.py", None)),
           ("engine/io.py", "tests/engine/test_io.py", "tests/engine/test_io_faults.py",
            "tests/engine/test_crash_safety.py", "tests/engine/test_security.py", "tests/engine/test_reconciliation.py",
            "tests/engine/cli/test_output.py", "tests/engine/playbook/test_write.py",
            # the one test of write_outputs' retire list (a run without snapshots after one with them)
            "tests/engine/test_playbook_snapshots.py::test_a_run_without_snapshots_retires_its_own_snapshot_files",
            # control.csv as write_outputs writes it, with holdouts and without
            "tests/engine/test_holdout.py::test_a_run_splits_each_rule_after_capacity",
            "tests/engine/test_holdout.py::test_without_holdouts_control_csv_has_its_columns_and_no_row",
            # with_actions' join of one action per customer, a customer without an id included
            "tests/engine/test_playbook_manifest.py::test_one_action_per_customer_joins_the_same_columns_as_grouping")),
    # the snapshot scan's tables after the dense pass, the running totals, the activity, the KPIs and cohorts
    "snapshots": ((("engine/snapshots.py", None), ("engine/kpi.py", None)),
                  ("engine/snapshots.py", "tests/engine/test_snapshots.py", "tests/engine/test_snapshots_cumulative.py",
                   "tests/engine/test_snapshots_dense.py", "tests/engine/test_snapshots_ordered.py",
                   "tests/engine/test_kpi.py", "tests/engine/test_playbook_snapshots.py")),
    "abc": ((("plugins/abc/__init__.py", None),), ("plugins/abc/__init__.py", "tests/plugins/abc")),
    "adc": ((("plugins/adc/__init__.py", None),), ("plugins/adc/__init__.py", "tests/plugins/adc")),
    "rfm": ((("plugins/rfm/__init__.py", None),), ("plugins/rfm/__init__.py", "tests/plugins/rfm")),
    "clv": ((("plugins/clv/__init__.py", None), ("plugins/clv/models.py", None), ("plugins/clv/holdout.py", None)),
            ("plugins/clv/__init__.py", "plugins/clv/models.py", "plugins/clv/holdout.py", "tests/plugins/clv")),
}

#: A mutant's test run is stopped (and the mutant counts as killed: it made the tests loop) after
#: TIMEOUT_FACTOR times the unmutated run of all the module's tests, and never before MIN_TIMEOUT seconds.
TIMEOUT_FACTOR = 10
MIN_TIMEOUT = 60.0
#: A test run during which the disk holding the copy had less free space than this is no verdict (a test that
#: cannot write a file fails whatever the mutant): the tool waits for room and runs that mutant again.
MIN_FREE = 256 * 2**20


def _disk_low(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < MIN_FREE
    except OSError:
        return True


def _wait_for_disk(path: Path) -> None:
    if _disk_low(path):
        print(f"  the disk is (nearly) full: waiting for {MIN_FREE // 2**20} MB free", flush=True)
    while _disk_low(path):
        time.sleep(5)

OPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==", "+": "-", "-": "+", "*": "/",
       "/": "*", "//": "/", "&": "|", "|": "&", "%": "*"}
NAMES = {"and": "or", "or": "and", "True": "False", "False": "True", "not": "", "is": "is not"}


@dataclass(frozen=True)
class Mutant:
    module: str
    path: str
    line: int
    col: int
    old: str
    new: str
    #: What identifies the mutant across edits elsewhere in the file (see :func:`stable_keys`).
    key: str = ""


def stable_keys(source: str) -> Callable[[int, int, str, str], str]:
    """A function (line, col, old, new) -> the mutant's key, stable while its own function is unchanged.

    The key names the innermost function (or method) holding the line, a hash of that function's text
    and the line's offset in it, so a result stays valid when other code of the file moves it, and is
    measured again when the function itself changes. Outside any function: a hash of the line's text.
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    spans = []  # (start, end, qualified name)

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                start = min([child.lineno, *[d.lineno for d in child.decorator_list]])
                if not isinstance(child, ast.ClassDef):
                    spans.append((start, child.end_lineno, name))
                walk(child, name + ".")
            else:
                walk(child, prefix)

    walk(tree, "")

    def key(line: int, col: int, old: str, new: str) -> str:
        inside = [s for s in spans if s[0] <= line <= s[1]]
        if inside:
            start, end, name = max(inside, key=lambda s: s[0])  # the innermost
            digest = hashlib.sha1("\n".join(lines[start - 1:end]).encode()).hexdigest()[:10]
            return f"{name}@{digest}+{line - start}:{col}:{old}->{new}"
        digest = hashlib.sha1(lines[line - 1].encode()).hexdigest()[:10]
        same = lines[:line - 1].count(lines[line - 1])  # identical lines before it
        return f"<module>@{digest}#{same}:{col}:{old}->{new}"

    return key


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


def statement_spans(source: str) -> dict[int, tuple[int, int]]:
    """Each line -> the lines of the innermost statement holding it (a compound statement: its header).

    A tracer reports the lines where bytecode starts; a mutated token on a continuation line of a
    statement is reached whenever any line of that statement is.
    """
    spans: dict[int, tuple[int, int]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.stmt):
            continue
        end = node.end_lineno
        body = getattr(node, "body", None)
        if isinstance(body, list) and body:
            end = max(node.lineno, body[0].lineno - 1)
        for line in range(node.lineno, end + 1):
            old = spans.get(line)
            if old is None or old[1] - old[0] > end - node.lineno:
                spans[line] = (node.lineno, end)
    return spans


def mutants(module: str, root: Path = ROOT) -> list[Mutant]:
    out = []
    for path, functions in TARGETS[module][0]:
        source = (root / path).read_text()
        keyed = stable_keys(source)
        allowed, annotations = _code_lines(source, functions)

        def add(line: int, col: int, old: str, new: str, path: str = path, keyed=keyed) -> None:
            out.append(Mutant(module, path, line, col, old, new, f"{path}::{keyed(line, col, old, new)}"))

        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
        for i, tok in enumerate(tokens):
            line, col = tok.start
            if line not in allowed or any(a <= tok.start < b for a, b in annotations):
                continue
            text = tok.string
            if text in ("*", "/") and i + 1 < len(tokens) and tokens[i + 1].string in (",", ")"):
                continue  # a bare * or / in a parameter list is a marker, not an operator
            if tok.type == tokenize.OP and text in OPS:
                add(line, col, text, OPS[text])
            elif tok.type == tokenize.OP and text == "~":
                add(line, col, "~", "")
            elif tok.type == tokenize.NAME and text in NAMES:
                if text == "is" and i + 1 < len(tokens) and tokens[i + 1].string == "not":
                    add(line, col, "is not", "is")
                    continue
                if text == "not" and i > 0 and tokens[i - 1].string == "is":
                    continue
                if text == "not" and i + 1 < len(tokens) and tokens[i + 1].string == "in":
                    add(line, col, "not in", "in")
                    continue
                add(line, col, text, NAMES[text])
            elif tok.type == tokenize.NUMBER and text.isdigit():
                add(line, col, text, str(int(text) + 1))
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


TRACE_ENV = "TIERBOOK_MUTATE_TRACE"    # JSON {"files": [absolute paths], "out": path}: record lines per test
SELECT_ENV = "TIERBOOK_MUTATE_SELECT"  # a JSON file with the node ids to run, in that order
FAILED_ENV = "TIERBOOK_MUTATE_FAILED"  # a file the node id of the first failing test is written to


#: The plugins a module's tests load (``TIERBOOK_LOAD_PLUGINS``) when the environment does not say: the ones by
#: default, and clv for its own tests (its CLI and playbook tests name it).
PLUGINS = {"clv": "abc,adc,rfm,clv"}


def _env(module: str | None = None) -> dict[str, str]:
    env = {**os.environ, "TIERBOOK_NO_SHRINK": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "TIERBOOK_LOAD_PLUGINS": os.environ.get("TIERBOOK_LOAD_PLUGINS", PLUGINS.get(module, "abc,adc,rfm"))}
    env.pop("CI", None)
    env.pop(TRACE_ENV, None)
    env.pop(SELECT_ENV, None)
    env.pop(FAILED_ENV, None)
    return env


def _paths(copy: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with the copy, and its tools/ directory (for ``-p mutate``), first on ``PYTHONPATH``: a test that
    starts Python in a subprocess (``python -m engine run``, ``tierbook``, ``python -c``) from another directory
    imports tierbook from the mutated copy too, not from the editable install (the unmutated working tree)."""
    return {**env, "PYTHONPATH": os.pathsep.join([str(copy), str(copy / "tools"),
                                                  env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def _pytest(copy: Path, tests: tuple[str, ...], env: dict[str, str], timeout: float | None) -> tuple[bool, float]:
    """True if the tests pass. The copy comes first on sys.path (cwd), ahead of the editable install;
    its tools/ directory too, for ``-p mutate`` (this file as a pytest plugin)."""
    env = _paths(copy, env)
    start = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p", "mutate", *tests],
                           cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - start
    return r.returncode == 0, time.perf_counter() - start


#: Imported once by the driver, before any fork: each mutant's test run then starts without paying for
#: them (never tierbook's own modules: those are imported by each run, from the mutated copy).
WARM = ("numpy", "polars", "pandas", "pyarrow", "hypothesis", "pytest", "yaml", "ruamel.yaml", "pluggy", "scipy")


def _warm() -> None:
    import importlib

    for name in WARM:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _pytest_forked(copy: Path, tests: tuple[str, ...], env: dict[str, str],
                   timeout: float) -> tuple[bool | None, float]:
    """As :func:`_pytest`, in a child forked from this (warm) process: True if the tests pass, None (no verdict)
    if the disk was (nearly) full at some moment of the run (checked every half second).

    The child puts the copy first on ``sys.path`` and imports tierbook from it, so it tests the
    mutant; nothing of tierbook is imported here. A child still running after ``timeout`` is killed
    and counts as failing (a mutant that makes the tests loop).
    """
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child
        code = 3
        try:
            log = os.open(os.environ.get("TIERBOOK_MUTATE_LOG", os.devnull), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(log, 1)  # the tests' output, to TIERBOOK_MUTATE_LOG if set
            os.dup2(log, 2)
            os.environ.clear()
            os.environ.update(_paths(copy, env))
            os.chdir(copy)
            sys.path[:0] = [str(copy), str(copy / "tools")]
            import pytest

            # hypothesis is imported already (warm): its pytest plugin cannot be assertion-rewritten, harmless
            code = int(pytest.main(["-q", "-x", "-p", "no:randomly", "-p", "mutate",
                                    "-W", "ignore::pytest.PytestAssertRewriteWarning", *tests]))
        except BaseException:  # the run could not start: it counts as failing; TIERBOOK_MUTATE_LOG shows why
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    low, checked = False, 0.0
    try:
        while True:
            if time.perf_counter() - checked > 0.5:
                low, checked = low or _disk_low(copy), time.perf_counter()
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return None if low else os.waitstatus_to_exitcode(status) == 0, time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                break
            time.sleep(0.02)
    except BaseException:  # stopped: the child goes too
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None if low else False, time.perf_counter() - start


@dataclass
class Trace:
    lines: dict[str, dict[str, set[int]]]  # node id -> path -> lines it executed
    imported: dict[str, set[int]]          # path -> lines executed outside any test (import, collection)
    seconds: dict[str, float]              # node id -> duration
    overhead: float                        # the run's time outside the tests (start-up, collection)
    kills: dict[str, int] = field(default_factory=dict)  # node id -> mutants of the module it has killed

    def tests_for(self, m: Mutant, spans: dict[int, tuple[int, int]]) -> list[str] | None:
        """Every test, those that executed the mutant's statement first (each group cheapest first); None: no
        test executed it in-process (it runs at import time, or only in a subprocess).

        The tracer's attribution is only an order, never a filter: code whose result is cached across tests
        (a query built once) runs in the first test that needs it only, yet the others depend on it. So a
        mutant is killed early by the tests most likely to see it, and survives only all of them.
        """
        lo, hi = spans.get(m.line, (m.line, m.line))
        lines = set(range(lo, hi + 1))
        if self.imported.get(m.path, set()) & lines:
            return None
        hit = {t for t, by_path in self.lines.items() if by_path.get(m.path, set()) & lines}
        if not hit:
            return None
        by_cost = self.cheapest()
        return [t for t in by_cost if t in hit] + [t for t in by_cost if t not in hit]

    def cheapest(self) -> list[str]:
        """Every test, cheapest first: by its time over one plus the mutants it has killed (the time one of its
        kills has cost), so that of two tests as slow the one that kills runs first; then by name."""
        return sorted(self.seconds, key=lambda t: (self.seconds[t] / (1 + self.kills.get(t, 0)), t))


def _trace(copy: Path, module: str) -> tuple[bool, Trace]:
    """The module's tests, unmutated, with the line tracer on its files."""
    files, tests = TARGETS[module]
    out = copy / ".mutate-trace.json"
    env = {**_env(module), TRACE_ENV: json.dumps({"files": [str(copy / f) for f, _ in files], "out": str(out)})}
    ok, seconds = _pytest(copy, tests, env, None)
    if not ok:
        return False, Trace({}, {}, {}, seconds)
    raw = json.loads(out.read_text())
    rel = {str(copy / f): f for f, _ in files}
    lines = {t: {rel[p]: set(ls) for p, ls in by_path.items()} for t, by_path in raw["lines"].items()}
    imported = {rel[p]: set(ls) for p, ls in raw["imported"].items()}
    overhead = max(0.0, seconds - sum(raw["seconds"].values()))
    return True, Trace(lines, imported, raw["seconds"], overhead)


def _stop(signum, frame):  # a stopped run (kill PID) still removes its copy of the repository
    raise KeyboardInterrupt


def run(modules: list[str], results: Path, max_mutants: int | None, survivors: bool = False,
        only: str | list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    only = [only] if isinstance(only, str) else only
    done = {}
    if results.exists():
        for line in results.read_text().splitlines():
            rec = json.loads(line)
            done[rec["key"]] = rec
    earlier = dict(done)
    if survivors:  # run the survivors again (after tests were added): only the killed ones count as done
        done = {k: r for k, r in done.items() if r["killed"]}
    else:  # a survivor of a run that ran only some of the tests is no verdict yet
        done = {k: r for k, r in done.items() if r["killed"] or _complete(r)}
    results.parent.mkdir(parents=True, exist_ok=True)
    _warm()
    with tempfile.TemporaryDirectory(prefix="tierbook-mutants-") as tmp:
        copy = Path(tmp)
        _copy_repo(copy)
        for module in modules:
            files, tests = TARGETS[module]
            # In a fixed random order: a run stopped part way (or --max N) has measured a uniform sample.
            todo = [m for m in mutants(module) if m.key not in done and (only is None or any(o in m.key for o in only))]
            random.Random(module).shuffle(todo)
            todo.sort(key=lambda m: m.key not in earlier)  # survivors to run again first
            todo = todo[:max_mutants]
            if not todo:
                continue
            for _ in range(3):  # an unmutated run that fails is tried again if the disk was full meanwhile
                _wait_for_disk(copy)
                ok, trace = _trace(copy, module)
                if ok or not _disk_low(copy):
                    break
            if not ok:
                print(f"{module}: the tests fail without any mutation; skipped", flush=True)
                continue
            trace.kills = _kills(done.values(), module)
            baseline = trace.overhead + sum(trace.seconds.values())
            print(f"{module}: {len(todo)} mutants to run (all tests: {baseline:.1f} s, {len(trace.seconds)} tests)",
                  flush=True)
            sources = {f: (copy / f).read_text() for f, _ in files}
            spans = {f: statement_spans(src) for f, src in sources.items()}
            select = copy / ".mutate-select.json"
            for m in todo:
                chosen = trace.tests_for(m, spans[m.path])
                order = "traced first"  # then the others; each group cheapest first
                if chosen is None:  # run at import time, or only in subprocesses: every test may see it
                    chosen, order = trace.cheapest(), "cheapest first"
                failed = copy / ".mutate-failed.txt"
                failed.unlink(missing_ok=True)
                env = {**_env(module), SELECT_ENV: str(select), FAILED_ENV: str(failed)}
                select.write_text(json.dumps(chosen))
                (copy / m.path).write_text(apply(sources[m.path], m))
                try:
                    while True:
                        _wait_for_disk(copy)
                        passed, seconds = _pytest_forked(copy, tests, env,
                                                         timeout=max(MIN_TIMEOUT, TIMEOUT_FACTOR * baseline))
                        if passed is not None:
                            break
                        print(f"  the disk filled up during {m.path}:{m.line} {m.old!r} -> {m.new!r}: run again",
                              flush=True)
                finally:
                    (copy / m.path).write_text(sources[m.path])
                rec = {**asdict(m), "killed": not passed, "seconds": round(seconds, 1),
                       "order": order}
                if not passed:  # the first test that failed; none: stopped by the timeout (or could not start)
                    rec["killed_by"] = failed.read_text() if failed.exists() else None
                    if rec["killed_by"]:
                        trace.kills[rec["killed_by"]] = trace.kills.get(rec["killed_by"], 0) + 1
                done[m.key] = rec
                with results.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"  {'killed  ' if not passed else 'SURVIVED'} {m.path}:{m.line} {m.old!r} -> {m.new!r}"
                      f" ({rec['order']} order, {seconds:.1f} s)", flush=True)
    return report(results)


def _kills(recs, module: str) -> dict[str, int]:
    """Test node id -> how many of ``module``'s mutants it killed, in earlier results."""
    out: dict[str, int] = {}
    for r in recs:
        if r["module"] == module and r["killed"] and r.get("killed_by"):
            out[r["killed_by"]] = out.get(r["killed_by"], 0) + 1
    return out


def _complete(rec: dict) -> bool:
    """Whether a survivor ran against every test of its module (earlier versions of this tool ran only the
    tests that the tracer saw executing the mutant: ``tests`` was their number)."""
    return "order" in rec or rec.get("tests") == "all"


def report(results: Path) -> int:
    recs = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    by_key = {r["key"]: r for r in recs}  # the last result of a key counts
    for module in TARGETS:
        now = {m.key: m for m in mutants(module)}  # results of functions that have changed since do not count
        mine = [by_key[k] for k in now if k in by_key and (by_key[k]["killed"] or _complete(by_key[k]))]
        total = len(now)
        if not mine:
            print(f"{module}: not measured ({total} mutants)")
            continue
        killed = sum(r["killed"] for r in mine)
        print(f"{module}: {killed}/{len(mine)} killed ({100 * killed / len(mine):.1f}%), "
              f"{len(mine)} of {total} mutants run")
        for r in mine:
            if not r["killed"]:
                m = now[r["key"]]  # where it is in the code today
                print(f"  survived: {m.path}:{m.line} {m.old!r} -> {m.new!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--max", type=int, default=None, help="at most N new mutants per module")
    parser.add_argument("--results", type=Path, default=ROOT / "test-artifacts" / "mutation" / "results.jsonl")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--report", action="store_true", help="print the scores of the results file and exit")
    parser.add_argument("--only", action="append",
                        help="only the mutants whose key contains this text (see --list); repeated: any of them")
    parser.add_argument("--survivors", action="store_true",
                        help="run only the survivors of earlier runs again (a new result replaces the old)")
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
    return run(modules, args.results, args.max, survivors=args.survivors, only=args.only)


# --- the pytest plugin (``-p mutate``, in the test runs this file starts) -----------------------------------

_current: list[str | None] = [None]
_seen: dict[str | None, dict[str, set[int]]] = {}
_seconds: dict[str, float] = {}


def pytest_configure(config) -> None:
    spec = os.environ.get(TRACE_ENV)
    if not spec:
        return
    import threading

    files = frozenset(json.loads(spec)["files"])

    def local(frame, event, arg):
        if event == "line":
            _seen.setdefault(_current[0], {}).setdefault(frame.f_code.co_filename, set()).add(frame.f_lineno)
        return local

    def tracer(frame, event, arg):
        if frame.f_code.co_filename in files:
            if event == "call":
                _seen.setdefault(_current[0], {}).setdefault(frame.f_code.co_filename, set()).add(frame.f_lineno)
            return local
        return None

    sys.settrace(tracer)
    threading.settrace(tracer)


def pytest_collection_modifyitems(session, config, items) -> None:
    select = os.environ.get(SELECT_ENV)
    if not select:
        return
    order = {t: i for i, t in enumerate(json.loads(Path(select).read_text()))}
    keep = sorted((it for it in items if it.nodeid in order), key=lambda it: order[it.nodeid])
    dropped = [it for it in items if it.nodeid not in order]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def pytest_runtest_logreport(report) -> None:
    """The first failing test of a mutant's run (setup, call or teardown), for its result's ``killed_by``."""
    path = os.environ.get(FAILED_ENV)
    if path and report.failed and not Path(path).exists():
        Path(path).write_text(report.nodeid)


def pytest_collectreport(report) -> None:
    """A test file that fails to import the mutant kills it too (``killed_by`` is the file)."""
    pytest_runtest_logreport(report)


def _protocol_wrapper():
    import pytest

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        if not os.environ.get(TRACE_ENV):
            yield
            return
        _current[0] = item.nodeid
        start = time.perf_counter()
        yield
        _seconds[item.nodeid] = time.perf_counter() - start
        _current[0] = None

    return pytest_runtest_protocol


if "pytest" in sys.modules:  # loaded as a plugin: the hook wrapper needs pytest's marker
    pytest_runtest_protocol = _protocol_wrapper()


def pytest_sessionfinish(session, exitstatus) -> None:
    spec = os.environ.get(TRACE_ENV)
    if not spec:
        return
    sys.settrace(None)
    out = {"lines": {t: {p: sorted(ls) for p, ls in by_path.items()} for t, by_path in _seen.items() if t},
           "imported": {p: sorted(ls) for p, ls in _seen.get(None, {}).items()}, "seconds": _seconds}
    Path(json.loads(spec)["out"]).write_text(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
