"""Expectations: a playbook's ``expect:`` cases, small customers and the action each must get.

::

    expect:
      - name: a dormant A customer gets a visit      # optional (default: case N)
        customer: {abc: 'A', adc: dormant, monetary: 1200}
        action: retention-visit                     # an action of a rule or of the fallback, or none
        rule: key-accounts-at-risk                  # optional: the rule that must give it
        as_of: 2011-12-10                           # optional: default data.as_of, else today

A case's customer names columns of the customer table (features, the customer table's attributes, the
classifiers' label columns) with their values; every column it does not name is missing (null), so a
condition on it is unknown and does not hold, as for a real customer without that value. Labels are
given, not computed: ABC and RFM classes depend on the whole customer base, so a case states them.
Capacity does not apply to cases: they check which rule and action a customer gets, not how many a
rule may take. ``tierbook validate`` and ``tierbook test`` check the cases; a case naming a column or
label the playbook does not have is a playbook problem (``file:line``, exit 2).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import polars as pl

from ..errors import PlaybookError, suggest
from .evaluate import evaluate_rules, label_sets
from .spec import Case, Rule

if TYPE_CHECKING:  # for annotations only (the module is above this one)
    from .model import Playbook

#: The keys of a case.
CASE_KEYS = ("name", "customer", "action", "rule", "as_of")
#: What ``action:`` says for "no action at all" (no rule matched and there is no fallback).
NONE = "none"


def parse_cases(node: Any, add: Callable[[int, str], None]) -> list[Case]:
    """The ``expect:`` list as :class:`Case` records; each problem of its shape goes to ``add(line, message)``."""
    from ..yamlio import MarkedDict, MarkedList

    cases: list[Case] = []
    if node is None:
        return cases
    if not isinstance(node, MarkedList):
        add(getattr(node, "line", 1) or 1, "expect: must be a list of cases (customer: ..., action: ...)")
        return cases
    for i, item in enumerate(node):
        line = node.item_line(i)
        if not isinstance(item, MarkedDict):
            add(line, f"expect[{i + 1}]: expected a mapping with customer and action, got {item!r}"[:300])
            continue
        name = item.get("name", f"case {i + 1}")
        what = f"expect {name!r}" if isinstance(name, str) else f"expect[{i + 1}]"
        ok = True
        meant = set()  # keys an unknown key is a near miss of: only the typo is reported
        for key in item:
            if key not in CASE_KEYS:
                hint = suggest(str(key), CASE_KEYS)
                add(item.key_line(key), f"{what}: unknown key {key!r}{hint} (known: {', '.join(CASE_KEYS)})")
                meant.update(hint.split("'")[1:2])
                ok = False
        if not isinstance(name, str) or not name.strip():
            add(item.value_line("name"), f"{what}: name must be non-empty text, got {name!r}")
            ok = False
        customer = item.get("customer")
        if not isinstance(customer, MarkedDict):
            add(item.value_line("customer") if "customer" in item else item.line,
                f"{what}: customer must be a mapping of column: value, e.g. {{monetary: 1200, frequency: 3}}")
            ok = False
        if "action" not in item and "rule" not in item and not meant & {"action", "rule"}:
            add(item.line, f"{what}: say the action it must get (action: NAME, or action: {NONE}) or the rule "
                           f"(rule: NAME)")
            ok = False
        actions: tuple[str, ...] | None = None
        if "action" in item:
            value = item["action"]
            if value is None or value == NONE:
                actions = ()
            elif isinstance(value, str) and value.strip():
                actions = (value,)
            elif isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
                actions = tuple(value)
            else:
                add(item.value_line("action"), f"{what}: action must be an action's name, a list of them "
                                               f"(hit_policy: all) or {NONE}, got {value!r}"[:300])
                ok = False
        rule = item.get("rule")
        if "rule" in item and not (isinstance(rule, str) and rule.strip()):
            add(item.value_line("rule"), f"{what}: rule must be a rule's name, got {rule!r}")
            ok = False
        as_of = None
        if "as_of" in item:
            from ..data import as_date
            from ..errors import DataError

            try:
                as_of = as_date(item["as_of"], where=f"{what}: as_of")
            except DataError as exc:
                add(item.value_line("as_of"), str(exc))
                ok = False
        if ok:
            cases.append(Case(name=name, customer=dict(customer), actions=actions, rule=rule, as_of=as_of,
                              line=item.line, lines={str(k): customer.value_line(k) for k in customer},
                              action_line=item.value_line("action") if "action" in item else item.line,
                              rule_line=item.value_line("rule") if "rule" in item else item.line))
    return cases


def check_cases(cases: Sequence[Case], schema: Mapping[str, pl.DataType], labels: Mapping[str, Sequence[str]],
                rules: Sequence[Rule], fallback: Rule | None, hit_policy: str,
                add: Callable[[int, str], None]) -> list[Case]:
    """Each case's columns, values, action and rule against the playbook: the cases with typed values.

    A column the customer table will not have, a label its column does not have, a value of the wrong type,
    an action or rule the playbook does not have: one problem each, at its line."""
    actions = list(dict.fromkeys([r.action for r in rules] + ([fallback.action] if fallback else [])))
    names = [r.name for r in rules] + ([fallback.name] if fallback else [])
    out = []
    for case in cases:
        what = f"expect {case.name!r}"
        typed: dict[str, Any] = {}
        ok = True
        for column, value in case.customer.items():
            line = case.lines.get(column, case.line)
            if column == "customer_id":
                add(line, f"{what}: customer_id is not given in a case (each case is a customer of its own)")
                ok = False
                continue
            if column not in schema:
                add(line, f"{what}: unknown column {column!r}{suggest(column, schema)} (a case names columns of "
                          f"the customer table: features, data.customers attributes, classifiers' labels)")
                ok = False
                continue
            try:
                typed[column] = _typed(column, schema[column], value, labels)
            except ValueError as exc:
                add(line, f"{what}: {exc}")
                ok = False
        for action in case.actions or ():
            if action not in actions:
                add(case.action_line, f"{what}: no rule gives the action {action!r}{suggest(action, actions)} "
                                      f"(actions: {', '.join(actions) or 'none'}; or {NONE})")
                ok = False
        if case.actions is not None and len(case.actions) > 1 and hit_policy == "first":
            add(case.action_line, f"{what}: {len(case.actions)} actions, but under hit_policy: first a customer gets "
                                  f"at most one")
            ok = False
        if case.rule is not None and case.rule not in names:
            add(case.rule_line, f"{what}: unknown rule {case.rule!r}{suggest(case.rule, names)} "
                                f"(rules: {', '.join(names)})")
            ok = False
        if ok:
            out.append(replace(case, customer=typed))
    return out


def _typed(column: str, dtype: pl.DataType, value: Any, labels: Mapping[str, Sequence[str]]) -> Any:
    """``value`` as the column holds it; ValueError saying what is wrong."""
    if value is None:
        return None
    if isinstance(dtype, pl.Enum):
        known = list(labels.get(column) or dtype.categories.to_list())
        if not isinstance(value, str) or value not in known:
            raise ValueError(f"{value!r} is not a label of {column}{suggest(str(value), known)} "
                             f"(labels: {', '.join(known)})")
        return value
    if dtype == pl.Boolean:
        if not isinstance(value, bool):
            raise ValueError(f"{column} is true or false, got {value!r}")
        return value
    if dtype.is_integer():
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{column} is a whole number, got {value!r}")
        return value
    if dtype.is_numeric():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{column} is a number, got {value!r}")
        return float(value) if dtype.is_float() else value
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        if isinstance(value, str):
            try:
                value = dt.date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{column} is a date YYYY-MM-DD, got {value!r}") from None
        if not isinstance(value, dt.date):
            raise ValueError(f"{column} is a date YYYY-MM-DD, got {value!r}")
        if isinstance(dtype, pl.Datetime) and not isinstance(value, dt.datetime):
            value = dt.datetime(value.year, value.month, value.day)
        return value
    if dtype in (pl.String, pl.Categorical):
        if not isinstance(value, str):
            raise ValueError(f"{column} is text: write {value!r} in quotes")
        return value
    raise ValueError(f"{column} has type {dtype}, which a case cannot give")


@dataclass(frozen=True)
class Outcome:
    """What a case got: its actions and rules (in the order of actions.csv), the customer row it was, and why
    it failed (``""``: it holds)."""

    case: Case
    actions: tuple[str, ...]
    rules: tuple[str, ...]
    row: pl.DataFrame
    as_of: dt.date
    failure: str = ""
    #: the positions of the rules that gave the actions (the playbook's rules, then the fallback)
    positions: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failure


def run_cases(pb: Playbook, schema: Mapping[str, pl.DataType] | None = None) -> list[Outcome]:
    """Evaluate every case of ``pb`` with its rules (capacity left out) and compare with what it must get."""
    schema = dict(schema if schema is not None else pb.customer_schema)
    if not schema and pb.expectations:
        raise PlaybookError([f"{pb.path}: its expect: cases need the customer table's columns: load the playbook "
                             f"with check_data=True"])
    labels = label_sets(pb.selections)
    rules = [replace(r, capacity=None) for r in pb.rules]
    id_dtype = schema.get("customer_id", pl.String())
    outcomes: list[Outcome] = []
    by_as_of: dict[dt.date, list[int]] = {}
    default = pb.data.get("as_of") or dt.date.today()
    for i, case in enumerate(pb.expectations):
        by_as_of.setdefault(case.as_of or default, []).append(i)
    results: dict[int, Outcome] = {}
    for as_of, indices in by_as_of.items():
        ids = [str(i + 1) if id_dtype == pl.String else i + 1 for i in indices]
        rows = [{"customer_id": cid, **pb.expectations[i].customer} for cid, i in zip(ids, indices)]
        frame = pl.DataFrame(rows, schema={"customer_id": id_dtype, **{k: v for k, v in schema.items()
                                                                         if k != "customer_id"}})
        rr = evaluate_rules(frame, rules, as_of=as_of, hit_policy=pb.hit_policy, fallback=pb.fallback,
                            labels=labels, source=pb.path)
        actions = rr.actions.select("customer_id", pl.col("action").cast(pl.String), pl.col("rule").cast(pl.String),
                                    rr.action_positions.alias("_position"))
        for cid, i in zip(ids, indices):
            got = actions.filter(pl.col("customer_id") == cid)
            case = pb.expectations[i]
            outcome = Outcome(case, tuple(got["action"]), tuple(got["rule"]),
                              frame.filter(pl.col("customer_id") == cid), as_of, positions=tuple(got["_position"]))
            results[i] = replace(outcome, failure=_failure(outcome, pb.fallback))
    outcomes = [results[i] for i in range(len(pb.expectations))]
    return outcomes


def _failure(outcome: Outcome, fallback: Rule | None) -> str:
    case = outcome.case
    got = _got(outcome, fallback)
    if case.actions is not None and sorted(case.actions) != sorted(outcome.actions):
        want = " and ".join(repr(a) for a in case.actions) if case.actions else "no action"
        return f"must get {want}, got {got}"
    if case.rule is not None and case.rule not in outcome.rules:
        return f"must get its action from rule {case.rule!r}, got {got}"
    return ""


def _got(outcome: Outcome, fallback: Rule | None) -> str:
    if not outcome.actions:
        return "no action (no rule matched and there is no fallback)"
    parts = [f"{a!r} (rule {r!r}{', the fallback' if fallback is not None and r == fallback.name else ''})"
             for a, r in zip(outcome.actions, outcome.rules)]
    return " and ".join(parts)
