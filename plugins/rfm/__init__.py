"""RFM scores, named RFM segments and value tiers.

Scores
------
``rfm_r``, ``rfm_f`` and ``rfm_m`` run from 1 to ``bins`` (5). Customers are
ordered from worst to best (R: the *oldest* last order first, so the most
recent buyers score highest; F: fewest orders first; M: lowest net revenue
first) and a customer's score is::

    score = floor((rank - 1) * bins / n) + 1

where ``rank`` is the ``min`` rank (ties share the lowest rank of their group)
and ``n`` the number of customers with orders. Equal values therefore always
get equal scores, and the result does not depend on row order. When many
customers tie (most buy once), a score may be skipped; a single customer, or
customers whose values are all equal, score 1. ``rfm_code`` joins the
three scores, e.g. ``"545"``. Customers without a purchase get no scores and no
segment: prospects, and customers whose transactions are only returns or zero
amounts (``recency_days`` is null for both, see :mod:`engine.features`).

Segments
--------
A segment is looked up in a 5 x 5 grid of R against FM, the mean of F and M
rounded up. With ``bins`` other than 5 the scores are first rescaled to 1..5
(``ceil(score * 5 / bins)``). The default grid (rows R = 5 .. 1, columns
FM = 1 .. 5)::

    R5  New Customers   Potential Loyalists  Potential Loyalists  Champions        Champions
    R4  Promising       Potential Loyalists  Potential Loyalists  Loyal Customers  Champions
    R3  About to Sleep  About to Sleep       Need Attention       Loyal Customers  Loyal Customers
    R2  Hibernating     Hibernating          At Risk              At Risk          Can't Lose Them
    R1  Lost            Lost                 At Risk              At Risk          Can't Lose Them

Override it with the ``segments`` parameter, a mapping from segment name to
the list of ``"<R><FM>"`` cells it covers (``{"Champions": ["55", "54"], ...}``);
every one of the 25 cells must be covered exactly once. The order of the mapping
is the segments' order, best first.

Conventions of other tools
--------------------------
Three parameters switch to the conventions of pymc-marketing's ``rfm_segments``:

* ``binning=qcut``: scores from quantile edges, as pandas ``qcut(q=bins, duplicates="drop")``: the
  edges are the ``k / bins`` quantiles (linear interpolation) of the customers' values, repeated edges
  dropped, each bin closed on the right (the lowest also holds the minimum); the score is the bin's
  number, 1 for the lowest values (R: 1 for the *oldest* last order). When edges are dropped there
  are fewer bins, so the highest score is lower (pymc-marketing relabels the same way). ``rank`` (the
  default) is the min-rank rule above.
* ``monetary=mean``: M from the mean per order (``monetary / frequency``) instead of the total.
* ``segments_by=code``: segments by RFM code instead of the R x FM grid. ``segment_codes`` maps each
  segment to its codes, ``*`` standing for any one score (``{"Top": ["44*", "344"], ...}``); the first
  segment whose codes match wins, a customer no segment matches is in ``segment_other`` ("Other").
  Empty ``segment_codes``: pymc-marketing's default segments (Premium Customer, Repeat Customer, Top
  Spender, At Risk Customer, Inactive Customer; see :data:`PYMC_SEGMENTS`). Needs ``bins`` <= 9.

With ``--set rfm.bins=4 --set rfm.binning=qcut --set rfm.monetary=mean --set rfm.segments_by=code``
on transactions without an order id (one order per customer and day, as pymc-marketing counts
purchase days) and without returns, ``rfm_code`` and ``rfm_segment`` are pymc-marketing's
``rfm_score`` and ``segment``; recency differs by the one day of as_of's exclusive end, which moves no
customer across a quantile edge. ``segment_codes`` can be given on the command line in YAML flow
style: ``--set 'rfm.segment_codes={Best: ["44*"], Rest: ["***"]}'``.

Value tiers
-----------
``value_tier`` is ``high-value`` when R >= ``hv_min_r`` (3), F >= ``hv_min_f``
(4) and M >= ``hv_min_m`` (4): strong purchasing power, frequency and loyalty;
``potential`` when not high-value and R + F + M >= ``potential_min_total`` (9),
or when the customer is a prospect (no transaction at all: ``last_activity`` is
null; if ``prospects_are_potential``); ``ordinary`` otherwise. A customer whose
transactions are only returns or zero amounts has not bought either, but is no
prospect: no scores, and ``ordinary`` (issue 10; the lifecycle classifier calls
them ``no-purchase``). Without a ``last_activity`` column (a hand-made customer
table) every customer without a recency counts as a prospect.

Examples
--------
>>> import polars as pl
>>> from engine import classify_frame
>>> df = pl.DataFrame({"customer_id": [1, 2, 3, 4, 5], "recency_days": [1, 10, 50, 200, 400],
...                    "frequency": [20, 8, 4, 2, 1], "monetary": [900.0, 400, 100, 50, 10]})
>>> out = classify_frame(df, "rfm")
>>> out["rfm_code"].to_list()
['555', '444', '333', '222', '111']
>>> out["rfm_segment"].to_list()
['Champions', 'Loyal Customers', 'Need Attention', 'Hibernating', 'Lost']
>>> out["value_tier"].to_list()
['high-value', 'high-value', 'potential', 'ordinary', 'ordinary']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from engine import Classifier, Context, Output, ParamSpec, hookimpl

DEFAULT_GRID: dict[str, list[str]] = {
    "Champions": ["54", "55", "45"],
    "Loyal Customers": ["44", "34", "35"],
    "Potential Loyalists": ["52", "53", "42", "43"],
    "New Customers": ["51"],
    "Promising": ["41"],
    "Need Attention": ["33"],
    "About to Sleep": ["31", "32"],
    "At Risk": ["23", "24", "13", "14"],
    "Can't Lose Them": ["25", "15"],
    "Hibernating": ["21", "22"],
    "Lost": ["11", "12"],
}
#: pymc-marketing's default ``segment_config`` of ``rfm_segments`` (its names and codes, quartile scores).
PYMC_SEGMENTS: dict[str, list[str]] = {
    "Premium Customer": ["334", "443", "444", "344", "434", "433", "343", "333"],
    "Repeat Customer": ["244", "234", "232", "332", "143", "233", "243"],
    "Top Spender": ["424", "414", "144", "314", "324", "124", "224", "423", "413", "133", "323", "313", "134"],
    "At Risk Customer": ["422", "223", "212", "122", "222", "132", "322", "312", "412", "123", "214"],
    "Inactive Customer": ["411", "111", "113", "114", "112", "211", "311"],
}
TIERS = ("high-value", "potential", "ordinary")
CELLS = {f"{r}{fm}" for r in range(1, 6) for fm in range(1, 6)}


def check_grid(grid: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless ``grid`` covers each of the 25 cells exactly once.

    >>> check_grid({"All": sorted(CELLS)})
    >>> check_grid({"Top": ["55"]})
    Traceback (most recent call last):
    ...
    ValueError: cells not covered by any segment: 11, 12, 13, 14, 15, 21, 22, 23, 24, 25, 31, 32, 33, 34, 35, 41, 42, 43, 44, 45, 51, 52, 53, 54
    """
    seen: dict[str, str] = {}
    for name, cells in grid.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"segment names must be non-empty text, got {name!r}")
        if not isinstance(cells, (list, tuple)):
            raise ValueError(f"segment {name!r}: expected a list of cells like ['55', '54'], got {cells!r}")
        for cell in cells:
            cell = str(cell)
            if cell not in CELLS:
                raise ValueError(f"segment {name!r}: {cell!r} is not a cell; cells are R then FM, each 1 to 5")
            if cell in seen:
                raise ValueError(f"cell {cell} is in both {seen[cell]!r} and {name!r}")
            seen[cell] = name
    missing = sorted(CELLS - set(seen))
    if missing:
        raise ValueError(f"cells not covered by any segment: {', '.join(missing)}")


def check_codes(config: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless ``config`` maps segment names to lists of 3-character code patterns.

    >>> check_codes({"Top": ["44*", "344"]})
    >>> check_codes({"Top": ["4x4"]})
    Traceback (most recent call last):
    ...
    ValueError: segment 'Top': '4x4' is not an RFM code pattern (three scores 1-9, or * for any)
    """
    for name, codes in config.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"segment names must be non-empty text, got {name!r}")
        if not isinstance(codes, (list, tuple)):
            raise ValueError(f"segment {name!r}: expected a list of codes like ['444', '34*'], got {codes!r}")
        for code in codes:
            code = str(code)
            if len(code) != 3 or any(ch not in "123456789*" for ch in code):
                raise ValueError(f"segment {name!r}: {code!r} is not an RFM code pattern (three scores 1-9, "
                                 f"or * for any)")


def _codes(p: Mapping[str, Any]) -> dict[str, list[str]]:
    return {str(k): [str(c) for c in v] for k, v in p["segment_codes"].items()} if p.get("segment_codes") \
        else PYMC_SEGMENTS


def _segment_labels(p: Mapping[str, Any]) -> tuple[str, ...]:
    if p.get("segments_by", "grid") == "grid":
        return tuple(_grid(p))
    names = list(_codes(p))
    return tuple(names + ([p["segment_other"]] if p["segment_other"] not in names else []))


def _code_lookup(p: Mapping[str, Any]) -> dict[int, str]:
    """Code (r*100 + f*10 + m) to segment, the first matching segment first, for scores 1..bins."""
    bins = p["bins"]
    lookup: dict[int, str] = {}
    digits = [str(d) for d in range(1, bins + 1)]
    for name, patterns in _codes(p).items():
        for pattern in patterns:
            options = [digits if ch == "*" else [ch] for ch in pattern]
            for r in options[0]:
                for f in options[1]:
                    for m in options[2]:
                        lookup.setdefault(int(r + f + m), name)
    other = p["segment_other"]
    for r in digits:
        for f in digits:
            for m in digits:
                lookup.setdefault(int(r + f + m), other)
    return lookup


def _check(p: Mapping[str, Any]) -> None:
    if p["segments_by"] == "code" and p["bins"] > 9:
        raise ValueError(f"segments_by=code needs bins <= 9 (one digit a score), not {p['bins']}")
    for key in ("hv_min_r", "hv_min_f", "hv_min_m"):
        if p[key] > p["bins"]:
            raise ValueError(f"{key} ({p[key]}) is above bins ({p['bins']})")
    if p["potential_min_total"] > 3 * p["bins"]:
        raise ValueError(f"potential_min_total ({p['potential_min_total']}) is above 3 x bins ({3 * p['bins']})")


def _grid(p: Mapping[str, Any]) -> dict[str, list[str]]:
    return dict(p["segments"]) if p.get("segments") else DEFAULT_GRID


def _outputs(p: Mapping[str, Any]) -> tuple[Output, ...]:
    return (
        Output("rfm_r", "recency score, 1 (oldest) to bins (most recent)", dtype=pl.Int8),
        Output("rfm_f", "frequency score, 1 to bins", dtype=pl.Int8),
        Output("rfm_m", "monetary score, 1 to bins", dtype=pl.Int8),
        Output("rfm_code", "the three scores, e.g. '545'", dtype=pl.String),
        Output("rfm_segment", "named RFM segment", labels=_segment_labels(p)),
        Output("value_tier", "high-value, potential or ordinary", labels=TIERS),
    )


def _score(value: pl.Expr, bins: int, n: pl.Expr) -> pl.Expr:
    """``floor((rank - 1) * bins / n) + 1`` with the ``min`` rank, from ``bins - 1`` cut values.

    ``rank - 1`` is the number of values below this one, so the score exceeds
    ``k`` exactly when at least ``p = ceil(k * n / bins)`` values are below it,
    that is when the value is above the ``p``-th smallest. The score is 1 plus
    the number of these cut values below the value: one sort, a gather per cut
    value and one comparison per cut value instead of a rank (about 3x faster at
    1M customers, the same scores: bench/PROFILE.md; the comparisons, at most 9
    since ``bins`` <= 10, cost 0.027 CPU-s less than a binary search of each value
    among the cut values for RFM's three scores at 1M customers, bench/RESULTS-notes.md).
    ``value`` is null for prospects: it sorts last
    and is not counted in ``n``; ``value > value`` (False, or null for null)
    makes its score null without a ``when``, which would keep the optimiser
    from sharing the score between the output columns. Int32 for the arithmetic
    below; the output columns are cast to Int8.
    """
    n = n.cast(pl.Int64)
    # A null at the end keeps the gather in bounds when there is no customer at all (every cut value is then
    # null, and so is every score: there is no value either).
    ordered = value.sort(nulls_last=True).extend_constant(None, 1)
    below = (value > value).cast(pl.Int32)
    for k in range(1, bins):
        cut = ordered.gather(((n * k + bins - 1) // bins - 1).clip(lower_bound=0)).first()
        below = below + (value > cut).fill_null(False).cast(pl.Int32)  # a cut past the values (null) is above all
    return below + 1


def _numpy_quantile(value: pl.Expr, k: int, bins: int) -> pl.Expr:
    """The ``k / bins`` quantile exactly as pandas ``qcut`` gets it, to the last bit.

    pandas (3.x) takes ``numpy.linspace(0, 1, bins + 1)`` (``k * (1 / bins)``, the last exactly 1) to
    numpy's linear quantile, which interpolates at ``(n - 1) * q`` with ``a + (b - a) * t``, or
    ``b - (b - a) * (1 - t)`` when t >= 0.5.
    An edge a rounding error below a value (17.999999999999993 for 18) moves that value up a bin, so
    the same arithmetic is done here in the same order.
    """
    q = 1.0 if k == bins else k * (1.0 / bins)
    # Nulls (prospects) sort last, past the n values; a null at the end keeps the gathers in bounds
    # when there is no value at all.
    ordered = value.cast(pl.Float64).sort(nulls_last=True).extend_constant(None, 1)
    count = value.count().cast(pl.Int64)
    pos = (count.cast(pl.Float64) - 1) * q
    below = pos.floor()
    t = pos - below
    i = below.cast(pl.Int64).clip(lower_bound=0)
    a = ordered.gather(i)
    b = ordered.gather((i + 1).clip(upper_bound=(count - 1).clip(lower_bound=0)))
    return pl.when(t >= 0.5).then(b - (b - a) * (1 - t)).otherwise(a + (b - a) * t)


def _qcut_score(value: pl.Expr, bins: int, *, reverse: bool = False) -> pl.Expr:
    """The bin number of pandas ``qcut(value, q=bins, duplicates="drop")``, 1 for the lowest bin.

    The edges are the ``k / bins`` quantiles (linear interpolation, :func:`_numpy_quantile`), repeated
    edges dropped; bins are
    closed on the right, so a value equal to an interior edge is in the lower bin: the bin is one plus
    the number of interior edges strictly below the value (a binary search). ``reverse`` numbers the
    bins from the highest values down (R: a small recency is a high score). Null stays null.
    """
    edges = pl.concat([_numpy_quantile(value, k, bins) for k in range(bins + 1)]).unique().sort()
    interior = edges.slice(1, (edges.len() - 2).clip(lower_bound=0))
    position = interior.search_sorted(value, side="left").cast(pl.Int32) + 1
    if reverse:
        position = (edges.len() - 1).clip(lower_bound=1).cast(pl.Int32) + 1 - position
    return pl.when(value.is_not_null()).then(position)


def _expressions(p: Mapping[str, Any], ctx: Context) -> dict[str, pl.Expr]:
    bins = p["bins"]
    recency = pl.col("recency_days")
    has_orders = recency.is_not_null()
    # Prospects (no orders, recency null) are left out of the ranks: adding the
    # mask (0, or null for a prospect) makes their F and M null.
    mask = (recency * 0).fill_nan(0)
    n = has_orders.sum()
    frequency = pl.col("frequency")
    monetary = pl.col("monetary")
    if p["monetary"] == "mean":
        monetary = pl.when(frequency > 0).then(monetary / frequency)
    if p["binning"] == "qcut":
        scores = {"rfm_r": _qcut_score(recency, bins, reverse=True),
                  "rfm_f": _qcut_score(pl.when(has_orders).then(frequency), bins),
                  "rfm_m": _qcut_score(pl.when(has_orders).then(monetary), bins)}
    else:
        scores = {"rfm_r": _score(-recency, bins, n), "rfm_f": _score(frequency + mask, bins, n),
                  "rfm_m": _score(monetary + mask, bins, n)}
    # The other outputs read the score columns (computed first, once: engine.run.apply_classifiers).
    r, f, m = (pl.col(c).cast(pl.Int32) for c in scores)
    if bins < 10:  # one digit each: "545" from 545, without building three strings per customer
        code = (r * 100 + f * 10 + m).cast(pl.String)
    else:
        code = pl.concat_str([r.cast(pl.String), f.cast(pl.String), m.cast(pl.String)])

    def five(score: pl.Expr) -> pl.Expr:
        return score if bins == 5 else (score * 5 + bins - 1) // bins

    fm = (five(f) + five(m) + 1) // 2
    cell = five(r) * 10 + fm
    labels = pl.Enum(list(_segment_labels(p)))
    if p["segments_by"] == "code":
        lookup = _code_lookup(p)
        segment = (r * 100 + f * 10 + m).replace_strict(list(lookup), list(lookup.values()), default=None,
                                                         return_dtype=labels)
    else:
        lookup = {int(c): name for name, cells in _grid(p).items() for c in cells}
        # Enums as the engine stores them, without 1M strings in between.
        segment = cell.replace_strict(list(lookup), list(lookup.values()), default=None, return_dtype=labels)

    high = (r >= p["hv_min_r"]) & (f >= p["hv_min_f"]) & (m >= p["hv_min_m"])
    potential = (r + f + m) >= p["potential_min_total"]
    if p["prospects_are_potential"]:
        # A prospect has no transaction at all; one who only returned goods has no recency either.
        prospect = pl.col("last_activity").is_null() if "last_activity" in ctx.schema else has_orders.not_()
        potential = potential.fill_null(False) | prospect
    hv, pot, ordinary = (pl.lit(x, pl.Enum(list(TIERS))) for x in TIERS)
    tier = pl.when(high.fill_null(False)).then(hv).when(potential.fill_null(False)).then(pot).otherwise(ordinary)
    return {**{c: s.cast(pl.Int8) for c, s in scores.items()}, "rfm_code": code, "rfm_segment": segment,
            "value_tier": tier}



def _workbench(classifier: Classifier, table: Any) -> Any:
    """The workbench fast path (plugins/rfm/workbench.py), imported only when a workbench opens."""
    from .workbench import RfmFastPath

    return RfmFastPath(classifier, table)


def _report(classifier: Classifier, table: Any, params: Mapping[str, Any]) -> list:
    """The report's charts (plugins/rfm/report.py), imported only when a report is written."""
    from .report import figures

    return figures(classifier, table, params)


RFM = Classifier(
    name="rfm",
    description="RFM scores 1..bins, named RFM segments, and value tiers high-value / potential / ordinary",
    outputs=_outputs,
    params=(
        ParamSpec("bins", "int", 5, "Number of score bins for R, F and M.", min=2, max=10, step=1),
        ParamSpec("hv_min_r", "int", 3, "high-value needs an R score of at least this.", min=1, max=10, step=1),
        ParamSpec("hv_min_f", "int", 4, "high-value needs an F score of at least this.", min=1, max=10, step=1),
        ParamSpec("hv_min_m", "int", 4, "high-value needs an M score of at least this.", min=1, max=10, step=1),
        ParamSpec("potential_min_total", "int", 9, "potential needs R + F + M of at least this.",
                  min=3, max=30, step=1),
        ParamSpec("prospects_are_potential", "bool", True,
                  "Prospects (customers without any transaction) are potential rather than ordinary."),
        ParamSpec("segments", "mapping", {}, "Segment grid override: {name: ['<R><FM>', ...]}; empty: the default.",
                  check=lambda g: check_grid(g) if g else None),
        ParamSpec("binning", "str", "rank", "Scores by min-rank (rank) or by quantile edges as pandas qcut (qcut).",
                  choices=("rank", "qcut")),
        ParamSpec("monetary", "str", "total", "M from net revenue (total) or from revenue per order (mean).",
                  choices=("total", "mean")),
        ParamSpec("segments_by", "str", "grid", "Segments from the R x FM grid (grid) or by RFM code (code).",
                  choices=("grid", "code")),
        ParamSpec("segment_codes", "mapping", {},
                  "segments_by=code: {name: ['444', '34*', ...]}, first match wins; empty: pymc-marketing's.",
                  check=check_codes),
        ParamSpec("segment_other", "str", "Other", "segments_by=code: the segment of codes no segment lists."),
    ),
    requires=("recency_days", "frequency", "monetary"),
    expressions=_expressions,
    check=_check,
    workbench=_workbench,
    report=_report,
)


@hookimpl
def register_classifiers(register) -> None:
    register(RFM)
