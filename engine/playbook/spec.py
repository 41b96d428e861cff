"""What a playbook may hold: its keys (with kinds and descriptions, for validation and the JSON
schema), the bounds validation checks, and the :class:`Rule` and :class:`Result` records.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ..feature_table import FEATURES
from ..holdout import Holdout


#: The dtypes of the built-in features (``customer_id`` takes the source's type), from the one table.
FEATURE_DTYPES: dict[str, pl.DataType] = {f.name: f.dtype for f in FEATURES}


HIT_POLICIES = ("first", "all")


# key: (kind, required, description). Kinds: str, int, number, date, mapping, list, bool, any.
TOP_KEYS: dict[str, tuple[str, bool, str]] = {
    "name": ("str", True, "Short name of the playbook."),
    "description": ("str", False, "What the playbook is for."),
    "data": ("mapping", True, "Where the data is and how its columns map onto tierbook's."),
    "plugins": ("list", False, "Plugin modules to load: modules of installed tierbook plugins, or modules "
                               "allowed by TIERBOOK_PLUGIN_MODULES."),
    "classifiers": ("mapping", True, "Classifiers to run, each with its parameters."),
    "hit_policy": ("str", False, "first: each customer gets the first matching rule; all: every matching rule."),
    "rules": ("list", False, "Rules that turn classes into actions, in order."),
    "fallback": ("mapping", False, "The action for customers no rule matched."),
    "outputs": ("mapping", False, "Where results are written."),
    "engine": ("str", False, "Where the feature pass runs: polars (default) or spark (Parquet input)."),
    "spark": ("mapping", False, "For engine: spark: master (URL, default local[*]) and config (key: value)."),
    "snapshots": ("mapping", False, "Several as_of dates from one scan: as_of (a list) or every/periods/end, "
                                    "window per classifier, cohort grain; adds migration and KPIs (docs/time.md)."),
    "holdout": ("mapping", False, "A playbook-wide control group: {share: 0.05, salt: TEXT}; its customers get no "
                                  "action from any rule (see docs/holdouts.md)."),
    "expect": ("list", False, "Cases that must hold: each a customer (column: value; unnamed columns are missing) "
                              "and the action (or none) and/or rule it must get; checked by validate and test."),
}


SNAPSHOT_KEYS: dict[str, tuple[str, bool, str]] = {
    "as_of": ("list", False, "Snapshot dates YYYY-MM-DD (each exclusive, as data.as_of)."),
    "every": ("any", False, "The step between snapshots: day, week, month, quarter, year, or 'N days' (weeks, "
                            "months ...)."),
    "periods": ("int", False, "How many snapshots, one every step, ending at end."),
    "end": ("date", False, "The last snapshot's as_of (default: data.as_of, else the day after the last "
                           "transaction)."),
    "window": ("mapping", False, "Classifier -> lookback window ('12 months'): it classifies each snapshot on the "
                                 "lines of that window only."),
    "cohort": ("str", False, "Grain of the cohort table: month (default) or quarter."),
}


#: The files a run with snapshots adds to its output set (docs/time.md).
SNAPSHOT_OUTPUTS = {"snapshots": "snapshots.parquet", "migration": "migration.csv", "flows": "flows.csv",
                    "kpis": "kpis.csv", "cohorts": "cohorts.csv", "values": "values.csv"}


SPARK_KEYS: dict[str, tuple[str, bool, str]] = {
    "master": ("str", False, "Spark master URL: local[N], spark://HOST:PORT, yarn, k8s://... (default local[*])."),
    "config": ("mapping", False, "Spark configuration, e.g. spark.executor.memory: 4g."),
}


DATA_KEYS: dict[str, tuple[str, bool, str]] = {
    "transactions": ("str", True, "Transactions file (CSV, Parquet, NDJSON, xlsx), relative to the playbook."),
    "map": ("mapping", False, "Canonical column -> source column."),
    "customers": ("str", False, "Customer table (customer_id plus attributes), relative to the playbook."),
    "customers_id": ("str", False, "The customer table's id column (default customer_id)."),
    "as_of": ("date", False, "Reference date YYYY-MM-DD (default: the day after the last transaction)."),
    "date_format": ("str", False, "strftime format of text dates, e.g. %d/%m/%Y."),
    "sheet": ("str", False, "Excel sheet of the transactions."),
    "delimiter": ("str", False, "CSV field delimiter of the transactions, e.g. ';' or tab (default: a comma, or "
                                "';' or a tab when the header has no comma)."),
    "decimal_comma": ("bool", False, "Read text amounts with a decimal comma: 12,50 and 1.234,50."),
}


ACTION_KEYS: dict[str, tuple[str, bool, str]] = {
    "name": ("str", True, "Unique rule name."),
    "description": ("str", False, "What the rule is for."),
    "when": ("str", True, "Condition over customer columns and class labels, e.g. monetary > 500 AND frequency >= 3."),
    "action": ("str", True, "What to do."),
    "channel": ("str", True, "email, sms, phone, visit, ads, mail, ..."),
    "owner": ("str", True, "The team that does it."),
    "due_days": ("int", False, "Days after as_of by which it is due (default 7, at most 36,500)."),
    "priority": ("int", False, "1 is the most urgent (default: the rule's position; at most 1,000,000)."),
    "params": ("mapping", False, "Free-form parameters: offer code, template name ..."),
    "capacity": ("any", False, "At most this many customers: N, or {max: N, order_by: 'monetary desc'}."),
    "holdout": ("mapping", False, "Withhold the action from a share of the rule's customers (after capacity), "
                                  "chosen by a stable hash: {share: 0.1, salt: TEXT} (see docs/holdouts.md)."),
}


FALLBACK_KEYS = {k: v for k, v in ACTION_KEYS.items() if k not in ("when", "capacity")}


FALLBACK_KEYS["name"] = ("str", False, "Name of the fallback rule (default 'fallback').")


OUTPUT_KEYS: dict[str, tuple[str, bool, str]] = {
    "dir": ("str", False, "Output directory, relative to the playbook (default out/<name>)."),
    "customers": ("str", False, "File name for customers with labels (default customers.parquet)."),
    "actions": ("str", False, "File name for the actions list (default actions.csv)."),
    "cut": ("str", False, "File name for customers cut by capacity (default cut.csv)."),
    "summary": ("str", False, "File name for the summary (default summary.json)."),
    "control": ("str", False, "File name for the customers held out (default control.csv)."),
}


OUTPUT_DEFAULTS = {"customers": "customers.parquet", "actions": "actions.csv", "cut": "cut.csv",
                   "summary": "summary.json", "control": "control.csv"}


DEFAULT_DUE_DAYS = 7


#: Bounds a run depends on, checked by validation: a due date must be a date (as_of + due_days), a
#: priority fits the Int64 column of actions.csv with room to spare.
MAX_DUE_DAYS = 36_500


MAX_PRIORITY = 1_000_000


#: Longest parameters of one rule, as JSON text: they are repeated on each of its rows in actions.csv.
MAX_PARAMS_CHARS = 10_000


@dataclass(frozen=True)
class Rule:
    """One rule of a playbook."""

    name: str
    when: str | None
    action: str
    channel: str
    owner: str
    due_days: int
    priority: int
    params: dict[str, Any] = field(default_factory=dict)
    capacity: int | None = None
    capacity_line: int = 0
    order_by: str = "monetary"
    descending: bool = True
    line: int = 0
    when_line: int = 0
    description: str = ""
    due_line: int = 0
    #: Customers held out of this rule's action (after eligibility and capacity), or None.
    holdout: Holdout | None = None


#: Keys of a holdout mapping, and the longest salt.
HOLDOUT_KEYS = ("share", "salt")
MAX_SALT_CHARS = 200


@dataclass(frozen=True)
class Case:
    """One ``expect:`` case: a customer (column -> value) and what it must get (see :mod:`~engine.playbook.expect`).

    ``actions`` is None when the case names only a rule, ``()`` for no action at all.
    """

    name: str
    customer: dict[str, Any]
    actions: tuple[str, ...] | None
    rule: str | None
    as_of: dt.date | None
    line: int
    lines: dict[str, int] = field(default_factory=dict)
    action_line: int = 0
    rule_line: int = 0


@dataclass
class Result:
    """What a playbook run produced (nothing here has been written yet)."""

    customers: pl.DataFrame
    actions: pl.DataFrame
    cut: pl.DataFrame
    classes: pl.DataFrame
    rule_summary: pl.DataFrame
    summary: dict[str, Any]
    as_of: dt.date
    #: What the scan of the transactions counted (the input side of the reconciliation).
    report: Any = None
    #: With ``snapshots:``, the :class:`engine.snapshots.Snapshots` (every snapshot, migration, KPIs).
    snapshots: Any = None
    #: The customers held out (customer_id, rule, group, holdout, bucket); empty without holdouts.
    control: pl.DataFrame | None = None
    #: The rules' result keyed by rule position (:class:`engine.playbook.evaluate.RuleResult`).
    rule_result: Any = None
    #: Where as_of came from and how long each step took (``durations_s``), for the run's manifest.
    provenance: dict[str, Any] = field(default_factory=dict)
