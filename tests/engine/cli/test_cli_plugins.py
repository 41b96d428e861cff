"""``tierbook plugins``, and a third-party plugin installed as its own package (tests/fixtures)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "tierbook-plugin-example"


def test_plugins_lists_classifiers_labels_and_parameters(run_cli, monkeypatch):
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")
    code, out, err = run_cli("plugins")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("abc  (tierbook ") and "built-in" in lines[0]
    assert "  column abc: A, B, C" in lines
    assert any(line.startswith("  abc.a (float, default 0.8) [0.01..0.99]  ") for line in lines)
    assert any(line.startswith("  abc.mode (str, default share) {share, rank}  ") for line in lines)
    assert "  column adc: active, new, dormant, churned, no-purchase, prospect" in lines
    assert any(line.startswith("  adc.active_days (int, default 90) [1..3650]  ") for line in lines)
    assert any(line.startswith("  rfm.prospects_are_potential (bool, default true)  ") for line in lines)
    assert "  column value_tier: high-value, potential, ordinary" in lines


def test_plugins_json(run_cli, monkeypatch):
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")
    code, out, _ = run_cli("plugins", "--json")
    assert code == 0
    doc = json.loads(out)
    assert [c["name"] for c in doc["classifiers"]] == ["abc", "adc", "rfm"]
    assert doc["failures"] == []
    rfm = doc["classifiers"][2]
    bins = next(p for p in rfm["params"] if p["name"] == "bins")
    assert bins == {"name": "bins", "type": "int", "default": 5, "help": "Number of score bins for R, F and M.",
                    "min": 2, "max": 10, "step": 1}


def test_plugins_shows_a_module_that_fails(run_cli, monkeypatch):
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc")
    code, out, _ = run_cli("plugins", "--plugin", "tb_no_such_module_anywhere")
    assert code == 0
    assert out.splitlines()[0].startswith("abc  ")
    assert "not loaded: " in out and "tb_no_such_module_anywhere" in out


def tierbook_command() -> list[str]:
    script = Path(sys.executable).with_name("tierbook")
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine"]


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """The example package, pip-installed into a scratch directory (never into the project's environment)."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "src"
    shutil.copytree(FIXTURE, source)  # building writes build/ and *.egg-info beside the sources
    target = work / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--no-index", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "tierbook_plugin_example" / "__init__.py").exists()
    return target


def run_tierbook(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TIERBOOK_LOAD_PLUGINS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([*tierbook_command(), *args], capture_output=True, text=True, env=env, timeout=120)


def test_third_party_plugin_is_listed(installed_plugin):
    proc = run_tierbook(installed_plugin, "plugins")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("basket  "))
    assert "(tierbook-plugin-example 0.3.0, third-party)" in header
    assert "  column big_basket: big, small" in lines
    assert any(line.startswith("  basket.min_aov (float, default 300.0) [0..]  ") for line in lines)
    assert any(line.startswith("abc  ") for line in lines)  # the built-ins are still there

    doc = json.loads(run_tierbook(installed_plugin, "plugins", "--json").stdout)
    basket = next(c for c in doc["classifiers"] if c["name"] == "basket")
    assert basket["builtin"] is False and basket["package"] == "tierbook-plugin-example"


def test_third_party_plugin_column_is_produced(installed_plugin, tmp_path):
    data = tmp_path / "sales.csv"
    # c1: two orders, 500 + 300 -> average 400 (big); c2: one order of 100 (small); c3: 250 (small)
    data.write_text("customer_id,order_id,order_date,amount\n"
                    "c1,o1,2011-01-01,500\nc1,o2,2011-02-01,300\nc2,o3,2011-02-02,100\nc3,o4,2011-02-03,250\n")
    out = tmp_path / "customers.csv"
    proc = run_tierbook(installed_plugin, "classify", str(data), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    df = pl.read_csv(out)
    assert df.select("customer_id", "avg_order_value", "big_basket").rows() == [
        ("c1", 400.0, "big"), ("c2", 100.0, "small"), ("c3", 250.0, "small")]
    assert "abc" in df.columns  # alongside the built-ins

    proc = run_tierbook(installed_plugin, "classify", str(data), "-c", "basket", "--set", "basket.min_aov=200",
                        "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    df = pl.read_csv(out)
    assert df["big_basket"].to_list() == ["big", "small", "big"]
    assert "abc" not in df.columns

    proc = run_tierbook(installed_plugin, "classify", str(data), "--set", "basket.min_aov=-1", "-o", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tierbook: error: ")
    assert "basket.min_aov: '-1' is below the minimum 0 of 'min_aov'" in lines[0]


def test_plugin_option_loads_a_module_that_is_not_installed(run_cli, tmp_path, monkeypatch):
    (tmp_path / "tb_cli_local_plugin.py").write_text(
        "import polars as pl\n"
        "from engine import Classifier, Output, ParamSpec, hookimpl\n"
        "@hookimpl\n"
        "def register_classifiers(register):\n"
        "    register(Classifier(name='returner', description='has returned something',\n"
        "        outputs=(Output('returner', 'x', labels=('yes', 'no')),),\n"
        "        params=(ParamSpec('min_returns', 'int', 1, 'Returned lines that make a returner.', min=1),),\n"
        "        requires=('returns',),\n"
        "        expressions=lambda p, c: {'returner': pl.when(pl.col('returns') >= p['min_returns'])"
        ".then(pl.lit('yes')).otherwise(pl.lit('no'))}))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc")
    code, out, _ = run_cli("plugins", "--plugin", "tb_cli_local_plugin")
    assert code == 0
    assert "  column returner: yes, no" in out.splitlines()

    data = tmp_path / "sales.csv"
    data.write_text("customer_id,order_date,amount\na,2011-01-01,5\na,2011-01-02,-2\nb,2011-01-02,1\n")
    result = tmp_path / "out.csv"
    code, _, err = run_cli("classify", data, "--plugin", "tb_cli_local_plugin", "-o", result)
    assert code == 0, err
    assert pl.read_csv(result).select("customer_id", "returns", "returner", "abc").rows() == [
        ("a", 1, "yes", "A"), ("b", 0, "no", "C")]  # a: 3 of 4 = .75 <= .8 A; b: 4 of 4 C


GAPS_PLUGIN = """\
import polars as pl
from engine import Feature, hookimpl

@hookimpl
def register_features(register):
    register(Feature("median_gap_days", "median days between order days",
                     agg=pl.col("order_date").unique().sort().diff().dt.total_days().median()))
"""


def test_plugins_lists_every_plugin_with_its_hooks(run_cli, tmp_path, monkeypatch):
    # a plugin that registers only a feature is listed too, with where it came from
    (tmp_path / "gaps.py").write_text(GAPS_PLUGIN)
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")
    code, out, err = run_cli("plugins", "--plugins-dir", tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    plugins = lines[lines.index("plugins") + 1:]
    assert plugins[0].startswith("  abc  (tierbook ") and ", built-in)  hooks: register_classifiers  provides: abc" \
        in plugins[0]
    assert f"  gaps  (file {tmp_path / 'gaps.py'}, --plugins-dir)  hooks: register_features  " \
           f"provides: feature median_gap_days" in plugins
    assert "  median_gap_days  (gaps)  median days between order days" in lines

    code, out, _ = run_cli("plugins", "--json", "--plugins-dir", tmp_path)
    doc = json.loads(out)
    gaps = next(p for p in doc["plugins"] if p["name"] == "gaps")
    assert gaps == {"name": "gaps", "package": None, "version": None, "module": "tierbook_plugins_dir.gaps",
                    "path": str(tmp_path / "gaps.py"), "source": "plugins dir", "builtin": False,
                    "hooks": ["register_features"], "classifiers": [], "features": ["median_gap_days"]}
    abc = next(p for p in doc["plugins"] if p["name"] == "abc")
    assert (abc["package"], abc["source"], abc["hooks"]) == ("tierbook", "entry point", ["register_classifiers"])
    assert doc["features"] == [{"name": "median_gap_days", "description": "median days between order days",
                                "kind": "aggregation", "plugin": "gaps"}]


def test_third_party_plugin_package_and_version_in_the_plugin_list(installed_plugin):
    doc = json.loads(run_tierbook(installed_plugin, "plugins", "--json").stdout)
    basket = next(p for p in doc["plugins"] if p["name"] == "basket")
    assert (basket["package"], basket["version"], basket["builtin"], basket["hooks"]) == \
        ("tierbook-plugin-example", "0.3.0", False, ["register_classifiers"])


def test_plugins_dir_plugin_classifies(run_cli, tmp_path, monkeypatch):
    local = tmp_path / "local"
    local.mkdir()
    (local / "gaps.py").write_text(GAPS_PLUGIN)
    (local / "_helper.py").write_text("raise RuntimeError('files starting with _ are not plugins')\n")
    data = tmp_path / "sales.csv"
    data.write_text("customer_id,order_date,amount\na,2011-01-01,5\na,2011-01-11,2\na,2011-01-31,1\n"
                    "b,2011-01-02,1\n")
    out = tmp_path / "out.csv"
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "adc")
    code, _, err = run_cli("classify", data, "--plugins-dir", local, "-o", out)
    assert code == 0, err
    assert pl.read_csv(out).select("customer_id", "median_gap_days").rows() == [("a", 15.0), ("b", None)]

    code, _, err = run_cli("classify", data, "--plugins-dir", tmp_path / "nowhere", "-o", out)
    assert code == 2 and err == f"tierbook: error: --plugins-dir {tmp_path / 'nowhere'}: not a directory\n"


def test_demo_goes_through_the_parser_of_describe(run_cli, tmp_path, monkeypatch):
    from engine.sample import SAMPLE_MAPPING, sample_path

    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")
    code, demo, err = run_cli("demo", "--set", "abc.a=0.5", "-c", "abc")
    assert code == 0, err
    maps = [f"--map={k}={v}" for k, v in SAMPLE_MAPPING.items()]
    code, described, err = run_cli("describe", sample_path(), *maps, "--set", "abc.a=0.5", "-c", "abc")
    assert code == 0, err
    assert demo.splitlines()[0].startswith("tierbook demo: ")
    assert demo.splitlines()[2:] == described.splitlines()  # the same command, with describe's defaults
    code, _, err = run_cli("demo", "--set", "abc.a=2")
    assert code == 2 and "--set abc.a: '2' is above the maximum 0.99 of 'a'" in err
