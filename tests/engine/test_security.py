"""What SECURITY.md promises, checked.

- playbooks are plain data: YAML is loaded safely, Python tags are refused;
- rule text is parsed, never evaluated: the engine has no eval/exec at all;
- outputs stay in the playbook's output directory unless a flag allows otherwise;
- CSV outputs neutralise spreadsheet formulas;
- plugins load only when installed (entry points) or explicitly named.
"""

from __future__ import annotations

import ast
import datetime as dt
import os
from pathlib import Path

import polars as pl
import pytest

from engine.errors import PlaybookError, TierbookError
from engine.io import atomic_write_frame, neutralise_formulas
from engine.playbook import load_playbook
from engine.registry import get_registry
from engine.rules import compile_rule

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "engine" / "sample" / "online_retail_sample.csv"
HEAD = f"""name: sec
data:
  transactions: {SAMPLE}
  map: {{customer_id: CustomerID, order_id: InvoiceNo, order_date: InvoiceDate, quantity: Quantity, unit_price: UnitPrice}}
classifiers:
  abc: {{}}
"""


def _playbook(tmp_path: Path, text: str, name: str = "pb.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------- YAML
@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {sentinel}']",
    "!!python/object/apply:subprocess.check_output [['touch', '{sentinel}']]",
    "!!python/object/new:os.system ['touch {sentinel}']",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:builtins.object {{}}",
    "!!python/tuple [1, 2]",
    "!include other.yaml",
])
def test_python_tags_are_refused(tmp_path, tag):
    sentinel = tmp_path / "pwned"
    path = _playbook(tmp_path, HEAD + "description: " + tag.format(sentinel=sentinel) + "\n")
    with pytest.raises(PlaybookError) as info:
        load_playbook(path)
    assert "is not allowed (playbooks are plain data)" in str(info.value)
    assert f"{path}:7:" in str(info.value)
    assert not sentinel.exists()


def test_yaml_loaders_are_safe():
    """No module loads YAML with a loader that can build Python objects."""
    unsafe = ("yaml.load(", "yaml.unsafe_load", "yaml.full_load", "UnsafeLoader", "FullLoader", "yaml.Loader",
              "typ='unsafe'", 'typ="unsafe"')
    for path in [*ROOT.joinpath("engine").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        for needle in unsafe:
            assert needle not in text, f"{path.relative_to(ROOT)} uses {needle}"


# ---------------------------------------------------------------------- no eval
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile", "sql_expr", "SQLContext", "sql"}


def _calls(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in FORBIDDEN_CALLS and not (name == "compile" and isinstance(func, ast.Attribute)):
                found.append((node.lineno, name))
    return found


def test_engine_never_evaluates_text():
    """No eval, exec, builtin compile, __import__ or SQL engine anywhere in engine/ or plugins/.

    (``re.compile`` is allowed: an attribute call, not the builtin.) The same, for a
    reader: ``grep -rnwE 'eval|exec' engine plugins`` finds nothing but prose.
    """
    offenders = {}
    for path in [*ROOT.joinpath("engine").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]:
        calls = _calls(path)
        if calls:
            offenders[str(path.relative_to(ROOT))] = calls
    assert offenders == {}


@pytest.mark.parametrize("text", [
    "__import__('os').system('touch {sentinel}')",
    "eval('1')",
    "exec(\"open('{sentinel}', 'w')\")",
    "monetary > 0 or __import__('os').system('touch {sentinel}')",
    "abc = 'A'; import os",
    "open('{sentinel}', 'w')",
    "monetary.__class__",
    "LOWER(country) = ''.join('x')",
])
def test_rule_text_is_not_python(tmp_path, text):
    sentinel = tmp_path / "pwned"
    schema = {"monetary": pl.Float64(), "abc": pl.Enum(["A", "B", "C"]), "country": pl.String()}
    with pytest.raises(TierbookError):
        compile_rule(text.format(sentinel=sentinel), schema, labels={"abc": ("A", "B", "C")},
                     as_of=dt.date(2011, 12, 10))
    assert not sentinel.exists()


# ---------------------------------------------------------------------- outputs confined
@pytest.mark.parametrize("directory", ["../escape", "../../../tmp/escape", "/tmp/tierbook-escape", "out/../../x"])
def test_output_dir_may_not_leave_the_playbook_directory(tmp_path, directory):
    root = tmp_path / "project"
    root.mkdir()
    path = _playbook(root, HEAD + f"outputs: {{dir: '{directory}'}}\n")
    with pytest.raises(PlaybookError, match="leads outside the playbook's directory"):
        load_playbook(path)
    pb = load_playbook(path, allow_outside=True)
    assert pb.output_dir == (root / directory).resolve()


def test_output_dir_symlink_out_is_an_escape(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "out").symlink_to(outside, target_is_directory=True)
    path = _playbook(root, HEAD + "outputs: {dir: out}\n")
    with pytest.raises(PlaybookError, match="leads outside the playbook's directory"):
        load_playbook(path)


@pytest.mark.parametrize("key,name", [("customers", "../customers.parquet"), ("actions", "/tmp/actions.csv"),
                                      ("summary", "sub/summary.json"), ("cut", "..")])
def test_output_file_names_have_no_directories(tmp_path, key, name):
    path = _playbook(tmp_path, HEAD + f"outputs: {{{key}: '{name}'}}\n")
    with pytest.raises(PlaybookError, match="must be a file name, without directories"):
        load_playbook(path)


def test_run_writes_only_into_the_output_dir(tmp_path, run_cli):
    root = tmp_path / "project"
    root.mkdir()
    path = _playbook(root, HEAD + "rules:\n  - {name: r, when: \"abc = 'A'\", action: call, channel: phone, "
                                  "owner: '=HYPERLINK(\"http://x\")'}\noutputs: {dir: out}\n")
    before = set(tmp_path.rglob("*"))
    code, out, err = run_cli("run", path)
    assert code == 0, err
    written = set(tmp_path.rglob("*")) - before
    assert written and all(p.is_relative_to(root / "out") for p in written)
    visible = {p.name for p in written if p.parent == root / "out"} | {p.name for p in written if p == root / "out"}
    assert visible == {"out", ".tierbook", "customers.parquet", "actions.csv", "cut.csv", "summary.json",
                       "control.csv"}
    # the files are links into the current generation, inside the output directory too
    assert all(p.resolve().is_relative_to(root / "out") for p in written)
    # and the owner, a formula, is neutralised in actions.csv
    actions = (root / "out" / "actions.csv").read_text()
    assert "'=HYPERLINK" in actions and ",=HYPERLINK" not in actions


# ---------------------------------------------------------------------- CSV formulas
RISKY = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "=cmd|' /C calc'!A0"]


def test_csv_formulas_are_neutralised(tmp_path):
    df = pl.DataFrame({"customer_id": RISKY + ["ok", "a=b"], "n": list(range(len(RISKY) + 2)),
                       "abc": pl.Series(["A"] * (len(RISKY) + 2)).cast(pl.Enum(["A", "B"]))})
    target = tmp_path / "x.csv"
    atomic_write_frame(df, target)
    back = pl.read_csv(target, infer_schema=False)
    assert back["customer_id"].to_list() == ["'" + v for v in RISKY] + ["ok", "a=b"]
    assert back["n"].to_list() == [str(i) for i in range(len(RISKY) + 2)]  # numbers untouched
    assert neutralise_formulas(pl.DataFrame({"x": [None, ""]}))["x"].to_list() == [None, ""]


def test_classify_csv_output_neutralises_customer_ids(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")
    data = tmp_path / "tx.csv"
    data.write_text('customer_id,order_id,order_date,amount\n"=HYPERLINK(""http://x"",""y"")",o1,2024-01-02,10\n'
                    "@evil,o2,2024-01-03,5\n")
    code, out, err = run_cli("classify", data, "-o", tmp_path / "c.csv", "--rejects", tmp_path / "r.csv")
    assert code == 0, err
    ids = pl.read_csv(tmp_path / "c.csv", infer_schema=False)["customer_id"].to_list()
    assert sorted(ids) == ["'=HYPERLINK(\"http://x\",\"y\")", "'@evil"]


# ---------------------------------------------------------------------- plugins
def _write_plugin(directory: Path, name: str, sentinel: Path) -> None:
    (directory / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(sentinel)!r}).write_text('imported')\n"
        "from engine import hookimpl\n\n@hookimpl\ndef register_classifiers(register):\n    pass\n")


def _install(site: Path, dist: str, ep: str, module: str) -> None:
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tierbook]\n{ep} = {module}\n")


def test_plugins_load_only_when_installed_or_named(tmp_path, monkeypatch):
    sentinel = tmp_path / "imported"
    _write_plugin(tmp_path, "lurking_plugin", sentinel)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TIERBOOK_LOAD_PLUGINS", raising=False)
    monkeypatch.chdir(tmp_path)  # even from the module's own directory
    registry = get_registry()
    assert "lurking_plugin" not in registry.plugins and not sentinel.exists()
    registry = get_registry(modules=["lurking_plugin"])  # named: loaded
    assert "lurking_plugin" in registry.plugins and sentinel.exists()


def test_installed_plugins_honour_the_allow_list(tmp_path, monkeypatch):
    sentinel = tmp_path / "imported"
    _write_plugin(tmp_path, "installed_plugin", sentinel)
    site = tmp_path / "site"
    _install(site, "tierbook_installed", "inst", "installed_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")
    registry = get_registry()
    assert "inst" not in registry.plugins and not sentinel.exists()
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "")
    assert get_registry().plugins == {} and not sentinel.exists()
    monkeypatch.delenv("TIERBOOK_LOAD_PLUGINS")
    registry = get_registry()
    assert registry.plugins["inst"].package == "tierbook_installed" and sentinel.exists()


def test_playbook_names_its_plugins(tmp_path, monkeypatch):
    """A playbook may import only tierbook plugins: installed entry points, or modules the operator allowed."""
    sentinel = tmp_path / "imported"
    _write_plugin(tmp_path, "pb_plugin", sentinel)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")
    monkeypatch.delenv("TIERBOOK_PLUGIN_MODULES", raising=False)
    load_playbook(_playbook(tmp_path, HEAD))
    assert not sentinel.exists()
    with_plugin = _playbook(tmp_path, HEAD + "plugins: [pb_plugin]\n", "with.yaml")
    with pytest.raises(PlaybookError, match="'pb_plugin' is not a tierbook plugin"):
        load_playbook(with_plugin)
    assert not sentinel.exists()  # refused before anything was imported
    for name in ("os", "this", "engine.cli"):  # any importable module: refused all the same
        with pytest.raises(PlaybookError, match=f"'{name}' is not a tierbook plugin"):
            load_playbook(_playbook(tmp_path, HEAD + f"plugins: [{name}]\n", "other.yaml"))
    monkeypatch.setenv("TIERBOOK_PLUGIN_MODULES", "pb_plugin")
    load_playbook(with_plugin)
    assert sentinel.exists()


def test_playbook_may_name_an_installed_plugin_module(tmp_path, monkeypatch):
    sentinel = tmp_path / "imported"
    _write_plugin(tmp_path, "inst_plugin", sentinel)
    site = tmp_path / "site"
    _install(site, "tierbook_inst", "inst", "inst_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")  # not loaded by default here ...
    monkeypatch.delenv("TIERBOOK_PLUGIN_MODULES", raising=False)
    load_playbook(_playbook(tmp_path, HEAD + "plugins: [inst_plugin]\n", "with.yaml"))  # ... but it is a plugin
    assert sentinel.exists()


def test_no_module_imports_from_the_working_directory(tmp_path):
    """Files in the working directory named like modules tierbook imports are not picked up by ``tierbook``."""
    import subprocess
    import sys

    sentinel = tmp_path / "imported"
    for name in ("polars", "yaml", "plugins", "engine", "pluggy", "abc_plugin"):
        (tmp_path / f"{name}.py").write_text(f"open({str(sentinel)!r}, 'a').write({name!r})\n")
    tierbook = Path(sys.executable).with_name("tierbook")
    if not tierbook.exists():
        pytest.skip("the tierbook command is not installed beside this Python")
    env = {**os.environ, "TIERBOOK_LOAD_PLUGINS": "abc,adc,rfm"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(tierbook), "plugins"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "abc" in done.stdout and not sentinel.exists()
