"""Rule evaluation: the classified customer table and a playbook's rules to actions, customers cut
by capacity and the summary; and the reconciliation of customers and revenue in and out.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ..errors import DataError
from ..features import to_units
from ..holdout import BUCKETS, Holdout, buckets, check_ids, control_share
from ..run import Prepared, Selection, _amount, summarize
from .spec import HIT_POLICIES, Result, Rule

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


@dataclass(frozen=True, eq=False)  # frames inside: no field-wise ==
class RuleResult:
    """What a playbook's rules did to a classified customer table, keyed by rule position.

    Position ``i`` is ``rules[i]``: the playbook's rules in their order, then the
    fallback (at position ``fallback``) when there is one. Every per-rule field is
    a tuple indexed by that position, never by a name, so what the rules are
    called changes nothing here.

    ``masks[i]`` is a Boolean Series in the customer table's row order (no nulls):
    the customers whose condition holds; the fallback's mask holds the customers
    no rule matched. ``matched[i]`` counts them, ``hits[i]`` counts the customers
    the rule took under the hit policy (before capacity), ``cut_by_capacity[i]``
    those its capacity left out, ``actions_per_rule[i]`` its actions.
    ``rule_summary`` is the same counts as a frame (one row per position, the
    rule's name in ``rule``), as in ``summary.json``.
    """

    rules: tuple[Rule, ...]
    fallback: int | None
    hit_policy: str
    masks: tuple[pl.Series, ...]
    matched: tuple[int, ...]
    hits: tuple[int, ...]
    cut_by_capacity: tuple[int, ...]
    actions_per_rule: tuple[int, ...]
    #: One row per action (customer, rule, action, channel, owner, due_date, priority, parameters).
    actions: pl.DataFrame
    #: The customers cut by capacity, with the rule and their rank by its order_by.
    cut: pl.DataFrame
    unmatched: int
    rule_summary: pl.DataFrame
    #: Rules not evaluated because they read a skipped classifier's column: {"rule": name, "reason": ...}.
    skipped_rules: tuple[dict[str, str], ...] = ()
    #: The customers held out of each rule's action (after capacity): customer_id, rule, group ("control"),
    #: holdout ("playbook" or "rule": which one held them out) and bucket (under that holdout's salt).
    control: pl.DataFrame | None = None
    #: Customers held out, by position (``actions_per_rule[i]`` are the treatment group).
    control_per_rule: tuple[int, ...] = ()
    #: The rule position of each row of ``actions`` and of ``cut`` (Int32, in their row order).
    action_positions: pl.Series | None = None
    cut_positions: pl.Series | None = None
    #: The rule position of each row of ``control``.
    control_positions: pl.Series | None = None


def evaluate_rules(
    customers: pl.DataFrame,
    rules: Sequence[Rule],
    *,
    as_of: dt.date,
    hit_policy: str = "first",
    fallback: Rule | None = None,
    labels: Mapping[str, Sequence[str]] | None = None,
    skipped_columns: Mapping[str, str] | None = None,
    source: str | Path = "playbook",
    holdout: Holdout | None = None,
) -> RuleResult:
    """Apply ``rules`` (then ``fallback``) to the classified ``customers``: a :class:`RuleResult`.

    ``hit_policy`` is ``first`` (each customer gets the first rule that matches)
    or ``all``; ``labels`` maps each label column to its labels (so that
    ``abc = 'Z'`` is refused), ``as_of`` dates the due dates and the rules'
    date arithmetic, ``source`` (the playbook's path) starts each error message.

    ``skipped_columns`` maps the columns of classifiers skipped under
    ``--skip-failing-plugins`` (left empty) to the classifier: a rule that reads
    one is not evaluated (it matches no customer) and is listed in
    ``skipped_rules``, since its condition would be decided by the missing
    values (``x IS NULL`` would match everyone).

    Holdouts come last, after eligibility and capacity, so that the two groups
    of a rule are alike: ``holdout`` (the playbook-wide control group) and each
    rule's ``holdout`` move the customers their buckets pick from the rule's
    actions into ``control`` (see :mod:`engine.holdout`); ``actions_per_rule``
    then counts the treatment group, ``control_per_rule`` the control group.
    """
    from ..rules import compile_rule

    if hit_policy not in HIT_POLICIES:
        raise ValueError(f"hit_policy {hit_policy!r} is not one of {', '.join(HIT_POLICIES)}")
    rules = list(rules)
    for line, message in _late_due_dates([*rules, *([fallback] if fallback else [])], as_of):
        raise DataError(f"{source}:{line}: {message}")
    labels = dict(labels or {})
    compiled = [compile_rule(r.when, customers.schema, labels=labels, as_of=as_of) for r in rules]
    skipped_rules = []
    for i, (rule, c) in enumerate(zip(rules, compiled)):
        empty = sorted(c.columns & set(skipped_columns or ()))
        if empty:
            names = ", ".join(f"{col!r} of classifier {skipped_columns[col]!r}" for col in empty)
            skipped_rules.append({"rule": rule.name, "reason": f"it reads {names}, which was skipped"})
            compiled[i] = replace(c, expr=pl.lit(False), overflows=())
    # Capacity rules rank their customers by a column: it travels with the flags (no join back).
    key_cols = list(dict.fromkeys(r.order_by for r in rules if r.capacity is not None))
    key_names = [f"_key{j}" for j in range(len(key_cols))]
    overflows = [c.overflow.alias(f"_o{i}") for i, c in enumerate(compiled) if c.overflow is not None]
    flags = customers.select("customer_id", *[pl.col(c).alias(k) for c, k in zip(key_cols, key_names)],
                             *[c.expr.alias(f"_m{i}") for i, c in enumerate(compiled)], *overflows)
    for i, (rule, c) in enumerate(zip(rules, compiled)):  # arithmetic that overflows stops the run
        if c.overflow is not None and flags[f"_o{i}"].any():
            raise DataError(f"{source}:{rule.when_line}: rule {rule.name!r}: {c.overflow_error(customers)}")
    n = len(rules)
    matched_counts = [int(flags[f"_m{i}"].sum()) for i in range(n)]
    # compile_rule's expressions have unknown filled as false (a skipped rule's is lit(False)): no nulls
    masks = [flags[f"_m{i}"].alias(rule.name) for i, rule in enumerate(rules)]

    # The (customer, rule) pairs of each rule, in customer order.
    if hit_policy == "first" and n:
        first = pl.coalesce([pl.when(pl.col(f"_m{i}")).then(pl.lit(i, pl.Int32)) for i in range(n)])
        pairs = flags.select("customer_id", first.alias("_rule"), *key_names).filter(pl.col("_rule").is_not_null())
        parts = [pairs.filter(pl.col("_rule") == i) for i in range(n)]
    else:
        parts = [flags.filter(pl.col(f"_m{i}")).select("customer_id", pl.lit(i, pl.Int32).alias("_rule"), *key_names)
                 for i in range(n)]
    if n:
        matched_any = pl.any_horizontal([pl.col(f"_m{i}") for i in range(n)])
        unmatched_mask = flags.select((~matched_any).alias("_u"))["_u"]
    else:
        unmatched_mask = pl.repeat(True, customers.height, dtype=pl.Boolean, eager=True)
    unmatched = flags.filter(unmatched_mask).select("customer_id")
    del flags

    # Each rule's actions (ranked) and cut customers; parts stay in rule order, each in rank order.
    ids = customers["customer_id"]
    # A part keeps the customers' row order: with the ids in order (the feature pass's table), so is every part.
    in_id_order = not ids.null_count() and ids.is_sorted()

    def by_id(part: pl.DataFrame) -> pl.DataFrame:
        return part if in_id_order else part.sort("customer_id")

    kept_parts, cut_parts = [], []
    for i, rule in enumerate(rules):
        part = parts[i]
        if rule.capacity is not None:
            keyed = part.select("customer_id", "_rule", pl.col(key_names[key_cols.index(rule.order_by)]).alias("_key"))
            keyed = keyed.sort(["_key", "customer_id"], descending=[rule.descending, False], nulls_last=True)
            keyed = keyed.with_row_index("_rank", offset=1)
            kept_parts.append(keyed.filter(pl.col("_rank") <= rule.capacity).select("customer_id", "_rule", "_rank"))
            cut_parts.append(keyed.filter(pl.col("_rank") > rule.capacity).select("customer_id", "_rule", "_rank"))
        else:
            kept_parts.append(by_id(part).with_row_index("_rank", offset=1)
                              .select("customer_id", "_rule", "_rank"))
            cut_parts.append(None)
    id_dtype = customers.schema["customer_id"]
    empty = pl.DataFrame(schema={"customer_id": id_dtype, "_rule": pl.Int32, "_rank": pl.UInt32})
    rules_all = list(rules)
    hits = [p.height for p in parts]  # by position: a rule's hits are its own part, whatever its name
    matched_all = list(matched_counts)
    fb_index = None
    if fallback is not None:
        fb_index = len(rules_all)
        rules_all.append(fallback)
        kept_parts.append(by_id(unmatched).with_row_index("_rank", offset=1)
                          .select("customer_id", pl.lit(fb_index, pl.Int32).alias("_rule"), "_rank"))
        cut_parts.append(None)
        hits.append(unmatched.height)
        matched_all.append(unmatched.height)
        masks.append(unmatched_mask.alias(fallback.name))

    control_parts: list[pl.DataFrame | None] = [None] * len(rules_all)
    if holdout is not None or any(r.holdout is not None for r in rules_all):
        try:  # an id type no holdout can hash, float ids that are not whole numbers
            check_ids(customers["customer_id"])
        except DataError as exc:
            line = holdout.line if holdout is not None else next(r.holdout.line for r in rules_all if r.holdout)
            raise DataError(f"{source}:{line}: holdout: {exc}") from None
        for i, rule in enumerate(rules_all):
            kept_parts[i], control_parts[i] = _hold_out(kept_parts[i], id_dtype, holdout, rule.holdout)

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
    def with_rule(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
        # meta's row i is rule i: each row's rule columns gathered by its position (a join, without hashing)
        return pl.concat([frame, meta.select(pl.col(columns).gather(frame["_rule"]))], how="horizontal")

    # Actions in (priority, rule, rank) order: the parts concatenated by (priority, rule) are already in
    # that order, so no sort.
    by_priority = sorted(range(len(rules_all)), key=lambda i: (rules_all[i].priority, i))
    kept = pl.concat([empty, *[kept_parts[i] for i in by_priority]])
    actions = with_rule(kept, ["rule", "action", "channel", "owner", "due_date", "priority", "parameters"]).select(
        "customer_id", "rule", "action", "channel", "owner", "due_date", "priority", "parameters")
    cut = pl.concat([empty, *[c for c in cut_parts if c is not None]])
    cut_out = with_rule(cut, ["rule", "action"]).select("customer_id", "rule", "action", pl.col("_rank").alias("rank"))

    control_schema = {"customer_id": id_dtype, "_rule": pl.Int32, "_rank": pl.UInt32, "holdout": pl.String,
                      "bucket": pl.UInt64}
    control = pl.concat([pl.DataFrame(schema=control_schema),
                         *[control_parts[i] for i in by_priority if control_parts[i] is not None]])
    control_out = with_rule(control, ["rule"]).select("customer_id", "rule", pl.lit("control").alias("group"),
                                                      "holdout", "bucket")

    cut_counts = [0 if c is None else c.height for c in cut_parts]
    kept_counts = [k.height for k in kept_parts]
    control_counts = [0 if c is None else c.height for c in control_parts]
    rule_summary = meta.select("rule").with_columns(
        pl.Series("matched", matched_all, dtype=pl.Int64),
        pl.Series("hits", hits, dtype=pl.Int64),
        pl.Series("cut_by_capacity", cut_counts, dtype=pl.Int64),
        pl.Series("actions", kept_counts, dtype=pl.Int64),
        pl.Series("treatment", kept_counts, dtype=pl.Int64),
        pl.Series("control", control_counts, dtype=pl.Int64),
    )
    return RuleResult(rules=tuple(rules_all), fallback=fb_index, hit_policy=hit_policy, masks=tuple(masks),
                      matched=tuple(matched_all), hits=tuple(hits), cut_by_capacity=tuple(cut_counts),
                      actions_per_rule=tuple(kept_counts), actions=actions, cut=cut_out, unmatched=unmatched.height,
                      rule_summary=rule_summary, skipped_rules=tuple(skipped_rules), control=control_out,
                      control_per_rule=tuple(control_counts), action_positions=kept["_rule"],
                      cut_positions=cut["_rule"], control_positions=control["_rule"])


def _hold_out(part: pl.DataFrame, id_dtype: pl.DataType, playbook: Holdout | None,
              rule: Holdout | None) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Split one rule's kept customers into treatment (still actions) and control (held out).

    The playbook's control group is checked first: a customer in it is held out of
    every rule, and their row names ``playbook``; otherwise the rule's own holdout
    (``rule``). The bucket is that holdout's. A customer the playbook holds out is not
    hashed again under the rule's salt: their group is decided.
    """
    active = [(name, h) for name, h in (("playbook", playbook), ("rule", rule)) if h is not None and h.threshold > 0]
    if not active or part.height == 0:
        return part, None
    rest, held = part, []
    for name, h in active:
        if rest.height == 0:
            break
        bucket = buckets(rest["customer_id"], h.salt, checked=True)
        out = bucket < h.threshold
        held.append(rest.filter(out).with_columns(pl.lit(name).alias("holdout"), bucket.filter(out)))
        rest = rest.filter(~out)
    # In the rule's own order (its rank), whichever holdout took each customer.
    control = pl.concat(held).sort("_rank")
    return rest, control.select("customer_id", "_rule", "_rank", "holdout", "bucket")


def label_sets(selections: Sequence[Selection]) -> dict[str, tuple[str, ...]]:
    """Each label column of the selected classifiers with its labels (what :func:`evaluate_rules` checks against)."""
    return {o.column: o.labels for s in selections for o in s.outputs if o.labels is not None}


def _playbook_result(pb: Playbook, prepared: Prepared, customers: pl.DataFrame, *,
                     skipped_columns: Mapping[str, str] | None = None, classes: Any = None) -> Result:
    """Apply ``pb``'s rules to the classified ``customers`` and build the summary (see :func:`evaluate_rules`);
    ``classes``, when given, is :func:`engine.run.summarize` of ``customers``, counted already (a run with
    snapshots counts it with the last snapshot's figures)."""
    as_of = prepared.as_of
    counting = None
    if classes is None:  # counted on a thread of its own while the rules run (Polars lets go of the GIL)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierbook-classes")
        counting = pool.submit(contextvars.copy_context().run, summarize, customers, pb.selections)
        pool.shutdown(wait=False)  # the thread ends with its one piece of work
    try:
        rr = evaluate_rules(customers, pb.rules, as_of=as_of, hit_policy=pb.hit_policy, fallback=pb.fallback,
                            labels=label_sets(pb.selections), skipped_columns=skipped_columns, source=pb.path,
                            holdout=pb.holdout)
    except BaseException:
        if counting is not None:
            wait([counting])  # nothing left running when the rules' error is raised
        raise
    if counting is not None:
        classes = counting.result()
    report = prepared.report
    summary = {
        "playbook": pb.name,
        "as_of": str(as_of),
        "hit_policy": pb.hit_policy,
        "input": report.to_dict(),
        "reconciliation": reconcile(report, customers, "the customer table"),
        "classes": classes.to_dicts(),
        "rules": rr.rule_summary.to_dicts(),
        "unmatched": rr.unmatched,
        "cut_by_capacity": rr.cut.height,
        "actions": rr.actions.height,
    }
    if rr.skipped_rules:
        summary["skipped_rules"] = list(rr.skipped_rules)
    summary["control"] = rr.control.height
    summary["holdouts"] = holdout_summary(pb.holdout, rr.rules)
    check_reconciliation(summary["reconciliation"])
    return Result(customers=customers, actions=rr.actions, cut=rr.cut, classes=classes,
                  rule_summary=rr.rule_summary, summary=summary, as_of=as_of, report=report, control=rr.control,
                  rule_result=rr)


def holdout_summary(playbook: Holdout | None, rules: Sequence[Rule]) -> dict[str, Any]:
    """``summary.json``'s ``holdouts``: how customers were dealt into buckets, the playbook's control group,
    and each rule's holdout with the share of its customers expected in control (what ``tierbook measure``
    checks the observed split against)."""
    return {
        "hash": "sha256(salt + NUL + id), first 8 bytes big-endian, mod 10000 (docs/holdouts.md)",
        "buckets": BUCKETS,
        "playbook": playbook.to_dict() if playbook is not None else None,
        "rules": [{"rule": r.name, "holdout": r.holdout.to_dict() if r.holdout is not None else None,
                   "expected_control_share": control_share(playbook, r.holdout)} for r in rules],
    }
