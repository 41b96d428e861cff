"""``tierbook report``: a playbook run as one self-contained HTML file."""

from __future__ import annotations

import argparse
import sys

from .output import say


def add_commands(sub) -> None:
    from .playbook import _playbook_options

    p = sub.add_parser("report", help="run a playbook and write its report: one HTML file that opens offline")
    _playbook_options(p)
    p.add_argument("-o", "--output", required=True, metavar="REPORT.html", help="the HTML file to write")
    p.add_argument("--measurement", metavar="FILE.json",
                   help="add the uplift of each rule: the JSON that tierbook measure --json printed for this playbook")
    p.add_argument("--skip-failing-plugins", action="store_true",
                   help="skip a plugin or classifier that fails (its columns stay empty; the report names it) "
                        "instead of stopping")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from ..report import check_report_target, write_report
    from .playbook import _load
    from .progress import step

    target = check_report_target(args.output)  # before the playbook's data is read
    skip = args.skip_failing_plugins
    pb = _load(args, skip_failing_plugins=skip)
    measurement = None
    if args.measurement:  # checked before the data is read
        from ..report.uplift import read_measurement

        measurement = read_measurement(args.measurement, pb.name)
    if pb.snapshots is not None:  # as tierbook run does: every snapshot from one scan, the rules on the last
        with step(f"reading {pb.data['transactions']} and classifying every snapshot"):
            snaps = pb.compute_snapshots(args.as_of, skip_failing=skip)
        with step("applying rules"):
            result = pb.evaluate_snapshots(snaps)
    else:
        with step(f"reading {pb.data['transactions']}"):
            prepared = pb.prepare(args.as_of)
        with step("classifying and applying rules"):
            result = pb.evaluate(prepared, skip_failing=skip)
    with step("writing the report"):
        path = write_report(pb, result, target, measurement=measurement)
    for line in result.report.lines():
        say(line, file=sys.stderr)
    for message in result.summary.get("skipped_plugins", []):
        say(f"tierbook: skipped: {message}", file=sys.stderr)
    say(f"wrote report: {path}")
    return 0
