"""The hooks a tierbook plugin can implement.

Every hook follows one shape: it receives a ``register`` callback and calls it
once for each thing the plugin provides. A plugin module looks like this::

    from engine import Classifier, hookimpl

    @hookimpl
    def register_classifiers(register):
        register(Classifier(...))

and is made known through the ``tierbook`` entry-point group of its package::

    [project.entry-points.tierbook]
    myplugin = "mypackage.tierbook_plugin"

docs/plugins.md is the plugin author's guide: a tutorial from an empty directory
to a published classifier with its own feature, and a reference of both hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .classifier import Classifier, Feature

__all__ = ["hookspec", "hookimpl", "register_classifiers", "register_features"]

hookspec = pluggy.HookspecMarker("tierbook")
hookimpl = pluggy.HookimplMarker("tierbook")


@hookspec
def register_classifiers(register: Callable[[Classifier], None]) -> None:
    """Call ``register(classifier)`` once for each :class:`~engine.Classifier` this plugin provides.

    Classifier names are global: two plugins registering the same name is an
    error that names both.
    """


@hookspec
def register_features(register: Callable[[Feature], None]) -> None:
    """Call ``register(feature)`` once for each extra per-customer :class:`~engine.Feature`.

    Aggregation features join the single pass over the transactions; derived
    features are computed on the customer table right after it. A feature name
    may not repeat a built-in feature or another plugin's feature.
    """
