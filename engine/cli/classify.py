"""``tierbook classify``, ``tierbook describe`` and ``tierbook demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .output import say, say_block


def plugin_options(p: argparse.ArgumentParser) -> None:
    """``--plugin MODULE`` and ``--plugins-dir DIR``: plugins beyond the installed ones."""
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="also load this plugin module")
    p.add_argument("--plugins-dir", metavar="DIR",
                   help="also load every *.py file in DIR as a plugin (this runs their code: see SECURITY.md)")


def engine_options(p: argparse.ArgumentParser, *, playbook: bool = False) -> None:
    """``--engine``, ``--spark-master``, ``--spark-conf``: where the feature pass runs (every command that runs
    it has them; on a playbook command they override its ``engine:`` and ``spark:``)."""
    default = "the playbook's engine:, else polars" if playbook else "polars"
    p.add_argument("--engine", choices=("polars", "spark"), default=None if playbook else "polars",
                   help=f"where the feature pass runs: polars (this process) or spark (Apache Spark; the data is "
                        f"Parquet: a file, a directory or a glob; pip install 'tierbook[spark]'); default {default}")
    p.add_argument("--spark-master", metavar="URL",
                   help="Spark master for the spark engine" + (" (replaces spark.master)" if playbook else
                                                               " (default local[*])"))
    p.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                   help="Spark configuration for the spark engine, e.g. spark.executor.memory=4g; repeatable"
                        + (" (added to spark.config)" if playbook else ""))


def spark_options(args: argparse.Namespace) -> dict | None:
    """``--spark-master`` and ``--spark-conf`` as a ``spark:`` mapping (only what was given); None without them."""
    from ..errors import DataError

    config = {}
    for item in args.spark_conf:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise DataError(f"--spark-conf {item}: expected KEY=VALUE, e.g. spark.executor.memory=4g")
        config[key.strip()] = value.strip()
    if not config and not args.spark_master:
        return None
    return {**({"master": args.spark_master} if args.spark_master else {}), **({"config": config} if config else {})}


def _data_options(p: argparse.ArgumentParser, *, data: bool = True) -> None:
    if data:
        p.add_argument("data", help="transactions: .csv, .parquet, .ndjson/.jsonl or .xlsx")
    p.add_argument("--map", action="append", default=[], metavar="CANONICAL=SOURCE",
                   help="map a canonical column (customer_id, order_id, order_date, amount, quantity, unit_price) "
                        "onto a source column; repeatable")
    p.add_argument("--customers", metavar="FILE", help="customer table: customer_id plus attributes")
    p.add_argument("--customers-id", metavar="COLUMN", help="the customer table's id column (default customer_id)")
    p.add_argument("--as-of", metavar="YYYY-MM-DD", help="reference date (default: the day after the last transaction)")
    p.add_argument("--date-format", metavar="FORMAT", help="strftime format of text dates, e.g. %%d/%%m/%%Y")
    p.add_argument("--sheet", help="Excel sheet to read (required when the workbook has several)")
    p.add_argument("--delimiter", metavar="CHAR",
                   help="CSV field delimiter, e.g. ';' or tab (default: a comma, or ';' or a tab when the header "
                        "has no comma)")
    p.add_argument("--decimal-comma", action="store_true",
                   help="read text amounts with a decimal comma: 12,50 and 1.234,50")
    p.add_argument("--classifier", "-c", action="append", metavar="NAME",
                   help="run only this classifier; repeatable (default: every installed one)")
    p.add_argument("--set", action="append", default=[], metavar="CLASSIFIER.PARAM=VALUE",
                   help="set a classifier parameter as classifier.param=value ('tierbook plugins' lists them); repeatable")
    plugin_options(p)
    p.add_argument("--rejects", metavar="FILE", help="write the rows that could not be used, with the reason")
    engine_options(p)
    p.add_argument("--skip-failing-plugins", action="store_true",
                   help="skip a plugin or classifier that fails (named on stderr) instead of stopping")


def add_commands(sub) -> None:
    p = sub.add_parser("classify", help="classify customers and write one row per customer")
    _data_options(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file: .parquet, .csv, .json, .ndjson")
    p.set_defaults(func=run_classify)

    p = sub.add_parser("describe", help="print class sizes and revenue shares per classifier")
    _data_options(p)
    p.set_defaults(func=run_describe)

    p = sub.add_parser("demo", help="describe the bundled sample (UCI Online Retail, a slice)")
    p.add_argument("--classifier", "-c", action="append", metavar="NAME",
                   help="describe only this classifier; repeatable (default: every installed one)")
    p.add_argument("--set", action="append", default=[], metavar="CLASSIFIER.PARAM=VALUE",
                   help="set a classifier parameter as classifier.param=value ('tierbook plugins' lists them); repeatable")
    plugin_options(p)
    p.set_defaults(func=run_demo)


def _check_targets(args: argparse.Namespace) -> None:
    """Refuse an output that is one of the inputs or the other output: the rename would replace it."""
    from ..errors import DataError

    sources = [("the transactions", args.data), ("the customer table", getattr(args, "customers", None))]
    targets = [("-o", getattr(args, "output", None)), ("--rejects", getattr(args, "rejects", None))]
    seen: dict[Path, str] = {}
    for flag, target in targets:
        if not target:
            continue
        path = Path(target).resolve()
        for what, source in sources:
            if source and Path(source).resolve() == path:
                raise DataError(f"{flag} {target}: is {what} file; writing there would replace the input")
        if path in seen:
            raise DataError(f"{flag} {target}: is also the {seen[path]} file; give two different files")
        seen[path] = flag


def _prepare_and_classify(args: argparse.Namespace):
    from .. import run
    from ..data import as_date
    from ..registry import get_registry
    from .progress import step

    _check_targets(args)
    skip = getattr(args, "skip_failing_plugins", False)
    registry = get_registry(modules=args.plugin, plugins_dir=args.plugins_dir, strict=not skip)
    for failure in registry.failures:
        say(f"tierbook: skipped: {failure}", file=sys.stderr)
    params = run.split_params(args.set)
    sources = {name: {k: f"--set {name}.{k}" for k in values} for name, values in params.items()}
    as_of = as_date(args.as_of)
    if args.rejects:
        from ..io import check_output

        check_output(Path(args.rejects))  # a bad suffix or directory fails before the data is read
    spark = spark_options(args)
    if args.engine == "spark":
        from ..errors import DataError

        spark = {"master": "local[*]", "config": {}, **(spark or {})}
    elif spark is not None:
        from ..errors import DataError

        raise DataError("--spark-master and --spark-conf apply to --engine spark only")
    # Validate names and parameters before reading any data.
    selections = run.select(registry, args.classifier, params, sources)
    with step(f"reading {args.data}"):
        prepared = run.prepare(args.data, mapping=args.map, customers=args.customers, customers_id=args.customers_id,
                               as_of=as_of, date_format=args.date_format, sheet=args.sheet, registry=registry,
                               delimiter=args.delimiter, decimal_comma=args.decimal_comma,
                               engine=args.engine, spark=spark,
                               needs=[c for sel in selections for c in sel.requires])
    with step("classifying"):
        classified = prepared.classify([sel.classifier.name for sel in selections], params, skip_failing=skip)
    for message in prepared.skipped:
        say(f"tierbook: skipped: {message}", file=sys.stderr)
    if args.rejects and args.engine == "spark":
        from ..io import atomic_write_frame
        from ..spark import SparkSettings, rejected_rows_spark

        with step(f"writing rejects to {args.rejects}"):
            atomic_write_frame(rejected_rows_spark(args.data, args.map, as_of=as_of, date_format=args.date_format,
                                                   settings=SparkSettings.from_mapping(spark)), Path(args.rejects))
    elif args.rejects:
        from ..data import read_transactions
        from ..features import rejected_rows
        from ..io import atomic_write_frame

        tx = read_transactions(args.data, args.map, date_format=args.date_format, sheet=args.sheet,
                               delimiter=args.delimiter, decimal_comma=args.decimal_comma)
        with step(f"writing rejects to {args.rejects}"):
            atomic_write_frame(tx.collect(rejected_rows(tx, as_of)), Path(args.rejects))
    return prepared, classified


def _print_report(prepared, file=None) -> None:
    file = file or sys.stderr
    for line in prepared.report.lines():
        say(line, file=file)
    say(f"as_of: {prepared.as_of}", file=file)


def run_classify(args: argparse.Namespace) -> int:
    from ..io import atomic_write_frame, check_output

    check_output(Path(args.output))  # a bad suffix or directory fails before the data is read
    prepared, classified = _prepare_and_classify(args)
    atomic_write_frame(classified, Path(args.output))
    _print_report(prepared)
    say(f"wrote {classified.height:,} customers to {args.output}", file=sys.stderr)
    return 0


def run_describe(args: argparse.Namespace) -> int:
    from ..run import summarize
    from .tables import format_summary

    prepared, classified = _prepare_and_classify(args)
    _print_report(prepared, file=sys.stdout)
    say()
    say_block(format_summary(summarize(classified, prepared.selections)))
    for message in [*map(str, prepared.registry.failures), *prepared.skipped]:
        say(f"skipped (--skip-failing-plugins): {message}")
    return 0


def demo_argv(args: argparse.Namespace) -> list[str]:
    """``tierbook describe`` arguments for the bundled sample, with the demo's own options passed on."""
    from ..sample import SAMPLE_MAPPING, sample_path

    argv = ["describe", str(sample_path())]
    argv += [f"--map={k}={v}" for k, v in SAMPLE_MAPPING.items()]
    argv += [f"--classifier={name}" for name in args.classifier or []]
    argv += [f"--set={item}" for item in args.set]
    argv += [f"--plugin={module}" for module in args.plugin]
    if args.plugins_dir:
        argv.append(f"--plugins-dir={args.plugins_dir}")
    return argv


def run_demo(args: argparse.Namespace) -> int:
    from ..sample import sample_path
    from . import build_parser

    # Through the real parser, so the demo gets exactly the defaults and checks of `tierbook describe`.
    described = build_parser().parse_args(demo_argv(args))
    say(f"tierbook demo: {sample_path().name} (a slice of UCI Online Retail, CC BY 4.0; see its README)", "")
    return described.func(described)
