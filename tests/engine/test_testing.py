"""engine.testing: a registry of exactly the plugins a test names."""

from __future__ import annotations

import types

import polars as pl
import pytest

from engine import Classifier, Output, PluginError, hookimpl
from engine.testing import plugin_registry


def _plugin(name: str, *, broken: bool = False) -> types.ModuleType:
    mod = types.ModuleType(name)

    @hookimpl
    def register_classifiers(register):
        if broken:
            raise RuntimeError("cannot register")
        register(Classifier(name=name, description="d", outputs=(Output(name, "x", labels=("y",)),), params=(),
                            requires=(), expressions=lambda p, c: {name: pl.lit("y")}))

    mod.register_classifiers = register_classifiers
    return mod


def test_only_the_given_plugins(monkeypatch):
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")  # not consulted
    reg = plugin_registry(_plugin("mine"))
    assert sorted(reg.classifiers) == ["mine"] and sorted(reg.plugins) == ["mine"]
    assert sorted(plugin_registry(_plugin("mine"), installed=("rfm",)).classifiers) == ["mine", "rfm"]


def test_a_broken_plugin_fails_its_test():
    with pytest.raises(PluginError, match="broken.*cannot register"):
        plugin_registry(_plugin("broken", broken=True))
