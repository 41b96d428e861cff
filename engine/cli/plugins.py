"""``tierbook plugins``: what is installed."""

from __future__ import annotations

import argparse
import json


def add_commands(sub) -> None:
    p = sub.add_parser("plugins", help="list installed classifiers with their labels and parameters")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="also load this plugin module")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..registry import describe_registry, get_registry

    registry = get_registry(modules=args.plugin)
    rows = describe_registry(registry)
    if args.json:
        failures = [str(f) for f in registry.failures]
        print(json.dumps({"classifiers": rows, "failures": failures}, indent=2, default=str))
        return 0
    for row in rows:
        origin = "built-in" if row["builtin"] else "third-party"
        version = f" {row['version']}" if row["version"] else ""
        print(f"{row['name']}  ({row['package']}{version}, {origin})  {row['description']}")
        for out in row["outputs"]:
            labels = f": {', '.join(out['labels'])}" if out["labels"] else ""
            print(f"  column {out['column']}{labels}")
        for prm in row["params"]:
            bounds = ""
            if "min" in prm or "max" in prm:
                bounds = f" [{prm.get('min', '')}..{prm.get('max', '')}]"
            if "choices" in prm:
                bounds = f" {{{', '.join(prm['choices'])}}}"
            default = json.dumps(prm["default"]) if not isinstance(prm["default"], str) else prm["default"]
            print(f"  {row['name']}.{prm['name']} ({prm['type']}, default {default}){bounds}  {prm['help']}")
        print()
    for failure in registry.failures:
        print(f"not loaded: {failure}")
    return 0
