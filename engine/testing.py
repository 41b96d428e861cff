"""Helpers for testing a plugin on its own.

A plugin's tests should see that plugin and nothing else: not the built-ins, not
whatever else happens to be installed in the environment. :func:`plugin_registry`
builds such a registry; pass it to :func:`engine.classify`,
:func:`engine.classify_frame` or :func:`engine.prepare` (``registry=``)::

    from engine.testing import plugin_registry
    import my_plugin

    def test_late_customers():
        registry = plugin_registry(my_plugin)
        customers = engine.classify(transactions, registry=registry, as_of="2024-07-01")
        assert customers["churn"].to_list() == [...]

Examples
--------
>>> import polars as pl, types
>>> from engine import Classifier, Output, hookimpl
>>> plugin = types.ModuleType("always_gold")
>>> @hookimpl
... def register_classifiers(register):
...     register(Classifier(name="gold", description="everyone is gold", params=(), requires=(),
...                         outputs=(Output("gold", "tier", labels=("gold",)),),
...                         expressions=lambda params, ctx: {"gold": pl.lit("gold")}))
>>> plugin.register_classifiers = register_classifiers
>>> registry = plugin_registry(plugin)
>>> sorted(registry.classifiers)
['gold']
"""

from __future__ import annotations

import types

from .registry import Registry, get_registry

__all__ = ["plugin_registry"]


def plugin_registry(*plugins: str | types.ModuleType, installed: tuple[str, ...] = ()) -> Registry:
    """A registry of exactly ``plugins`` (modules or import paths), and no installed plugin.

    ``installed`` names installed plugins (entry-point names, e.g. a built-in
    classifier a test compares with) to load as well. Loading is strict: a
    plugin that fails to import or register raises its
    :class:`~engine.errors.PluginError` at once, so a broken plugin fails its
    test instead of being skipped. ``TIERBOOK_LOAD_PLUGINS`` is not consulted.
    """
    return get_registry(entry_points=bool(installed), allow=list(installed), modules=plugins, strict=True)
