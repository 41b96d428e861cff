"""Measured uplift: a playbook's treatment and control groups against the transactions that followed.

``tierbook measure PLAYBOOK --outcomes TRANSACTIONS --from DATE --to DATE`` reads what the playbook's
last run wrote (``actions.csv``: the treatment group of each rule; ``control.csv``: its control group;
``summary.json``: as_of and the expected split; the customers file: every customer the run saw) and
the outcome transactions, and reports per rule and arm the customers, buyers (customers with at least
one purchase, a line with a positive amount, in the period), conversion (buyers / customers) and
revenue per customer (net amount in the period, returns included, over all the arm's customers, zero
for those who bought nothing); then treatment minus control with 95% confidence intervals:

- conversion, absolute: Newcombe's hybrid score interval (method 10 of Newcombe 1998), built from the
  two Wilson score intervals; relative (treatment / control - 1): the Katz log interval of the ratio;
- revenue per customer, absolute: Welch's t interval (unequal variances, Welch-Satterthwaite degrees of
  freedom); relative: the delta method on the log of the ratio of the two means;
- a sample-ratio-mismatch check: Pearson's chi-square of the observed split against the share of the
  rule's customers the holdouts were expected to take (``holdouts`` in summary.json), flagged below
  p = 0.001;
- the minimum detectable effect: the smallest absolute difference in conversion (and in revenue per
  customer) that a two-sided test at 5% would find with 80% power with these group sizes.

:func:`measure` returns all of it as one JSON-ready dict (documented in docs/holdouts.md), which the
command prints as text or, with ``--json``, as JSON. Why these methods: docs/decisions/0016-uplift-statistics.md.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from .data import AMOUNT_SCALE, as_date, read_transactions
from .errors import DataError, option
from .holdout import _id_text

if TYPE_CHECKING:
    from .playbook import Playbook

__all__ = ["measure", "wilson", "newcombe", "relative_risk_ci", "welch", "ratio_of_means_ci", "srm", "mde",
           "format_measurement", "ALPHA", "POWER", "SRM_ALPHA"]

#: Two-sided level of every interval (95%), the power of the minimum detectable effect, and the p-value
#: under which a split is flagged as a sample-ratio mismatch.
ALPHA = 0.05
POWER = 0.80
SRM_ALPHA = 0.001


def _z(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


# ---------------------------------------------------------------------------------------------- statistics

def wilson(x: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``x / n``.

    >>> [round(v, 4) for v in wilson(56, 70)]
    [0.6918, 0.877]
    """
    if n <= 0:
        return (math.nan, math.nan)
    z = _z(1 - alpha / 2)
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe(x1: int, n1: int, x2: int, n2: int, alpha: float = ALPHA) -> tuple[float, float, float]:
    """``p1 - p2`` with Newcombe's hybrid score interval (method 10 of Newcombe 1998).

    >>> [round(v, 4) for v in newcombe(56, 70, 48, 80)]
    [0.2, 0.0524, 0.3339]
    """
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, alpha)
    l2, u2 = wilson(x2, n2, alpha)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (d, max(-1.0, low), min(1.0, high))


def relative_risk_ci(x1: int, n1: int, x2: int, n2: int, alpha: float = ALPHA) -> tuple[float, float, float] | None:
    """``(x1/n1) / (x2/n2)`` with the Katz log interval; None when a group has no buyer (no finite ratio)."""
    if x1 == 0 or x2 == 0:
        return None
    rr = (x1 / n1) / (x2 / n2)
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
    z = _z(1 - alpha / 2)
    return (rr, rr * math.exp(-z * se), rr * math.exp(z * se))


def welch(m1: float, v1: float, n1: int, m2: float, v2: float, n2: int,
          alpha: float = ALPHA) -> tuple[float, float, float, float] | None:
    """``m1 - m2`` with Welch's t interval from the groups' means, sample variances and sizes; and the p-value.

    None when a group has fewer than two customers, or neither group varies.
    """
    from scipy.stats import t

    if n1 < 2 or n2 < 2:
        return None
    a, b = v1 / n1, v2 / n2
    se2 = a + b
    if se2 <= 0:
        return None
    df = se2 * se2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    se = math.sqrt(se2)
    q = float(t.ppf(1 - alpha / 2, df))
    d = m1 - m2
    p = float(2 * t.sf(abs(d) / se, df))
    return (d, d - q * se, d + q * se, p)


def ratio_of_means_ci(m1: float, v1: float, n1: int, m2: float, v2: float, n2: int,
                      alpha: float = ALPHA) -> tuple[float, float, float] | None:
    """``m1 / m2`` with the delta-method interval of its log; None unless both means are positive."""
    if n1 < 2 or n2 < 2 or m1 <= 0 or m2 <= 0:
        return None
    se = math.sqrt(v1 / (n1 * m1 * m1) + v2 / (n2 * m2 * m2))
    z = _z(1 - alpha / 2)
    r = m1 / m2
    return (r, r * math.exp(-z * se), r * math.exp(z * se))


def srm(n_treatment: int, n_control: int, expected_control_share: float) -> dict[str, Any]:
    """Sample-ratio mismatch: Pearson's chi-square (1 degree of freedom) of the split against the expected one."""
    from scipy.stats import chi2

    n = n_treatment + n_control
    out: dict[str, Any] = {"expected_control_share": expected_control_share,
                           "observed_control_share": n_control / n if n else None, "chi2": None, "p_value": None,
                           "mismatch": False}
    if n == 0 or not 0 < expected_control_share < 1:
        return out
    e_c = n * expected_control_share
    e_t = n - e_c
    stat = (n_control - e_c) ** 2 / e_c + (n_treatment - e_t) ** 2 / e_t
    p = float(chi2.sf(stat, 1))
    out.update(chi2=stat, p_value=p, mismatch=p < SRM_ALPHA)
    return out


def mde(n1: int, n2: int, sd: float, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest absolute difference of means a two-sided test at ``alpha`` finds with ``power``:
    ``(z(1 - alpha/2) + z(power)) * sd * sqrt(1/n1 + 1/n2)``; for a conversion ``sd = sqrt(p (1 - p))``.

    >>> round(mde(1000, 1000, math.sqrt(0.1 * 0.9)), 4)
    0.0376
    """
    if n1 <= 0 or n2 <= 0 or not math.isfinite(sd):
        return None
    return (_z(1 - alpha / 2) + _z(power)) * sd * math.sqrt(1 / n1 + 1 / n2)


# ------------------------------------------------------------------------------------------- the outputs

def _read_ids(path: Path, what: str, columns: list[str], id_dtype: pl.DataType | None) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no {what}; run the playbook (tierbook run) before measuring it")
    fmt = path.suffix.lower()
    if fmt == ".parquet":
        frame = pl.read_parquet(path, columns=columns)
    elif fmt == ".csv":
        overrides = {"customer_id": id_dtype if id_dtype is not None else pl.String}
        frame = pl.read_csv(path, columns=columns, schema_overrides=overrides, infer_schema=False)
    elif fmt == ".xlsx":
        frame = pl.read_excel(path, columns=columns)
    else:
        frame = (pl.read_json(path) if fmt == ".json" else pl.read_ndjson(path)).select(columns)
    return frame


def _key(frame: pl.DataFrame) -> pl.Expr:
    """Customer ids as the text a holdout hashes (12347, 12347.0 and "12347" are one customer)."""
    dtype = frame.schema["customer_id"]
    if dtype.is_float():
        return pl.col("customer_id").cast(pl.Int64, strict=False).cast(pl.String)
    if dtype == pl.String or dtype == pl.Categorical or isinstance(dtype, pl.Enum) or dtype.is_integer():
        return _id_text(pl.col("customer_id"), dtype)
    return pl.col("customer_id").cast(pl.String)


def _keyed(frames: list[pl.DataFrame]) -> list[pl.DataFrame]:
    """Each frame with ``customer_id`` replaced by a ``key`` all of them share: Int64 when every side's ids
    are integers (the faster join), else the text a holdout hashes (:func:`_key`)."""
    if all(f.schema["customer_id"].is_integer() for f in frames):
        try:
            return [f.with_columns(pl.col("customer_id").cast(pl.Int64, strict=True)).rename({"customer_id": "key"})
                    for f in frames]
        except pl.exceptions.InvalidOperationError:  # UInt64 ids beyond Int64: as text
            pass
    return [f.with_columns(_key(f).alias("customer_id")).rename({"customer_id": "key"}) for f in frames]


def measure(pb: Playbook, outcomes: str | Path, *, start: str | dt.date, end: str | dt.date,
            count_new_customers: bool = False) -> dict[str, Any]:
    """Measure each rule's uplift from ``outcomes`` (transactions) between ``start`` and ``end`` (both included).

    ``pb``'s last run (its outputs in ``pb.output_dir``) gives the groups. The outcomes are read with the
    playbook's ``data`` settings (map, date_format, delimiter, decimal_comma). A customer of the outcomes
    whom the run never saw stops the measurement (a wrong file, or ids mapped from another column),
    unless ``count_new_customers``: they are then counted in ``new_customers`` and left out of every arm.
    Returns a JSON-ready dict (see docs/holdouts.md); raises :class:`DataError` for bad input.
    """
    start, end = as_date(start), as_date(end)
    if start > end:
        raise DataError(f"the period is empty: {option('period_start')} {start} is after {option('period_end')} {end}")
    paths = pb.output_paths()
    summary_path = paths["summary"]
    if not summary_path.is_file():
        raise DataError(f"{summary_path}: no summary; run the playbook (tierbook run) before measuring it")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    as_of = dt.date.fromisoformat(summary["as_of"])
    if start < as_of:
        raise DataError(f"{option('period_start')} {start} is before the run's as_of {as_of}: the actions were decided "
                        f"on {as_of}, so what customers bought before then cannot be their effect")
    held = summary.get("holdouts") or {}
    if "control" not in paths or not held:
        raise DataError(f"{summary_path}: the run wrote no control groups (run the playbook again with a holdout: "
                        f"see docs/holdouts.md)")
    customers = _read_ids(paths["customers"], "customers file", ["customer_id"], None)
    id_dtype = customers.schema["customer_id"]
    actions = _read_ids(paths["actions"], "actions file", ["customer_id", "rule"], id_dtype)
    control = _read_ids(paths["control"], "control file", ["customer_id", "rule"], id_dtype)
    arms = pl.concat([actions.select("customer_id", pl.col("rule").cast(pl.String), pl.lit("treatment").alias("group")),
                      control.select("customer_id", pl.col("rule").cast(pl.String), pl.lit("control").alias("group"))])

    d = pb.data
    tx = read_transactions(outcomes, d.get("map") or None, date_format=d.get("date_format"), sheet=d.get("sheet"),
                           delimiter=d.get("delimiter"), decimal_comma=d.get("decimal_comma", False))
    where = tx.describe()
    flags = [f for f in ("_bad_date", "_bad_amount") if f in tx.frame.collect_schema()]
    scan = tx.frame.select("customer_id", "order_date", "amount_units", *flags)
    usable = pl.col("customer_id").is_not_null() & pl.col("order_date").is_not_null() \
        & pl.col("amount_units").is_not_null()
    totals_q = scan.select(pl.len().alias("rows"), (~usable).sum().alias("unusable"),
                           pl.col("order_date").min().alias("first"), pl.col("order_date").max().alias("last"),
                           *[pl.col(f).sum().alias(f) for f in flags])
    per_q = (scan.filter(usable & pl.col("order_date").is_between(start, end))
             .group_by("customer_id")
             .agg(pl.col("amount_units").sum().alias("units"), (pl.col("amount_units") > 0).any().alias("bought")))
    totals, per = pl.collect_all([totals_q, per_q])  # one scan of the outcomes for both
    for f in flags:
        if totals[f][0]:
            raise tx.locate(f)
    first, last = totals["first"][0], totals["last"][0]
    if per.height == 0:
        span = f"its dates run from {first} to {last}" if first is not None else "it has no dated row"
        raise DataError(f"{where}: no transaction from {start} to {end} ({span}); the outcomes must cover the "
                        f"period measured")
    customers, arms, per = _keyed([customers, arms, per])
    new = per.join(customers, on="key", how="anti")
    if new.height and not count_new_customers:
        raise DataError(f"{where}: {new.height:,} of the {per.height:,} customers who bought from {start} to {end} "
                        f"were not in the playbook's run (customer {str(new['key'][0])!r}, for one); check the file and "
                        f"its customer_id column, or give {option('count_new_customers')} to count them apart")

    joined = (arms.join(per, on="key", how="left")
              .with_columns(pl.col("units").fill_null(0), pl.col("bought").fill_null(False))
              .with_columns((pl.col("units") / AMOUNT_SCALE).alias("revenue")))
    stats = (joined.group_by("rule", "group")
             .agg(pl.len().alias("customers"), pl.col("bought").sum().alias("buyers"),
                  pl.col("units").sum().alias("units"), pl.col("revenue").mean().alias("mean"),
                  pl.col("revenue").var().alias("var")))
    by = {(r["rule"], r["group"]): r for r in stats.iter_rows(named=True)}

    rules_out = []
    for entry in held["rules"]:
        name = entry["rule"]
        expected = entry["expected_control_share"]
        if entry.get("holdout") is None and (held.get("playbook") or {}).get("buckets", 0) == 0:
            continue  # no holdout reaches this rule
        t = by.get((name, "treatment"))
        c = by.get((name, "control"))
        rules_out.append(_compare(name, expected, t, c))

    return {
        "playbook": pb.name,
        "as_of": str(as_of),
        "outcomes": where,
        "period": {"from": str(start), "to": str(end)},
        "customers_buying_in_period": per.height,
        "outcome_rows": int(totals["rows"][0]),
        "outcome_rows_unusable": int(totals["unusable"][0]),
        "new_customers": new.height,
        "confidence": 1 - ALPHA,
        "methods": {"conversion": "Newcombe hybrid score (Wilson), relative: Katz log",
                    "revenue_per_customer": "Welch t, relative: delta method on the log ratio",
                    "srm": f"Pearson chi-square against the expected split, mismatch when p < {SRM_ALPHA}",
                    "mde": f"two-sided alpha {ALPHA}, power {POWER}"},
        "rules": rules_out,
    }


def _arm(row: Mapping[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"customers": 0, "buyers": 0, "conversion": None, "revenue": 0.0, "revenue_per_customer": None,
                "revenue_sd": None}
    n = int(row["customers"])
    var = row["var"]
    return {"customers": n, "buyers": int(row["buyers"]), "conversion": row["buyers"] / n if n else None,
            "revenue": int(row["units"]) / AMOUNT_SCALE, "revenue_per_customer": row["mean"],
            "revenue_sd": math.sqrt(var) if var is not None and math.isfinite(var) else None}


def _interval(values: tuple[float, ...] | None, shift: float = 0.0) -> dict[str, Any] | None:
    if values is None:
        return None
    est, low, high = values[:3]
    return {"estimate": est + shift, "low": low + shift, "high": high + shift,
            "significant": bool(low + shift > 0 or high + shift < 0)}


def _compare(name: str, expected: float, t_row, c_row) -> dict[str, Any]:
    t, c = _arm(t_row), _arm(c_row)
    nt, nc = t["customers"], c["customers"]
    out: dict[str, Any] = {"rule": name, "treatment": t, "control": c, "srm": srm(nt, nc, expected)}
    if nt == 0 or nc == 0:
        out.update(conversion_uplift=None, conversion_relative_uplift=None, revenue_uplift=None,
                   revenue_relative_uplift=None, mde=None,
                   note="no treatment group" if nt == 0 else "no control group")
        return out
    xt, xc = t["buyers"], c["buyers"]
    out["conversion_uplift"] = _interval(newcombe(xt, nt, xc, nc))
    out["conversion_relative_uplift"] = _interval(relative_risk_ci(xt, nt, xc, nc), -1.0)
    vt, vc = (t["revenue_sd"] or 0.0) ** 2, (c["revenue_sd"] or 0.0) ** 2
    w = welch(t["revenue_per_customer"], vt, nt, c["revenue_per_customer"], vc, nc)
    out["revenue_uplift"] = None if w is None else {**_interval(w[:3]), "p_value": w[3]}
    out["revenue_relative_uplift"] = _interval(ratio_of_means_ci(t["revenue_per_customer"], vt, nt,
                                                                 c["revenue_per_customer"], vc, nc), -1.0)
    pooled = (xt + xc) / (nt + nc)
    sd_pooled = math.sqrt(((nt - 1) * vt + (nc - 1) * vc) / (nt + nc - 2)) if nt + nc > 2 else math.nan
    conv = mde(nt, nc, math.sqrt(pooled * (1 - pooled)))
    out["mde"] = {"conversion": conv, "conversion_relative": conv / c["conversion"] if c["conversion"] else None,
                  "revenue_per_customer": mde(nt, nc, sd_pooled)}
    return out


# ------------------------------------------------------------------------------------------------- text

def _pct(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def _pp(iv: Mapping[str, Any] | None, points: bool) -> str:
    """An uplift and its interval, in percentage points (``points``) or in percent (a relative uplift)."""
    if iv is None:
        return "-"
    unit = "pp" if points else "%"
    return (f"{100 * iv['estimate']:+.2f}{unit} [{100 * iv['low']:+.2f}{unit}, {100 * iv['high']:+.2f}{unit}]")


def _money(iv: Mapping[str, Any] | None) -> str:
    if iv is None:
        return "-"
    return f"{iv['estimate']:+,.2f} [{iv['low']:+,.2f}, {iv['high']:+,.2f}]"


def format_measurement(m: Mapping[str, Any]) -> str:
    """The text ``tierbook measure`` prints."""
    lines = [f"playbook {m['playbook']} (run as of {m['as_of']}); outcomes {m['outcomes']} from "
             f"{m['period']['from']} to {m['period']['to']}; {m['customers_buying_in_period']:,} customers bought"
             + (f" ({m['new_customers']:,} of them not in the run, counted apart)" if m["new_customers"] else "")]
    if m["outcome_rows_unusable"]:
        lines.append(f"not used: {m['outcome_rows_unusable']:,} of the outcomes' {m['outcome_rows']:,} rows, where "
                     f"customer_id, order_date or amount is empty")
    if not m["rules"]:
        lines.append("no rule has a holdout: nothing to measure")
    for r in m["rules"]:
        t, c = r["treatment"], r["control"]
        lines += ["", f"rule {r['rule']}"]
        lines.append(f"  {'':<10} {'customers':>10} {'buyers':>9} {'conversion':>11} {'revenue/customer':>17}")
        for label, a in (("treatment", t), ("control", c)):
            rpc = "-" if a["revenue_per_customer"] is None else f"{a['revenue_per_customer']:,.2f}"
            lines.append(f"  {label:<10} {a['customers']:>10,} {a['buyers']:>9,} {_pct(a['conversion']):>11} "
                         f"{rpc:>17}")
        if r.get("note"):
            lines.append(f"  {r['note']}: no uplift")
        else:
            sig = {True: "  significant", False: "  not significant"}
            cu, ru = r["conversion_uplift"], r["revenue_uplift"]
            lines.append(f"  conversion uplift {_pp(cu, True)}, relative {_pp(r['conversion_relative_uplift'], False)}"
                         f"{sig[cu['significant']]}")
            lines.append(f"  revenue per customer uplift {_money(ru)}, relative "
                         f"{_pp(r['revenue_relative_uplift'], False)}{sig[ru['significant']] if ru else ''}")
            md = r["mde"]
            lines.append(f"  smallest detectable (80% power): conversion {100 * md['conversion']:.2f}pp"
                         + (f", revenue per customer {md['revenue_per_customer']:,.2f}"
                            if md["revenue_per_customer"] is not None else ""))
        s = r["srm"]
        if s["p_value"] is not None:
            verdict = "MISMATCH: the groups are not the split the holdout draws; do not trust the uplift" \
                if s["mismatch"] else "ok"
            lines.append(f"  split: {_pct(s['observed_control_share'])} in control, {_pct(s['expected_control_share'])} "
                         f"expected (chi-square p = {s['p_value']:.3g}): {verdict}")
    lines.append("")
    lines.append(f"intervals at {m['confidence']:.0%}: conversion by Newcombe's hybrid score, revenue by Welch's t; "
                 f"each rule is its own test")
    return "\n".join(lines)
