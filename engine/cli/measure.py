"""``tierbook measure``: each rule's uplift, treatment against control, from the transactions that followed."""

from __future__ import annotations

import argparse
import json

from .output import say_block


def add_commands(sub) -> None:
    p = sub.add_parser("measure", help="measure each rule's uplift: its treatment group against its holdout, "
                                       "from later transactions")
    p.add_argument("playbook", help="the playbook YAML file (its last run's outputs give the groups)")
    p.add_argument("--outcomes", required=True, metavar="TRANSACTIONS",
                   help="transactions after the run (read with the playbook's data.map and formats)")
    p.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD", help="first day of the period")
    p.add_argument("--to", dest="end", required=True, metavar="YYYY-MM-DD", help="last day of the period (included)")
    p.add_argument("--output-dir", metavar="DIR", help="the run's outputs are here instead of outputs.dir")
    p.add_argument("--count-new-customers", action="store_true",
                   help="count customers of the outcomes that the run never saw apart (default: stop)")
    p.add_argument("--json", action="store_true", help="print the measurement as JSON")
    p.add_argument("--plugins-dir", metavar="DIR", help="also load every *.py file in DIR as a plugin")
    p.set_defaults(func=run_measure)


def run_measure(args: argparse.Namespace) -> int:
    from ..measure import format_measurement, measure
    from ..playbook import load_playbook
    from ..terminal import safe_lines

    pb = load_playbook(args.playbook, output_dir=args.output_dir, plugins_dir=args.plugins_dir,
                       allow_outside=args.output_dir is not None)
    result = measure(pb, args.outcomes, start=args.start, end=args.end,
                     count_new_customers=args.count_new_customers)
    if args.json:
        say_block(json.dumps(result, indent=2))
    else:
        say_block(safe_lines(format_measurement(result).split("\n")))
    return 0
