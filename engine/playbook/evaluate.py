"""Rule evaluation: the classified customer table and a playbook's rules to actions, customers cut
by capacity and the summary; and the reconciliation of customers and revenue in and out.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import polars as pl

from ..errors import DataError
from ..features import to_units
from ..run import Prepared, _amount, summarize
from .spec import Result, Rule

if TYPE_CHECKING:  # for annotations only (the module is above this one)
    from .model import Playbook


def reconcile(report, customers: pl.DataFrame, where: str) -> dict[str, Any]:
    """Customers and revenue in (counted by the scan of the transactions) against out (``customers``).

    The input side does not come from the customer table: customers are those
    the feature ``group_by`` found plus the customer table's ids without a usable
    row (an anti-join of the two, not the join that builds the table), revenue is
    the usable rows' amounts summed by the scan itself. The output side is the
    rows of ``customers`` (the table in memory, or the written file read back)
    and their ``monetary``, in exact units. Either side going wrong makes them
    differ.
    """
    units_out = int(customers.select(to_units(pl.col("monetary")).sum()).item() or 0)  # exact, any size
    customers_in = report.customers_with_transactions + report.table_only
    return {
        "customers_in": customers_in,
        "customers_out": customers.height,
        "distinct_customers_out": customers["customer_id"].n_unique(),
        "revenue_in": _amount(report.scanned_units),
        "revenue_out": _amount(units_out),
        "counted_from": f"the scan of the transactions / {where}",
        "ok": customers_in == customers.height == customers["customer_id"].n_unique()
        and report.scanned_units == units_out,
    }


def check_reconciliation(rec: Mapping[str, Any]) -> None:
    """Stop when customers or revenue in and out differ (a bug, not a user error: nothing is written)."""
    if not rec["ok"]:
        raise DataError(f"reconciliation failed ({rec['counted_from']}): customers in {rec['customers_in']:,}, out "
                        f"{rec['customers_out']:,} ({rec['distinct_customers_out']:,} distinct); revenue in "
                        f"{rec['revenue_in']:,.4f}, out {rec['revenue_out']:,.4f}; nothing was written (please report "
                        f"this as a bug)")


def _late_due_dates(rules: Sequence[Rule], as_of: dt.date) -> list[tuple[int, str]]:
    """(line, message) for each rule whose due date, as_of + due_days, would be after the last date there is."""
    room = (dt.date.max - as_of).days
    return [(r.due_line, f"rule {r.name!r}: as_of {as_of} + due_days {r.due_days:,} is after {dt.date.max}, the last "
                         f"date there is (with this as_of due_days may be at most {room:,})")
            for r in rules if r.due_days > room]


def _evaluate_rules(pb: Playbook, prepared: Prepared, customers: pl.DataFrame, *,
                    skipped_columns: Mapping[str, str] | None = None) -> Result:
    """Apply the rules to the classified ``customers``.

    ``skipped_columns`` maps the columns of classifiers skipped under
    ``--skip-failing-plugins`` (left empty) to the classifier: a rule that reads
    one is not evaluated (it matches no customer) and is listed in
    ``summary["skipped_rules"]``, since its condition would be decided by the
    missing values (``x IS NULL`` would match everyone).
    """
    from ..rules import compile_rule

    as_of = prepared.as_of
    for line, message in _late_due_dates([*pb.rules, *([pb.fallback] if pb.fallback else [])], as_of):
        raise DataError(f"{pb.path}:{line}: {message}")
    labels = {o.column: o.labels for s in pb.selections for o in s.outputs if o.labels is not None}
    compiled = [compile_rule(r.when, customers.schema, labels=labels, as_of=as_of) for r in pb.rules]
    skipped_rules = []
    for i, (rule, c) in enumerate(zip(pb.rules, compiled)):
        empty = sorted(c.columns & set(skipped_columns or ()))
        if empty:
            names = ", ".join(f"{col!r} of classifier {skipped_columns[col]!r}" for col in empty)
            skipped_rules.append({"rule": rule.name, "reason": f"it reads {names}, which was skipped"})
            compiled[i] = replace(c, expr=pl.lit(False), overflows=())
    # Capacity rules rank their customers by a column: it travels with the flags (no join back).
    key_cols = list(dict.fromkeys(r.order_by for r in pb.rules if r.capacity is not None))
    key_names = [f"_key{j}" for j in range(len(key_cols))]
    overflows = [c.overflow.alias(f"_o{i}") for i, c in enumerate(compiled) if c.overflow is not None]
    flags = customers.select("customer_id", *[pl.col(c).alias(k) for c, k in zip(key_cols, key_names)],
                             *[c.expr.alias(f"_m{i}") for i, c in enumerate(compiled)], *overflows)
    for i, (rule, c) in enumerate(zip(pb.rules, compiled)):  # arithmetic that overflows stops the run
        if c.overflow is not None and flags[f"_o{i}"].any():
            raise DataError(f"{pb.path}:{rule.when_line}: rule {rule.name!r}: {c.overflow_error(customers)}")
    n = len(pb.rules)
    matched_counts = [int(flags[f"_m{i}"].sum()) for i in range(n)]

    # The (customer, rule) pairs of each rule, in customer order.
    if pb.hit_policy == "first" and n:
        first = pl.coalesce([pl.when(pl.col(f"_m{i}")).then(pl.lit(i, pl.Int32)) for i in range(n)])
        pairs = flags.select("customer_id", first.alias("_rule"), *key_names).filter(pl.col("_rule").is_not_null())
        parts = [pairs.filter(pl.col("_rule") == i) for i in range(n)]
    else:
        parts = [flags.filter(pl.col(f"_m{i}")).select("customer_id", pl.lit(i, pl.Int32).alias("_rule"), *key_names)
                 for i in range(n)]
    if n:
        matched_any = pl.any_horizontal([pl.col(f"_m{i}").fill_null(False) for i in range(n)])
        unmatched = flags.filter(~matched_any).select("customer_id")
    else:
        unmatched = customers.select("customer_id")
    del flags

    # Each rule's actions (ranked) and cut customers; parts stay in rule order, each in rank order.
    kept_parts, cut_parts = [], []
    for i, rule in enumerate(pb.rules):
        part = parts[i]
        if rule.capacity is not None:
            keyed = part.select("customer_id", "_rule", pl.col(key_names[key_cols.index(rule.order_by)]).alias("_key"))
            keyed = keyed.sort(["_key", "customer_id"], descending=[rule.descending, False], nulls_last=True)
            keyed = keyed.with_row_index("_rank", offset=1)
            kept_parts.append(keyed.filter(pl.col("_rank") <= rule.capacity).select("customer_id", "_rule", "_rank"))
            cut_parts.append(keyed.filter(pl.col("_rank") > rule.capacity).select("customer_id", "_rule", "_rank"))
        else:
            kept_parts.append(part.sort("customer_id").with_row_index("_rank", offset=1)
                              .select("customer_id", "_rule", "_rank"))
            cut_parts.append(None)
    id_dtype = customers.schema["customer_id"]
    empty = pl.DataFrame(schema={"customer_id": id_dtype, "_rule": pl.Int32, "_rank": pl.UInt32})
    rules_all = list(pb.rules)
    if pb.fallback is not None:
        fb_index = len(rules_all)
        rules_all.append(pb.fallback)
        kept_parts.append(unmatched.sort("customer_id").with_row_index("_rank", offset=1)
                          .select("customer_id", pl.lit(fb_index, pl.Int32).alias("_rule"), "_rank"))
        cut_parts.append(None)

    def enum(values: list[str]) -> pl.Series:
        # A closed set of the playbook's own text: an Enum holds each value once, where text columns would
        # hold it once per action (and the CSV writer checks each value once for spreadsheet formulas).
        return pl.Series(values, dtype=pl.Enum(list(dict.fromkeys(values))))

    meta = pl.DataFrame({
        "_rule": pl.Series(range(len(rules_all)), dtype=pl.Int32),
        "rule": enum([r.name for r in rules_all]),
        "action": enum([r.action for r in rules_all]),
        "channel": enum([r.channel for r in rules_all]),
        "owner": enum([r.owner for r in rules_all]),
        "due_date": [as_of + dt.timedelta(days=r.due_days) for r in rules_all],
        "priority": pl.Series([r.priority for r in rules_all], dtype=pl.Int64),
        "parameters": enum([json.dumps(r.params, sort_keys=True, default=str) for r in rules_all]),
    })
    # Actions in (priority, rule, rank) order: the parts concatenated by (priority, rule) are already in
    # that order, so no sort; the order-keeping join adds the rule's columns.
    by_priority = sorted(range(len(rules_all)), key=lambda i: (rules_all[i].priority, i))
    kept = pl.concat([empty, *[kept_parts[i] for i in by_priority]])
    actions = (kept.join(meta, on="_rule", how="left", maintain_order="left")
               .select("customer_id", "rule", "action", "channel", "owner", "due_date", "priority", "parameters"))
    cut = pl.concat([empty, *[c for c in cut_parts if c is not None]])
    cut_out = (cut.join(meta.select("_rule", "rule", "action"), on="_rule", how="left", maintain_order="left")
               .select("customer_id", "rule", "action", pl.col("_rank").alias("rank")))

    hits = [p.height for p in parts] + ([unmatched.height] if pb.fallback is not None else [])
    if pb.fallback is not None:
        hits = [unmatched.height if r.name == pb.fallback.name else h for r, h in zip(rules_all, hits)]
    rule_summary = meta.select("rule").with_columns(
        pl.Series("matched", matched_counts + ([unmatched.height] if pb.fallback else []), dtype=pl.Int64),
        pl.Series("hits", hits, dtype=pl.Int64),
        pl.Series("cut_by_capacity", [0 if c is None else c.height for c in cut_parts], dtype=pl.Int64),
        pl.Series("actions", [k.height for k in kept_parts], dtype=pl.Int64),
    )

    classes = summarize(customers, pb.selections)
    report = prepared.report
    summary = {
        "playbook": pb.name,
        "as_of": str(as_of),
        "hit_policy": pb.hit_policy,
        "input": report.to_dict(),
        "reconciliation": reconcile(report, customers, "the customer table"),
        "classes": classes.to_dicts(),
        "rules": rule_summary.to_dicts(),
        "unmatched": unmatched.height,
        "cut_by_capacity": cut_out.height,
        "actions": actions.height,
    }
    if skipped_rules:
        summary["skipped_rules"] = skipped_rules
    check_reconciliation(summary["reconciliation"])
    return Result(customers=customers, actions=actions, cut=cut_out, classes=classes, rule_summary=rule_summary,
                  summary=summary, as_of=as_of, report=report)
