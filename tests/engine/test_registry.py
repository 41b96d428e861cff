"""engine.registry: entry points (built-ins included), explicit modules, broken and colliding plugins."""

from __future__ import annotations

import types

import polars as pl
import pytest

from engine import Classifier, Feature, Output, PluginError, hookimpl
from engine.registry import describe_plugins, describe_registry, get_registry


def classifier(name, column=None):
    column = column or name
    return Classifier(name=name, description=f"the {name} classifier", outputs=(Output(column, "x", labels=("y", "n")),),
                      params=(), requires=(), expressions=lambda p, ctx: {column: pl.lit("y")})


def module(name, *, classifiers=(), features=(), raises=None):
    mod = types.ModuleType(name)

    @hookimpl
    def register_classifiers(register):
        if raises is not None:
            raise raises
        for c in classifiers:
            register(c)

    @hookimpl
    def register_features(register):
        for f in features:
            register(f)

    mod.register_classifiers = register_classifiers
    mod.register_features = register_features
    return mod


def test_built_ins_come_through_the_entry_point_group(registry):
    assert sorted(registry.classifiers) == ["abc", "adc", "rfm"]
    for name in ("abc", "adc", "rfm"):
        info = registry.owners[name]
        assert (info.name, info.module, info.package, info.entry_point, info.builtin) == \
            (name, f"plugins.{name}", "tierbook", True, True)
    assert registry.failures == []


def test_allow_list_and_environment(monkeypatch):
    assert sorted(get_registry(allow=["rfm"]).classifiers) == ["rfm"]
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc, adc")
    assert sorted(get_registry().classifiers) == ["abc", "adc"]
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "")
    assert get_registry().classifiers == {}


def test_explicit_module_object_and_import_path(tmp_path, monkeypatch):
    reg = get_registry(entry_points=False, modules=[module("mine", classifiers=[classifier("mine")])], strict=True)
    assert list(reg.classifiers) == ["mine"]
    assert reg.owners["mine"].entry_point is False and not reg.owners["mine"].builtin

    (tmp_path / "tb_registry_plugin.py").write_text(
        "import polars as pl\n"
        "from engine import Classifier, Output, hookimpl\n"
        "@hookimpl\n"
        "def register_classifiers(register):\n"
        "    register(Classifier(name='pathy', description='d', outputs=(Output('pathy', 'x', labels=('y',)),),\n"
        "                        params=(), requires=(), expressions=lambda p, c: {'pathy': pl.lit('y')}))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = get_registry(allow=["abc"], modules=["tb_registry_plugin"], strict=True)
    assert sorted(reg.classifiers) == ["abc", "pathy"]
    assert reg.owners["pathy"].module == "tb_registry_plugin"


def test_a_module_that_does_not_import():
    reg = get_registry(allow=["abc"], modules=["tb_no_such_plugin_module"])
    assert sorted(reg.classifiers) == ["abc"]  # the others still load
    assert len(reg.failures) == 1
    assert "'tb_no_such_plugin_module'" in str(reg.failures[0])
    assert "ModuleNotFoundError" in str(reg.failures[0])
    with pytest.raises(PluginError, match="tb_no_such_plugin_module"):
        get_registry(allow=["abc"], modules=["tb_no_such_plugin_module"], strict=True)


def test_a_hook_that_raises_is_named_and_skipped():
    broken = module("broken_plugin", raises=RuntimeError("boom"))
    reg = get_registry(allow=["abc"], modules=[broken])
    assert sorted(reg.classifiers) == ["abc"] and "broken_plugin" not in reg.plugins
    assert "broken_plugin" in str(reg.failures[0]) and "RuntimeError: boom" in str(reg.failures[0])


def test_registering_something_else_than_a_classifier():
    mod = types.ModuleType("wrong_type")

    @hookimpl
    def register_classifiers(register):
        register({"name": "dict"})

    mod.register_classifiers = register_classifiers
    reg = get_registry(entry_points=False, modules=[mod])
    assert "expected a Classifier, got dict" in str(reg.failures[0])


def test_hook_with_a_wrong_signature_is_rejected():
    mod = types.ModuleType("wrong_signature")

    @hookimpl
    def register_classifiers(add):
        pass

    mod.register_classifiers = register_classifiers
    reg = get_registry(entry_points=False, modules=[mod])
    assert reg.classifiers == {} and len(reg.failures) == 1
    assert "wrong_signature" in str(reg.failures[0])


def test_name_collisions_name_both_plugins():
    reg = get_registry(allow=["abc"], modules=[module("copycat", classifiers=[classifier("abc", "abc2")])])
    assert reg.owners["abc"].module == "plugins.abc"
    assert "classifier 'abc' is registered by both abc (tierbook" in str(reg.failures[0])
    assert "copycat" in str(reg.failures[0])

    first = module("feat_one", features=[Feature("spend", "x", derive=pl.col("monetary"))])
    second = module("feat_two", features=[Feature("spend", "y", derive=pl.col("monetary"))])
    reg = get_registry(entry_points=False, modules=[first, second])
    assert reg.feature_owners["spend"].name == "feat_one"
    assert "feature 'spend' is registered by both" in str(reg.failures[0])

    shadow = module("shadow", features=[Feature("monetary", "x", derive=pl.lit(1))])
    reg = get_registry(entry_points=False, modules=[shadow])
    assert reg.features == {}
    assert "registers feature 'monetary', which is a built-in feature" in str(reg.failures[0])


def test_unknown_classifier_suggests_the_closest(registry):
    with pytest.raises(PluginError, match=r"unknown classifier 'rfn' \(did you mean 'rfm'\?\) "
                                          r"\(installed: abc, adc, rfm\)"):
        registry.classifier("rfn")


def test_describe_registry(registry):
    rows = {r["name"]: r for r in describe_registry(registry)}
    assert list(rows) == ["abc", "adc", "rfm"]
    abc = rows["abc"]
    assert abc["builtin"] is True and abc["package"] == "tierbook"
    assert abc["outputs"] == [{"column": "abc", "description": "A, B or C by cumulative contribution",
                               "labels": ["A", "B", "C"]}]
    assert [p["name"] for p in abc["params"]] == ["metric", "mode", "a", "b", "a_rank", "b_rank", "crossing"]
    assert rows["adc"]["requires"] == ["recency_days", "tenure_days", "last_activity"]
    assert [o["column"] for o in rows["rfm"]["outputs"]] == ["rfm_r", "rfm_f", "rfm_m", "rfm_code", "rfm_segment",
                                                              "value_tier"]


def test_plugins_dir_loads_each_file_as_a_plugin(tmp_path):
    # abc.py: named like a built-in plugin and like a standard-library module; it shadows neither
    (tmp_path / "abc.py").write_text("from engine import hookimpl\n@hookimpl\ndef register_classifiers(register):\n"
                                     "    pass\n")
    (tmp_path / "broken.py").write_text("import tb_no_such_module_for_a_plugin\n")
    (tmp_path / "pathy.py").write_text(
        "import polars as pl\n"
        "from engine import Classifier, Output, hookimpl\n"
        "@hookimpl\n"
        "def register_classifiers(register):\n"
        "    register(Classifier(name='pathy', description='d', outputs=(Output('pathy', 'x', labels=('y',)),),\n"
        "                        params=(), requires=(), expressions=lambda p, c: {'pathy': pl.lit('y')}))\n"
    )
    (tmp_path / "_private.py").write_text("raise SystemExit('never imported')\n")
    (tmp_path / "notes.txt").write_text("not a plugin")
    reg = get_registry(allow=["abc"], plugins_dir=tmp_path)
    import abc as stdlib_abc

    assert stdlib_abc.ABC  # the standard library's abc is untouched
    assert sorted(reg.classifiers) == ["abc", "pathy"]
    info = reg.owners["pathy"]
    assert (info.name, info.path, info.source, info.builtin) == ("pathy", str(tmp_path / "pathy.py"), "plugins dir",
                                                                 False)
    messages = [str(f) for f in reg.failures]  # in file order
    assert len(messages) == 2
    assert messages[0].startswith("plugin name 'abc' is used by both abc (tierbook ") and \
        messages[0].endswith(f"and abc (file {tmp_path / 'abc.py'})")
    assert messages[1].startswith(f"plugin broken (file {tmp_path / 'broken.py'}) failed to load: "
                                  f"ModuleNotFoundError")
    assert {f.plugin for f in reg.failures} == {"abc", "broken"}
    with pytest.raises(PluginError, match="broken"):
        get_registry(entry_points=False, plugins_dir=tmp_path, strict=True)


def test_describe_plugins_lists_features_only_plugins(registry):
    feat = Feature("gap", "a feature", derive=pl.col("recency_days") * 2)
    reg = get_registry(allow=["adc"], modules=[module("featuring", features=[feat])], strict=True)
    rows = {row["name"]: row for row in describe_plugins(reg)}
    assert sorted(rows) == ["adc", "featuring"]
    assert rows["featuring"]["features"] == ["gap"] and rows["featuring"]["classifiers"] == []
    # the module implements both hooks (it registers no classifier through the first)
    assert rows["featuring"]["hooks"] == ["register_classifiers", "register_features"]
    assert rows["featuring"]["source"] == "module"
    assert rows["adc"]["hooks"] == ["register_classifiers"] and rows["adc"]["classifiers"] == ["adc"]


def test_plugins_dir_refuses_what_every_user_may_write(tmp_path):
    (tmp_path / "mine.py").write_text("x = 1\n")
    tmp_path.chmod(0o777)
    with pytest.raises(PluginError, match=r"the directory is writable by every user.*chmod o-w"):
        get_registry(entry_points=False, plugins_dir=tmp_path)
    tmp_path.chmod(0o755)
    (tmp_path / "mine.py").chmod(0o666)
    with pytest.raises(PluginError, match=r"mine.py is writable by every user") as info:
        get_registry(entry_points=False, plugins_dir=tmp_path)
    assert info.value.file == str(tmp_path / "mine.py")
    (tmp_path / "mine.py").chmod(0o644)
    assert get_registry(entry_points=False, plugins_dir=tmp_path).plugins["mine"].path == str(tmp_path / "mine.py")


def test_a_plugins_dir_file_calling_sys_exit_is_named_and_skipped(tmp_path):
    (tmp_path / "quitter.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "fine.py").write_text("x = 1\n")
    reg = get_registry(entry_points=False, plugins_dir=tmp_path)
    assert sorted(reg.plugins) == ["fine"]
    assert [str(f) for f in reg.failures] == [
        f"plugin quitter (file {tmp_path / 'quitter.py'}) failed to load: SystemExit: the plugin called sys.exit(3)"]


def _install(site, dist: str, entry_points: dict[str, str]) -> None:
    """A minimal installed distribution on ``site``: METADATA and entry_points.txt."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"  # the folder's name: NAME-VERSION
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[tierbook]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))


def test_errors_from_loading_entry_points_carry_the_plugin(tmp_path, monkeypatch):
    """Every PluginError of loading names its plugin as an attribute (``plugin=``), not only in the text."""
    site = tmp_path / "site"
    (tmp_path / "tb_raises_at_import.py").write_text("raise RuntimeError('no config')\n")
    (tmp_path / "tb_refuses_itself.py").write_text("from engine import PluginError\nraise PluginError('needs a key')\n")
    (tmp_path / "tb_slow_import.py").write_text("import time\ntime.sleep(5)\n")
    (tmp_path / "tb_hook_raises.py").write_text(
        "from engine import hookimpl\n\n@hookimpl\ndef register_classifiers(register):\n    raise ValueError('x')\n")
    (tmp_path / "tb_unknown_hook.py").write_text(
        "from engine import hookimpl\n\n@hookimpl\ndef register_clasifiers(register):\n    pass\n")
    for twin in ("tb_twin_one", "tb_twin_two"):
        (tmp_path / f"{twin}.py").write_text("")
    _install(site, "tb-broken", {"crash": "tb_raises_at_import", "refuse": "tb_refuses_itself",
                                 "slow": "tb_slow_import", "hooky": "tb_hook_raises", "typo": "tb_unknown_hook",
                                 "dup": "tb_twin_one"})
    _install(site, "tb-twin", {"dup": "tb_twin_two"})  # an entry-point name taken twice
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("TIERBOOK_PLUGIN_TIMEOUT", "0.3")
    reg = get_registry(allow=["crash", "refuse", "slow", "hooky", "typo", "dup"])
    got = sorted((e.plugin, str(e)) for e in reg.failures)
    assert [plugin for plugin, _ in got] == ["crash", "dup", "hooky", "refuse", "slow", "typo"], got
    assert all(isinstance(e, PluginError) for e in reg.failures)
    by_plugin = {e.plugin: str(e) for e in reg.failures}
    assert "did not return within 0.3 s" in by_plugin["slow"] and "needs a key" in by_plugin["refuse"]
    assert "register_clasifiers" in by_plugin["typo"]
    with pytest.raises(PluginError) as info:
        get_registry(allow=["refuse"], strict=True)
    assert info.value.plugin == "refuse"


def test_errors_from_modules_and_collisions_carry_the_plugin():
    reg = get_registry(entry_points=False, modules=["tb_no_such_plugin_module", module("boom", raises=KeyError(1))])
    assert [e.plugin for e in reg.failures] == ["tb_no_such_plugin_module", "boom"]
    reg = get_registry(allow=["abc"], modules=[module("copycat", classifiers=[classifier("abc", "abc2")])])
    assert [(e.plugin, e.classifier) for e in reg.failures] == [("copycat", "abc")]
    first = module("feat_one", features=[Feature("spend", "x", derive=pl.col("monetary"))])
    second = module("feat_two", features=[Feature("spend", "y", derive=pl.col("monetary")),
                                          Feature("monetary", "z", derive=pl.lit(1))])
    reg = get_registry(entry_points=False, modules=[first, second])
    assert sorted((e.plugin, e.value) for e in reg.failures) == [("feat_two", "monetary"), ("feat_two", "spend")]
