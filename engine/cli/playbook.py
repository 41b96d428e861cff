"""``tierbook run``, ``validate``, ``explain`` and ``schema``: playbooks from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from ..terminal import safe_lines
from .output import say, say_block


def _plugins_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugins-dir", metavar="DIR",
                   help="also load every *.py file in DIR as a plugin (this runs their code: see SECURITY.md)")


def _playbook_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("playbook", help="the playbook YAML file")
    _plugins_dir(p)
    p.add_argument("--set", action="append", default=[], metavar="CLASSIFIER.PARAM=VALUE",
                   help="override a classifier parameter of the playbook; repeatable")
    p.add_argument("--as-of", metavar="YYYY-MM-DD", help="override the playbook's as_of")


def add_commands(sub) -> None:
    p = sub.add_parser("run", help="run a playbook: classify, apply its rules, write its outputs")
    _playbook_options(p)
    p.add_argument("--dry-run", action="store_true", help="print the summary, write nothing")
    p.add_argument("--output-dir", metavar="DIR", help="write the outputs here instead of outputs.dir")
    p.add_argument("--allow-outside", action="store_true",
                   help="allow outputs.dir to lead outside the playbook's directory")
    p.add_argument("--skip-failing-plugins", action="store_true",
                   help="skip a plugin or classifier that fails (its columns stay empty; the summary names it) "
                        "instead of stopping")
    p.set_defaults(func=run_run)

    p = sub.add_parser("validate", help="check a playbook without reading the transactions")
    p.add_argument("playbook", help="the playbook YAML file")
    p.add_argument("--set", action="append", default=[], metavar="CLASSIFIER.PARAM=VALUE")
    _plugins_dir(p)
    p.set_defaults(func=run_validate)

    p = sub.add_parser("explain", help="show one customer's features, labels and every rule's verdict")
    _playbook_options(p)
    p.add_argument("customer_id", help="the customer to explain")
    p.set_defaults(func=run_explain)

    p = sub.add_parser("schema", help="print the JSON Schema of playbooks (installed classifiers included)")
    _plugins_dir(p)
    p.set_defaults(func=run_schema)


def _load(args, **kwargs):
    from ..playbook import load_playbook

    return load_playbook(args.playbook, params=args.set or None, plugins_dir=args.plugins_dir, **kwargs)


def format_result(pb, result) -> str:
    from .tables import format_summary

    s = result.summary
    rec = s["reconciliation"]
    lines = [f"playbook {pb.name} (as of {s['as_of']}, hit policy {s['hit_policy']})"]
    lines += [f"customers in {rec['customers_in']:,}, out {rec['customers_out']:,}; "
              f"revenue in {rec['revenue_in']:,.2f}, out {rec['revenue_out']:,.2f}", ""]
    lines.extend(format_summary(result.classes).split("\n"))  # each of its lines already safe
    lines += ["", "rules"]
    width = max([len(r["rule"]) for r in s["rules"]] + [4])
    lines.append(f"  {'rule':<{width}}  {'matched':>8}  {'hits':>8}  {'cut':>6}  {'actions':>8}")
    for r in s["rules"]:
        lines.append(f"  {r['rule']:<{width}}  {r['matched']:>8,}  {r['hits']:>8,}  {r['cut_by_capacity']:>6,}  "
                     f"{r['actions']:>8,}")
    lines.append(f"  unmatched customers: {s['unmatched']:,}; cut by capacity: {s['cut_by_capacity']:,}; "
                 f"actions: {s['actions']:,}")
    for message in s.get("skipped_plugins", []):
        lines.append(f"skipped (--skip-failing-plugins): {message}")
    for item in s.get("skipped_rules", []):
        lines.append(f"skipped rule {item['rule']!r} (not evaluated): {item['reason']}")
    return safe_lines(lines)


def run_run(args: argparse.Namespace) -> int:
    from .progress import step

    skip = args.skip_failing_plugins
    pb = _load(args, output_dir=args.output_dir, allow_outside=args.allow_outside, skip_failing_plugins=skip)
    with step(f"reading {pb.data['transactions']}"):
        prepared = pb.prepare(args.as_of)
    with step("classifying and applying rules"):
        result = pb.evaluate(prepared, skip_failing=skip)
    paths = {}
    if not args.dry_run:  # written before anything is printed: a run that fails says one line
        with step("writing outputs"):
            paths = pb.write(result)
    for line in prepared.report.lines():
        say(line, file=sys.stderr)
    for message in result.summary.get("skipped_plugins", []):
        say(f"tierbook: skipped: {message}", file=sys.stderr)
    for item in result.summary.get("skipped_rules", []):
        say(f"tierbook: skipped rule {item['rule']!r} (not evaluated, no customer matched): {item['reason']}",
            file=sys.stderr)
    say_block(format_result(pb, result))
    if args.dry_run:
        say("", "(dry run: nothing written)")
        return 0
    say()
    for key, path in paths.items():
        say(f"wrote {key}: {path}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    pb = _load(args)
    say(f"{args.playbook}: ok ({len(pb.selections)} classifiers, {len(pb.rules)} rules"
          f"{', fallback' if pb.fallback else ''}; outputs to {pb.output_dir})")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from ..playbook import explain_customer

    pb = _load(args)
    prepared = pb.prepare(args.as_of)
    result = pb.evaluate(prepared)
    say_block(explain_customer(pb, prepared, result, args.customer_id))
    return 0


def run_schema(args: argparse.Namespace) -> int:
    from ..playbook import playbook_schema
    from ..registry import get_registry

    say_block(json.dumps(playbook_schema(get_registry(plugins_dir=args.plugins_dir)), indent=2))
    return 0
