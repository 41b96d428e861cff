"""``tierbook plugins``: what is installed: every plugin with its hooks, then each classifier in detail."""

from __future__ import annotations

import argparse
import json

from .output import say, say_block


def add_commands(sub) -> None:
    from .classify import plugin_options

    p = sub.add_parser("plugins", help="list plugins (package, version, hooks) and their classifiers' labels "
                                       "and parameters")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    plugin_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..feature_table import FEATURES, Agg
    from ..registry import describe_plugins, describe_registry, get_registry

    registry = get_registry(modules=args.plugin, plugins_dir=args.plugins_dir)
    rows = describe_registry(registry)
    plugins = describe_plugins(registry)
    if args.json:
        failures = [str(f) for f in registry.failures]
        builtin = [{"name": f.name, "dtype": str(f.dtype), "description": f.description,
                    "kind": "aggregation" if isinstance(f.compute, Agg) else "derived", "computed_as": f.how}
                   for f in FEATURES]
        features = [{"name": name, "description": f.description, "kind": "aggregation" if f.agg is not None
                     else "derived", "plugin": registry.feature_owners[name].name}
                    for name, f in sorted(registry.features.items())]
        say_block(json.dumps({"plugins": plugins, "classifiers": rows, "builtin_features": builtin, "features": features,
                          "failures": failures}, indent=2, default=str))
        return 0
    for row in rows:
        origin = "built-in" if row["builtin"] else "third-party"
        version = f" {row['version']}" if row["version"] else ""
        say(f"{row['name']}  ({row['package']}{version}, {origin})  {row['description']}")
        for out in row["outputs"]:
            labels = f": {', '.join(out['labels'])}" if out["labels"] else ""
            say(f"  column {out['column']}{labels}")
        for prm in row["params"]:
            bounds = ""
            if "min" in prm or "max" in prm:
                bounds = f" [{prm.get('min', '')}..{prm.get('max', '')}]"
            if "choices" in prm:
                bounds = f" {{{', '.join(prm['choices'])}}}"
            default = json.dumps(prm["default"]) if not isinstance(prm["default"], str) else prm["default"]
            say(f"  {row['name']}.{prm['name']} ({prm['type']}, default {default}){bounds}  {prm['help']}")
        say()
    say("built-in features (docs/features.md)")
    width = max(len(f.name) for f in FEATURES)
    for f in FEATURES:
        say(f"  {f.name:<{width}}  {str(f.dtype):<7}  {f.description}; {f.how}")
    say()
    if registry.features:
        say("features from plugins")
        for name, feature in sorted(registry.features.items()):
            say(f"  {name}  ({registry.feature_owners[name].name})  {feature.description}")
        say()
    say("plugins")
    for plugin in plugins:
        say(f"  {_plugin_line(plugin)}")
    for failure in registry.failures:
        say(f"not loaded: {failure}")
    return 0


def _plugin_line(plugin: dict) -> str:
    """``name  package version (built-in)  hooks: ...  provides: ...`` for one plugin."""
    if plugin["package"]:
        origin = f"{plugin['package']} {plugin['version']}, {'built-in' if plugin['builtin'] else 'third-party'}"
    elif plugin["path"]:
        origin = f"file {plugin['path']}, --plugins-dir"
    else:
        origin = f"module {plugin['module']}, --plugin"
    provides = [*plugin["classifiers"], *(f"feature {f}" for f in plugin["features"])]
    return (f"{plugin['name']}  ({origin})  hooks: {', '.join(plugin['hooks']) or 'none'}"
            f"  provides: {', '.join(provides) or 'nothing'}")
