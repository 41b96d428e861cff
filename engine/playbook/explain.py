"""``tierbook explain``: why one customer got what they got."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from ..errors import DataError
from ..run import Prepared
from ..terminal import safe_lines
from .spec import Result

if TYPE_CHECKING:  # for annotations only (the module is above this one)
    from .model import Playbook


def explain_customer(pb: Playbook, prepared: Prepared, result: Result, customer_id: str) -> str:
    """Text explaining one customer: features, labels, every rule and which clause failed, and a verdict."""
    customers = result.customers
    dtype = customers.schema["customer_id"]
    try:
        key = pl.Series([customer_id]).cast(dtype, strict=True)[0]
    except Exception:
        raise DataError(f"customer id {customer_id!r} is not a valid {dtype} id") from None
    row = customers.filter(pl.col("customer_id") == key)
    if row.height == 0:
        ids = customers["customer_id"].cast(pl.String).head(5).to_list()
        raise DataError(f"no customer {customer_id!r} in {pb.data.get('transactions')} "
                        f"(ids look like: {', '.join(ids)})")
    lines = [f"customer {customer_id} (as of {result.as_of})", "", "features and labels:"]
    for col, value in row.row(0, named=True).items():
        if col != "customer_id":
            lines.append(f"  {col:<18} {value}")
    if result.snapshots is not None and len(result.snapshots.customers) >= 2:
        lines += ["", *moves(pb, result.snapshots, key)]
    labels = {o.column: o.labels for s in pb.selections for o in s.outputs if o.labels is not None}
    lines += ["", f"rules (hit policy: {pb.hit_policy}):"]
    rr = result.rule_result
    if rr is None:  # a Result built by hand: the rules again, keyed by position
        from .evaluate import evaluate_rules

        rr = evaluate_rules(customers, pb.rules, as_of=result.as_of, hit_policy=pb.hit_policy,
                            fallback=pb.fallback, labels=labels, source=pb.path, holdout=pb.holdout)
    # What the customer got, by rule position (never by name: a name says nothing about which rule it is).
    taken = set(rr.action_positions.filter(rr.actions["customer_id"] == key).to_list())
    cut = set(rr.cut_positions.filter(rr.cut["customer_id"] == key).to_list())
    held = {}  # position -> the holdout row of the customer
    if rr.control is not None and rr.control_positions is not None:
        mine = rr.control["customer_id"] == key
        held = dict(zip(rr.control_positions.filter(mine).to_list(), rr.control.filter(mine).iter_rows(named=True)))
    lines += rule_lines(pb, row, labels, result.as_of, taken, cut, held)
    return safe_lines(lines)  # values and names from the data, each line kept one line


def rule_lines(pb: Playbook, row: pl.DataFrame, labels, as_of, taken: set[int], cut: set[int],
               held: dict[int, dict] | None = None) -> list[str]:
    """Every rule's outcome for one customer (``row``), each clause with the values it compared, and a
    last ``verdict:`` line: the action(s) the customer got, or why none. ``taken``, ``cut`` and ``held``
    are rule positions (the playbook's rules, then the fallback): those that gave the customer an action,
    whose capacity cut the customer, and whose holdout kept the customer as control (position -> its
    row of control.csv)."""
    from ..rules import compile_rule

    held = held or {}

    def held_out(i: int) -> str:
        h = held[i]
        whose = "the playbook's control group" if h["holdout"] == "playbook" else "the rule's holdout"
        return f" but held out: {whose} (bucket {h['bucket']}), no action (control group)"

    lines, matched = [], []
    for i, rule in enumerate(pb.rules):
        compiled = compile_rule(rule.when, row.schema, labels=labels, as_of=as_of)
        hit = bool(row.select(compiled.expr).item())
        status = "matched" if hit else "not matched"
        if hit:
            matched.append(i)
        if i in taken:
            status += f" -> {rule.action} via {rule.channel}, owner {rule.owner}"
        elif i in held:
            status += held_out(i)
        elif i in cut:
            status += " but cut by capacity"
        elif hit:
            status += " but an earlier rule took the customer (hit policy first)"
        lines.append(f"- {rule.name}: {status}")
        lines.extend(compiled.explain_lines(row))
    fallback, fb = pb.fallback, len(pb.rules)
    if fallback is not None and fb in taken:
        lines.append(f"- {fallback.name} (fallback): {fallback.action} via {fallback.channel}")
    elif fallback is not None and fb in held:
        lines.append(f"- {fallback.name} (fallback):{held_out(fb)}")
    everyone = [*pb.rules, *([fallback] if fallback else [])]
    actions = [f"{r.action} (rule {r.name!r})" for i, r in enumerate(everyone) if i in taken]
    kept = [everyone[i].name for i in sorted(held)]
    if not matched and not kept:
        verdict = (f"no rule matched, so the fallback {fallback.name!r} applies: {fallback.action}"
                   if fallback is not None else "no rule matched and there is no fallback: no action")
    elif actions:
        verdict = "; ".join(actions)
    elif kept:
        verdict = f"held out of {', '.join(repr(k) for k in kept)} (control group): no action"
    else:
        verdict = (f"cut by the capacity of {', '.join(repr(everyone[c].name) for c in sorted(cut))}: no action"
                   if cut else f"matched {', '.join(repr(pb.rules[m].name) for m in matched)} but no action")
    lines.append(f"verdict: {verdict}")
    return lines


def moves(pb: Playbook, snaps, key) -> list[str]:
    """What moved since the previous snapshot and why: each label before -> now, and the numbers its
    classifier reads, before -> now, each with its share of all customers' total (``monetary 1,234.00
    (4.1% of the total) -> 300.00 (0.9%)``)."""
    before_t, now_t = snaps.customers[-2], snaps.customers[-1]
    before = before_t.filter(pl.col("customer_id") == key)
    now = now_t.filter(pl.col("customer_id") == key)
    lines = [f"since the previous snapshot ({snaps.as_of[-2]} -> {snaps.as_of[-1]}):"]
    if before.height == 0:
        lines.append(f"  not a customer as of {snaps.as_of[-2]} (entered since)")
    for sel in pb.selections:
        outs = [o for o in sel.outputs if o.labels is not None]
        if not outs:
            continue
        for o in outs:
            old = before[o.column][0] if before.height else None
            new = now[o.column][0]
            if old is None or new is None:
                what = "entered" if old is None and new is not None else "left" if new is None and old is not None \
                    else "no label"
            else:
                labels = list(o.labels)
                i, j = labels.index(old), labels.index(new)
                what = "same" if i == j else "up" if j < i else "down"
            lines.append(f"  {o.column}: {old if old is not None else '-'} -> {new if new is not None else '-'} "
                         f"({what})")
        window = snaps.spec.windows.get(sel.classifier.name)
        # the columns its parameters name (what it ranks by: shown with their share of the total), then those
        # it requires
        ranked = [sel.params[p.name] for p in sel.classifier.params if p.feature]
        for col in dict.fromkeys([*ranked, *sel.requires]):
            if col not in now_t.columns or not now_t.schema[col].is_numeric():
                continue
            parts = []
            for table, row in ((before_t, before), (now_t, now)):
                value = row[col][0] if row.height else None
                total = table[col].sum() if col in ranked else None
                share = f" ({value / total:.1%} of the total)" if value is not None and total else ""
                parts.append(f"{value:,.2f}{share}" if isinstance(value, float) else f"{value}{share}")
            note = f" (its classes use the last {window} only)" if window else ""
            lines.append(f"    {col}: {parts[0]} -> {parts[1]}{note}")
    return lines
