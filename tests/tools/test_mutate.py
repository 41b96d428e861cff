"""tools/mutate.py on a tiny module: which mutants its tests kill, which survive, and how.

The tool runs in a subprocess inside a small git repository of its own (a copy of tools/mutate.py, a module and
its tests), so its ``ROOT`` is that repository; its targets are set to the tiny module. The module's tests
check ``grade`` only from a Python started in a subprocess in another directory (that Python must import the
mutated copy, not the original), ``count`` in-process (one mutant makes it loop: the timeout kills it), and
``double`` so weakly that its mutant survives.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MODULE = """\
def grade(x):
    if x >= 10:
        return "big"
    return "small"


def double(x):
    return x + x


def count(n):
    i = 0
    while i < n:
        i = i + 1
    return i
"""

TESTS = """\
import subprocess
import sys

from tiny import count, double


def test_grade_in_a_subprocess(tmp_path):
    code = "import tiny; assert tiny.grade(10) == 'big' and tiny.grade(9) == 'small'"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


def test_count():
    assert count(0) == 0 and count(3) == 3


def test_double_of_zero():
    assert double(0) == 0
"""

DRIVER = """\
import sys
sys.path.insert(0, "tools")
import mutate
mutate.TARGETS = {"tiny": ((("tiny.py", None),), ("tests/test_tiny.py",))}
mutate.MIN_TIMEOUT = 8.0
mutate.TIMEOUT_FACTOR = 1
mutate.WARM = ("pytest",)
sys.exit(mutate.main(sys.argv[1:]))
"""


def tiny_repository(tmp_path):
    """A git repository with the tool, the tiny module and its tests (the tool copies the files git tracks)."""
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    (repo / "tests").mkdir()
    shutil.copy(ROOT / "tools" / "mutate.py", repo / "tools" / "mutate.py")
    (repo / "tiny.py").write_text(MODULE)
    (repo / "tests" / "test_tiny.py").write_text(TESTS)
    (repo / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    return repo


@pytest.mark.skipif(shutil.which("git") is None, reason="the tool copies the files git tracks")
def test_mutate_kills_what_the_tests_see_and_reports_the_survivors(tmp_path):
    repo = tiny_repository(tmp_path)
    results = tmp_path / "results.jsonl"
    done = subprocess.run([sys.executable, "-c", DRIVER, "tiny", "--results", str(results)], cwd=repo,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    got = {(r["line"], r["old"], r["new"]): r for r in map(json.loads, results.read_text().splitlines())}
    verdicts = {k: r["killed"] for k, r in got.items()}
    assert verdicts == {
        (2, ">=", ">"): True, (2, "10", "11"): True,       # seen only by the subprocess: it imported the mutant
        (8, "+", "-"): False,                              # double(0) is 0 either way
        (12, "0", "1"): True, (13, "<", "<="): True, (14, "1", "2"): True,
        (14, "+", "-"): True,                              # i = i - 1 never ends: stopped by the timeout
    }
    assert got[(14, "+", "-")]["seconds"] >= 8.0
    # each kill names the test that failed first (none for the timeout); survivors name none
    assert {k: r.get("killed_by") for k, r in got.items()} == {
        (2, ">=", ">"): "tests/test_tiny.py::test_grade_in_a_subprocess",
        (2, "10", "11"): "tests/test_tiny.py::test_grade_in_a_subprocess",
        (8, "+", "-"): None,
        (12, "0", "1"): "tests/test_tiny.py::test_count", (13, "<", "<="): "tests/test_tiny.py::test_count",
        (14, "1", "2"): "tests/test_tiny.py::test_count", (14, "+", "-"): None,
    }
    assert "tiny: 6/7 killed (85.7%), 7 of 7 mutants run" in done.stdout
    assert "survived: tiny.py:8 '+' -> '-'" in done.stdout
    assert (repo / "tiny.py").read_text() == MODULE  # the mutants were made in a copy

    again = subprocess.run([sys.executable, "-c", DRIVER, "tiny", "--results", str(results)], cwd=repo,
                           capture_output=True, text=True, timeout=300)  # every result is there: nothing runs
    assert again.returncode == 0 and "mutants to run" not in again.stdout
    assert results.read_text().count("\n") == 7


def test_tests_run_cheapest_first_those_that_executed_the_mutant_before_the_others():
    """A test's cost is its time over one plus the mutants it has killed: of two slow tests the killer runs
    first; the tests that executed the mutant's line come before all others."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import mutate
    finally:
        sys.path.remove(str(ROOT / "tools"))
    trace = mutate.Trace(lines={"slow_killer": {"m.py": {3}}, "fast": {"m.py": {3}}, "slow": {"m.py": {3}},
                                "other": {"m.py": {9}}},
                         imported={}, seconds={"slow_killer": 2.4, "fast": 0.5, "slow": 2.4, "other": 0.1},
                         overhead=0.0, kills={"slow_killer": 5})
    assert trace.cheapest() == ["other", "slow_killer", "fast", "slow"]  # 0.1, 2.4 / 6, 0.5, 2.4
    mutant = mutate.Mutant("m", "m.py", 3, 0, "<", "<=")
    assert trace.tests_for(mutant, {}) == ["slow_killer", "fast", "slow", "other"]
    assert trace.tests_for(mutate.Mutant("m", "m.py", 5, 0, "<", "<="), {}) is None  # no test executed line 5
    assert mutate._kills([{"module": "m", "killed": True, "killed_by": "slow"},
                          {"module": "m", "killed": True, "killed_by": None},
                          {"module": "n", "killed": True, "killed_by": "slow"},
                          {"module": "m", "killed": False}], "m") == {"slow": 1}


def test_a_run_while_the_disk_is_full_is_no_verdict(tmp_path, monkeypatch):
    """A test that cannot write fails whatever the mutant: a run during which the disk was (nearly) full gives
    None, and the tool runs that mutant again once there is room."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import mutate
    finally:
        sys.path.remove(str(ROOT / "tools"))
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    pass\n")
    (tmp_path / "test_bad.py").write_text("def test_bad():\n    assert False\n")
    run = [(mutate._pytest_forked(tmp_path, (name,), mutate._env(), timeout=120)[0])
           for name in ("test_ok.py", "test_bad.py")]
    monkeypatch.setattr(mutate, "MIN_FREE", 2**62)  # more than any disk has free
    full = [(mutate._pytest_forked(tmp_path, (name,), mutate._env(), timeout=120)[0])
            for name in ("test_ok.py", "test_bad.py")]
    assert (run, full) == ([True, False], [None, None])


@pytest.mark.skipif(shutil.which("git") is None, reason="the tool copies the files git tracks")
def test_only_repeated_runs_the_mutants_of_any_of_them(tmp_path):
    """``--only`` given twice runs the mutants whose key contains either text, and no other."""
    repo = tiny_repository(tmp_path)
    results = tmp_path / "results.jsonl"
    done = subprocess.run([sys.executable, "-c", DRIVER, "tiny", "--results", str(results), "--only", "::grade@",
                           "--only", "::double@"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    got = {(r["line"], r["old"], r["new"]) for r in map(json.loads, results.read_text().splitlines())}
    assert got == {(2, ">=", ">"), (2, "10", "11"), (8, "+", "-")}


def test_each_target_loads_its_plugins(monkeypatch):
    """The tests of a target load abc, adc and rfm unless the environment says otherwise; clv's load clv too (its
    CLI and playbook tests name it)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import mutate
    finally:
        sys.path.remove(str(ROOT / "tools"))
    monkeypatch.delenv("TIERBOOK_LOAD_PLUGINS", raising=False)
    assert mutate._env()["TIERBOOK_LOAD_PLUGINS"] == mutate._env("rfm")["TIERBOOK_LOAD_PLUGINS"] == "abc,adc,rfm"
    assert mutate._env("clv")["TIERBOOK_LOAD_PLUGINS"] == "abc,adc,rfm,clv"
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc")
    assert mutate._env("clv")["TIERBOOK_LOAD_PLUGINS"] == "abc"
