"""KPIs per period, cohorts and value by class (engine/kpi.py), on transactions whose answers are known."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

import engine
from engine.kpi import KPI_DEFINITIONS, kpi_long
from engine.sample import SAMPLE_MAPPING
from engine.snapshots import run_snapshots

D = dt.date

# Periods of one month: P0 = January, P1 = February, P2 = March (snapshots on Feb 1, Mar 1, Apr 1).
ROWS = """customer_id,order_id,order_date,amount
a,o1,2024-01-05,100
a,o2,2024-02-05,50
a,o3,2024-03-05,30
b,o4,2024-01-10,40
b,o5,2024-03-10,60
c,o6,2024-02-15,20
c,o7,2024-03-20,-20
d,o8,2024-03-25,10
e,o9,2024-01-20,70
e,o10,2024-02-20,-5
"""


@pytest.fixture
def snaps(tmp_path, registry):
    path = tmp_path / "tx.csv"
    path.write_text(ROWS)
    return run_snapshots(path, every="month", periods=3, end="2024-04-01", registry=registry,
                         classifiers=["abc"])


def test_kpis_per_period(snaps):
    k = {r["as_of"]: r for r in snaps.kpis.iter_rows(named=True)}
    feb, mar = k[D(2024, 3, 1)], k[D(2024, 4, 1)]
    # February: a (again), c (new); e only returned (not a buyer), b silent
    assert (feb["active"], feb["new"], feb["reactivated"], feb["retained"], feb["churned"]) == (2, 1, 0, 1, 2)
    assert feb["active_previous"] == 3 and feb["retention_rate"] == pytest.approx(1 / 3)
    assert feb["churn_rate"] == pytest.approx(2 / 3)
    assert feb["revenue"] == 65.0  # 50 + 20 - 5
    # revenue retention: a, b, e (active in January) brought 45 in February against 210 in January
    assert feb["revenue_retention"] == pytest.approx(45 / 210)
    # March: a retained; b back (reactivated); d new; c only returned (not a buyer: churned)
    assert (mar["active"], mar["new"], mar["reactivated"], mar["retained"], mar["churned"]) == (3, 1, 1, 1, 1)
    assert mar["revenue"] == 80.0
    for r in (feb, mar):
        assert r["active"] == r["new"] + r["reactivated"] + r["retained"]
        assert r["active_previous"] == r["retained"] + r["churned"]


def test_every_kpi_has_its_definition_beside_it(snaps):
    long = kpi_long(snaps.kpis)
    assert set(long["kpi"]) == set(KPI_DEFINITIONS)
    assert long.filter(pl.col("definition").is_null()).height == 0
    assert long.filter(pl.col("kpi") == "active", pl.col("as_of") == D(2024, 3, 1))["value"].item() == 2.0


def test_cohorts(snaps):
    c = {(r["cohort"], r["as_of"]): r for r in snaps.cohorts.iter_rows(named=True)}
    jan = c[(D(2024, 1, 1), D(2024, 3, 1))]  # January's cohort (a, b, e) in February: only a bought
    assert (jan["cohort_size"], jan["active"], jan["revenue"]) == (3, 1, 45.0)
    assert jan["active_share"] == pytest.approx(1 / 3)
    assert (D(2024, 3, 1), D(2024, 3, 1)) not in c  # March's cohort did not exist in February
    assert c[(D(2024, 3, 1), D(2024, 4, 1))]["cohort_size"] == 1  # d


def test_value_by_class(snaps):
    v = snaps.values.filter(pl.col("as_of") == D(2024, 4, 1))
    assert v["customers"].sum() == snaps.customers[-1].height
    assert v["revenue"].sum() == pytest.approx(snaps.customers[-1]["monetary"].sum())
    for r in v.iter_rows(named=True):
        if r["customers"]:
            assert r["value_per_customer"] == pytest.approx(r["revenue"] / r["customers"])


def test_kpis_on_the_sample_add_up(registry):
    snaps = run_snapshots(engine.sample_path(), every="quarter", periods=4, end="2011-12-01",
                          mapping=SAMPLE_MAPPING, registry=registry)
    for r in snaps.kpis.iter_rows(named=True):
        assert r["active"] == r["new"] + r["reactivated"] + r["retained"]
        assert r["active_previous"] == r["retained"] + r["churned"]
    total = snaps.activity.filter(pl.col("period") >= 1)["revenue_units"].sum()
    assert snaps.kpis["revenue"].sum() == pytest.approx(float(total) / 10_000)


def test_docs_state_every_definition():
    text = (Path(__file__).resolve().parents[2] / "docs" / "time.md").read_text()
    for name, definition in KPI_DEFINITIONS.items():
        assert f"| `{name}` | {definition} |" in text, name


def test_value_by_class_per_label_on_every_snapshot_of_the_sample(registry):
    """Several label columns at once (they are counted from one grouping per snapshot): per snapshot, column
    and label, the customers and net revenue equal the snapshot table's own, worked out here per column."""
    from engine.migration import label_outputs

    snaps = run_snapshots(engine.sample_path(), every="quarter", periods=4, end="2011-12-01",
                          mapping=SAMPLE_MAPPING, registry=registry, classifiers=["abc", "adc", "rfm"])
    columns = [o.column for _, o in label_outputs(snaps.selections)]
    assert len(columns) >= 3
    for table, as_of in zip(snaps.customers, snaps.as_of):
        for column in columns:
            want = {(label if label is not None else "(none)"): (n, round(revenue, 2)) for label, n, revenue in
                    table.group_by(pl.col(column).cast(pl.String)).agg(pl.len(), pl.col("monetary").sum()).rows()}
            got = {r["label"]: (r["customers"], round(r["revenue"], 2)) for r in snaps.values.filter(
                (pl.col("as_of") == as_of) & (pl.col("column") == column) & (pl.col("customers") > 0)).iter_rows(
                named=True)}
            assert got == want, (as_of, column)


@pytest.mark.parametrize("order", ["shuffled", "a customer split", "periods reversed", "sorted"])
def test_kpis_and_cohorts_do_not_depend_on_the_activitys_order(snaps, order):
    """The KPI counts read a customer's neighbouring rows, so the activity must be in order by customer, then
    period: as the snapshot scan gives it (then it is not sorted again), or sorted first. Rows in any other
    order give the same KPIs and cohorts; so does a customer without a purchase (returns only: e in
    February) and one without a first purchase in the table (no cohort)."""
    from engine.kpi import _in_order, cohort_table, kpi_table

    activity = snaps.activity
    assert _in_order(activity)  # as the scan gives it
    rows = list(range(activity.height))
    if order == "shuffled":
        import random

        random.Random(3).shuffle(rows)
    elif order == "a customer split":  # a's last row moved to the end: a's rows are not together
        a = [i for i, c in enumerate(activity["customer_id"]) if c == "a"]
        rows = [i for i in rows if i != a[-1]] + [a[-1]]
    elif order == "periods reversed":
        rows = activity.with_row_index("_i").sort("customer_id", "period", descending=[False, True])["_i"].to_list()
    moved = activity[rows]
    assert _in_order(moved) == (order == "sorted")
    dates, previous = snaps.as_of, snaps.spec.previous
    assert kpi_table(moved, snaps.customers, dates, previous).equals(snaps.kpis)
    assert cohort_table(moved, snaps.customers[-1], dates, previous).equals(snaps.cohorts)


def cohorts_by_definition(activity: pl.DataFrame, last: pl.DataFrame, dates, previous, grain: str) -> list[tuple]:
    """The cohort table worked out row by row in plain Python: each customer's cohort the first day of the month
    (or quarter) of their first purchase, its size, and per period its customers with a purchase and its net
    revenue, for every period that ends after the cohort began."""
    def first_day(d: dt.date) -> dt.date:
        return D(d.year, d.month if grain == "month" else (d.month - 1) // 3 * 3 + 1, 1)

    cohort = {c: first_day(f) for c, f in last.select("customer_id", "first_order").rows() if f is not None}
    sizes: dict = {}
    for c in cohort.values():
        sizes[c] = sizes.get(c, 0) + 1
    cells: dict = {}
    for c, period, purchases, units in activity.select("customer_id", "period", "purchases", "revenue_units").rows():
        if c in cohort:
            active, total = cells.get((cohort[c], period), (0, 0))
            cells[(cohort[c], period)] = (active + (purchases > 0), total + units)
    starts = [previous, *dates[:-1]]
    out = []
    for c in sorted(sizes):
        for p, (start, as_of) in enumerate(zip(starts, dates)):
            if c < as_of:
                active, units = cells.get((c, p), (0, 0))
                out.append((c, sizes[c], p, start, as_of, active, active / sizes[c], units / 10_000))
    return out


@pytest.mark.parametrize("grain", ["month", "quarter"])
def test_cohorts_equal_their_definition_on_the_sample(grain, registry):
    """Cohorts grouped by a whole number of months (or quarters) equal the table worked out by hand, customers
    of period -1, customers who never bought (no cohort) and activity rows of such customers included."""
    from engine.kpi import cohort_table

    snaps = run_snapshots(engine.sample_path(), every="month", periods=5, end="2011-12-01", mapping=SAMPLE_MAPPING,
                          registry=registry, classifiers=["abc"], cohort=grain)
    last, spec = snaps.customers[-1], snaps.spec
    assert last["first_order"].null_count()  # a customer without a purchase: no cohort
    assert (snaps.activity["period"] == -1).any()
    got = cohort_table(snaps.activity, last, snaps.as_of, spec.previous, grain)
    want = cohorts_by_definition(snaps.activity, last, snaps.as_of, spec.previous, grain)
    assert got.height == len(want)
    for row, expected in zip(got.rows(), want):
        assert row[:7] == expected[:7]
        assert row[7] == pytest.approx(expected[7], abs=1e-9)
    assert got.equals(snaps.cohorts)


def test_kpis_from_counts_alone_a_period_without_counts_is_zero():
    """kpi_table reads only the period counts when given them (the activity may then be None, as a playbook run
    lets it go): a period before with no counts (no line in it) has no buyer, so nobody churned and no rate."""
    from engine.kpi import kpi_table

    dates = [D(2024, 2, 1), D(2024, 3, 1)]
    tables = [pl.DataFrame({"customer_id": [1]}), pl.DataFrame({"customer_id": [1, 2]})]
    stats = {1: {"active": 2, "new": 2, "retained": 0, "churned_next": 1, "units": 30_000, "kept_now": 0,
                 "buyers_units": 30_000}}
    row = kpi_table(None, tables, dates, D(2024, 1, 1), stats=stats).row(0, named=True)
    assert (row["customers"], row["active"], row["new"], row["reactivated"], row["retained"]) == (2, 2, 2, 0, 0)
    assert (row["churned"], row["active_previous"], row["churn_rate"], row["retention_rate"]) == (0, 0, None, None)
    assert row["revenue"] == 3.0 and row["revenue_retention"] is None
    # a period without counts after one with them: no buyer, no revenue, nobody retained
    dates.append(D(2024, 4, 1))
    tables.append(tables[-1])
    row = kpi_table(None, tables, dates, D(2024, 1, 1), stats=stats).row(1, named=True)
    assert (row["active"], row["new"], row["reactivated"], row["retained"], row["churned"]) == (0, 0, 0, 0, 1)
    assert (row["active_previous"], row["retention_rate"], row["churn_rate"]) == (2, 0.0, 0.5)
    assert row["revenue"] == 0.0 and row["revenue_retention"] == 0.0


@pytest.mark.parametrize("buyers_units, kept_now, expected", [(0, 0, None), (-5, 0, None), (1, 1, 1.0),
                                                                (4, 1, 0.25)])
def test_revenue_retention_needs_revenue_before(buyers_units, kept_now, expected):
    """revenue_retention divides the revenue of this period's retained buyers by the net revenue of the period
    before's buyers, only where that is above zero: a period whose buyers returned everything they bought (net 0)
    or more has none, and one unit (0.0001) is enough to have one."""
    from engine.kpi import kpi_table

    dates = [D(2024, 2, 1), D(2024, 3, 1)]
    tables = [pl.DataFrame({"customer_id": [1]})] * 2
    stats = {0: {"active": 1, "churned_next": 0, "buyers_units": buyers_units},
             1: {"active": 1, "new": 0, "retained": 1, "units": kept_now, "kept_now": kept_now}}
    row = kpi_table(None, tables, dates, D(2024, 1, 1), stats=stats).row(0, named=True)
    assert row["revenue_retention"] == expected
    assert (row["retained"], row["active_previous"], row["retention_rate"]) == (1, 1, 1.0)


@pytest.mark.parametrize("rows, in_order", [
    ([(1, -1), (1, 0), (2, 0), (3, 2)], True),
    ([(2, 0), (1, 0), (3, 0)], False),  # only the first two rows out of order
    ([(1, 0), (1, 0), (2, 0)], False),  # a customer and period twice: not one row each
    ([(1, 1), (1, 0), (2, 0)], False),  # periods reversed within a customer
    ([(None, 0), (1, 0), (2, 0)], False),  # a null id compares as nothing: never taken as in order
    ([(1, None), (1, 0), (2, 0)], False),
    ([(1, 0)], True),
])
def test_in_order_checks_every_row_one_row_each(rows, in_order):
    """_in_order lets period_stats skip the sort; it must say True only for rows sorted by customer, then
    period, with one row per customer and period, and no null."""
    from engine.kpi import _in_order

    activity = pl.DataFrame({"customer_id": [r[0] for r in rows], "period": [r[1] for r in rows]},
                            schema={"customer_id": pl.Int64, "period": pl.Int32})
    assert _in_order(activity) is in_order
