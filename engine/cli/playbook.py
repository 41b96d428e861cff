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
    from .classify import engine_options

    p.add_argument("playbook", help="the playbook YAML file")
    _plugins_dir(p)
    engine_options(p, playbook=True)
    p.add_argument("--set", action="append", default=[], metavar="CLASSIFIER.PARAM=VALUE",
                   help="override a classifier parameter of the playbook; repeatable")
    p.add_argument("--as-of", metavar="YYYY-MM-DD", help="override the playbook's as_of")
    g = p.add_argument_group("snapshots (several as_of dates from one scan; docs/time.md)")
    g.add_argument("--snapshots", metavar="DATE,DATE,...", help="snapshot dates (replaces the playbook's snapshots)")
    g.add_argument("--every", metavar="PERIOD", help="a snapshot every day, week, month, quarter, year or 'N days'")
    g.add_argument("--periods", type=int, metavar="N", help="how many snapshots, with --every")
    g.add_argument("--end", metavar="YYYY-MM-DD", help="the last snapshot's as_of, with --every (default: --as-of, "
                                                      "data.as_of or the day after the last transaction)")
    g.add_argument("--window", action="append", default=[], metavar="CLASSIFIER=PERIOD",
                   help="classify CLASSIFIER on the lines of PERIOD (e.g. '12 months') before each as_of; repeatable")
    g.add_argument("--cohort", choices=("month", "quarter"), help="grain of the cohort table (default month)")


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
    p.add_argument("--force", action="store_true",
                   help="replace outputs another playbook wrote, or outputs changed since they were written (their "
                        "summary's manifest no longer matches them); without it such a run writes nothing")
    p.set_defaults(func=run_run)

    p = sub.add_parser("validate", help="check a playbook without reading the transactions")
    p.add_argument("playbook", help="the playbook YAML file")
    p.add_argument("--set", action="append", default=[], metavar="CLASSIFIER.PARAM=VALUE")
    _plugins_dir(p)
    p.set_defaults(func=run_validate)

    p = sub.add_parser("test", help="check the playbook's expect: cases; explain each one that fails (exit 1)")
    p.add_argument("playbook", help="the playbook YAML file")
    p.add_argument("--set", action="append", default=[], metavar="CLASSIFIER.PARAM=VALUE",
                   help="override a classifier parameter of the playbook; repeatable")
    _plugins_dir(p)
    p.set_defaults(func=run_test)

    p = sub.add_parser("explain", help="show one customer's features, labels and every rule's verdict")
    _playbook_options(p)
    p.add_argument("customer_id", help="the customer to explain")
    p.set_defaults(func=run_explain)

    p = sub.add_parser("check", help="what a playbook's rules can do (dead, shadowed, overlapping rules) and did on "
                                     "the data")
    _playbook_options(p)
    p.add_argument("--static", action="store_true", help="the static analysis only: read no transactions")
    p.add_argument("--json", action="store_true", help="print JSON for scripts (docs/check-and-diff.md)")
    p.add_argument("--strict", action="store_true", help="exit with code 1 when a rule is dead or shadowed")
    p.set_defaults(func=run_check)

    from .classify import engine_options

    p = sub.add_parser("diff", help="who gets a different action under a changed playbook, and why")
    p.add_argument("old", help="the playbook as it is")
    p.add_argument("new", nargs="?", help="the changed playbook (default: OLD with the --set changes)")
    _plugins_dir(p)
    p.add_argument("--set", action="append", default=[], metavar="CLASSIFIER.PARAM=VALUE",
                   help="change a classifier parameter of the new side; repeatable")
    p.add_argument("--as-of", metavar="YYYY-MM-DD", help="override the playbooks' as_of")
    engine_options(p, playbook=True)
    p.add_argument("--csv", metavar="FILE", help="write the customers whose action changes, with the reason "
                                                 "(CSV, or Parquet/JSON/NDJSON/xlsx by the suffix), atomically")
    p.add_argument("--json", action="store_true", help="print JSON for scripts (docs/check-and-diff.md)")
    p.set_defaults(func=run_diff)

    p = sub.add_parser("schema", help="print the JSON Schema of playbooks (installed classifiers included)")
    _plugins_dir(p)
    p.add_argument("--summary", action="store_true", help="print the JSON Schema of a run's summary.json instead")
    p.set_defaults(func=run_schema)


def _snapshot_options(args) -> dict | None:
    """``--snapshots``, ``--every``, ``--periods``, ``--end``, ``--window``, ``--cohort`` as ``snapshots:`` keys."""
    from ..errors import ParamError

    out: dict = {}
    if getattr(args, "snapshots", None):
        out["as_of"] = [d.strip() for d in args.snapshots.split(",") if d.strip()]
    for key in ("every", "periods", "end", "cohort"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    windows = {}
    for item in getattr(args, "window", None) or []:
        name, eq, period = item.partition("=")
        if not eq or not name.strip() or not period.strip():
            raise ParamError(f"--window {item}: expected CLASSIFIER=PERIOD, e.g. NAME='12 months'", value=item)
        windows[name.strip()] = period.strip()
    if windows:
        out["window"] = windows
    return out or None


def _load(args, **kwargs):
    from ..playbook import load_playbook
    from .classify import spark_options

    return load_playbook(args.playbook, params=args.set or None, plugins_dir=args.plugins_dir,
                         snapshots=_snapshot_options(args), engine=getattr(args, "engine", None),
                         spark=spark_options(args) if hasattr(args, "spark_conf") else None, **kwargs)


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
    held = s.get("holdouts") or {}
    groups = held.get("playbook") is not None or any(h["holdout"] is not None for h in held.get("rules", []))
    extra = f"  {'control':>8}" if groups else ""
    lines.append(f"  {'rule':<{width}}  {'matched':>8}  {'hits':>8}  {'cut':>6}  {'actions':>8}{extra}")
    for r in s["rules"]:
        extra = f"  {r['control']:>8,}" if groups else ""
        lines.append(f"  {r['rule']:<{width}}  {r['matched']:>8,}  {r['hits']:>8,}  {r['cut_by_capacity']:>6,}  "
                     f"{r['actions']:>8,}{extra}")
    lines.append(f"  unmatched customers: {s['unmatched']:,}; cut by capacity: {s['cut_by_capacity']:,}; "
                 f"actions: {s['actions']:,}" + (f"; held out (control, no action): {s['control']:,}" if groups else ""))
    for message in s.get("skipped_plugins", []):
        lines.append(f"skipped (--skip-failing-plugins): {message}")
    for item in s.get("skipped_rules", []):
        lines.append(f"skipped rule {item['rule']!r} (not evaluated): {item['reason']}")
    return safe_lines(lines)


def run_run(args: argparse.Namespace) -> int:
    from .progress import step

    skip = args.skip_failing_plugins
    pb = _load(args, output_dir=args.output_dir, allow_outside=args.allow_outside, skip_failing_plugins=skip)
    if pb.snapshots is not None:
        with step(f"reading {pb.data['transactions']} and classifying every snapshot"):
            snaps = pb.compute_snapshots(args.as_of, skip_failing=skip)
        if not args.dry_run:  # the largest snapshot file encoded while the rules run
            from ..playbook.write import encode_snapshot_files

            encode_snapshot_files(snaps)
        with step("applying rules"):
            result = pb.evaluate_snapshots(snaps)
        prepared = result
    else:
        with step(f"reading {pb.data['transactions']}"):
            prepared = pb.prepare(args.as_of)
        with step("classifying and applying rules"):
            result = pb.evaluate(prepared, skip_failing=skip)
    paths = {}
    if not args.dry_run:  # written before anything is printed: a run that fails says one line
        with step("writing outputs"):
            paths = pb.write(result, force=args.force)
    for line in prepared.report.lines():
        say(line, file=sys.stderr)
    for message in result.summary.get("skipped_plugins", []):
        say(f"tierbook: skipped: {message}", file=sys.stderr)
    for item in result.summary.get("skipped_rules", []):
        say(f"tierbook: skipped rule {item['rule']!r} (not evaluated, no customer matched): {item['reason']}",
            file=sys.stderr)
    say_block(format_result(pb, result))
    if result.snapshots is not None:
        say()
        say_block(format_snapshots(result.snapshots))
    if args.dry_run:
        say("", "(dry run: nothing written)")
        return 0
    say()
    for key, path in paths.items():
        say(f"wrote {key}: {path}")
    return 0


def format_snapshots(snaps) -> str:
    """Snapshots, the KPIs and the last migration per class, for the terminal."""
    import polars as pl

    lines = [f"snapshots: {', '.join(str(d) for d in snaps.as_of)}"
             + (f" (every {snaps.spec.every})" if snaps.spec.every else "")]
    for name, step in snaps.spec.windows.items():
        lines.append(f"  {name} classified on the last {step} before each as_of")
    if snaps.kpis.height:
        lines += ["", "KPIs per period (definitions: kpis.csv, docs/time.md)",
                  f"  {'period to':<10}  {'active':>8}  {'new':>7}  {'react.':>7}  {'retained':>8}  {'churned':>8}  "
                  f"{'retention':>9}  {'revenue':>14}"]
        for r in snaps.kpis.iter_rows(named=True):
            rate = f"{r['retention_rate']:.1%}" if r["retention_rate"] is not None else "-"
            lines.append(f"  {str(r['as_of']):<10}  {r['active']:>8,}  {r['new']:>7,}  {r['reactivated']:>7,}  "
                         f"{r['retained']:>8,}  {r['churned']:>8,}  {rate:>9}  {r['revenue']:>14,.2f}")
    if snaps.flows.height:
        last = snaps.flows.filter(pl.col("to_as_of") == snaps.as_of[-1])
        lines += ["", f"migration {snaps.as_of[-2]} -> {snaps.as_of[-1]} (all matrices: migration.csv)"]
        for r in last.iter_rows(named=True):
            lines.append(f"  {r['column']:<12} {r['label']:<20} from {r['customers_from']:>8,}  stayed "
                         f"{r['stayed']:>8,}  up {r['moved_up']:>7,}  down {r['moved_down']:>7,}  left {r['left']:>6,}  "
                         f"entered {r['entered']:>7,}  net {r['net_flow']:>+8,}")
    return safe_lines(lines)


def run_validate(args: argparse.Namespace) -> int:
    from ..playbook.expect import run_cases

    pb = _load(args)
    failed = [o for o in run_cases(pb) if not o.ok]
    for outcome in failed:
        say(f"{pb.path}:{outcome.case.line}: expect {outcome.case.name!r}: {outcome.failure}", file=sys.stderr)
    if failed:
        say(f"{args.playbook}: {len(failed)} of {len(pb.expectations)} expect: cases fail "
            f"(tierbook test {args.playbook} explains each)", file=sys.stderr)
        return 1
    cases = f", {len(pb.expectations)} expect: cases hold" if pb.expectations else ""
    say(f"{args.playbook}: ok ({len(pb.selections)} classifiers, {len(pb.rules)} rules"
        f"{', fallback' if pb.fallback else ''}{cases}; outputs to {pb.output_dir})")
    return 0


def run_test(args: argparse.Namespace) -> int:
    from ..playbook.evaluate import label_sets
    from ..playbook.expect import run_cases
    from ..playbook.explain import rule_lines

    pb = _load(args)
    if not pb.expectations:
        say(f"{args.playbook}: no expect: cases to check")
        return 0
    outcomes = run_cases(pb)
    labels = label_sets(pb.selections)
    lines = []
    for o in outcomes:
        if o.ok:
            lines.append(f"ok    {o.case.name}")
            continue
        lines.append(f"FAIL  {o.case.name} ({pb.path}:{o.case.line}): {o.failure}")
        given = ", ".join(f"{k} = {v!r}" for k, v in o.case.customer.items()) or "nothing"
        lines.append(f"      the case gives {given} (as of {o.as_of}); every other column is missing (null)")
        lines += [f"      {line}" for line in rule_lines(pb, o.row, labels, o.as_of, set(o.positions), set())]
    failed = sum(not o.ok for o in outcomes)
    lines += ["", f"{len(outcomes) - failed} of {len(outcomes)} expect: cases hold"
                  + (f", {failed} fail" if failed else "")]
    say_block(safe_lines(lines))
    return 1 if failed else 0


def run_explain(args: argparse.Namespace) -> int:
    from ..playbook import explain_customer

    pb = _load(args)
    if pb.snapshots is not None:
        result = pb.evaluate_snapshots(pb.compute_snapshots(args.as_of))
        prepared = result
    else:
        prepared = pb.prepare(args.as_of)
        result = pb.evaluate(prepared)
    say_block(explain_customer(pb, prepared, result, args.customer_id))
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..playbook.check import check_on_data, check_report, format_check, static_check
    from .progress import step

    pb = _load(args)
    report = static_check(pb)
    data = None
    if not args.static:
        if pb.snapshots is not None:  # the rules read the last snapshot (and the one before it)
            with step(f"reading {pb.data['transactions']} (snapshots)"):
                snaps = pb.compute_snapshots(args.as_of)
            customers, as_of = snaps.last, snaps.as_of[-1]
        else:
            from ..run import apply_classifiers

            with step(f"reading {pb.data['transactions']}"):
                prepared = pb.prepare(args.as_of)
            with step("classifying"):
                customers = apply_classifiers(prepared.customers, pb.selections, as_of=prepared.as_of,
                                              registry=pb.registry)
            as_of = prepared.as_of
        with step("applying rules"):
            data = check_on_data(pb, customers, as_of)
    if args.json:
        say_block(json.dumps(check_report(pb, report, data), indent=2))
    else:
        say_block(safe_lines(format_check(pb, report, data)))
    if args.strict and (report.count("dead") or report.count("shadowed")):
        return 1
    return 0


def run_diff(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import TierbookError
    from ..io import atomic_write_frame, check_output
    from ..playbook import load_playbook
    from ..playbook.diff import comparable, diff_json, diff_playbooks, format_diff
    from .classify import spark_options
    from .progress import step

    if args.new is None and not args.set:
        raise TierbookError("diff: give a second playbook (NEW), or --set changes to compare OLD with")
    if args.csv:
        check_output(Path(args.csv))  # a bad suffix or directory fails before the data is read
    engine = {"engine": args.engine, "spark": spark_options(args)}
    old = load_playbook(args.old, plugins_dir=args.plugins_dir, **engine)
    new = load_playbook(args.new or args.old, params=args.set or None, plugins_dir=args.plugins_dir, **engine)
    comparable(old, new)
    with step(f"reading {old.data['transactions']}, classifying and applying both playbooks' rules"):
        d = diff_playbooks(old, new, as_of=args.as_of)
    if args.csv:
        atomic_write_frame(d.changes, Path(args.csv))
    if args.json:
        say_block(json.dumps(diff_json(d), indent=2))
    else:
        say_block(safe_lines(format_diff(d)))
        if args.csv:
            say(f"wrote {d.changes.height:,} customers: {args.csv}")
    return 0


def run_schema(args: argparse.Namespace) -> int:
    from ..playbook import playbook_schema
    from ..registry import get_registry

    if args.summary:
        from ..playbook.schema import summary_schema

        say_block(json.dumps(summary_schema(), indent=2))
        return 0
    say_block(json.dumps(playbook_schema(get_registry(plugins_dir=args.plugins_dir)), indent=2))
    return 0
