"""engine.features: each feature's definition, as_of, rows not used (counted per reason), prospects, plugin features."""

from __future__ import annotations

import datetime as dt
import inspect
import random
import types

import polars as pl
import pytest

import engine
import engine.run  # summarize and select (the package does not import its submodule run itself)
from engine import Classifier, DataError, Feature, Output, ParamSpec, hookimpl
from engine.data import read_transactions
from engine.features import BUILTIN_FEATURES, REJECT_REASONS, _join_table, compute_features, rejected_rows
from engine.registry import get_registry

D = dt.date


def tx(rows, **extra):
    """rows: (customer, order, date, amount)."""
    return pl.DataFrame(
        {"customer_id": [r[0] for r in rows], "order_id": [r[1] for r in rows],
         "order_date": [r[2] for r in rows], "amount": [r[3] for r in rows], **extra},
        schema_overrides={"customer_id": pl.String, "order_id": pl.String, "order_date": pl.Date,
                          "amount": pl.Float64},
    )


ROWS = [
    ("a", "o1", D(2011, 1, 1), 10.0),
    ("a", "o1", D(2011, 1, 1), 5.0),
    ("a", "o2", D(2011, 2, 1), 20.0),
    ("a", "o3", D(2011, 2, 10), -4.0),   # a cancellation-only invoice: not an order, one return
    ("b", "o4", D(2011, 3, 1), 7.5),
    ("b", "o5", D(2011, 3, 1), -7.5),    # a full return the same day
    ("c", "o6", D(2011, 3, 30), -3.0),   # only a return
]


def prepare(data, **kw):
    kw.setdefault("registry", get_registry(allow=["abc", "adc", "rfm"], strict=True))
    return engine.prepare(data, **kw)


def by_id(df, *cols):
    return {row[0]: row[1:] for row in df.select("customer_id", *cols).rows()}


def test_each_feature_by_hand():
    p = prepare(tx(ROWS))
    assert p.as_of == D(2011, 3, 31)  # the day after the last dated row
    got = by_id(p.customers, "recency_days", "frequency", "monetary", "first_order", "last_order", "last_activity",
                "tenure_days", "avg_order_value", "returns", "returned_value")
    assert got == {
        # a: last purchase 2011-02-01 -> 58 days to 2011-03-31 (the return of 2011-02-10 is not a purchase,
        #    it is the last activity); first 2011-01-01 -> 89 days; orders o1, o2;
        #    net 10 + 5 + 20 - 4 = 31; 31 / 2 = 15.5; one negative line of 4
        "a": (58, 2, 31.0, D(2011, 1, 1), D(2011, 2, 1), D(2011, 2, 10), 89, 15.5, 1, 4.0),
        "b": (30, 1, 0.0, D(2011, 3, 1), D(2011, 3, 1), D(2011, 3, 1), 30, 0.0, 1, 7.5),
        # c has no purchase (no positive line): frequency 0, no purchase dates, recency or tenure, average
        # undefined; still a customer, last seen on the day of its return
        "c": (None, 0, -3.0, None, None, D(2011, 3, 30), None, None, 1, 3.0),
    }
    assert p.customers.columns[:11] == ["customer_id", *BUILTIN_FEATURES]
    assert p.report.net_revenue == 28.0
    assert (p.report.rows, p.report.rows_used, p.report.customers) == (7, 7, 3)


def test_explicit_as_of_excludes_rows_on_and_after_it():
    p = prepare(tx(ROWS), as_of="2011-03-01")
    # rows of 2011-03-01 and later are not used: b and c have no usable row left
    assert p.customers["customer_id"].to_list() == ["a"]
    assert p.customers.row(0, named=True)["recency_days"] == 28  # last purchase 2011-02-01 -> 2011-03-01
    assert p.report.rejected["after_as_of"] == 3
    assert p.report.customers_without_usable_rows == 2
    assert "  not used: 3 rows where order_date is on or after as_of" in p.report.lines()


def test_default_as_of_counts_rows_without_a_customer():
    rows = [*ROWS, (None, "o9", D(2011, 5, 1), 1.0)]
    p = prepare(tx(rows))
    assert p.as_of == D(2011, 5, 2)
    assert by_id(p.customers, "recency_days")["a"] == (90,)  # 2011-02-01 -> 2011-05-02: 27 + 31 + 30 + 2


def test_default_as_of_ignores_a_dated_row_without_an_amount():
    """The default as_of is the day after the last row with a date and an amount: a later row without an amount
    (with a customer id or without) is not used and does not move it."""
    for customer in ("a", None):
        p = prepare(tx([*ROWS, (customer, "o9", D(2011, 5, 1), None)]))
        assert p.as_of == D(2011, 3, 31)
        assert p.report.rejected["null_customer" if customer is None else "null_amount"] == 1


def test_unusable_rows_are_counted_per_reason():
    rows = [
        ("a", "o1", D(2011, 1, 1), 10.0),
        (None, "o2", D(2011, 1, 2), 3.0),
        (None, "o3", None, None),          # counted once, under its first reason
        ("a", "o4", None, 2.0),
        ("b", "o5", D(2011, 1, 3), None),
        ("b", "o6", D(2011, 1, 3), 1.0),
        ("d", "o7", D(2011, 1, 9), 1.0),   # on as_of
    ]
    p = prepare(tx(rows), as_of="2011-01-09")
    assert p.report.rejected == {"null_customer": 2, "null_date": 1, "null_amount": 1, "after_as_of": 1}
    assert (p.report.rows, p.report.rows_used) == (7, 2)
    assert by_id(p.customers, "monetary") == {"a": (10.0,), "b": (1.0,)}
    lines = p.report.lines()
    for reason, count in (("customer_id is empty", 2), ("order_date is empty", 1), ("amount is empty", 1)):
        assert f"  not used: {count:,} rows where {reason}" in lines

    raw = read_transactions(tx(rows))
    rejects = rejected_rows(raw, D(2011, 1, 9)).collect()
    assert rejects.columns == ["row", "customer_id", "order_id", "order_date", "amount", "reason"]
    assert rejects.select("row", "order_id", "reason").rows() == [
        (2, "o2", REJECT_REASONS["null_customer"]),
        (3, "o3", REJECT_REASONS["null_customer"]),
        (4, "o4", REJECT_REASONS["null_date"]),
        (5, "o5", REJECT_REASONS["null_amount"]),
        (7, "o7", REJECT_REASONS["after_as_of"]),
    ]


def test_a_row_with_two_reasons_is_counted_once_under_the_first():
    # dated after as_of and without an amount: "amount is empty" (the order rejected_rows gives), not both
    rows = [("a", "o1", D(2011, 1, 1), 10.0), ("a", "o2", D(2011, 2, 1), None), ("b", "o3", D(2011, 2, 1), 4.0)]
    p = prepare(tx(rows), as_of="2011-01-09")
    assert p.report.rejected == {"null_customer": 0, "null_date": 0, "null_amount": 1, "after_as_of": 1}
    assert p.report.rows - p.report.rows_used == sum(p.report.rejected.values())
    reasons = rejected_rows(read_transactions(tx(rows)), D(2011, 1, 9)).collect()["reason"].to_list()
    assert reasons == [REJECT_REASONS["null_amount"], REJECT_REASONS["after_as_of"]]


def test_sums_are_exact_and_independent_of_row_order():
    rng = random.Random(1)
    n = 5000
    cents = [rng.randint(-5000, 20000) for _ in range(n)]
    df = pl.DataFrame({
        "customer_id": [rng.randint(1, 40) for _ in range(n)],
        "order_date": [D(2011, 1, 1) + dt.timedelta(days=rng.randint(0, 300)) for _ in range(n)],
        "quantity": [1] * n,
        "unit_price": [c / 100 for c in cents],
    })
    first = prepare(df).customers
    second = prepare(df.sample(fraction=1.0, shuffle=True, seed=2)).customers
    assert first.equals(second)
    expected = {}
    for cid, c in zip(df["customer_id"], cents):
        expected[cid] = expected.get(cid, 0) + c
    assert dict(zip(first["customer_id"], first["monetary"])) == {k: v / 100 for k, v in expected.items()}


def test_sums_of_the_largest_amounts_are_exact(tmp_path, run_cli):
    """Issue 10, item 2: ten lines of 1e14 (the largest accepted amount) wrapped to -8.4e14 as an Int64 sum."""
    import json
    from decimal import Decimal

    top = 100_000_000_000_000  # 1e14, accepted (1e14 + 1 is not: tests/engine/bad_input data-amount-too-large)
    rows = [("a", f"o{i}", D(2011, 1, 1 + i), float(top)) for i in range(10)]
    rows += [("b", "p1", D(2011, 1, 2), float(top)), ("b", "p2", D(2011, 1, 3), -float(top)),
             ("b", "p3", D(2011, 1, 4), -float(top)), ("c", "q1", D(2011, 1, 2), 0.0001)]
    got = prepare(tx(rows))
    assert by_id(got.customers, "monetary", "returned_value") == {
        "a": (1e15, 0.0), "b": (-1e14, 2e14), "c": (0.0001, 0.0)}
    exact = float(Decimal(9 * top) + Decimal("0.0001"))  # the float nearest the exact total
    assert got.report.net_revenue == exact == 9e14
    classes = engine.summarize(got.classify(["adc"]), got.selections)
    assert classes["revenue"].sum() == exact and (classes["revenue"] >= 0).all()
    # The same through the command line and a playbook: monetary, the report and the reconciliation.
    path = tmp_path / "tx.csv"
    tx(rows).write_csv(path)
    code, _, err = run_cli("classify", path, "-o", tmp_path / "out.csv")
    assert code == 0, err
    assert "net revenue 900,000,000,000,000.00" in err
    assert pl.read_csv(tmp_path / "out.csv").sort("customer_id")["monetary"].to_list() == [1e15, -1e14, 0.0001]
    (tmp_path / "p.yaml").write_text("name: t\ndata:\n  transactions: tx.csv\nclassifiers:\n  abc: {}\n"
                                     "fallback: {action: none, channel: none, owner: x}\n")
    code, _, err = run_cli("run", tmp_path / "p.yaml")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "t" / "summary.json").read_text())
    assert summary["reconciliation"]["revenue_in"] == summary["reconciliation"]["revenue_out"] == 9e14
    assert summary["reconciliation"]["ok"] is True


@pytest.mark.parametrize("lines", [4, 5, 9, 10, 92, 93, 200])
def test_sums_on_both_sides_of_int64(lines):
    # 1e14 is 1e18 units: 4 lines stay below the Int64 fast path's bound (2**62 units), 5 go above it, 10 are
    # beyond Int64 itself (9.2e18); a customer with returns cancels part of it out.
    top = 100_000_000_000_000
    rows = [("a", f"o{i}", D(2011, 1, 1) + dt.timedelta(days=i % 300), float(top)) for i in range(lines)]
    rows += [("b", f"p{i}", D(2011, 1, 1), float(top) if i % 3 else -float(top)) for i in range(lines)]
    got = prepare(tx(rows)).customers
    returns = len(range(0, lines, 3))
    assert by_id(got, "monetary", "returned_value") == {
        "a": (float(lines * top), 0.0), "b": (float((lines - 2 * returns) * top), float(returns * top))}


def test_class_revenue_sums_are_exact_beyond_int64_units():
    # summarize sums monetary as units: 1e15 of revenue is 1e19 units, beyond Int64 (9.2e18).
    customers = pl.DataFrame({"customer_id": ["a", "b", "c"], "monetary": [1e15, 1e15, 0.07],
                              "abc": pl.Series(["A", "A", "C"], dtype=pl.Enum(["A", "B", "C"]))})
    sel = engine.run.select(get_registry(allow=["abc"], strict=True), ["abc"], {})
    got = engine.summarize(customers, sel)
    assert got["revenue"].to_list() == [2e15, 0.0, 0.07]
    assert got["revenue_share"].to_list()[0] == pytest.approx(1.0)


def test_prospects_from_the_customer_table():
    customers = pl.DataFrame({"customer_id": ["a", "z"], "region": ["north", "south"]})
    p = prepare(tx(ROWS), customers=customers)
    got = by_id(p.customers, "region", "frequency", "monetary", "recency_days", "first_order")
    assert got == {"a": ("north", 2, 31.0, 58, D(2011, 1, 1)), "b": (None, 1, 0.0, 30, D(2011, 3, 1)),
                   "c": (None, 0, -3.0, None, None), "z": ("south", 0, 0.0, None, None)}
    # c (only a return) and z (no transaction) both have no purchase; only c has been seen
    assert by_id(p.customers, "last_activity") == {"a": (D(2011, 2, 10),), "b": (D(2011, 3, 1),),
                                                   "c": (D(2011, 3, 30),), "z": (None,)}
    assert (p.report.customers, p.report.prospects, p.report.customers_from_table) == (4, 1, 2)
    assert "customers: 4 (3 with transactions, 1 prospects from the customer table); net revenue 28.00" \
        in p.report.lines()


def test_a_prospect_has_every_feature_of_no_transaction():
    """Each built-in feature of a customer-table customer without a usable row is its definition over no rows:
    counts and sums 0, dates and what is derived from them (or from no order) null. Both kinds of prospect:
    one without any transaction (z) and one whose only row is on or after as_of (b)."""
    customers = pl.DataFrame({"customer_id": ["b", "z"]})
    p = prepare(tx(ROWS), customers=customers, as_of="2011-02-15")
    nothing = {"recency_days": None, "frequency": 0, "monetary": 0.0, "first_order": None, "last_order": None,
               "last_activity": None, "tenure_days": None, "avg_order_value": None, "returns": 0,
               "returned_value": 0.0}
    assert list(nothing) == list(BUILTIN_FEATURES)
    got = {row["customer_id"]: {n: row[n] for n in nothing} for row in p.customers.iter_rows(named=True)}
    assert got["b"] == nothing and got["z"] == nothing
    assert p.report.prospects == 2
    assert got["a"]["returns"] == 1 and got["a"]["returned_value"] == 4.0  # a's cancellation of 2011-02-10


@pytest.mark.parametrize("orders", ["hashing", "boundaries"])
def test_rows_on_or_after_as_of_change_no_order_count(orders):
    """A zero amount and a sale without an order id dated on or after as_of are not used: they neither correct
    the distinct count of order ids (as a usable zero line or sale without an id does) nor count as orders."""
    rows = [("a", "o2", D(2011, 1, 1), 5.0), ("a", "o1", D(2011, 1, 2), 5.0),   # o1 after o2: in doubt
            ("a", "o3", D(2011, 3, 1), 0.0), ("a", None, D(2011, 3, 2), 7.0)]   # both after as_of
    result = compute_features(read_transactions(tx(rows)), as_of=D(2011, 2, 1), orders=orders)
    assert by_id(result.customers, "frequency", "monetary", "last_activity") == {"a": (2, 10.0, D(2011, 1, 2))}
    assert result.report.rejected["after_as_of"] == 2


def test_the_scan_sums_a_zero_net_revenue_as_zero():
    """The scan's own total of the usable amounts (exact units, for the reconciliation) is 0 when the sales and
    returns cancel out, like the customers' total."""
    rows = [("a", "o1", D(2011, 1, 1), 7.5), ("a", "o2", D(2011, 1, 2), -7.5)]
    result = compute_features(read_transactions(tx(rows)))
    assert (result.report.scanned_units, result.report.net_revenue) == (0, 0.0)
    assert compute_features(read_transactions(tx(ROWS))).report.scanned_units == 280_000  # 28.00 in units


def test_customer_ids_match_across_types(tmp_path):
    # Parquet integer ids and a CSV customer table: the table's "12" is the customer 12
    path = tmp_path / "tx.parquet"
    pl.DataFrame({"customer_id": [12, 13], "order_date": [D(2011, 1, 1)] * 2, "amount": [1.0, 2.0]}).write_parquet(path)
    table = tmp_path / "customers.csv"
    table.write_text("customer_id,region\n12,north\n99,west\n")
    p = prepare(path, customers=table)
    assert p.customers.schema["customer_id"] == pl.Int64
    assert by_id(p.customers, "region", "frequency") == {12: ("north", 1), 13: (None, 1), 99: ("west", 0)}


def test_a_text_id_that_is_no_number_as_written_is_not_that_number(tmp_path):
    # Integer ids in the transactions, text in the customer table: "8" is customer 8, but "007" (which would
    # convert to 7, and back to "7", not "007") is not customer 7; then every id is compared as text.
    path = tmp_path / "tx.parquet"
    pl.DataFrame({"customer_id": [7, 8], "order_date": [D(2011, 1, 1)] * 2, "amount": [1.0, 2.0]}).write_parquet(path)
    table = pl.DataFrame({"customer_id": ["007", "8"], "region": ["north", "south"]})
    p = prepare(path, customers=table)
    assert p.customers.schema["customer_id"] == pl.String
    assert by_id(p.customers, "region", "frequency") == {"7": (None, 1), "8": ("south", 1), "007": ("north", 0)}


def test_leading_zeros_are_not_the_same_customer(tmp_path):
    data = tmp_path / "tx.csv"
    data.write_text("customer_id,order_date,amount\n007,2011-01-01,10\n009,2011-01-02,20\n")
    table = tmp_path / "customers.csv"
    table.write_text("customer_id,region\n007,north\n008,south\n")
    p = prepare(data, customers=table)
    # 007 is one customer (with its region), 008 a prospect; nobody is counted twice
    assert by_id(p.customers, "region", "frequency") == {"007": ("north", 1), "008": ("south", 0),
                                                         "009": (None, 1)}


def plugin_module():
    mod = types.ModuleType("tierbook_test_features")

    @hookimpl
    def register_features(register):
        register(Feature("biggest_line", "largest line amount", agg=pl.col("amount").max()))
        register(Feature("orders_2011", "distinct orders in 2011",
                         agg=pl.col("order_id").filter(pl.col("order_date").dt.year() == 2011).n_unique()))
        register(Feature("double_value", "twice the net revenue", derive=pl.col("monetary") * 2))

    mod.register_features = register_features
    return mod


def test_plugin_features_join_the_single_pass():
    registry = get_registry(entry_points=False, modules=[plugin_module()], strict=True)
    rows = [*ROWS, ("a", "o0", D(2010, 12, 30), 1.0)]
    p = engine.prepare(tx(rows), registry=registry)
    assert by_id(p.customers, "biggest_line", "orders_2011", "double_value") == {
        "a": (20.0, 3, 64.0), "b": (7.5, 2, 0.0), "c": (-3.0, 1, -6.0)}


def test_plugin_feature_rows_exclude_unusable_rows():
    registry = get_registry(entry_points=False, modules=[plugin_module()], strict=True)
    p = engine.prepare(tx(ROWS), registry=registry, as_of="2011-02-05")
    # only a's rows of 2011-01-01 (10, 5) and 2011-02-01 (20) are before as_of
    assert by_id(p.customers, "biggest_line", "orders_2011") == {"a": (20.0, 2)}


def per_day(rows: pl.LazyFrame) -> pl.LazyFrame:
    """A query no single aggregation per customer can express: the largest daily total of each customer."""
    daily = rows.group_by("customer_id", "order_date").agg(pl.col("amount").sum().alias("day_total"))
    return daily.group_by("customer_id").agg(pl.col("day_total").max().alias("best_day"),
                                             pl.len().alias("days"))


@pytest.mark.parametrize("bad", ["agg", "table"])
def test_a_plugin_feature_reading_a_missing_column_is_named(bad):
    """The error names the plugin feature that reads a column the transactions do not have (an aggregation or a
    table), past the plugin's derived and working features."""
    mod = types.ModuleType("tierbook_test_bad_feature")

    @hookimpl
    def register_features(register):
        register(Feature("twice", "twice the net revenue", derive=pl.col("monetary") * 2))
        register(Feature("biggest_line", "largest line amount", agg=pl.col("amount").max()))
        register(Feature("days", "days with a row", table=lambda rows: per_day(rows).select("customer_id", "days")))
        if bad == "agg":
            register(Feature("points", "loyalty points", agg=pl.col("points").sum()))
        else:
            register(Feature("points", "loyalty points", table=lambda rows: rows.group_by("customer_id").agg(
                pl.col("points").sum())))

    mod.register_features = register_features
    registry = get_registry(entry_points=False, modules=[mod], strict=True)
    with pytest.raises(DataError, match=r"^feature 'points' of plugin .*tierbook_test_bad_feature.* uses a column the "
                                        r"transactions do not have \(.*points.*\); it may use customer_id, order_id, "
                                        r"order_date, amount"):
        engine.prepare(tx(ROWS), registry=registry)


def table_module(scans: list):
    mod = types.ModuleType("tierbook_test_table_features")

    def counted(rows):
        scans.append(1)
        return per_day(rows)

    @hookimpl
    def register_features(register):
        register(Feature("best_day", "largest daily total", table=counted, on_demand=True))
        register(Feature("days", "days with a row", table=counted, on_demand=True))
        register(Feature("best_share", "best day / net revenue", derive=pl.col("best_day") / pl.col("monetary"),
                         on_demand=True))

    mod.register_features = register_features
    return mod


def test_table_features_share_one_query_and_join_the_pass():
    scans: list = []
    registry = get_registry(entry_points=False, modules=[table_module(scans)], strict=True)
    rows = [("a", "o1", D(2011, 1, 1), 10.0), ("a", "o2", D(2011, 1, 1), 5.0), ("a", "o3", D(2011, 1, 2), 12.0),
            ("b", "o4", D(2011, 1, 3), 4.0), ("c", None, None, 1.0)]
    p = engine.prepare(tx(rows), registry=registry, needs=["best_share"])
    assert len(scans) == 1  # the two features of one table function: one query
    # c's only row has no date: not usable, so c is not a customer; the table saw the usable rows only
    assert by_id(p.customers, "best_day", "days", "best_share") == {"a": (15.0, 2, 15.0 / 27), "b": (4.0, 1, 1.0)}


def test_on_demand_features_only_when_needed():
    registry = get_registry(entry_points=False, modules=[table_module([])], strict=True)
    p = engine.prepare(tx(ROWS), registry=registry)
    assert not {"best_day", "days", "best_share"} & set(p.customers.columns)
    p = engine.prepare(tx(ROWS), registry=registry, needs=["days"])
    assert "days" in p.customers.columns and "best_share" not in p.customers.columns


def test_a_classifier_requiring_columns_by_its_parameters_gets_their_on_demand_features():
    """``requires`` may be a callable of the parameters: the run computes the on-demand features the parameters
    in force need, and no others (a classifier's period of days or weeks, say)."""
    mod = types.ModuleType("tierbook_test_requires_by_param")

    @hookimpl
    def register_features(register):
        register(Feature("sum_a", "a", agg=pl.col("amount").sum(), on_demand=True))
        register(Feature("count_b", "b", agg=pl.len(), on_demand=True))

    @hookimpl
    def register_classifiers(register):
        register(Classifier(name="pick", description="by one column", params=(
            ParamSpec("column", "str", "sum_a", "Which.", choices=("sum_a", "count_b")),),
            requires=lambda p: (p["column"],), outputs=(Output("pick", "x", dtype=pl.Float64),),
            expressions=lambda p, ctx: {"pick": pl.col(p["column"]).cast(pl.Float64)}, by_default=False))

    mod.register_features, mod.register_classifiers = register_features, register_classifiers
    registry = get_registry(entry_points=False, modules=[mod], strict=True)
    pick = registry.classifiers["pick"]
    assert pick.required() == pick.requires == ("sum_a",)  # the attribute: the default parameters' columns
    assert pick.required({"column": "count_b"}) == ("count_b",)
    out = engine.classify(tx(ROWS), classifiers=["pick"], registry=registry)
    assert "sum_a" in out.columns and "count_b" not in out.columns
    out = engine.classify(tx(ROWS), classifiers=["pick"], params={"pick.column": "count_b"}, registry=registry)
    assert "count_b" in out.columns and "sum_a" not in out.columns
    assert by_id(out, "pick") == {"a": (4.0,), "b": (2.0,), "c": (1.0,)}  # usable rows per customer
    prepared = engine.prepare(tx(ROWS), registry=registry, needs=["sum_a"])
    with pytest.raises(engine.PluginError, match=r"count_b: plugin features computed on demand"):
        prepared.classify(["pick"], {"pick.column": "count_b"})


def test_a_table_function_is_told_when_its_int64_sums_are_safe():
    """A table function that takes ``int64_safe`` gets True from a pass whose totals prove that no sum of units can
    leave an Int64 (it runs again, wide, when they could: then False), and False from every other caller."""
    from engine.features import plugin_table_queries

    told: list = []
    mod = types.ModuleType("tierbook_test_units_table")

    def units(rows, *, int64_safe=False):
        told.append(int64_safe)
        u = pl.col("amount_units")
        return rows.group_by("customer_id").agg((u if int64_safe else u.cast(pl.Int128)).sum().alias("units"))

    @hookimpl
    def register_features(register):
        register(Feature("units", "summed units", table=units))

    mod.register_features = register_features
    registry = get_registry(entry_points=False, modules=[mod], strict=True)
    p = engine.prepare(tx(ROWS), registry=registry)
    assert told == [True] and by_id(p.customers, "units") == {"a": (310000,), "b": (0,), "c": (-30000,)}
    told.clear()
    big = [("a", f"o{i}", D(2011, 1, 1 + i), 1e14) for i in range(12)]  # 12e18 units: beyond an Int64
    p = engine.prepare(tx(big), registry=registry)
    assert told == [True, False]  # the first pass's totals sent it round again, wide
    assert by_id(p.customers, "units") == {"a": (12 * 10**18,)}
    told.clear()
    plugin_table_queries(pl.LazyFrame(schema={"customer_id": pl.String, "amount_units": pl.Int64}),
                         registry.features)
    assert told == [False]


def test_a_table_function_whose_signature_cannot_be_read_is_called_plainly():
    """A table callable without a readable signature (a compiled function may have none) is called with the rows
    alone, as before the ``int64_safe`` keyword: never handed a keyword it may not take."""
    calls: list = []

    class Compiled:  # inspect.signature fails on it, as on a builtin without text signature
        @property
        def __signature__(self):
            raise ValueError("no signature found")

        def __call__(self, rows):
            calls.append("plain")
            return rows.group_by("customer_id").agg(pl.len().cast(pl.Int64).alias("lines"))

    table = Compiled()
    with pytest.raises(ValueError, match="no signature found"):
        inspect.signature(table)
    mod = types.ModuleType("tierbook_test_unsigned_table")

    @hookimpl
    def register_features(register):
        register(Feature("lines", "usable lines", table=table))

    mod.register_features = register_features
    registry = get_registry(entry_points=False, modules=[mod], strict=True)
    p = engine.prepare(tx(ROWS), registry=registry)
    assert calls == ["plain"] and by_id(p.customers, "lines") == {"a": (4,), "b": (2,), "c": (1,)}


def test_a_table_feature_with_two_rows_for_a_customer_is_an_error():
    mod = types.ModuleType("tierbook_test_bad_table")

    @hookimpl
    def register_features(register):
        register(Feature("per_order", "not one row per customer",
                         table=lambda rows: rows.select("customer_id", pl.col("amount").alias("per_order"))))

    mod.register_features = register_features
    registry = get_registry(entry_points=False, modules=[mod], strict=True)
    with pytest.raises(DataError, match=r"per_order: the query returned more than one row for a customer "
                                        r"\(tierbook_test_bad_table \(module tierbook_test_bad_table\)\)"):
        engine.prepare(tx(ROWS), registry=registry)


@pytest.mark.parametrize("ids", [[1, 2, 3, 5], ["a", "b", "c", "e"]])
@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_a_table_joins_the_same_whether_sorted_or_not(ids, order):
    # sorted tables are merged, others hashed (engine.features._join_table): the same rows either way
    feats = pl.DataFrame({"customer_id": ids, "f": [10, 20, 30, 50]})
    table = pl.DataFrame({"customer_id": [ids[0], ids[2], ids[3]], "t": [1.5, 3.5, 5.5]})
    if order == "reversed":
        table = table.reverse()
    out = _join_table(feats, table, {})
    assert out.to_dict(as_series=False) == {"customer_id": ids, "f": [10, 20, 30, 50], "t": [1.5, None, 3.5, 5.5]}


@pytest.mark.parametrize("ids", [[1, 2, 3, 5], ["a", "b", "c", "e"]])
def test_sorted_tables_are_merged_without_hashing_the_ids(ids, monkeypatch):
    """Both sides sorted by customer, of one id type, without a null: the twins are found by comparing neighbours
    and the tables merged, the ids never hashed (the documented fast path of _join_table, about a tenth of the
    hashing's CPU at 1M customers); a table of two rows, one customer twice, is still refused."""
    feats = pl.DataFrame({"customer_id": ids, "f": [10, 20, 30, 50]})
    table = pl.DataFrame({"customer_id": [ids[0], ids[2], ids[3]], "t": [1.5, 3.5, 5.5]})

    def hashed(self, *args, **kwargs):
        raise AssertionError("the ids were hashed")

    monkeypatch.setattr(pl.Series, "is_duplicated", hashed)
    out = _join_table(feats, table, {})
    assert out.to_dict(as_series=False) == {"customer_id": ids, "f": [10, 20, 30, 50], "t": [1.5, None, 3.5, 5.5]}
    with pytest.raises(DataError, match="t: the query returned more than one row for a customer"):
        _join_table(feats, pl.DataFrame({"customer_id": [ids[1], ids[1]], "t": [0.5, 0.5]}), {})


@pytest.mark.parametrize("twin", [0, 1, 3])
@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_a_customer_twice_in_a_table_is_found_sorted_or_not(twin, order):
    ids = [1, 2, 3, 4]
    table = pl.DataFrame({"customer_id": sorted([*ids, ids[twin]]), "t": [0.5] * 5})
    if order == "reversed":
        table = table.reverse()
    with pytest.raises(DataError, match="t: the query returned more than one row for a customer"):
        _join_table(pl.DataFrame({"customer_id": ids}), table, {})


def test_no_usable_transactions_is_an_error():
    with pytest.raises(DataError, match="no usable transactions .*4 rows where order_date is on or after as_of"):
        prepare(tx(ROWS[:4]), as_of="2010-01-01")


def test_compute_features_directly():
    result = compute_features(read_transactions(tx(ROWS)), as_of=D(2011, 4, 1), streaming=False)
    assert result.as_of == D(2011, 4, 1)
    assert by_id(result.customers, "recency_days") == {"a": (59,), "b": (31,), "c": (None,)}


def test_customers_without_usable_rows_are_accounted_for():
    customers = pl.DataFrame({"customer_id": ["a", "b"]})
    # as_of 2011-03-01: b and c have rows only on or after it
    p = prepare(tx(ROWS), as_of="2011-03-01", customers=customers)
    assert by_id(p.customers, "frequency") == {"a": (2,), "b": (0,)}  # b is in the table: a prospect
    lines = p.report.lines()
    assert "  1 customers have no usable row and are not classified" in lines  # c
    assert "  1 customers have no usable row and are prospects (they are in the customer table)" in lines  # b


def test_rejects_rows_line_up_on_a_parquet_file_of_many_row_groups(tmp_path):
    # Regression: the rejects were two scans set side by side, which Polars did not keep in line
    # for a Parquet file of several row groups (rows with an id were reported as "customer_id is empty").
    n = 60_000
    df = pl.DataFrame({"customer_id": [None if i % 7 == 3 else i % 500 for i in range(n)],
                       "order_date": [D(2011, 1, 1)] * n, "amount": [1.0] * n})
    path = tmp_path / "tx.parquet"
    df.write_parquet(path, row_group_size=2_000)
    expected = [i + 1 for i in range(n) if i % 7 == 3]
    for _ in range(3):
        rejects = rejected_rows(read_transactions(path), None).collect()
        assert rejects["row"].to_list() == expected
        assert rejects["customer_id"].null_count() == len(expected)


def test_a_return_is_not_a_purchase():
    """Issue 10: recency, first and last order, tenure and the lifecycle come from purchases only."""
    rows = [
        ("buyer", "o1", D(2011, 1, 10), 30.0),
        ("buyer", "c1", D(2011, 3, 28), -6.0),    # a late return: the last activity, not the last order
        ("zero", "o2", D(2011, 1, 10), 12.0),
        ("zero", "o3", D(2011, 3, 29), 0.0),      # a zero-amount line is no purchase either
        ("early", "c2", D(2010, 12, 1), -5.0),    # returned before buying: the first order is the purchase
        ("early", "o4", D(2011, 3, 1), 9.0),
        ("returner", "c3", D(2011, 3, 30), -2.5),  # only returns: no purchase at all
        ("returner", "c4", D(2011, 3, 2), -1.0),
    ]
    table = pl.DataFrame({"customer_id": ["prospect"]})
    p = prepare(tx(rows), customers=table)
    assert p.as_of == D(2011, 3, 31)  # the day after the last line of any kind
    got = by_id(p.customers, "first_order", "last_order", "last_activity", "recency_days", "tenure_days",
                "frequency")
    assert got == {
        "buyer": (D(2011, 1, 10), D(2011, 1, 10), D(2011, 3, 28), 80, 80, 1),
        "zero": (D(2011, 1, 10), D(2011, 1, 10), D(2011, 3, 29), 80, 80, 1),
        "early": (D(2011, 3, 1), D(2011, 3, 1), D(2011, 3, 1), 30, 30, 1),
        "returner": (None, None, D(2011, 3, 30), None, None, 0),
        "prospect": (None, None, None, None, None, 0),
    }
    labels = engine.classify(tx(rows), customers=table, classifiers=["adc"],
                             registry=get_registry(allow=["adc"], strict=True))
    assert by_id(labels.with_columns(pl.col("adc").cast(pl.String)), "adc") == {
        "buyer": ("active",), "zero": ("active",), "early": ("new",), "returner": ("no-purchase",),
        "prospect": ("prospect",)}
    # nobody counted twice, nobody lost: 4 customers with transactions, one prospect
    assert (p.report.customers, p.report.customers_with_transactions, p.report.prospects) == (5, 4, 1)


def test_a_load_report_starts_from_nothing():
    """What a report holds before the scan counts anything, and what summary.json's ``input`` shows of it."""
    from engine.features import LoadReport

    report = LoadReport(source="s")
    assert report.to_dict() == {
        "source": "s", "rows": 0, "rows_used": 0, "rejected": {}, "customers_with_transactions": 0,
        "customers_without_usable_rows": 0, "unusable_in_table": 0, "customers_from_table": 0, "prospects": 0,
        "customers": 0, "net_revenue": 0.0, "notes": [], "warnings": [],
        # how orders were counted (issue 14): hashing unless a pass proves the boundary count
        "orders_counted": "hashing", "orders_check": "", "orders_recounted": 0}
    assert (report.scanned_units, report.table_only) == (0, 0)  # kept for the reconciliation, not shown


def test_as_of_warns_from_366_days_after_the_last_purchase():
    from engine.registry import get_registry

    registry = get_registry(allow=["abc"], strict=True)
    day = dt.date(2024, 1, 1)
    tx = pl.DataFrame({"customer_id": ["a", "a"], "order_date": [day - dt.timedelta(days=9), day],
                       "amount": [5.0, 3.0]})
    assert engine.prepare(tx, as_of=day + dt.timedelta(days=365), registry=registry).report.warnings == []
    warnings = engine.prepare(tx, as_of=day + dt.timedelta(days=366), registry=registry).report.warnings
    assert len(warnings) == 1 and "is 366 days after the last usable transaction (2024-01-01)" in warnings[0]


def test_the_smallest_amount_is_a_purchase_and_every_reason_is_named():
    """0.0001 (one unit of the exact sums) is a purchase; with no usable row at all, the error names every reason."""
    from engine.registry import get_registry

    registry = get_registry(allow=["abc"], strict=True)
    day = dt.date(2024, 1, 1)
    tiny = pl.DataFrame({"customer_id": ["a"], "order_date": [day], "amount": [0.0001]})
    got = engine.prepare(tiny, registry=registry).customers
    assert got.select("frequency", "monetary", "first_order", "last_order", "recency_days").row(0) == (
        1, 0.0001, day, day, 1)
    unusable = pl.DataFrame({"customer_id": [None, "a"], "order_date": [day, day], "amount": [5.0, None]})
    with pytest.raises(DataError) as info:
        engine.prepare(unusable, registry=registry)
    assert ("no usable transactions (not used: 1 rows where customer_id is empty; not used: 1 rows where amount is "
            "empty; 1 customers have no usable row and are not classified)") in str(info.value)


def test_a_last_date_of_9999_12_31_needs_an_explicit_as_of():
    with pytest.raises(DataError, match="the last date is 9999-12-31, the largest date there is"):
        prepare(tx([("a", "o1", D(9999, 12, 31), 1.0)]))
    assert prepare(tx([("a", "o1", D(9999, 12, 30), 1.0)])).as_of == D(9999, 12, 31)
