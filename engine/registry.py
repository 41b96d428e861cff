"""Finding, loading and querying plugins.

:func:`get_registry` builds a fresh pluggy ``PluginManager`` every time (no
import-time global), loads the ``tierbook`` entry points one by one so that one
broken plugin is named and skipped rather than taking every command down, adds
explicitly named modules, and collects what the plugins register.

``TIERBOOK_LOAD_PLUGINS`` restricts the entry points loaded: a comma-separated
allow-list of entry-point names (``abc,rfm``); set but empty, it loads none.

A plugins directory (``--plugins-dir DIR``) holds local plugins: every ``*.py``
file directly in it whose name does not start with ``_`` is imported as one
plugin, named by its file name. That runs the code of every such file (see
SECURITY.md).

Plugin code runs under a time limit: importing a plugin, its registration
hooks and each classifier's ``expressions()`` call must return within
``TIERBOOK_PLUGIN_TIMEOUT`` seconds (default 60; 0 switches the limit off), or
the plugin fails with a :class:`~engine.errors.PluginError` naming it. The limit
uses ``SIGALRM`` and so applies in the main thread of a Unix process; the Polars
evaluation of the expressions a plugin returns is native code bounded by the
size of the customer table, not by this limit.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata as md
import importlib.util
import os
import signal
import sys
import threading
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .classifier import Classifier, Feature
from .errors import PluginError, option, suggest

__all__ = ["Registry", "PluginInfo", "get_registry", "ENTRY_POINT_GROUP", "plugin_time_limit", "PluginTimeout",
           "describe_registry", "describe_plugins"]

ENTRY_POINT_GROUP = "tierbook"
BUILTIN_DISTRIBUTION = "tierbook"
DEFAULT_PLUGIN_TIMEOUT = 60.0


class PluginTimeout(BaseException):
    """Raised inside plugin code when it overruns its time limit.

    A ``BaseException`` so that a plugin's own ``except Exception`` cannot
    swallow it; :func:`plugin_time_limit` turns it into a :class:`PluginError`.
    """


def describe_failure(exc: BaseException) -> str:
    """``Type: message`` of an exception raised by plugin code, ``sys.exit`` included.

    >>> describe_failure(SystemExit(3))
    'SystemExit: the plugin called sys.exit(3)'
    """
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


def stops_tierbook(exc: BaseException) -> bool:
    """Whether an exception from plugin code must end tierbook (Ctrl-C) rather than fail the plugin.

    Plugin code may raise anything, ``SystemExit`` and other ``BaseException``
    subclasses included; only a ``KeyboardInterrupt`` (the user's) goes through.
    """
    return isinstance(exc, KeyboardInterrupt)


def plugin_timeout() -> float | None:
    """The limit in seconds from ``TIERBOOK_PLUGIN_TIMEOUT`` (default 60), or None when switched off."""
    text = os.environ.get("TIERBOOK_PLUGIN_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_PLUGIN_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise PluginError(f"TIERBOOK_PLUGIN_TIMEOUT: {text!r} is not a number of seconds") from None
    return value if value > 0 else None


@contextlib.contextmanager
def plugin_time_limit(what: str) -> Iterator[None]:
    """Run plugin code for at most ``TIERBOOK_PLUGIN_TIMEOUT`` seconds; ``what`` names it in the error."""
    seconds = plugin_timeout()
    usable = (seconds is not None and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread()
              and signal.getitimer(signal.ITIMER_REAL)[0] == 0)  # never override an outer timer
    if not usable:
        yield
        return

    def expired(signum, frame):
        raise PluginTimeout()

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except PluginTimeout:
        raise PluginError(f"{what} did not return within {seconds:g} s (TIERBOOK_PLUGIN_TIMEOUT)") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from: its name, module, distribution and version."""

    name: str
    module: str
    package: str | None = None
    version: str | None = None
    entry_point: bool = True
    #: the file a plugin of a plugins directory was loaded from
    path: str | None = None

    @property
    def builtin(self) -> bool:
        return self.package == BUILTIN_DISTRIBUTION

    def label(self) -> str:
        """``name (package version)`` for messages."""
        if self.package:
            return f"{self.name} ({self.package} {self.version})"
        if self.path:
            return f"{self.name} (file {self.path})"
        return f"{self.name} (module {self.module})"

    @property
    def source(self) -> str:
        """How it was loaded: ``entry point``, ``module`` (``--plugin``, ``modules=``) or ``plugins dir``."""
        return "entry point" if self.entry_point else "plugins dir" if self.path else "module"


@dataclass
class Registry:
    """The loaded plugins and what they registered."""

    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    classifiers: dict[str, Classifier] = field(default_factory=dict)
    owners: dict[str, PluginInfo] = field(default_factory=dict)
    features: dict[str, Feature] = field(default_factory=dict)
    feature_owners: dict[str, PluginInfo] = field(default_factory=dict)
    failures: list[PluginError] = field(default_factory=list)

    def classifier(self, name: str) -> Classifier:
        """The classifier called ``name``, or a :class:`PluginError` suggesting a near miss."""
        try:
            return self.classifiers[name]
        except KeyError:
            known = ", ".join(sorted(self.classifiers)) or "none installed"
            failed = "".join(f"; a plugin failed to load: {f}" for f in self.failures)
            raise PluginError(
                f"unknown classifier {name!r}{suggest(name, self.classifiers)} (installed: {known}){failed}"
            ) from None


def get_registry(
    *,
    entry_points: bool = True,
    modules: Iterable[str | types.ModuleType] = (),
    strict: bool = False,
    allow: Iterable[str] | None = None,
    plugins_dir: str | Path | None = None,
) -> Registry:
    """Build a plugin manager and collect every classifier and feature.

    Parameters
    ----------
    entry_points
        Load the ``tierbook`` entry-point group (built-ins included).
    modules
        Extra plugin modules (import paths or module objects), e.g. from
        ``--plugin`` or a notebook.
    strict
        Raise on the first plugin that fails to load or register, instead of
        recording it in ``Registry.failures`` and going on without it.
    allow
        Entry-point names to load; default from ``TIERBOOK_LOAD_PLUGINS``.
    plugins_dir
        A directory of local plugins: each ``*.py`` file in it (not starting
        with ``_``) is imported and registered as a plugin named by its file.
    """
    pm = pluggy.PluginManager("tierbook")
    pm.add_hookspecs(hookspecs)
    registry = Registry(pm=pm)

    if allow is None and "TIERBOOK_LOAD_PLUGINS" in os.environ:
        allow = [n.strip() for n in os.environ["TIERBOOK_LOAD_PLUGINS"].split(",") if n.strip()]
    allowed = None if allow is None else set(allow)

    def fail(err: PluginError, plugin: str | None = None) -> None:
        if err.plugin is None:  # the plugin's name as a fact of the error, not only in its message
            err.plugin = plugin
        if strict:
            raise err
        registry.failures.append(err)

    if entry_points:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if allowed is not None and ep.name not in allowed:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                package=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            if ep.name in registry.plugins:
                other = registry.plugins[ep.name]
                fail(PluginError(f"plugin name {ep.name!r} is used by both {other.label()} and {info.label()}",
                                 plugin=ep.name))
                continue
            try:
                with plugin_time_limit(f"plugin {info.label()}: importing it"):
                    module = ep.load()
            except PluginError as exc:
                fail(exc, ep.name)
                continue
            except BaseException as exc:  # a broken plugin (even one calling sys.exit) must not take the others down
                if stops_tierbook(exc):
                    raise
                fail(PluginError(f"plugin {info.label()} failed to load: {describe_failure(exc)}", plugin=ep.name))
                continue
            _register(registry, module, info, fail)

    for mod in modules:
        label = mod if isinstance(mod, str) else getattr(mod, "__name__", repr(mod))
        try:
            with plugin_time_limit(f"plugin module {mod!r}: importing it"):
                module = importlib.import_module(mod) if isinstance(mod, str) else mod
        except PluginError as exc:
            fail(exc, label)
            continue
        except BaseException as exc:
            if stops_tierbook(exc):
                raise
            fail(PluginError(f"plugin module {mod!r} failed to import: {describe_failure(exc)}", plugin=label))
            continue
        name = module.__name__
        package, version = _distribution_of(name)
        _register(registry, module, PluginInfo(name=name, module=name, package=package, version=version,
                                               entry_point=False), fail)

    if plugins_dir is not None:
        _load_plugins_dir(registry, Path(plugins_dir), fail)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        bad = getattr(exc, "plugin", None)
        name = pm.get_name(bad) if bad is not None else None
        fail(PluginError(f"plugin {name or '?'!r}: {exc}", plugin=name))

    _collect(registry, fail)
    return registry


def _load_plugins_dir(registry: Registry, directory: Path, fail) -> None:
    """Import every ``*.py`` file of ``directory`` (not ``_*``) as one plugin named by the file."""
    if not directory.is_dir():
        raise PluginError(f"{option('plugins_dir')} {directory}: not a directory", file=str(directory))
    _refuse_world_writable(directory, directory)
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_") or not path.is_file():
            continue
        _refuse_world_writable(directory, path)
        name = path.stem
        info = PluginInfo(name=name, module=f"tierbook_plugins_dir.{name}", entry_point=False, path=str(path))
        if name in registry.plugins:
            other = registry.plugins[name]
            fail(PluginError(f"plugin name {name!r} is used by both {other.label()} and {info.label()}",
                             plugin=name, file=str(path)))
            continue
        try:
            with plugin_time_limit(f"plugin {info.label()}: importing it"):
                # Under its own package name, so a file called abc.py or json.py shadows no other module.
                spec = importlib.util.spec_from_file_location(info.module, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[info.module] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[info.module]
                    raise
        except PluginError as exc:
            fail(exc, name)
            continue
        except BaseException as exc:  # a broken file, even one calling sys.exit, must not take the others down
            if stops_tierbook(exc):
                raise
            fail(PluginError(f"plugin {info.label()} failed to load: {describe_failure(exc)}", plugin=name,
                             file=str(path)))
            continue
        _register(registry, module, info, fail)


def _refuse_world_writable(directory: Path, path: Path) -> None:
    """Anyone on the machine could put code into a world-writable plugin file or directory: refuse it."""
    import stat

    if path.stat().st_mode & stat.S_IWOTH:
        what = "the directory" if path == directory else path.name
        raise PluginError(f"{option('plugins_dir')} {directory}: {what} is writable by every user, so anyone could "
                          f"put code into it; remove that permission (chmod o-w)", file=str(path))


def _distribution_of(module: str) -> tuple[str | None, str | None]:
    """The installed distribution (name, version) that provides ``module``'s top-level package, if any."""
    top = module.split(".")[0]
    try:
        names = md.packages_distributions().get(top) or []
        if names:
            dist = md.distribution(names[0])
            return dist.metadata["Name"], dist.version
    except Exception:  # metadata is best effort: the module name is still given
        pass
    return None, None


def _register(registry: Registry, module: Any, info: PluginInfo, fail) -> None:
    if registry.pm.is_registered(module):
        return
    try:
        registry.pm.register(module, name=info.name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        fail(PluginError(f"plugin {info.label()} is invalid: {exc}", plugin=info.name))
        return
    registry.plugins[info.name] = info


def _collect(registry: Registry, fail) -> None:
    pm = registry.pm
    from .features import BUILTIN_FEATURES

    for name, info in list(registry.plugins.items()):
        plugin = pm.get_plugin(name)
        others = [p for p in pm.get_plugins() if p is not plugin]

        got_classifiers: list[Classifier] = []
        got_features: list[Feature] = []

        def reg_classifier(obj: Any, _into=got_classifiers) -> None:
            if not isinstance(obj, Classifier):
                raise TypeError(f"register_classifiers: expected a Classifier, got {type(obj).__name__}")
            _into.append(obj)

        def reg_feature(obj: Any, _into=got_features) -> None:
            if not isinstance(obj, Feature):
                raise TypeError(f"register_features: expected a Feature, got {type(obj).__name__}")
            _into.append(obj)

        try:
            with plugin_time_limit(f"plugin {info.label()}: its registration hooks"):
                pm.subset_hook_caller("register_classifiers", remove_plugins=others)(register=reg_classifier)
                pm.subset_hook_caller("register_features", remove_plugins=others)(register=reg_feature)
        except BaseException as exc:
            if stops_tierbook(exc):
                raise
            if not isinstance(exc, PluginError):
                exc = PluginError(f"plugin {info.label()} failed while registering: {describe_failure(exc)}")
            fail(exc, name)
            pm.unregister(name=name)
            del registry.plugins[name]
            continue

        for c in got_classifiers:
            if c.name in registry.classifiers:
                other = registry.owners[c.name]
                fail(PluginError(f"classifier {c.name!r} is registered by both {other.label()} and {info.label()}",
                                 plugin=info.name, classifier=c.name))
                continue
            registry.classifiers[c.name] = c
            registry.owners[c.name] = info
        for f in got_features:
            if f.name in BUILTIN_FEATURES:
                fail(PluginError(f"plugin {info.label()} registers feature {f.name!r}, which is a built-in feature",
                                 plugin=info.name, value=f.name))
                continue
            if f.name in registry.features:
                other = registry.feature_owners[f.name]
                fail(PluginError(f"feature {f.name!r} is registered by both {other.label()} and {info.label()}",
                                 plugin=info.name, value=f.name))
                continue
            registry.features[f.name] = f
            registry.feature_owners[f.name] = info


def describe_plugins(registry: Registry) -> list[dict[str, Any]]:
    """One dict per loaded plugin: name, package, version, how it was loaded, hooks, what it registered.

    Every plugin is listed, a plugin that only registers features included.
    """
    rows = []
    for name, info in sorted(registry.plugins.items()):
        plugin = registry.pm.get_plugin(name)
        hooks = sorted(h.name for h in registry.pm.get_hookcallers(plugin) or [])
        rows.append(
            {
                "name": name,
                "package": info.package,
                "version": info.version,
                "module": info.module,
                "path": info.path,
                "source": info.source,
                "builtin": info.builtin,
                "hooks": hooks,
                "classifiers": sorted(c for c, owner in registry.owners.items() if owner.name == name),
                "features": sorted(f for f, owner in registry.feature_owners.items() if owner.name == name),
            }
        )
    return rows


def describe_registry(registry: Registry) -> list[dict[str, Any]]:
    """One dict per classifier: name, plugin, package, version, built-in, outputs, parameters."""
    rows = []
    for name in sorted(registry.classifiers):
        c = registry.classifiers[name]
        info = registry.owners[name]
        rows.append(
            {
                "name": name,
                "description": c.description,
                "plugin": info.name,
                "package": info.package or info.module,
                "version": info.version,
                "builtin": info.builtin,
                "requires": list(c.required()),
                "outputs": [
                    {"column": o.column, "description": o.description, "labels": list(o.labels) if o.labels else None}
                    for o in c.output_specs()
                ],
                "params": [p.describe() for p in c.params],
            }
        )
    return rows


