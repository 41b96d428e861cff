"""Rule counts for the workbench: a playbook's rules re-evaluated on every slider move, exactly, in milliseconds.

:func:`~engine.playbook.evaluate_rules` builds every action row of a run (1M
customers: 150-250 ms). A workbench move only shows the counts per rule
(matched, hits, cut by capacity, actions, control), the unmatched customers and
the first customers cut by capacity. :class:`LiveRules` computes exactly those,
and builds the full :class:`~engine.playbook.RuleResult` only when something asks
for the action rows (:attr:`RuleCounts.full`).

What makes a move cheap. The customer table is fixed while the parameters move;
only the classifiers' output columns change (the *varying* columns). The rule
language is row by row (no aggregate, no window), so a rule's condition for a
customer depends on that customer's values alone. For each rule, once per table:

* a rule that reads no varying column has a fixed mask, evaluated once;
* a rule that reads only label columns is evaluated on the small table of every
  combination of their labels (null included), and a move looks each customer's
  combination up in it (one gather);
* a rule that reads label columns and fixed features is evaluated once per label
  combination over the whole table (the label columns replaced by that label),
  while that stays under :data:`MATRIX_CELLS` cells; a move picks each
  customer's row;
* anything else (a varying column without labels, a label column whose values
  are not its labels) is evaluated with its Polars expression on the moved
  columns, as :func:`evaluate_rules` does.

A rule's mask is re-evaluated only when a column it reads changed. Capacity
ranks customers by a fixed column: the order of the whole table by that column
(sorted once, by Polars, with the same keys and null placement as
:func:`evaluate_rules`) restricted to a rule's hits is the rule's ranking, so a
move scans the order until the capacity is filled. Holdouts hash each customer
id once per salt; a move counts the kept customers whose bucket holds them out.
Every count is therefore the one :func:`evaluate_rules` gives; the tests compare
them on random parameters, rules, hit policies, capacities and holdouts.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import DataError
from ..holdout import Holdout, buckets, check_ids
from .evaluate import RuleResult, _late_due_dates
from .spec import HIT_POLICIES, Rule

__all__ = ["LiveRules", "RuleCounts", "label_codes", "MATRIX_CELLS"]

#: Most (label combination x customer) cells kept for a rule that reads labels and fixed features
#: (one byte each); beyond it such a rule is evaluated with its expression on every move.
MATRIX_CELLS = 64_000_000
#: Customers of a capacity ordering scanned at a time while filling a capacity.
_CHUNK = 65_536


def label_codes(series: pl.Series, labels: Sequence[str]) -> np.ndarray | None:
    """Each customer's label as a code, ``0 .. len(labels) - 1`` in label order and ``len(labels)`` for null.

    None when the column holds a value that is not one of ``labels`` (the caller then evaluates the
    rules that read it with their expressions).
    """
    k = len(labels)
    dtype = series.dtype
    if isinstance(dtype, pl.Enum) and dtype.categories.to_list() == list(labels):
        return series.to_physical().fill_null(k).cast(pl.Int32).to_numpy()
    text = series.cast(pl.String)
    codes = text.replace_strict(list(labels), list(range(k)), default=k, return_dtype=pl.Int32)
    if int((codes == k).sum()) != text.null_count():
        return None
    return codes.to_numpy()


@dataclass
class _Compiled:
    rule: Rule
    expr: pl.Expr
    columns: frozenset[str]
    mode: str                      # "fixed", "table", "matrix" or "expr"
    coded: tuple[str, ...] = ()    # the label columns looked up by code ("table", "matrix")
    strides: tuple[int, ...] = ()
    lookup: np.ndarray | None = None  # "table": (combinations,) bool; "matrix": (combinations, n) bool
    mask: np.ndarray | None = None    # "fixed": the mask
    overflows: tuple = ()             # "expr": the arithmetic checks, run on every evaluation


@dataclass(frozen=True, eq=False)
class RuleCounts:
    """What a playbook's rules do for the current parameters, counted (see :class:`LiveRules`).

    The per-rule tuples are indexed by rule position as in :class:`~engine.playbook.RuleResult`
    (the playbook's rules, then the fallback); ``rule_summary`` is the same frame. ``full`` builds
    the :class:`~engine.playbook.RuleResult` itself (actions, cut and control rows, masks) on first use,
    and any of its other attributes read here come from it.
    """

    rules: tuple[Rule, ...]
    fallback: int | None
    hit_policy: str
    matched: tuple[int, ...]
    hits: tuple[int, ...]
    cut_by_capacity: tuple[int, ...]
    actions_per_rule: tuple[int, ...]
    control_per_rule: tuple[int, ...]
    unmatched: int
    rule_summary: pl.DataFrame
    #: The first rows of ``RuleResult.cut`` (customer_id, rule, action, rank), up to ``cut_rows`` of them.
    cut_first: pl.DataFrame
    _full: Callable[[], RuleResult] = field(repr=False)
    _cache: dict = field(default_factory=dict, repr=False)
    skipped_rules: tuple[dict[str, str], ...] = ()

    @property
    def n_actions(self) -> int:
        return sum(self.actions_per_rule)

    @property
    def n_cut(self) -> int:
        return sum(self.cut_by_capacity)

    @property
    def n_control(self) -> int:
        return sum(self.control_per_rule)

    def cut_head(self, k: int = 10) -> pl.DataFrame:
        """The first ``k`` customers cut by capacity (``RuleResult.cut.head(k)``)."""
        if k <= self.cut_first.height or self.cut_first.height == self.n_cut:
            return self.cut_first.head(k)
        return self.full.cut.head(k)

    @property
    def full(self) -> RuleResult:
        """The full rule evaluation for the same parameters (built once, on first use)."""
        if "full" not in self._cache:
            self._cache["full"] = self._full()
        return self._cache["full"]

    def __getattr__(self, name: str) -> Any:  # actions, cut, control, masks, positions: from the full result
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.full, name)


class Unsupported(Exception):
    """The rules cannot be counted incrementally (an overflow to report): use :func:`evaluate_rules`."""


class LiveRules:
    """A playbook's rules over a fixed customer table whose ``varying`` columns move.

    Parameters
    ----------
    customers
        The customer table without the varying columns (features; fixed while the parameters move).
    varying
        The columns the parameters move (the classifiers' outputs) and their dtypes.
    labels
        The label columns among them and their labels (as :func:`~engine.playbook.label_sets`).
    The rest are :func:`~engine.playbook.evaluate_rules`'s arguments. Compile errors and due dates
    past the last date raise here, as they do there. :class:`Unsupported` when a rule's arithmetic
    overflows on the fixed columns (:func:`evaluate_rules` reports it).
    """

    def __init__(self, customers: pl.DataFrame, rules: Sequence[Rule], *, as_of: dt.date,
                 varying: Mapping[str, pl.DataType], labels: Mapping[str, Sequence[str]],
                 hit_policy: str = "first", fallback: Rule | None = None, source: str | Path = "playbook",
                 holdout: Holdout | None = None, cut_rows: int = 10):
        from ..rules import compile_rule

        if hit_policy not in HIT_POLICIES:
            raise ValueError(f"hit_policy {hit_policy!r} is not one of {', '.join(HIT_POLICIES)}")
        self.customers = customers
        self.n = customers.height
        self.rules = list(rules)
        self.fallback = fallback
        self.rules_all = [*self.rules, *([fallback] if fallback is not None else [])]
        self.hit_policy = hit_policy
        self.as_of = as_of
        self.source = source
        self.cut_rows = cut_rows
        self.varying = dict(varying)
        self.labels = {c: tuple(v) for c, v in labels.items() if c in self.varying}
        for line, message in _late_due_dates(self.rules_all, as_of):
            raise DataError(f"{source}:{line}: {message}")
        schema = {**customers.schema, **self.varying}
        self._compiled: list[_Compiled] = []
        self._versions: list[Any] = [None] * len(self.rules)
        self._masks: list[np.ndarray | None] = [None] * len(self.rules)
        for rule in self.rules:
            c = compile_rule(rule.when, schema, labels=self.labels, as_of=as_of)
            self._compiled.append(self._plan(rule, c))
        # capacity orderings over the whole table, by fixed column (varying ones are sorted per move)
        self._orders: dict[tuple[str, bool], np.ndarray] = {}
        # holdouts: per rule position, True where a kept customer goes to control (None: no holdout)
        self._held: list[np.ndarray | None] = [None] * len(self.rules_all)
        if holdout is not None or any(r.holdout is not None for r in self.rules_all):
            try:
                check_ids(customers["customer_id"])
            except DataError as exc:
                line = holdout.line if holdout is not None else next(r.holdout.line for r in self.rules_all
                                                                     if r.holdout)
                raise DataError(f"{source}:{line}: holdout: {exc}") from None
            hashed: dict[str, np.ndarray] = {}

            def bucket(salt: str) -> np.ndarray:
                if salt not in hashed:
                    hashed[salt] = buckets(customers["customer_id"], salt, checked=True).to_numpy()
                return hashed[salt]

            for i, rule in enumerate(self.rules_all):
                active = [h for h in (holdout, rule.holdout) if h is not None and h.threshold > 0]
                if active:
                    held = np.zeros(self.n, dtype=bool)
                    for h in active:
                        held |= bucket(h.salt) < h.threshold
                    self._held[i] = held
        names = [r.name for r in self.rules_all]
        self._rule_dtype = pl.Enum(list(dict.fromkeys(names)))
        self._action_dtype = pl.Enum(list(dict.fromkeys(r.action for r in self.rules_all)))
        self._id_dtype = customers.schema["customer_id"]

    # ------------------------------------------------------------------ set-up
    def _plan(self, rule: Rule, c: Any) -> _Compiled:
        reads = c.columns
        moved = [col for col in sorted(reads) if col in self.varying]
        fixed = [col for col in sorted(reads) if col not in self.varying]
        # arithmetic that overflows stops a run: on fixed columns it is known now
        for _, flag in c.overflows:
            if set(flag.meta.root_names()) & set(self.varying):
                return _Compiled(rule, c.expr, reads, "expr", overflows=c.overflows)  # checked per move
            if self.customers.select(flag.fill_null(False).any()).item():
                raise Unsupported(rule.name)
        if not moved:
            mask = self.customers.with_columns(c.expr.alias("_m"))["_m"].to_numpy()  # a literal: one per customer
            return _Compiled(rule, c.expr, reads, "fixed", mask=mask)
        if any(col not in self.labels for col in moved):
            return _Compiled(rule, c.expr, reads, "expr")
        sizes = [len(self.labels[col]) + 1 for col in moved]
        combos = int(np.prod(sizes))
        strides = tuple(int(np.prod(sizes[j + 1:])) for j in range(len(sizes)))
        values = list(itertools.product(*[[*self.labels[col], None] for col in moved]))

        def literal(col: str, value: str | None) -> pl.Series:
            return pl.Series(col, [value], dtype=pl.String).cast(self.varying[col])

        if not fixed:
            frame = pl.DataFrame({col: pl.concat([literal(col, v[j]) for v in values])
                                  for j, col in enumerate(moved)})
            lookup = frame.select(c.expr).to_series().to_numpy()
            return _Compiled(rule, c.expr, reads, "table", tuple(moved), strides, lookup)
        if combos * self.n > MATRIX_CELLS:
            return _Compiled(rule, c.expr, reads, "expr")
        base = self.customers.select(fixed)
        lookup = np.empty((combos, self.n), dtype=bool)
        for k, v in enumerate(values):
            lits = [pl.lit(literal(col, v[j])[0], dtype=self.varying[col]).alias(col) for j, col in enumerate(moved)]
            lookup[k] = base.with_columns(lits).select(c.expr).to_series().to_numpy()
        return _Compiled(rule, c.expr, reads, "matrix", tuple(moved), strides, lookup)

    def _order(self, column: str, descending: bool, series: Callable[[str], pl.Series]) -> np.ndarray:
        """The whole table ranked as :func:`evaluate_rules` ranks a capacity rule's customers."""
        key = (column, descending)
        if column in self.varying:
            values = series(column)
        elif key in self._orders:
            return self._orders[key]
        else:
            values = self.customers[column]
        frame = pl.DataFrame({"_key": values, "customer_id": self.customers["customer_id"]}).with_row_index("_i")
        order = frame.sort(["_key", "customer_id"], descending=[descending, False], nulls_last=True)["_i"].to_numpy()
        if column not in self.varying:
            self._orders[key] = order
        return order

    # --------------------------------------------------------------- a move
    def evaluate(self, version: Callable[[str], Hashable], codes: Callable[[str], np.ndarray | None],
                 series: Callable[[str], pl.Series], full: Callable[[], RuleResult]) -> RuleCounts:
        """The counts for the varying columns now.

        ``version(col)`` changes whenever the column does (a mask is re-evaluated only then);
        ``codes(col)`` is a label column's codes (:func:`label_codes`), ``series(col)`` the column itself;
        ``full()`` evaluates the rules with :func:`evaluate_rules` (for :attr:`RuleCounts.full`).
        Raises :class:`Unsupported` when a rule's arithmetic overflows on the moved columns.
        """
        masks = []
        indexes: dict[tuple[str, ...], np.ndarray | None] = {}  # label combinations per customer, this move
        for i, c in enumerate(self._compiled):
            ver = tuple(version(col) for col in sorted(c.columns) if col in self.varying)
            if self._masks[i] is None or self._versions[i] != ver:
                self._masks[i] = self._mask(c, codes, series, indexes)
                self._versions[i] = ver
            masks.append(self._masks[i])
        n, nr = self.n, len(self.rules)
        matched = [int(np.count_nonzero(m)) for m in masks]
        taken = np.zeros(n, dtype=bool)
        firsts = []
        for m in masks:
            if self.hit_policy == "first":
                first = m & ~taken
                firsts.append(first)
            else:
                firsts.append(m)
            taken |= m
        hits = [int(np.count_nonzero(f)) if self.hit_policy == "first" else matched[i] for i, f in enumerate(firsts)]
        unmatched_mask = ~taken
        unmatched = int(np.count_nonzero(unmatched_mask))
        cut_counts, kept_counts, control_counts = [], [], []
        cut_rows: list[tuple[int, int, int]] = []  # (customer index, rule position, rank)
        for i, rule in enumerate(self.rules):
            hit = firsts[i]
            held = self._held[i]
            if rule.capacity is None or hits[i] <= rule.capacity:
                kept = hits[i]
                control = int(np.count_nonzero(hit & held)) if held is not None and kept else 0
                cut = 0
                kept_idx = None
            else:
                order = self._order(rule.order_by, rule.descending, series)
                want = rule.capacity + (self.cut_rows - len(cut_rows) if len(cut_rows) < self.cut_rows else 0)
                found: list[np.ndarray] = []
                got = 0
                for start in range(0, n, _CHUNK):
                    part = order[start:start + _CHUNK]
                    sel = part[hit[part]]
                    found.append(sel)
                    got += len(sel)
                    if got >= want:
                        break
                ranked = np.concatenate(found) if found else np.empty(0, dtype=np.int64)
                kept_idx = ranked[:rule.capacity]
                kept = len(kept_idx)
                cut = hits[i] - kept
                control = int(np.count_nonzero(held[kept_idx])) if held is not None else 0
                for r, idx in enumerate(ranked[rule.capacity:want], start=rule.capacity + 1):
                    if len(cut_rows) < self.cut_rows:
                        cut_rows.append((int(idx), i, r))
            cut_counts.append(cut)
            kept_counts.append(kept - control)
            control_counts.append(control)
        matched_all, hits_all = list(matched), list(hits)
        fb = None
        if self.fallback is not None:
            fb = nr
            held = self._held[fb]
            control = int(np.count_nonzero(unmatched_mask & held)) if held is not None and unmatched else 0
            matched_all.append(unmatched)
            hits_all.append(unmatched)
            cut_counts.append(0)
            kept_counts.append(unmatched - control)
            control_counts.append(control)
        summary = pl.DataFrame({"rule": pl.Series([r.name for r in self.rules_all], dtype=self._rule_dtype)}) \
            .with_columns(pl.Series("matched", matched_all, dtype=pl.Int64),
                          pl.Series("hits", hits_all, dtype=pl.Int64),
                          pl.Series("cut_by_capacity", cut_counts, dtype=pl.Int64),
                          pl.Series("actions", kept_counts, dtype=pl.Int64),
                          pl.Series("treatment", kept_counts, dtype=pl.Int64),
                          pl.Series("control", control_counts, dtype=pl.Int64))
        ids = self.customers["customer_id"].gather([r[0] for r in cut_rows]) if cut_rows else \
            pl.Series("customer_id", [], dtype=self._id_dtype)
        cut_first = pl.DataFrame({
            "customer_id": ids,
            "rule": pl.Series([self.rules_all[r[1]].name for r in cut_rows], dtype=self._rule_dtype),
            "action": pl.Series([self.rules_all[r[1]].action for r in cut_rows], dtype=self._action_dtype),
            "rank": pl.Series([r[2] for r in cut_rows], dtype=pl.UInt32),
        })
        return RuleCounts(rules=tuple(self.rules_all), fallback=fb, hit_policy=self.hit_policy,
                          matched=tuple(matched_all), hits=tuple(hits_all), cut_by_capacity=tuple(cut_counts),
                          actions_per_rule=tuple(kept_counts), control_per_rule=tuple(control_counts),
                          unmatched=unmatched, rule_summary=summary, cut_first=cut_first, _full=full)

    def _mask(self, c: _Compiled, codes: Callable[[str], np.ndarray | None], series: Callable[[str], pl.Series],
              indexes: dict[tuple[str, ...], np.ndarray | None]) -> np.ndarray:
        if c.mode == "fixed":
            return c.mask
        if c.mode in ("table", "matrix"):
            if c.coded not in indexes:  # rules reading the same label columns share it
                got = [codes(col) for col in c.coded]
                index = None
                if all(g is not None for g in got):
                    index = got[0].astype(np.int32) * np.int32(c.strides[0])
                    for g, s in zip(got[1:], c.strides[1:]):
                        index += g.astype(np.int32) * np.int32(s)
                indexes[c.coded] = index
            index = indexes[c.coded]
            if index is not None:
                if c.mode == "table":
                    return c.lookup[index]
                return c.lookup.reshape(-1)[index.astype(np.int64) * self.n + np.arange(self.n)]
        # a Polars evaluation over the columns the rule reads, as evaluate_rules does
        frame = pl.DataFrame([series(col).alias(col) if col in self.varying else self.customers[col]
                              for col in sorted(c.columns)])
        for _, flag in c.overflows:
            if frame.select(flag.fill_null(False).any()).item():
                raise Unsupported(c.rule.name)
        return frame.select(c.expr).to_series().to_numpy()
