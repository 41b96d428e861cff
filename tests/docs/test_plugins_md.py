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


def examples() -> dict[str, str]:
    return {path: code for path, code in MARKER.findall(PAGE.read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tierbook-churn")
    for path, code in examples().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(code, encoding="utf-8")
    return root


def test_the_page_has_the_three_files():
    assert sorted(examples()) == ["pyproject.toml", "tests/test_churn.py", "tierbook_churn.py"]


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
