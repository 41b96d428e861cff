"""``tierbook diff``: who gets a different action under a changed playbook, and why.

Two playbooks (or one and a copy with changed parameters) are run over the same data, read once:
the customer table is computed once, each side classifies it with its own parameters and applies its
own rules with :func:`~engine.playbook.evaluate_rules` (holdouts included). A customer's *action* is what
the run's ``actions.csv`` gives them (the actions of every rule that took them, in the actions' order, joined
with `` + ``), ``(cut by 'rule')`` when a rule matched them but its capacity left them out, ``(control group of
'rule')`` when a holdout held them out of its action, or ``(none)``.

For every customer whose action changes, the reason is the first of these that holds:

0. a holdout now holds them out of a rule's action (its control group), or no longer does;
1. a class they are in changed (a classifier's parameters differ): ``abc: 'A' -> 'B' (abc.a 0.8 -> 0.7)``;
2. the rule that took them before does not now: it was removed, its condition is now false (the first
   clause of the new condition that is not true, with the customer's values), or its capacity cuts them;
3. the rule that takes them now did not before: it is new, its old condition was false (the first clause
   that was not true, with their values), or its capacity cut them;
4. the same rules take them with a different action (``rule 'x': action 'a' -> 'b'``);
5. otherwise the rules' order changed.

Two playbooks over different data or different classifiers are refused (:class:`DiffError`, one line
naming what differs): their customers cannot be compared.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ..errors import TierbookError
from .evaluate import RuleResult, evaluate_rules, label_sets
from .spec import Rule

if TYPE_CHECKING:
    from ..run import Prepared
    from .model import Playbook

__all__ = ["DiffError", "PlaybookDiff", "diff_playbooks", "diff_customers", "comparable", "format_diff", "diff_json"]

NONE = "(none)"


class DiffError(TierbookError):
    """Two playbooks that cannot be compared (different data or classifiers)."""


#: The data settings that decide which customers a playbook sees (``_lines`` are YAML positions).
_DATA_KEYS = ("transactions", "map", "customers", "customers_id", "as_of", "date_format", "sheet", "delimiter",
              "decimal_comma")


def comparable(old: Playbook, new: Playbook) -> None:
    """Raise :class:`DiffError` (one line naming what differs) when the two read different data or classifiers."""
    for key in _DATA_KEYS:
        a, b = old.data.get(key), new.data.get(key)
        if a != b:
            raise DiffError(f"{new.path}: reads different data than {old.path} (data.{key}: {_short(a)} there, "
                            f"{_short(b)} here), so their customers cannot be compared")
    if old.snapshots != new.snapshots:
        raise DiffError(f"{new.path}: snapshots: differ from {old.path}'s ({_short(new.snapshots)} here, "
                        f"{_short(old.snapshots)} there): the playbooks' rules read different snapshots")
    if old.engine != new.engine:
        raise DiffError(f"{new.path}: engine is {new.engine}, but {old.path} has {old.engine}; diff runs both "
                        f"on the same feature pass")
    a, b = [s.classifier.name for s in old.selections], [s.classifier.name for s in new.selections]
    if sorted(a) != sorted(b):
        only_old, only_new = [n for n in a if n not in b], [n for n in b if n not in a]
        parts = ([f"only {old.path} has {', '.join(only_old)}"] if only_old else []) + \
                ([f"only {new.path} has {', '.join(only_new)}"] if only_new else [])
        raise DiffError(f"the playbooks run different classifiers ({'; '.join(parts)}): diff compares the same "
                        f"classifiers with different parameters or rules")


def _short(value: Any) -> str:
    if value is None:
        return "not set"
    text = str(value) if isinstance(value, (str, Path, dt.date)) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class PlaybookDiff:
    """What changes between two playbooks on the same customers."""

    old: Playbook
    new: Playbook
    as_of: dt.date
    customers: int
    revenue: float
    #: one row per customer whose action changes: customer_id, monetary, old_action, new_action, old_rule,
    #: new_rule (the rule that took or cut them), reason, values (the customer's values the reason rests on),
    #: and each label column's old and new label (``<column>_old``, ``<column>_new``)
    changes: pl.DataFrame
    #: old_action, new_action, customers, revenue (changed customers only), most customers first
    transitions: pl.DataFrame
    #: per label column: column, old_label, new_label, customers, revenue of the changed customers
    by_class: pl.DataFrame
    #: parameters that differ: "classifier.param" -> (old, new)
    params: dict[str, tuple[Any, Any]]


def _param_changes(old: Playbook, new: Playbook) -> dict[str, tuple[Any, Any]]:
    out = {}
    new_params = new.classifiers
    for name, params in old.classifiers.items():
        for key, value in params.items():
            other = new_params.get(name, {}).get(key)
            if other != value:
                out[f"{name}.{key}"] = (value, other)
    return out


def diff_playbooks(old: Playbook, new: Playbook, *, as_of: str | dt.date | None = None,
                   prepared: Prepared | None = None) -> PlaybookDiff:
    """Run both playbooks over the same data (read once) and compare their actions per customer."""
    from ..run import apply_classifiers

    comparable(old, new)
    params = _param_changes(old, new)
    same_classes = not params and [s.classifier for s in old.selections] == [s.classifier for s in new.selections]
    if old.snapshots is not None:  # rules read the last snapshot (and the one before): each side classifies its own
        snaps = old.compute_snapshots(as_of)
        classified_old = snaps.last
        classified_new = classified_old if same_classes else new.compute_snapshots(as_of).last
        return diff_customers(old, new, classified_old, classified_new, snaps.as_of[-1], params=params)
    if prepared is None:
        prepared = old.prepare(as_of)
    base = prepared.customers
    classified_old = apply_classifiers(base, old.selections, as_of=prepared.as_of, registry=old.registry)
    if same_classes:
        classified_new = classified_old
    else:
        classified_new = apply_classifiers(base, new.selections, as_of=prepared.as_of, registry=new.registry)
    return diff_customers(old, new, classified_old, classified_new, prepared.as_of, params=params)


def _state(rr: RuleResult, hit_policy: str) -> pl.DataFrame:
    """customer_id, action and rule (names joined with ' + '), and the cutting rule, for customers with any."""
    actions = rr.actions.select("customer_id", pl.col("action").cast(pl.String), pl.col("rule").cast(pl.String))
    if hit_policy != "first":
        actions = actions.group_by("customer_id", maintain_order=True).agg(
            pl.col("action").str.join(" + "), pl.col("rule").str.join(" + "))
    cut = rr.cut.select("customer_id", pl.col("rule").cast(pl.String).alias("cut_by"))
    control = (rr.control if rr.control is not None else pl.DataFrame(schema={"customer_id": actions.schema[
        "customer_id"], "rule": pl.String})).select("customer_id", pl.col("rule").cast(pl.String).alias("control"))
    if hit_policy != "first":
        cut = cut.group_by("customer_id", maintain_order=True).agg(pl.col("cut_by").str.join(" + "))
        control = control.group_by("customer_id", maintain_order=True).agg(pl.col("control").str.join(" + "))
    return (actions.join(cut, on="customer_id", how="full", coalesce=True)
            .join(control, on="customer_id", how="full", coalesce=True))


def _action(state: pl.DataFrame, side: str) -> pl.Expr:
    action, cut, control = pl.col(f"action_{side}"), pl.col(f"cut_by_{side}"), pl.col(f"control_{side}")
    why = pl.concat_str([pl.lit("cut by '") + cut + pl.lit("'"), pl.lit("control group of '") + control + pl.lit("'")],
                        separator="; ", ignore_nulls=True)
    why = pl.when(cut.is_not_null() | control.is_not_null()).then(why)
    return (pl.when(action.is_not_null() & why.is_not_null()).then(action + pl.lit(" (and ") + why + pl.lit(")"))
            .when(action.is_not_null()).then(action)
            .when(why.is_not_null()).then(pl.lit("(") + why + pl.lit(")"))
            .otherwise(pl.lit(NONE)))


def diff_customers(old: Playbook, new: Playbook, classified_old: pl.DataFrame, classified_new: pl.DataFrame,
                   as_of: dt.date, *, params: Mapping[str, tuple[Any, Any]] | None = None) -> PlaybookDiff:
    """Compare the two playbooks' actions on their classified customer tables (the same customers)."""
    params = dict(params if params is not None else _param_changes(old, new))
    rr_old = evaluate_rules(classified_old, old.rules, as_of=as_of, hit_policy=old.hit_policy, fallback=old.fallback,
                            labels=label_sets(old.selections), source=old.path, holdout=old.holdout)
    rr_new = evaluate_rules(classified_new, new.rules, as_of=as_of, hit_policy=new.hit_policy, fallback=new.fallback,
                            labels=label_sets(new.selections), source=new.path, holdout=new.holdout)
    s_old = _state(rr_old, old.hit_policy).rename({"action": "action_old", "rule": "rule_old", "cut_by": "cut_by_old",
                                                   "control": "control_old"})
    s_new = _state(rr_new, new.hit_policy).rename({"action": "action_new", "rule": "rule_new", "cut_by": "cut_by_new",
                                                   "control": "control_new"})
    label_cols = [c for c in label_sets(new.selections) if c in label_sets(old.selections)]
    table = classified_old.select("customer_id", "monetary", *[pl.col(c).cast(pl.String).alias(f"{c}_old")
                                                               for c in label_cols])
    if label_cols:
        table = table.with_columns(classified_new.select([pl.col(c).cast(pl.String).alias(f"{c}_new")
                                                          for c in label_cols]))
    joined = (table.join(s_old, on="customer_id", how="left", maintain_order="left")
              .join(s_new, on="customer_id", how="left", maintain_order="left"))
    joined = joined.with_columns(_action(joined, "old").alias("old_action"), _action(joined, "new").alias("new_action"))
    changed = joined.filter(pl.col("old_action") != pl.col("new_action"))
    changes = _reasons(old, new, changed, classified_old, classified_new, as_of, params)
    transitions = (changes.group_by("old_action", "new_action")
                   .agg(pl.len().alias("customers"), pl.col("monetary").sum().alias("revenue"))
                   .sort(["customers", "old_action", "new_action"], descending=[True, False, False]))
    parts = []
    for col in label_cols:
        parts.append(changes.group_by(f"{col}_old", f"{col}_new")
                     .agg(pl.len().alias("customers"), pl.col("monetary").sum().alias("revenue"))
                     .select(pl.lit(col).alias("column"), pl.col(f"{col}_old").alias("old_label"),
                             pl.col(f"{col}_new").alias("new_label"), "customers", "revenue"))
    by_class = (pl.concat(parts) if parts else pl.DataFrame(schema={
        "column": pl.String, "old_label": pl.String, "new_label": pl.String, "customers": pl.UInt32,
        "revenue": pl.Float64}))
    if parts:
        by_class = by_class.sort(["column", "customers"], descending=[False, True])
    columns = ["customer_id", "monetary", "old_action", "new_action", "old_rule", "new_rule", "reason", "values",
               *[f"{c}_{side}" for c in label_cols for side in ("old", "new")]]
    return PlaybookDiff(old=old, new=new, as_of=as_of, customers=classified_old.height,
                        revenue=float(classified_old["monetary"].sum()), changes=changes.select(columns),
                        transitions=transitions, by_class=by_class, params=params)


# ------------------------------------------------------------------------------- reasons
def _first_false(rule: Rule, schema, labels, as_of: dt.date) -> tuple[pl.Expr, pl.Expr]:
    """The first top-level clause of the rule's condition that is not true, and the customer's values it read."""
    from ..rules import compile_rule

    compiled = compile_rule(rule.when, schema, labels=labels, as_of=as_of)
    top = [c for c in compiled.clauses if c.depth == 0]
    texts, values = [], []
    for clause in top:
        false = ~clause.expr.fill_null(False)
        shown = [pl.format(f"{_literal(col)} = {{}}", pl.col(col).cast(pl.String).fill_null("null"))
                 for col in clause.columns]
        texts.append(pl.when(false).then(pl.lit(f"{clause.text} is not true")))
        values.append(pl.when(false).then(pl.concat_str(shown, separator=", ") if shown else pl.lit("")))
    if not texts:
        return pl.lit(None, pl.String), pl.lit(None, pl.String)
    return pl.coalesce(texts), pl.coalesce(values)


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _reasons(old: Playbook, new: Playbook, changed: pl.DataFrame, classified_old: pl.DataFrame,
             classified_new: pl.DataFrame, as_of: dt.date, params: Mapping[str, tuple[Any, Any]]) -> pl.DataFrame:
    changed = changed.with_columns(pl.coalesce("rule_old", "cut_by_old", "control_old").alias("old_rule"),
                                   pl.coalesce("rule_new", "cut_by_new", "control_new").alias("new_rule"))
    if changed.height == 0:
        return changed.with_columns(pl.lit(None, pl.String).alias("reason"), pl.lit(None, pl.String).alias("values"))
    old_rules = {r.name: r for r in [*old.rules, *([old.fallback] if old.fallback else [])]}
    new_rules = {r.name: r for r in [*new.rules, *([new.fallback] if new.fallback else [])]}
    labels_old, labels_new = label_sets(old.selections), label_sets(new.selections)
    ids = changed.select("customer_id")
    rows_old = ids.join(classified_old, on="customer_id", how="left", maintain_order="left")
    rows_new = ids.join(classified_new, on="customer_id", how="left", maintain_order="left")

    # 1. a class changed: the first classifier column that differs, with that classifier's changed parameters
    class_reasons = []
    for sel in new.selections:
        name = sel.classifier.name
        changed_params = ", ".join(f"{k} {_value(a)} -> {_value(b)}" for k, (a, b) in params.items()
                                   if k.split(".", 1)[0] == name)
        for out in sel.outputs:
            col = out.column
            if col not in rows_old.columns or col not in rows_new.columns:
                continue
            a, b = rows_old[col], rows_new[col]
            if a.dtype != b.dtype:
                a, b = a.cast(pl.String), b.cast(pl.String)
            differs = pl.Series(a.ne_missing(b))
            if not differs.any():
                continue
            suffix = f" ({changed_params})" if changed_params else ""
            class_reasons.append(pl.when(pl.lit(differs)).then(pl.format(
                f"{col}: {{}} -> {{}}{_literal(suffix)}", pl.lit(a.cast(pl.String)).fill_null("null"),
                pl.lit(b.cast(pl.String)).fill_null("null"))))
    reason_parts: list[tuple[pl.Series, pl.Series]] = []
    if class_reasons:
        reason_parts.append((rows_new.select(pl.coalesce(class_reasons).alias("r"))["r"],
                             pl.Series("v", [None] * changed.height, dtype=pl.String)))

    # 2./3. per pair of (old rule, new rule): why the old one lost the customer or the new one took them
    first_old, first_new = _first_names(changed["old_rule"]), _first_names(changed["new_rule"])
    cut_old, cut_new = _first_names(changed["cut_by_old"]), _first_names(changed["cut_by_new"])
    held_old, held_new = _first_names(changed["control_old"]), _first_names(changed["control_new"])
    groups = pl.DataFrame({"a": first_old, "b": first_new, "ca": cut_old, "cb": cut_new, "ha": held_old,
                           "hb": held_new}).with_row_index("_i")
    reason = pl.Series("r", [None] * changed.height, dtype=pl.String)
    values = pl.Series("v", [None] * changed.height, dtype=pl.String)
    for (a, b, ca, cb, ha, hb), part in groups.group_by(["a", "b", "ca", "cb", "ha", "hb"], maintain_order=True):
        index = part["_i"]
        got = _pair_reason(a, b, ca, cb, old_rules, new_rules, rows_old[index], rows_new[index], labels_old,
                           labels_new, as_of, old, new, held=(ha, hb))
        reason = reason.scatter(index, got["r"])
        values = values.scatter(index, got["v"])
    reason_parts.append((reason, values))
    frame = pl.DataFrame({**{f"r{i}": r for i, (r, _) in enumerate(reason_parts)},
                          **{f"v{i}": v for i, (_, v) in enumerate(reason_parts)}})
    chosen = pl.when(pl.col("r0").is_not_null()).then(pl.col("v0"))
    for i in range(1, len(reason_parts)):
        chosen = chosen.when(pl.col(f"r{i}").is_not_null()).then(pl.col(f"v{i}"))
    final = frame.select(pl.coalesce([pl.col(f"r{i}") for i in range(len(reason_parts))]).alias("reason"),
                         chosen.alias("values"))
    return changed.with_columns(final)


def _first_names(names: pl.Series) -> pl.Series:
    return names.str.split(" + ").list.first()


def _value(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def _pair_reason(a, b, ca, cb, old_rules, new_rules, sub_old, sub_new, labels_old, labels_new, as_of,
                 old, new, held=(None, None)) -> pl.DataFrame:
    """The reasons of one group of changed customers: ``a``/``b`` the rule that took them before/now (or None),
    ``ca``/``cb`` the rule whose capacity cut them before/now; the first reason that holds for each (``r``),
    and the customer's values it rests on (``v``)."""
    candidates: list[tuple[pl.Expr, pl.Expr]] = []

    def const(text: str) -> None:
        candidates.append((pl.lit(text, pl.String), pl.lit(None, pl.String)))

    def clause(rule: Rule, rows: pl.DataFrame, labels, prefix: str, suffix: str) -> None:
        text, values = _first_false(rule, rows.schema, labels, as_of)
        got = rows.select(text.alias("t"), values.alias("v"))
        candidates.append((pl.lit(prefix) + pl.lit(got["t"]) + pl.lit(suffix), pl.lit(got["v"])))

    ha, hb = held  # the rule whose control group held the customer out, before and now
    if hb is not None and hb != ha:
        const(f"held out of {hb!r}'s action (its control group{_holdout_text(old, new, hb)})")
    elif ha is not None and hb != ha:
        const(f"no longer held out of {ha!r}'s action (its control group{_holdout_text(old, new, ha)})")
    before = a or ca or ha   # the rule that took (or cut, or held out) the customer before
    after = b or cb or hb    # ... and now
    old_fallback = old.fallback.name if old.fallback is not None else None
    new_fallback = new.fallback.name if new.fallback is not None else None
    if before is not None and before != old_fallback:
        if before not in new_rules or (before == new_fallback):
            const(f"rule {before!r} was removed")
        else:
            cap = _capacity_text(before, old_rules, new_rules)
            if cb == before and ca != before:
                const(f"cut by the capacity of {before!r}{cap}")
            elif ca == before and cb != before and b == before:
                const(f"no longer cut by the capacity of {before!r}{cap}")
            r_new, old_when = new_rules[before], old_rules[before].when
            was = f" (its condition was: {old_when})" if old_when != r_new.when else ""
            clause(r_new, sub_new, labels_new, f"rule {before!r}: ", was)
    if after is not None and after != new_fallback:
        if after not in old_rules or after == old_fallback:
            const(f"new rule {after!r} takes it" if b else f"new rule {after!r} matches it (cut by its capacity)")
        else:
            r_old, new_when = old_rules[after], new_rules[after].when
            now = f" (its condition is now: {new_when})" if new_when != r_old.when else ""
            clause(r_old, sub_old, labels_old, f"rule {after!r} now matches; before, ", now)
    if a is not None and a == b:
        ra, rb = old_rules.get(a), new_rules.get(b)
        if ra is not None and rb is not None and (ra.action, ra.channel) != (rb.action, rb.channel):
            const(f"rule {a!r}: action {ra.action!r} -> {rb.action!r}")
    if old.hit_policy != new.hit_policy:
        const(f"hit_policy {old.hit_policy} -> {new.hit_policy}")
    const("the rules' order changed")
    chosen = pl.when(candidates[0][0].is_not_null()).then(candidates[0][1])
    for text, values in candidates[1:]:
        chosen = chosen.when(text.is_not_null()).then(values)
    return sub_old.select(pl.first()).with_columns(
        pl.coalesce([t for t, _ in candidates]).alias("r"), chosen.alias("v")).select("r", "v")


def _holdout_text(old, new, name: str) -> str:
    """The holdouts that differ (playbook-wide, or the rule's), as ``: holdout share 0.05 -> 0.1``."""
    def of(pb):
        rule = next((r for r in pb.rules if r.name == name), None)
        return getattr(pb, "holdout", None), getattr(rule, "holdout", None) if rule is not None else None

    def key(h):
        return None if h is None else (h.share, h.salt)

    (pa, ra), (pb_, rb) = of(old), of(new)
    parts = []
    if key(pa) != key(pb_):
        parts.append(f"holdout {_share(pa)} -> {_share(pb_)}")
    if key(ra) != key(rb):
        parts.append(f"the rule's holdout {_share(ra)} -> {_share(rb)}")
    return (": " + "; ".join(parts)) if parts else ""


def _share(h) -> str:
    return "none" if h is None else f"share {getattr(h, 'share', h)}"


def _capacity_text(name: str, old_rules, new_rules) -> str:
    a, b = old_rules[name].capacity, new_rules[name].capacity
    if a == b:
        return ""
    return f" (max {a if a is not None else 'none'} -> {b if b is not None else 'none'})"


# -------------------------------------------------------------------------------- output
def format_diff(d: PlaybookDiff, *, top: int = 20) -> list[str]:
    """The lines ``tierbook diff`` prints."""
    n = d.changes.height
    lines = [f"{d.old.path} -> {d.new.path} (as of {d.as_of}, {d.customers:,} customers)"]
    for key, (a, b) in d.params.items():
        lines.append(f"  {key}: {_value(a)} -> {_value(b)}")
    revenue = float(d.changes["monetary"].sum()) if n else 0.0
    share = revenue / d.revenue if d.revenue else 0.0
    lines.append(f"customers whose action changes: {n:,} ({n / d.customers if d.customers else 0:.1%}), "
                 f"revenue {revenue:,.2f} ({share:.1%})")
    if n == 0:
        return lines
    lines += ["", "old action -> new action"]
    rows = d.transitions.rows(named=True)
    for r in rows[:top]:
        lines.append(f"  {r['old_action']} -> {r['new_action']}: {r['customers']:,} customers, "
                     f"revenue {r['revenue']:,.2f}")
    if len(rows) > top:
        lines.append(f"  ... and {len(rows) - top:,} more")
    if d.by_class.height:
        lines += ["", "by class (customers whose action changes)"]
        for r in d.by_class.rows(named=True):
            label = r["old_label"] if r["old_label"] == r["new_label"] else f"{r['old_label']} -> {r['new_label']}"
            lines.append(f"  {r['column']} {label}: {r['customers']:,} customers, revenue {r['revenue']:,.2f}")
    lines += ["", "why (most common reasons)"]
    reasons = (d.changes.group_by("reason").agg(pl.len().alias("n"))
               .sort(["n", "reason"], descending=[True, False]))
    for r in reasons.head(top).rows(named=True):
        lines.append(f"  {r['n']:,}: {r['reason']}")
    if reasons.height > top:
        lines.append(f"  ... and {reasons.height - top:,} more")
    return lines


def diff_json(d: PlaybookDiff, *, customers: int = 0) -> dict[str, Any]:
    """The JSON document of ``tierbook diff --json`` (docs/check-and-diff.md); ``customers`` changed customers
    listed (the CSV has them all)."""
    return {
        "old": str(d.old.path), "new": str(d.new.path), "as_of": str(d.as_of),
        "customers": d.customers, "revenue": d.revenue,
        "params": {k: {"old": a, "new": b} for k, (a, b) in d.params.items()},
        "changed": d.changes.height,
        "changed_revenue": float(d.changes["monetary"].sum()) if d.changes.height else 0.0,
        "transitions": d.transitions.to_dicts(),
        "by_class": d.by_class.to_dicts(),
        "reasons": (d.changes.group_by("reason").agg(pl.len().alias("customers"))
                    .sort(["customers", "reason"], descending=[True, False]).to_dicts()),
    }
