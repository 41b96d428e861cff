"""``tierbook check``: what a playbook's rules can do, proven from their conditions, and what they did on the data.

The static analysis reads each rule's parsed condition (:attr:`engine.rules.CompiledRule.tree`) and
the values each column can hold: its dtype (whole numbers, dates, text, true/false, NaN for floats),
a label column's labels (the classifiers' :class:`~engine.classifier.Output` labels for the playbook's
parameters) and the built-in features' lower bounds (:attr:`engine.feature_table.BuiltinFeature.low`).
A condition becomes two approximations of the customers for whom it is true (and two for whom it is
false, for ``NOT``): one that contains every such customer (*over*) and one that contains only such
customers (*under*), each a union of :class:`~engine.playbook.sets.Box`. Comparisons of a column with a
literal (``=``, ``<>``, ``<``, ``<=``, ``>``, ``>=``, ``IN``, ``BETWEEN``, ``IS [NOT] NULL``), a true/false
column and ``TRUE``/``FALSE`` are modelled exactly, with SQL's three-valued logic; anything else
(arithmetic, functions, two columns compared, ``as_of``, text order) is *undecided*: everything in
*over*, nothing in *under*.

From these, and only from these:

* **dead**: *over* is empty, so no customer table can make the condition true;
* **shadowed** (``hit_policy: first``): *over* lies inside the union of the earlier rules' *under*, so
  every customer it matches is taken earlier (capacity does not change that: a customer an earlier rule
  matched but cut does not fall through);
* **ok**: *under* has a customer that no earlier rule's *over* holds; the report gives one (``example``);
* **unknown**: neither could be proven (the reason names the part that was not decided).

Columns are treated as independent: ``ok`` says values exist that make the rule take a customer, not
that such a customer exists in the data (``tier = 'gold' AND monetary < 0`` is ``ok`` even when the
classifier of ``tier`` never gives a negative revenue gold). ``dead`` and ``shadowed`` are never said on a guess:
``tests/engine/test_check.py`` evaluates every claim on generated customer tables.

:func:`check_on_data` adds what the rules did on the data (through :func:`evaluate_rules`): customers
matched, hits, taken earlier by which rule, cut by capacity, and the fallback's share.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from ..feature_table import FEATURES
from .sets import INF, Box, FinSet, NumSet, ValueSet, elementary
from .spec import Rule

if TYPE_CHECKING:
    from ..rules import Node
    from .model import Playbook

__all__ = ["RuleVerdict", "Overlap", "StaticReport", "analyse_rules", "static_check", "check_on_data",
           "check_report", "format_check", "STATUSES"]

#: The verdicts of the static analysis, for a rule.
STATUSES = ("ok", "dead", "shadowed", "unknown")

#: Most boxes one approximation keeps: past it, *over* becomes "everything" and *under* keeps its first
#: ones (both stay true); the rule is then reported ``unknown`` rather than decided slowly.
MAX_BOXES = 64
#: Most pieces a subtraction (is this rule covered by the earlier ones?) may split into, and most box
#: subtractions spent on one rule: past either, the rule is ``unknown``.
MAX_PIECES = 512
MAX_WORK = 20000
#: Numbers beyond this size are not modelled: a comparison of a whole-number column with such a
#: literal may go through floating point, which rounds them.
_EXACT = 2.0**52

_EPOCH = dt.date(1970, 1, 1)
_DAY_MIN = (dt.date.min - _EPOCH).days
_DAY_MAX = (dt.date.max - _EPOCH).days
_INT_BITS = {pl.Int8: 8, pl.Int16: 16, pl.Int32: 32, pl.Int64: 64, pl.Int128: 128,
             pl.UInt8: 8, pl.UInt16: 16, pl.UInt32: 32, pl.UInt64: 64}


# ----------------------------------------------------------------------------------- domains
def column_domains(schema: Mapping[str, pl.DataType], labels: Mapping[str, Sequence[str]] | None = None,
                   *, builtin_features: bool = True) -> dict[str, ValueSet]:
    """The values each modelled column of ``schema`` can hold (columns of other types are not modelled).

    ``labels`` gives label columns their labels (else their Enum's); ``builtin_features`` applies the
    built-in features' bounds (finite, at least ``low``) to the columns named like them.
    """
    labels = dict(labels or {})
    bounds = {f.name: f for f in FEATURES} if builtin_features else {}
    out: dict[str, ValueSet] = {}
    for col, dtype in schema.items():
        base = dtype.base_type() if hasattr(dtype, "base_type") else dtype
        if base in _INT_BITS:
            bits = _INT_BITS[base]
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if dtype.is_signed_integer() else (0, 2**bits - 1)
            out[col] = NumSet.make([(lo, True, hi, True)], nan=False, null=True, whole=True)
        elif base == pl.Float64:
            out[col] = NumSet.make([(-INF, True, INF, True)], nan=True, null=True)
        elif base in (pl.Date, pl.Datetime):
            out[col] = NumSet.make([(_DAY_MIN, True, _DAY_MAX, True)], null=True, whole=True)
        elif base == pl.Boolean:
            out[col] = FinSet.make({True, False}, null=True, universe=frozenset({True, False}), order=(True, False))
        elif base in (pl.String, pl.Categorical):
            out[col] = FinSet.make((), co=True, null=True)
        elif base == pl.Enum:
            names = tuple(labels.get(col) or dtype.categories.to_list())
            out[col] = FinSet.make(names, null=True, universe=frozenset(names), order=names)
        else:
            continue
        feature = bounds.get(col)
        if feature is not None and isinstance(out[col], NumSet) and dtype == feature.dtype:
            low = -INF if feature.low is None else feature.low
            out[col] = out[col] & NumSet.make([(low, True, INF, False)], nan=False, null=True)
    return out


# ------------------------------------------------------------------------ approximations
@dataclass
class _Approx:
    """Over- and under-approximations of where a condition is true and where it is false."""

    t_over: list[Box]
    t_under: list[Box]
    f_over: list[Box]
    f_under: list[Box]
    #: the first part of the condition that was not decided (None: every part was modelled exactly)
    undecided: str | None = None


_ALL = [Box({})]


def _and(a: list[Box], b: list[Box], over: bool) -> list[Box]:
    out = []
    for x in a:
        for y in b:
            z = x & y
            if not z.empty():
                out.append(z)
                if len(out) > MAX_BOXES:
                    return list(_ALL) if over else out[:MAX_BOXES]
    return out


def _or(a: list[Box], b: list[Box], over: bool) -> list[Box]:
    out = [*a, *b]
    if len(out) > MAX_BOXES:
        return list(_ALL) if over else out[:MAX_BOXES]
    return out


class _Analyser:
    def __init__(self, domain: Mapping[str, ValueSet]):
        self.domain = domain

    def approx(self, node: Node, text: str) -> _Approx:
        kind = node.kind
        if kind in ("and", "or"):
            parts = [self.approx(kid, text) for kid in node.children]
            acc = parts[0]
            for p in parts[1:]:
                if kind == "and":
                    acc = _Approx(_and(acc.t_over, p.t_over, True), _and(acc.t_under, p.t_under, False),
                                  _or(acc.f_over, p.f_over, True), _or(acc.f_under, p.f_under, False),
                                  acc.undecided or p.undecided)
                else:
                    acc = _Approx(_or(acc.t_over, p.t_over, True), _or(acc.t_under, p.t_under, False),
                                  _and(acc.f_over, p.f_over, True), _and(acc.f_under, p.f_under, False),
                                  acc.undecided or p.undecided)
                if acc.undecided is None and (len(acc.t_over) >= MAX_BOXES or len(acc.f_over) >= MAX_BOXES):
                    acc.undecided = f"{text[node.start:node.end].strip()} (too many cases to decide)"
            return acc
        if kind == "not":
            inner = self.approx(node.children[0], text)
            return _Approx(inner.f_over, inner.f_under, inner.t_over, inner.t_under, inner.undecided)
        sets = self.atom(node, text)
        if sets is None:
            return _Approx(list(_ALL), [], list(_ALL), [], text[node.start:node.end].strip())
        true, false = sets
        return _Approx(true, true, false, false)

    # -- atoms: (where true, where false) as boxes, or None when not modelled
    def atom(self, node: Node, text: str) -> tuple[list[Box], list[Box]] | None:
        kind = node.kind
        if kind == "literal" and node.type == "condition":
            return (list(_ALL), []) if node.value else ([], list(_ALL))
        if kind == "column" and node.type == "condition":
            return self.split(node.value, FinSet.make({True}))
        if kind == "isnull":
            col = self.column(node.children[0])
            if col is None:
                return None
            null = self.domain[col] & _null_only(self.domain[col])
            true, false = (null, self.domain[col].without_null()) if not node.value else \
                (self.domain[col].without_null(), null)
            return self.boxes(col, true), self.boxes(col, false)
        if kind == "compare":
            left, right = node.children
            op = node.value
            col, lit = self.column(left), self.literal(right, text)
            if col is None or lit is _NO:
                col, lit = self.column(right), self.literal(left, text)
                op = _FLIP[op]
                if col is None or lit is _NO:
                    return None
            lit = _number(self.domain[col], lit, exact_ints=True)
            if lit is _NO:
                return None
            truth = _compare_set(self.domain[col], op, lit)
            return None if truth is None else self.split(col, truth)
        if kind == "in":
            col = self.column(node.children[0])
            values = [self.literal(item, text) for item in node.children[1:]]
            if col is not None:  # IN compares numbers as floats, whole-number columns included
                values = [_number(self.domain[col], v, exact_ints=False) for v in values]
            if col is None or any(v is _NO for v in values):
                return None
            truth = _points(self.domain[col], values)
            if truth is None:
                return None
            true, false = self.split(col, truth)
            return (false, true) if node.value else (true, false)
        if kind == "between":
            col = self.column(node.children[0])
            low, high = (self.literal(b, text) for b in node.children[1:])
            if col is None or not isinstance(self.domain[col], NumSet):
                return None
            low, high = (_number(self.domain[col], v, exact_ints=True) for v in (low, high))
            if low is _NO or high is _NO:
                return None
            truth = NumSet.make([(low, True, high, True)])
            true, false = self.split(col, truth)
            return (false, true) if node.value else (true, false)
        return None

    def split(self, col: str, truth: ValueSet) -> tuple[list[Box], list[Box]]:
        """Where a column's (non-null) value is in ``truth`` the atom is true, elsewhere false, null unknown."""
        dom = self.domain[col]
        true = dom & truth.without_null()
        false = dom & truth.complement().without_null()
        return self.boxes(col, true), self.boxes(col, false)

    @staticmethod
    def boxes(col: str, values: ValueSet) -> list[Box]:
        return [] if values.empty() else [Box({col: values})]

    def column(self, node: Node) -> str | None:
        if node.kind == "column" and node.value in self.domain:
            return node.value
        return None

    def literal(self, node: Node, text: str) -> Any:
        if node.kind != "literal" or node.value is None:
            return _NO
        value = node.value
        if isinstance(value, dt.date):
            source = text[node.start:node.end].lstrip()
            if not (source[:1] == "'" or source[:4].upper() == "DATE"):  # the name as_of: decided by the data
                return _NO
            return (value - _EPOCH).days
        if isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isnan(value):
            return _NO
        return value


_NO = object()
_FLIP = {"=": "=", "!=": "!=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _number(dom: ValueSet, value: Any, *, exact_ints: bool) -> Any:
    """A literal as the comparison sees it, or ``_NO`` where floating point could round the column's values.

    A float column compares with a whole-number literal as a float (so the literal is rounded, as here);
    a whole-number column compares with a whole-number literal exactly, and with a float literal (or in
    an IN list, ``exact_ints=False``) as floats, which is exact only while numbers stay below 2**52.
    """
    if value is _NO or not isinstance(dom, NumSet) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if not dom.whole:
        return float(value) if isinstance(value, int) else value
    if isinstance(value, int) and exact_ints:
        return value
    if math.isinf(value) or abs(value) < _EXACT:
        return value
    return _NO


def _null_only(dom: ValueSet) -> ValueSet:
    if isinstance(dom, NumSet):
        return NumSet((), False, True, dom.whole)
    return FinSet(frozenset(), False, True, dom.universe, dom.order)


def _compare_set(dom: ValueSet, op: str, c: Any) -> ValueSet | None:
    """The non-null values ``v`` for which ``v op c`` is true (NaN is above every number), or None."""
    if isinstance(dom, NumSet):
        if isinstance(c, (bool, str)):
            return None
        ivs = {"=": [(c, True, c, True)], "!=": [(-INF, True, c, False), (c, False, INF, True)],
               "<": [(-INF, True, c, False)], "<=": [(-INF, True, c, True)],
               ">": [(c, False, INF, True)], ">=": [(c, True, INF, True)]}
        ivs["<>"] = ivs["!="]
        return NumSet.make(ivs[op], nan=op in ("!=", "<>", ">", ">="))
    if op == "=":
        return FinSet.make({c})
    if op in ("!=", "<>"):
        return FinSet.make({c}, co=True)
    return None  # text order is not modelled


def _points(dom: ValueSet, values: list[Any]) -> ValueSet | None:
    if isinstance(dom, NumSet):
        if any(isinstance(v, (bool, str)) for v in values):
            return None
        return NumSet.make([(v, True, v, True) for v in values])
    return FinSet.make(values)


# ------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class RuleVerdict:
    """What the static analysis proved about one rule (position ``position`` of the playbook's rules)."""

    position: int
    rule: str
    line: int
    status: str
    reason: str
    #: under ``shadowed``: the earlier rules that take its customers
    shadowed_by: tuple[str, ...] = ()
    #: under ``ok``: the values of a customer the rule takes (columns it names; any value for the others)
    example: dict[str, Any] | None = None


@dataclass(frozen=True)
class Overlap:
    """Two rules that can both match one customer (``example``): proven, not a guess."""

    first: str
    second: str
    example: dict[str, Any]


@dataclass
class StaticReport:
    """The static analysis of a playbook's rules (no data read)."""

    hit_policy: str
    rules: list[RuleVerdict]
    overlaps: list[Overlap]
    #: pairs of rules for which neither an overlap nor its absence could be proven
    undecided_pairs: int
    #: for each label column some rule reads, its labels no rule mentions (in a comparison or an IN list)
    unmentioned_labels: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(v.status == status for v in self.rules)


def _show(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dt.date):
        return f"DATE '{value}'"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _example(box: Box, schema: Mapping[str, pl.DataType]) -> dict[str, Any]:
    return _example_point(box.example(), schema)


def _example_point(point: Mapping[str, Any], schema: Mapping[str, pl.DataType]) -> dict[str, Any]:
    out = {}
    for col, value in sorted(point.items()):
        dtype = schema.get(col)
        if value is not None and dtype is not None and (dtype == pl.Date or isinstance(dtype, pl.Datetime)):
            value = _EPOCH + dt.timedelta(days=int(value))
        out[col] = value
    return out


class _OutOfWork(Exception):
    pass


def _uncovered(box: Box, cover: list[Box], domain: Mapping[str, ValueSet], budget: list[int]) -> dict | None:
    """A customer of ``box`` outside every box of ``cover`` (column -> value; unnamed columns null), or None
    when ``cover`` holds all of ``box``. Raises :class:`_OutOfWork` when ``budget`` runs out.

    Exact: one column at a time, the box's values of that column are cut into pieces on which every cover
    box either holds all values or none; each piece is decided on the remaining columns with the cover boxes
    that hold it (a sub-problem met again with the same cover boxes is answered from memory).
    """
    cover = [c for c in cover if c.meets(box)]
    # columns cut into few pieces first: they split the problem the least and prune the most
    columns = sorted({col for c in cover for col in c.sets},
                     key=lambda col: (len({c.sets[col] for c in cover if col in c.sets}),
                                      -sum(col in c.sets for c in cover), col))
    memo: dict[tuple[int, frozenset[int]], dict | None] = {}
    sets = [c.sets for c in cover]
    order = {col: k for k, col in enumerate(columns)}
    last = [max((order[col] for col in c), default=-1) for c in sets]  # a box's last column in the order
    complements: dict[int, ValueSet] = {}

    def complement(t: ValueSet) -> ValueSet:
        got = complements.get(id(t))
        if got is None:
            got = complements[id(t)] = t.complement()
        return got

    def solve(depth: int, active: frozenset[int], path: dict) -> dict | None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _OutOfWork
        if not active:
            point = {col: s.pick() for col, s in box.sets.items()}
            point.update(path)
            return point
        if any(last[i] < depth for i in active):
            return None  # a cover box that constrains no remaining column holds everything left
        key = (depth, active)
        if key in memo:
            found = memo[key]
            return None if found is None else {**found, **path}
        col = columns[depth]
        within = box.sets.get(col, domain[col])
        groups: dict[ValueSet, set[int]] = {}
        free = set()
        for i in active:
            t = sets[i].get(col)
            if t is None:
                free.add(i)
            else:
                groups.setdefault(t, set()).add(i)
        cuts = list(groups)
        if isinstance(within, NumSet):
            pieces = elementary(within, cuts)
        else:
            pieces = [within]
            for t in cuts:
                nxt = []
                for piece in pieces:
                    inside, outside = piece & t, piece & complement(t)
                    nxt += [x for x in (inside, outside) if not x.empty()]
                pieces = nxt
        if len(pieces) > MAX_PIECES:
            raise _OutOfWork
        found = None
        tried: set[frozenset[int]] = set()
        for piece in pieces:
            value = piece.pick()  # every cut set holds all of the piece or none of it: one value decides
            keep = frozenset(free.union(*(ids for t, ids in groups.items() if t.contains(value))))
            if keep in tried:
                continue
            tried.add(keep)
            found = solve(depth + 1, keep, {**path, col: value})
            if found is not None:
                break
        memo[key] = None if found is None else {k: v for k, v in found.items() if k not in path}
        return found

    return solve(0, frozenset(range(len(cover))), {})


def _point_outside(box: Box, avoid: list[Box], domain: Mapping[str, ValueSet], tries: int = 64) -> dict | None:
    """A customer of ``box`` in none of the ``avoid`` boxes, found by moving one value at a time (None: not
    found; that proves nothing). Columns the point does not name are null."""
    point = {col: s.pick() for col, s in box.sets.items()}
    for step in range(tries):
        hit = next((o for o in avoid if o.contains(point)), None)
        if hit is None:
            return point
        cols = list(hit.sets)
        moved = False
        for k in range(len(cols)):  # a different column first on each step, so two boxes cannot trap it
            col = cols[(step + k) % len(cols)]
            within = box.sets.get(col, domain[col])
            rest = within & hit.sets[col].complement()
            if not rest.empty():
                point[col] = rest.pick()
                moved = True
                break
        if not moved:
            return None  # the box lies inside ``hit``: no customer of it escapes
    return None


def analyse_rules(rules: Sequence[Rule], schema: Mapping[str, pl.DataType], *,
                  labels: Mapping[str, Sequence[str]] | None = None, hit_policy: str = "first",
                  as_of: dt.date | None = None, domain: Mapping[str, ValueSet] | None = None) -> StaticReport:
    """The static analysis of ``rules`` over a customer table of ``schema`` (see the module's docstring).

    ``labels`` maps each label column to its labels; ``domain`` (default :func:`column_domains`) the
    values each column can hold. Rules are compiled as a run compiles them (a rule that does not compile
    raises :class:`~engine.rules.RuleError`).
    """
    import time

    from ..rules import compile_rule

    t0 = time.perf_counter()
    labels = dict(labels or {})
    domain = dict(domain) if domain is not None else column_domains(schema, labels)
    an = _Analyser(domain)
    approx: list[_Approx] = []
    mentioned: dict[str, set[str]] = {}
    read: set[str] = set()
    for rule in rules:
        compiled = compile_rule(rule.when, schema, labels=labels, as_of=as_of or dt.date.today())
        approx.append(an.approx(compiled.tree, rule.when))
        _mentions(compiled.tree, mentioned)
        read |= compiled.columns
    verdicts: list[RuleVerdict] = []
    for j, rule in enumerate(rules):
        a = approx[j]
        over = [b for b in a.t_over if not b.empty()]
        under = [b for b in a.t_under if not b.empty()]
        if not over:
            verdicts.append(RuleVerdict(j, rule.name, rule.when_line, "dead",
                                        "no values of its columns make the condition true"))
            continue
        earlier = [i for i in range(j) if verdicts[i].status != "dead"] if hit_policy == "first" else []
        budget = [MAX_WORK]
        # ok: a customer it surely matches that no earlier rule may match (a point first: cheap when there is one)
        block = [b for i in earlier for b in approx[i].t_over]
        example = None
        for u in under:
            point = _point_outside(u, [b for b in block if b.meets(u)], domain)
            if point is not None:
                example = point
                break
        if example is not None:
            verdicts.append(RuleVerdict(j, rule.name, rule.when_line, "ok",
                                        "values exist for which it takes the customer",
                                        example=_example_point(example, schema)))
            continue
        # shadowed: everything it may match lies in what earlier rules surely match
        cover_rules = [i for i in earlier if any(b.meets(o) for b in approx[i].t_under for o in over)]
        cover = [b for i in cover_rules for b in approx[i].t_under]
        try:
            escapes = any(_point_outside(o, [b for b in cover if b.meets(o)], domain) is not None for o in over) \
                or any(_uncovered(o, cover, domain, budget) is not None for o in over)
        except _OutOfWork:
            escapes = None
        if escapes is False:
            verdicts.append(RuleVerdict(j, rule.name, rule.when_line, "shadowed",
                                        f"every customer it matches is taken earlier by "
                                        f"{_names([rules[i].name for i in cover_rules])}",
                                        shadowed_by=tuple(rules[i].name for i in cover_rules)))
            continue
        free = None
        try:
            for u in under:
                free = _uncovered(u, block, domain, budget)
                if free is not None:
                    break
        except _OutOfWork:
            free = None
            escapes = None
        if free is not None:
            verdicts.append(RuleVerdict(j, rule.name, rule.when_line, "ok",
                                        "values exist for which it takes the customer",
                                        example=_example_point(free, schema)))
            continue
        undecided = [x.undecided for x in (a, *(approx[i] for i in earlier)) if x.undecided]
        if escapes is None:
            reason = "too many cases to decide"
        elif undecided:
            reason = f"cannot decide {undecided[0]}"
        else:
            reason = "cannot decide"
        verdicts.append(RuleVerdict(j, rule.name, rule.when_line, "unknown", reason))
    overlaps, undecided_pairs = _overlaps(rules, approx, verdicts, schema)
    unmentioned = {col: [lab for lab in labs if lab not in mentioned.get(col, set())]
                   for col, labs in labels.items() if col in read}
    unmentioned = {col: labs for col, labs in unmentioned.items() if labs}
    return StaticReport(hit_policy, verdicts, overlaps, undecided_pairs, unmentioned, time.perf_counter() - t0)


def _names(names: Sequence[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _overlaps(rules, approx, verdicts, schema) -> tuple[list[Overlap], int]:
    """Pairs proven to overlap (both *under* share a customer), and how many pairs are undecided (their
    *over* meet, their *under* do not); the other pairs are proven disjoint."""
    overlaps, undecided = [], 0
    live = [j for j, v in enumerate(verdicts) if v.status != "dead"]
    for x, i in enumerate(live):
        for j in live[x + 1:]:
            witness = None
            for a in approx[i].t_under:
                for b in approx[j].t_under:
                    if a.meets(b):
                        witness = a & b
                        break
                if witness is not None:
                    break
            if witness is not None:
                overlaps.append(Overlap(rules[i].name, rules[j].name, _example(witness, schema)))
            elif any(a.meets(b) for a in approx[i].t_over for b in approx[j].t_over):
                undecided += 1
    return overlaps, undecided


def _mentions(node: Node, out: dict[str, set[str]]) -> None:
    """Collect the labels a condition names, per label column (in comparisons and IN lists)."""
    if node.kind in ("compare", "in"):
        cols = [k.value for k in node.children if k.kind == "column" and k.type == "label"]
        lits = [k.value for k in node.children if k.kind == "literal" and k.type == "label"]
        for col in cols:
            out.setdefault(col, set()).update(lits)
    for kid in node.children:
        _mentions(kid, out)


# ---------------------------------------------------------------------------- playbooks
def playbook_schema_now(pb: Playbook) -> dict[str, pl.DataType]:
    """The customer table's schema for the playbook's current parameters (label columns' labels included)."""
    schema = dict(pb.customer_schema)
    for sel in pb.selections:
        for out in sel.outputs:
            schema[out.column] = out.polars_dtype
    return schema


def static_check(pb: Playbook) -> StaticReport:
    """The static analysis of a playbook loaded with its data's headers (:func:`load_playbook`)."""
    from .evaluate import label_sets

    if not pb.customer_schema:
        raise ValueError("static_check needs a playbook loaded with check_data=True")
    as_of = pb.data.get("as_of")
    return analyse_rules(pb.rules, playbook_schema_now(pb), labels=label_sets(pb.selections),
                         hit_policy=pb.hit_policy, as_of=as_of if isinstance(as_of, dt.date) else None)


def taken_earlier(masks: Sequence[pl.Series]) -> list[dict[int, int]]:
    """Under ``hit_policy: first``: for each rule, how many of its matched customers each earlier rule took."""
    n = len(masks)
    if n == 0:
        return []
    frame = pl.DataFrame({f"_m{i}": m for i, m in enumerate(masks)})
    first = frame.select(pl.coalesce([pl.when(pl.col(f"_m{i}")).then(pl.lit(i, pl.Int32))
                                      for i in range(n)]).alias("_first"))["_first"]
    out: list[dict[int, int]] = []
    for j in range(n):
        taken = first.filter(masks[j] & (first < j))
        counts = taken.value_counts(sort=False) if taken.len() else None
        out.append({} if counts is None else {int(i): int(c) for i, c in counts.iter_rows()})
    return out


def check_on_data(pb: Playbook, customers: pl.DataFrame, as_of: dt.date) -> dict[str, Any]:
    """What the rules did on the classified ``customers``: per rule matched, hits, taken earlier, cut."""
    from .evaluate import evaluate_rules, label_sets

    rr = evaluate_rules(customers, pb.rules, as_of=as_of, hit_policy=pb.hit_policy, fallback=pb.fallback,
                        labels=label_sets(pb.selections), source=pb.path, holdout=pb.holdout)
    n = len(pb.rules)
    earlier = taken_earlier(rr.masks[:n]) if pb.hit_policy == "first" else [None] * n
    rules = []
    for i, rule in enumerate(pb.rules):
        rules.append({
            "position": i, "rule": rule.name, "matched": rr.matched[i], "hits": rr.hits[i],
            "taken_earlier": None if earlier[i] is None else
            {pb.rules[k].name: c for k, c in sorted(earlier[i].items())},
            "cut_by_capacity": rr.cut_by_capacity[i], "actions": rr.actions_per_rule[i],
            "control": rr.control_per_rule[i] if rr.control_per_rule else 0})
    total = customers.height
    fallback = None
    if rr.fallback is not None:
        hits = rr.hits[rr.fallback]
        fallback = {"rule": pb.fallback.name, "action": pb.fallback.action, "customers": hits,
                    "share": hits / total if total else 0.0}
    return {"as_of": str(as_of), "customers": total, "rules": rules, "unmatched": rr.unmatched,
            "fallback": fallback, "cut_by_capacity": int(rr.cut.height), "actions": int(rr.actions.height)}


def check_report(pb: Playbook, report: StaticReport, data: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON document of ``tierbook check --json`` (its schema: docs/check-and-diff.md)."""
    return {
        "playbook": pb.name,
        "path": str(pb.path),
        "hit_policy": report.hit_policy,
        "static": {
            "seconds": round(report.seconds, 4),
            "rules": [{"position": v.position, "rule": v.rule, "line": v.line, "status": v.status,
                       "reason": v.reason, "shadowed_by": list(v.shadowed_by),
                       "example": _jsonable(v.example)} for v in report.rules],
            "overlaps": [{"rules": [o.first, o.second], "example": _jsonable(o.example)} for o in report.overlaps],
            "undecided_pairs": report.undecided_pairs,
            "unmentioned_labels": report.unmentioned_labels,
        },
        "data": data,
        "dead": [v.rule for v in report.rules if v.status == "dead"],
        "shadowed": [v.rule for v in report.rules if v.status == "shadowed"],
    }


def _jsonable(example: dict[str, Any] | None) -> dict[str, Any] | None:
    if example is None:
        return None
    out = {}
    for k, v in example.items():
        if isinstance(v, dt.date):
            v = str(v)
        elif isinstance(v, float) and not math.isfinite(v):
            v = _show(v)
        out[k] = v
    return out


_SHOWN = 20


def _conditions(example: Mapping[str, Any]) -> str:
    return " AND ".join(f"{k} = {_show(v)}" if v is not None else f"{k} IS NULL" for k, v in example.items())


def format_check(pb: Playbook, report: StaticReport, data: dict[str, Any] | None) -> list[str]:
    """The lines ``tierbook check`` prints (for people)."""
    lines = [f"{pb.path}: {len(pb.rules)} rules, hit policy {report.hit_policy}"]
    counts = ", ".join(f"{report.count(s)} {s}" for s in STATUSES if report.count(s))
    lines.append(f"static analysis ({report.seconds:.3f} s): {counts or 'no rules'}")
    for v in report.rules:
        at = f" (line {v.line})" if v.line else ""
        if v.status == "ok":
            lines.append(f"  ok        {v.rule!r}" + (f" (e.g. {_conditions(v.example)})" if v.example else ""))
        else:
            lines.append(f"  {v.status:<9} {v.rule!r}{at}: {v.reason}")
    if report.overlaps:
        lines.append(f"overlapping pairs (both can match one customer): {len(report.overlaps)}")
        for o in report.overlaps[:_SHOWN]:
            lines.append(f"  {o.first!r} and {o.second!r}" + (f" (e.g. {_conditions(o.example)})" if o.example else ""))
        if len(report.overlaps) > _SHOWN:
            lines.append(f"  ... and {len(report.overlaps) - _SHOWN:,} more (the JSON output lists every pair)")
    if report.undecided_pairs:
        lines.append(f"pairs whose overlap could not be decided: {report.undecided_pairs}")
    for col, labs in report.unmentioned_labels.items():
        lines.append(f"labels of {col} no rule mentions: {', '.join(labs)}")
    if data is not None:
        total = data["customers"]
        lines += ["", f"on the data (as of {data['as_of']}, {total:,} customers)"]
        width = max([len(r["rule"]) for r in data["rules"]] + [4])
        lines.append(f"  {'rule':<{width}}  {'matched':>9}  {'hits':>9}  {'cut':>7}  taken earlier by")
        for r in data["rules"]:
            taken = r["taken_earlier"]
            shown = "-" if taken is None else (", ".join(f"{k} {c:,}" for k, c in taken.items()) or "none")
            lines.append(f"  {r['rule']:<{width}}  {r['matched']:>9,}  {r['hits']:>9,}  {r['cut_by_capacity']:>7,}  "
                         f"{shown}")
        fb = data["fallback"]
        if fb is not None:
            lines.append(f"  fallback {fb['rule']!r} ({fb['action']}): {fb['customers']:,} customers "
                         f"({fb['share']:.1%})")
        else:
            lines.append(f"  no fallback: {data['unmatched']:,} customers match no rule "
                         f"({(data['unmatched'] / total if total else 0):.1%})")
    return lines
