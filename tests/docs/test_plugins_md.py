"""docs/plugins.md: the tutorial's files, taken from the page itself, work as the page says.

The classifier, its pyproject.toml and its test are extracted from the code blocks that follow the
``<!-- example: PATH -->`` markers, written into a scratch package, and then: the page's own test runs
against them, the file works as a local plugin (--plugins-dir), and the package installs with pip and
is found through its entry point.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "plugins.md"
MARKER = re.compile(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```", re.S)
ADDITION = re.compile(r"<!-- add to: (\S+) -->\n```\w*\n(.*?)```", re.S)
OPTIONAL = ("tierbook_churn_workbench.py",)  # section 5, the optional fast path: the package works without it


def examples() -> dict[str, str]:
    return {path: code for path, code in MARKER.findall(PAGE.read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tierbook-churn")
    for path, code in examples().items():
        if path in OPTIONAL:
            continue
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(code, encoding="utf-8")
    return root


def test_the_page_has_the_four_files():
    assert sorted(examples()) == ["pyproject.toml", "tests/test_churn.py", "tierbook_churn.py",
                                  "tierbook_churn_workbench.py"]


def test_the_classifier_fits_in_40_lines_and_five_concepts():
    code = examples()["tierbook_churn.py"]
    lines = code.splitlines()
    assert len(lines) <= 40
    assert f"That is the whole classifier: {len(lines)} lines." in PAGE.read_text(encoding="utf-8")
    imported = re.search(r"^from engine import (.+)$", code, re.M).group(1).split(", ")
    assert imported == ["Classifier", "Feature", "Output", "ParamSpec", "hookimpl"]
    assert "import engine" not in code and "Context" not in code  # nothing else from tierbook


def test_the_pages_own_test_passes(package, monkeypatch):
    monkeypatch.syspath_prepend(str(package))
    namespace: dict = {}
    exec(compile(examples()["tests/test_churn.py"], str(package / "tests" / "test_churn.py"), "exec"), namespace)
    namespace["test_churn"]()
    sys.modules.pop("tierbook_churn", None)


def test_prospects_get_no_label(package, monkeypatch, registry):
    import engine
    from engine.testing import plugin_registry

    monkeypatch.syspath_prepend(str(package))
    import tierbook_churn

    try:
        tx = pl.DataFrame({"customer_id": ["a", "a"], "order_date": ["2024-01-01", "2024-01-05"],
                           "amount": [1.0, -1.0]})  # a's second day is a return: one purchase day
        table = pl.DataFrame({"customer_id": ["a", "p"], "region": ["n", "s"]})
        got = engine.classify(tx, customers=table, registry=plugin_registry(tierbook_churn))
        assert got.select("customer_id", "churn").rows() == [("a", "one-time"), ("p", None)]
    finally:
        sys.modules.pop("tierbook_churn", None)


SALES = ("customer_id,order_date,amount\n"
         "r,2024-01-01,10\nr,2024-01-11,12\nr,2024-01-21,9\no,2024-01-01,50\n")


def test_as_a_local_plugin(package, run_cli, tmp_path, monkeypatch):
    local = tmp_path / "local"
    local.mkdir()
    (local / "tierbook_churn.py").write_text(examples()["tierbook_churn.py"])
    data = tmp_path / "sales.csv"
    data.write_text(SALES)
    out = tmp_path / "customers.csv"
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "")
    code, _, err = run_cli("classify", data, "--plugins-dir", local, "--as-of", "2024-02-05", "--set", "churn.k=1.4",
                           "-o", out)
    assert code == 0, err
    assert pl.read_csv(out).select("customer_id", "churn").rows() == [("o", "one-time"), ("r", "late")]


def test_installed_through_its_entry_point(package, tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--no-index", "--target", str(site), str(package)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("TIERBOOK_LOAD_PLUGINS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    listed = subprocess.run([sys.executable, "-m", "engine", "plugins", "--json"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    plugin = next(p for p in json.loads(listed.stdout)["plugins"] if p["name"] == "churn")
    assert (plugin["package"], plugin["version"], plugin["source"]) == ("tierbook-churn", "0.1.0", "entry point")
    assert plugin["hooks"] == ["register_classifiers", "register_features"]
    assert (plugin["classifiers"], plugin["features"]) == (["churn"], ["median_gap_days"])

    data = tmp_path / "sales.csv"
    data.write_text(SALES)
    out = tmp_path / "customers.csv"
    run = subprocess.run([sys.executable, "-m", "engine", "classify", str(data), "-c", "churn", "--as-of",
                          "2024-02-05", "-o", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert pl.read_csv(out).select("customer_id", "median_gap_days", "churn").rows() == [
        ("o", None, "one-time"), ("r", 10.0, "on-time")]  # r: 15 days silent, 15 <= 2 x 10


# --- the optional fast path (section 5 of the tutorial) --------------------------------------------------------

def with_fast_path() -> str:
    """tierbook_churn.py as section 5 says to change it: the page's function, and ``workbench=fast_path``."""
    page = PAGE.read_text(encoding="utf-8")
    assert "give the classifier the field `workbench=fast_path`" in page
    code = examples()["tierbook_churn.py"]
    function = dict(ADDITION.findall(page))["tierbook_churn.py"]
    assert code.count("        expressions=churn,\n") == 1 and code.count("\n@hookimpl\ndef register_classifiers") == 1
    code = code.replace("        expressions=churn,\n", "        expressions=churn,\n        workbench=fast_path,\n")
    return code.replace("\n@hookimpl\ndef register_classifiers", "\n" + function + "\n\n@hookimpl\ndef register_classifiers")


@pytest.fixture
def fast_churn(tmp_path, monkeypatch):
    """The churn plugin module with the page's fast path."""
    (tmp_path / "tierbook_churn.py").write_text(with_fast_path(), encoding="utf-8")
    (tmp_path / "tierbook_churn_workbench.py").write_text(examples()["tierbook_churn_workbench.py"], encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import tierbook_churn

    try:
        yield tierbook_churn
    finally:
        sys.modules.pop("tierbook_churn", None)
        sys.modules.pop("tierbook_churn_workbench", None)


def odd_customers(n: int, seed: int) -> pl.DataFrame:
    """Silence and gaps that tie with k x gap exactly, nulls, and gaps no feature pass gives (0, < 0, NaN, inf)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    gap = rng.integers(1, 40, n) / 2
    for share, value in ((0.03, 0.0), (0.03, -1.5), (0.03, np.nan), (0.03, np.inf)):
        gap[rng.random(n) < share] = value
    frame = pl.DataFrame({"customer_id": np.arange(n), "recency_days": rng.integers(0, 200, n),
                          "median_gap_days": gap, "monetary": np.round(rng.normal(100, 80, n), 2)})
    return frame.with_columns(
        pl.when(pl.Series(rng.random(n) < 0.1)).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("recency_days", "median_gap_days", "monetary"))


def test_the_fast_path_equals_the_expressions(fast_churn):
    import datetime as dt

    import numpy as np

    from engine.fastpath import check_fast_path
    from engine.testing import plugin_registry

    registry = plugin_registry(fast_churn)
    churn = registry.classifier("churn")
    assert churn.workbench is not None
    rng = np.random.default_rng(7)
    moves = [{"k": float(k)} for k in np.arange(1, 10.5, 0.5)]  # exact ties with whole and half-day gaps
    moves += [{"k": float(rng.uniform(1, 10))} for _ in range(20)] + [{"k": 0.1 + 0.2 + 1.7}, {"k": 10.0}]
    check_fast_path(churn, odd_customers(3000, 1), moves, as_of=dt.date(2024, 1, 1), registry=registry)


def test_the_workbench_takes_the_fast_path(fast_churn, sample_path):
    import engine
    from engine.run import select
    from engine.sample import SAMPLE_MAPPING
    from engine.testing import plugin_registry
    from engine.widgets import WorkbenchModel

    registry = plugin_registry(fast_churn)
    prepared = engine.prepare(sample_path, mapping=SAMPLE_MAPPING, registry=registry)
    model = WorkbenchModel(prepared, select(registry, ["churn"]))
    assert type(model.evaluator("churn")).__name__ == "ChurnFastPath"
    for k in (1.0, 1.5, 2.5, 4.0):
        model.set_params({"churn.k": k})
        expected = prepared.classify(["churn"], params={"churn.k": k})
        assert model.classified()["churn"].equals(expected["churn"])
        want = engine.summarize(expected, model.selections())
        got = model.numbers()
        assert got.select("label", "customers").rows() == want.select("label", "customers").rows()
        assert got["revenue"].to_list() == pytest.approx(want["revenue"].to_list(), rel=1e-9)


def test_the_package_with_its_fast_path_installs(tmp_path):
    package = tmp_path / "tierbook-churn"
    package.mkdir()
    added = dict(ADDITION.findall(PAGE.read_text(encoding="utf-8")))
    (package / "pyproject.toml").write_text(examples()["pyproject.toml"] + "\n" + added["pyproject.toml"])
    (package / "tierbook_churn.py").write_text(with_fast_path())
    (package / "tierbook_churn_workbench.py").write_text(examples()["tierbook_churn_workbench.py"])
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--no-index", "--target", str(site), str(package)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "tierbook_churn.py").read_text() == with_fast_path()
    assert (site / "tierbook_churn_workbench.py").exists()
