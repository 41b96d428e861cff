"""Sets of column values and boxes of them: the arithmetic of ``tierbook check``'s static analysis.

A :class:`NumSet` is a union of intervals over the extended real line, plus whether NaN and null
belong to it; Polars orders NaN above every number (``NaN > x`` is true, ``NaN < x`` false), so
NaN is modelled as a value above ``+inf``. Whole-number columns (integers, dates as days) keep
their intervals closed at whole numbers, so ``x > 2 AND x < 3`` is empty for them. A
:class:`FinSet` is a finite set of values, or all values but a finite set (text), plus null;
with a ``universe`` (the labels of a label column, ``True``/``False``) it is always finite.

A :class:`Box` gives each of some columns a set: the customers whose values lie in every set
(a column it does not name may hold anything). Boxes intersect and subtract exactly; a union of
boxes is a list of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

INF = math.inf

#: An interval: (low, low included, high, high included); low and high may be -inf/+inf.
Interval = tuple[Any, bool, Any, bool]


def _iv_empty(iv: Interval) -> bool:
    lo, lo_in, hi, hi_in = iv
    return lo > hi or (lo == hi and not (lo_in and hi_in))


def _iv_and(a: Interval, b: Interval) -> Interval:
    if a[0] > b[0]:
        lo, lo_in = a[0], a[1]
    elif b[0] > a[0]:
        lo, lo_in = b[0], b[1]
    else:
        lo, lo_in = a[0], a[1] and b[1]
    if a[2] < b[2]:
        hi, hi_in = a[2], a[3]
    elif b[2] < a[2]:
        hi, hi_in = b[2], b[3]
    else:
        hi, hi_in = a[2], a[3] and b[3]
    return lo, lo_in, hi, hi_in


def _whole(iv: Interval) -> Interval:
    """The whole numbers of an interval, as a closed interval (infinite ends kept)."""
    lo, lo_in, hi, hi_in = iv
    if lo not in (-INF, INF):
        f = math.floor(lo)
        lo, lo_in = (f if lo_in else f + 1) if f == lo else f + 1, True
    if hi not in (-INF, INF):
        f = math.floor(hi)
        hi, hi_in = (f if hi_in else f - 1) if f == hi else f, True
    return lo, lo_in, hi, hi_in


@dataclass(frozen=True)
class NumSet:
    """Numbers (or dates as day numbers): intervals, NaN, null; ``whole`` for whole-number columns."""

    ivs: tuple[Interval, ...]
    nan: bool = False
    null: bool = False
    whole: bool = False

    @staticmethod
    def make(ivs: Iterable[Interval], nan: bool = False, null: bool = False, whole: bool = False) -> NumSet:
        out = [iv for iv in ((_whole(iv) if whole else iv) for iv in ivs) if not _iv_empty(iv)]
        if len(out) > 1:
            out.sort(key=lambda iv: (iv[0], not iv[1]))
        return NumSet(tuple(out), nan, null, whole)

    def intersects(self, other: NumSet) -> bool:
        """Whether the two sets share a value (without building their intersection)."""
        if (self.null and other.null) or (self.nan and other.nan):
            return True
        whole = self.whole or other.whole
        for a in self.ivs:
            for b in other.ivs:
                iv = _iv_and(a, b)
                if not _iv_empty(_whole(iv) if whole else iv):
                    return True
        return False

    def contains(self, value: Any) -> bool:
        if value is None:
            return self.null
        if isinstance(value, float) and math.isnan(value):
            return self.nan
        for lo, lo_in, hi, hi_in in self.ivs:
            if (lo < value or (lo_in and lo == value)) and (value < hi or (hi_in and hi == value)):
                return True
        return False

    def __and__(self, other: NumSet) -> NumSet:
        ivs = [_iv_and(a, b) for a in self.ivs for b in other.ivs]
        return NumSet.make(ivs, self.nan and other.nan, self.null and other.null, self.whole or other.whole)

    def complement(self) -> NumSet:
        gaps = []
        lo, lo_in = -INF, True
        for a_lo, a_lo_in, a_hi, a_hi_in in self.ivs:
            gaps.append((lo, lo_in, a_lo, not a_lo_in))
            lo, lo_in = a_hi, not a_hi_in
        gaps.append((lo, lo_in, INF, True))
        return NumSet.make(gaps, not self.nan, not self.null, self.whole)

    def without_null(self) -> NumSet:
        return NumSet(self.ivs, self.nan, False, self.whole)

    def empty(self) -> bool:
        return not self.ivs and not self.nan and not self.null

    def pick(self) -> Any:
        """A value of the set, the one nearest zero: a number, ``nan`` or ``None`` (null)."""
        best = None
        for lo, lo_in, hi, hi_in in self.ivs:
            if (lo < 0 or (lo == 0 and lo_in)) and (hi > 0 or (hi == 0 and hi_in)):
                value: Any = 0 if self.whole else 0.0
            elif hi <= 0:  # below zero: the upper end
                value = hi if hi_in else (hi - 1 if lo == -INF else (lo if lo_in else (lo + hi) / 2))
            else:  # above zero: the lower end
                value = lo if lo_in else (lo + 1 if hi == INF else (hi if hi_in else (lo + hi) / 2))
            if best is None or abs(value) < abs(best):
                best = value
        if best is not None:
            return best
        if self.nan:
            return math.nan
        return None


def elementary(within: NumSet, cuts: Iterable[NumSet]) -> list[NumSet]:
    """``within`` cut at every end of the intervals of ``cuts``: pieces on each of which every set of ``cuts``
    holds all values or none (points, the open stretches between them, NaN, null)."""
    ends = sorted({v for t in cuts for iv in t.ivs for v in (iv[0], iv[2])} | {-INF, INF})
    whole = within.whole
    raw = []
    for k, v in enumerate(ends):
        raw.append(NumSet.make([(v, True, v, True)], whole=whole))
        if k + 1 < len(ends):
            raw.append(NumSet.make([(v, False, ends[k + 1], False)], whole=whole))
    raw += [NumSet((), True, False, whole), NumSet((), False, True, whole)]
    out = []
    for piece in raw:
        got = piece & within
        if not got.empty():
            out.append(got)
    return out


@dataclass(frozen=True)
class FinSet:
    """A finite set of values (``co=False``) or every value but those (``co=True``), and null."""

    values: frozenset
    co: bool = False
    null: bool = False
    universe: frozenset | None = None
    order: tuple = ()

    @staticmethod
    def make(values: Iterable, co: bool = False, null: bool = False, universe: frozenset | None = None,
             order: tuple = ()) -> FinSet:
        values = frozenset(values)
        if universe is not None:
            values = (universe - values) if co else (values & universe)
            co = False
        return FinSet(values, co, null, universe, order)

    def __and__(self, other: FinSet) -> FinSet:
        universe = self.universe if self.universe is not None else other.universe
        order = self.order or other.order
        null = self.null and other.null
        if not self.co and not other.co:
            return FinSet.make(self.values & other.values, False, null, universe, order)
        if self.co and other.co:
            return FinSet.make(self.values | other.values, True, null, universe, order)
        fin, co = (self, other) if not self.co else (other, self)
        return FinSet.make(fin.values - co.values, False, null, universe, order)

    def complement(self) -> FinSet:
        return FinSet.make(self.values, not self.co, not self.null, self.universe, self.order)

    def intersects(self, other: FinSet) -> bool:
        if self.null and other.null:
            return True
        if self.co and other.co:
            return True  # text: infinitely many values outside two finite sets (label sets are never co)
        if self.co or other.co:
            fin, co = (other, self) if self.co else (self, other)
            return bool(fin.values - co.values)
        return not self.values.isdisjoint(other.values)

    def contains(self, value: Any) -> bool:
        if value is None:
            return self.null
        return (value in self.values) != self.co

    def without_null(self) -> FinSet:
        return FinSet(self.values, self.co, False, self.universe, self.order)

    def empty(self) -> bool:
        return not self.co and not self.values and not self.null

    def pick(self) -> Any:
        if self.values and not self.co:
            rank = {v: i for i, v in enumerate(self.order)}
            return min(self.values, key=lambda v: (rank.get(v, len(rank)), str(v)))
        if self.co:  # text: a value that is none of the excluded ones
            word = "x"
            while word in self.values:
                word += "x"
            return word
        return None


ValueSet = NumSet | FinSet


class Box:
    """Customers whose value of each named column lies in its set (a column it does not name: any value)."""

    __slots__ = ("sets",)

    def __init__(self, sets: Mapping[str, ValueSet]):
        self.sets = dict(sets)

    def __and__(self, other: Box) -> Box:
        if len(other.sets) < len(self.sets):
            self, other = other, self
        out = dict(other.sets)
        for col, s in self.sets.items():
            out[col] = (s & out[col]) if col in out else s
        return Box(out)

    def empty(self) -> bool:
        return any(s.empty() for s in self.sets.values())

    def meets(self, other: Box) -> bool:
        """Whether the two boxes have a customer in common (each is non-empty)."""
        small, big = (self, other) if len(self.sets) <= len(other.sets) else (other, self)
        for col, s in small.sets.items():
            t = big.sets.get(col)
            if t is not None and not s.intersects(t):
                return False
        return True

    def contains(self, point: Mapping[str, Any]) -> bool:
        """Whether the customer ``point`` (column -> value; a column it does not name is null) is in the box."""
        return all(s.contains(point.get(col)) for col, s in self.sets.items())

    def minus(self, other: Box, domain: Mapping[str, ValueSet]) -> list[Box]:
        """``self`` without ``other``, as disjoint boxes (``self`` itself when they do not meet).

        ``domain`` gives each column the values it can hold; both boxes' sets lie inside it.
        """
        if not self.meets(other):
            return [self]
        out = []
        cur = dict(self.sets)
        for col, cset in other.sets.items():
            bset = cur.get(col, domain[col])
            rest = bset & cset.complement()
            if not rest.empty():
                out.append(Box({**cur, col: rest}))
            cur[col] = bset & cset
        return out

    def example(self) -> dict[str, Any]:
        """One customer of the box: a value for each column it names."""
        return {col: s.pick() for col, s in sorted(self.sets.items())}

    def __repr__(self) -> str:  # for test failures
        return f"Box({self.sets!r})"
