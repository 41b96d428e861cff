"""engine.registry: entry points (built-ins included), explicit modules, broken and colliding plugins."""

from __future__ import annotations

import types

import polars as pl
import pytest

from engine import Classifier, Feature, Output, PluginError, hookimpl
from engine.registry import describe_registry, get_registry


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
    assert [p["name"] for p in abc["params"]] == ["metric", "mode", "a", "b", "a_rank", "b_rank"]
    assert rows["adc"]["requires"] == ["recency_days", "tenure_days"]
    assert [o["column"] for o in rows["rfm"]["outputs"]] == ["rfm_r", "rfm_f", "rfm_m", "rfm_code", "rfm_segment",
                                                              "value_tier"]
