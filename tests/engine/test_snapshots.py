"""Snapshots from one scan: every snapshot's table equals a single run with that as_of (engine/snapshots.py)."""

from __future__ import annotations

import datetime as dt
import types

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import engine
from engine import Classifier, Feature, Output, hookimpl
from engine.errors import DataError, ParamError
from engine.registry import get_registry
from engine.sample import SAMPLE_MAPPING
from engine.snapshots import parse_step, run_snapshots, snapshot_dates


D = dt.date
UCI_MAPPING = {"customer_id": "CustomerID", "order_id": "InvoiceNo", "order_date": "InvoiceDate",
               "quantity": "Quantity", "unit_price": "UnitPrice"}
QUARTERS = [D(2011, 3, 1), D(2011, 6, 1), D(2011, 9, 1), D(2011, 12, 1)]


def customers_csv() -> str:
    return str(engine.sample_path().with_name("customers_sample.csv"))


def test_every_snapshot_equals_a_single_run_on_the_sample(registry):
    snaps = run_snapshots(engine.sample_path(), every="quarter", periods=4, end="2011-12-01",
                          mapping=SAMPLE_MAPPING, customers=customers_csv(), registry=registry)
    assert snaps.as_of == QUARTERS
    for as_of, table in zip(snaps.as_of, snaps.customers):
        single = engine.classify(engine.sample_path(), mapping=SAMPLE_MAPPING, customers=customers_csv(),
                                 as_of=as_of, registry=registry)
        assert_frame_equal(table, single)  # features, prospects and every label column, exactly


def test_every_snapshot_equals_a_single_run_on_uci(uci_path, registry):
    dates = ["2011-01-15", "2011-04-01", "2011-08-20", "2011-12-10"]  # any order, any spacing
    snaps = run_snapshots(uci_path, as_of=reversed(dates), mapping=UCI_MAPPING, registry=registry)
    assert [str(d) for d in snaps.as_of] == dates
    for as_of, table in zip(snaps.as_of, snaps.customers):
        single = engine.classify(uci_path, mapping=UCI_MAPPING, as_of=as_of, registry=registry)
        assert_frame_equal(table, single)
    assert snaps.customers[-1].height == 4372


def plugin_module():
    """A third-party plugin: an aggregated, a table and a derived feature, and a classifier reading them."""
    mod = types.ModuleType("tierbook_test_snapshot_plugin")

    def per_day(rows: pl.LazyFrame) -> pl.LazyFrame:
        daily = rows.group_by("customer_id", "order_date").agg(pl.col("amount").sum().alias("day_total"))
        return daily.group_by("customer_id").agg(pl.col("day_total").max().alias("best_day"))

    @hookimpl
    def register_features(register):
        register(Feature("biggest_line", "largest line amount", agg=pl.col("amount").max()))
        register(Feature("best_day", "largest daily total", table=per_day))
        register(Feature("double_value", "twice the net revenue", derive=pl.col("monetary") * 2))

    @hookimpl
    def register_classifiers(register):
        register(Classifier(
            name="metal", description="by the best day", params=(), requires=("best_day", "biggest_line"),
            outputs=(Output("metal", "tier", labels=("gold", "silver", "bronze")),),
            expressions=lambda p, ctx: {"metal": pl.when(pl.col("best_day") > 1000).then(pl.lit("gold"))
                                        .when(pl.col("biggest_line") > 100).then(pl.lit("silver"))
                                        .otherwise(pl.lit("bronze"))}))

    mod.register_features = register_features
    mod.register_classifiers = register_classifiers
    return mod


def test_plugin_features_and_classifiers_stay_exact():
    registry = get_registry(allow=["abc"], modules=[plugin_module()], strict=True)
    snaps = run_snapshots(engine.sample_path(), as_of=QUARTERS, mapping=SAMPLE_MAPPING, registry=registry,
                          classifiers=["abc", "metal"])
    for as_of, table in zip(snaps.as_of, snaps.customers):
        single = engine.classify(engine.sample_path(), mapping=SAMPLE_MAPPING, as_of=as_of, registry=registry,
                                 classifiers=["abc", "metal"])
        assert {"biggest_line", "best_day", "double_value", "metal"} <= set(table.columns)
        assert_frame_equal(table, single)


def test_a_window_classifies_on_the_lines_of_the_window_only(registry, tmp_path):
    snaps = run_snapshots(engine.sample_path(), as_of=QUARTERS[2:], windows={"abc": "6 months"},
                          mapping=SAMPLE_MAPPING, registry=registry, classifiers=["abc", "adc"])
    raw = pl.read_csv(engine.sample_path(), infer_schema_length=0)
    for as_of, table in zip(snaps.as_of, snaps.customers):
        start = parse_step("6 months", "window").back(as_of)
        assert start == D(as_of.year - (as_of.month <= 6), (as_of.month - 7) % 12 + 1, 1)
        # the same as one run on the window's lines, with every customer of the snapshot (idle ones as prospects)
        ids = table.select("customer_id")
        ids.write_csv(tmp_path / "ids.csv")
        kept = raw.filter(pl.col("InvoiceDate").str.slice(0, 10) >= str(start))
        kept.write_csv(tmp_path / "window.csv")
        single = engine.classify(tmp_path / "window.csv", mapping=SAMPLE_MAPPING, customers=tmp_path / "ids.csv",
                                 as_of=as_of, registry=registry, classifiers=["abc"])
        joined = ids.join(single.select("customer_id", "abc"), on="customer_id", how="left")
        assert table["abc"].to_list() == joined["abc"].to_list()
        # the other classifier reads all history, as a single run does
        full = engine.classify(engine.sample_path(), mapping=SAMPLE_MAPPING, as_of=as_of, registry=registry,
                               classifiers=["abc", "adc"])
        assert table["adc"].to_list() == full["adc"].to_list()
        # the window changes something, else this test would prove nothing
        assert table["abc"].to_list() != full["abc"].to_list()


def test_snapshots_read_the_transactions_once(uci_path, count_scans, registry):
    """Every collect whose plan reads the file is counted, with the scans in its optimised plan: the pass is one
    collect with one scan. Before it, the look at the first rows that chooses how orders are counted; after it,
    the orders of the one customer whose lines the pass found out of place (invoice 568391 after 568392) are
    counted again, reading only that customer's purchase lines. By hashing, the pass alone."""
    reads = count_scans(uci_path)
    snaps = run_snapshots(uci_path, every="month", periods=8, end="2011-12-01", mapping=UCI_MAPPING,
                          registry=registry)
    assert reads == [1, 1, 1]
    assert len(snaps.customers) == 8
    assert snaps.report.orders_counted == "boundaries" and snaps.report.orders_recounted == 1
    reads.clear()
    snaps = run_snapshots(uci_path, every="month", periods=8, end="2011-12-01", mapping=UCI_MAPPING,
                          registry=registry, windows={"abc": "3 months"})
    assert reads == [1]
    assert snaps.report.orders_counted == "hashing"


def test_snapshot_dates_step_back_by_calendar():
    assert snapshot_dates(parse_step("month", "every"), 3, D(2011, 3, 31)) == [D(2011, 1, 31), D(2011, 2, 28),
                                                                               D(2011, 3, 31)]
    assert snapshot_dates(parse_step("2 weeks", "every"), 2, D(2011, 3, 15)) == [D(2011, 3, 1), D(2011, 3, 15)]
    assert parse_step("1 year", "every").back(D(2012, 2, 29)) == D(2011, 2, 28)


@pytest.mark.parametrize("kwargs, message", [
    ({"as_of": ["2010-11-01", "2011-06-01"]}, "as_of: 2010-11-01 is outside the data's date range"),
    ({"as_of": ["2011-06-01", "2011-12-10", "2012-06-01"]}, "as_of: 2012-06-01 is outside the data's date range"),
    ({"every": "quarter", "periods": 2, "end": "2011-09-01", "windows": {"abc": "12 months"}},
     "windows abc: 12 months is longer than the history"),
    ({"as_of": ["2011-06-01", "2011-06-01"]}, "as_of: 2011-06-01 is given twice"),
    ({"every": "fortnight", "periods": 2}, "every: 'fortnight' is not a period"),
    ({"every": "month", "periods": 0}, "periods: 0 must be a whole number"),
    ({"every": "month", "periods": 2, "windows": {"rfm": "3 months"}}, "windows: 'rfm' is not a selected classifier"),
])
def test_bad_snapshots_name_the_key_and_value(registry, kwargs, message):
    with pytest.raises((DataError, ParamError)) as info:
        run_snapshots(engine.sample_path(), mapping=SAMPLE_MAPPING, registry=registry, classifiers=["abc", "adc"],
                      **kwargs)
    assert message in str(info.value)


def test_a_period_without_a_buyer_is_refused(registry, tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id,order_id,order_date,amount\n"
                    "a,o1,2024-01-05,10\nb,o2,2024-01-06,5\n"
                    "a,o3,2024-02-10,-4\n"          # a return only in February: not a buyer
                    "b,o4,2024-03-10,7\nc,o5,2024-03-31,1\n")
    with pytest.raises(DataError) as info:
        run_snapshots(path, as_of=["2024-02-01", "2024-03-01", "2024-04-01"], registry=registry)
    assert "as_of: 2024-03-01: the period from 2024-02-01 to 2024-03-01 has no customers" in str(info.value)


def test_slim_snapshots_keep_what_migration_and_kpis_read(registry):
    kwargs = dict(as_of=QUARTERS, mapping=SAMPLE_MAPPING, registry=registry)
    whole = run_snapshots(engine.sample_path(), **kwargs)
    slim = run_snapshots(engine.sample_path(), keep="slim", **kwargs)
    assert slim.customers[0].columns == ["customer_id", "monetary", "first_order", "abc", "adc", "rfm_segment",
                                         "value_tier"]
    assert_frame_equal(slim.customers[-2], whole.customers[-2])
    assert_frame_equal(slim.customers[-1], whole.customers[-1])
    for name in ("migration", "flows", "kpis", "cohorts", "values"):
        assert_frame_equal(getattr(slim, name), getattr(whole, name))


def test_tables_derived_in_the_background_equal_the_ones_derived_at_once(registry):
    """run_snapshots counts migration, KPIs, cohorts and values on two threads of their own as the snapshots
    are classified (each table paired with the one before as it comes); the functions of engine.migration and
    engine.kpi give the same figures from the classified tables at once."""
    from engine.kpi import cohort_table, kpi_table, value_by_class
    from engine.migration import flows_table, label_outputs, migration_table
    from engine.snapshots import derive_tables, snapshot_summary

    snaps = run_snapshots(engine.sample_path(), as_of=QUARTERS, mapping=SAMPLE_MAPPING, registry=registry)
    assert snaps.derived is not None
    tables, outputs, previous = snaps.customers, label_outputs(snaps.selections), snaps.spec.previous
    assert_frame_equal(snaps.migration, migration_table(tables, QUARTERS, outputs))
    assert_frame_equal(snaps.flows, flows_table(tables, QUARTERS, outputs))
    assert_frame_equal(snaps.kpis, kpi_table(snaps.activity, tables, QUARTERS, previous))
    assert_frame_equal(snaps.cohorts, cohort_table(snaps.activity, tables[-1], QUARTERS, previous))
    assert_frame_equal(snaps.values, value_by_class(tables, QUARTERS, outputs))
    summary = snapshot_summary(snaps)["snapshots"]["tables"]
    assert [t["customers"] for t in summary] == [t.height for t in tables]
    assert [t["revenue"] for t in summary] == [t["monetary"].sum() for t in tables]
    pairs = snaps.migration.select("from_as_of", "to_as_of").unique().sort("from_as_of").rows()
    assert pairs == list(zip(QUARTERS, QUARTERS[1:]))
    # derive_tables, the same without threads
    feats = types.SimpleNamespace(as_of=snaps.as_of, activity=snaps.activity, spec=snaps.spec,
                                  table=lambda i: types.SimpleNamespace(customers=tables[i]))
    at_once = derive_tables(feats, tables, snaps.selections)
    for name in ("migration", "flows", "kpis", "cohorts", "values"):
        assert_frame_equal(getattr(snaps, name), at_once[name])
    assert at_once["tables"] == summary


def test_a_failure_while_deriving_in_the_background_is_raised_when_read(registry, monkeypatch):
    """An error on a background thread is not lost: reading the table it was counting raises it."""
    import engine.snapshots as snapshots

    def broken(*args, **kwargs):
        raise RuntimeError("values broke")

    monkeypatch.setattr(snapshots, "values_from_combos", broken)
    snaps = run_snapshots(engine.sample_path(), as_of=QUARTERS, mapping=SAMPLE_MAPPING, registry=registry)
    with pytest.raises(RuntimeError, match="values broke"):
        _ = snaps.values
    with pytest.raises(RuntimeError, match="values broke"):
        _ = snaps.kpis  # one result for all of them: none is written without the others


@pytest.mark.parametrize("pack", [True, False])
def test_each_snapshots_summary_and_values_equal_their_own_functions(pack, monkeypatch):
    """A run with snapshots reads each snapshot's class summary and values by class from one grouping of its
    customers by every label at once (their ranks packed into one code, or, with too many combinations to
    pack, by the ranks themselves): the same as engine.summarize and engine.kpi.values_of on the table, with
    prospects (no RFM segment: a '(none)' row) and a third-party classifier's labels."""
    import engine.migration as migration
    from engine.kpi import value_by_class
    from engine.migration import label_outputs
    from engine.run import summarize
    from engine.snapshots import snapshot_summary

    if not pack:
        monkeypatch.setattr(migration, "_PACK_LIMIT", 0)
    registry = get_registry(allow=["abc", "adc", "rfm"], modules=[plugin_module()], strict=True)
    snaps = run_snapshots(engine.sample_path(), as_of=QUARTERS, mapping=SAMPLE_MAPPING, customers=customers_csv(),
                          registry=registry, classifiers=["abc", "adc", "rfm", "metal"])
    tables = snapshot_summary(snaps)["snapshots"]["tables"]
    nones = 0
    for entry, table in zip(tables, snaps.customers):
        expected = summarize(table, snaps.selections).to_dicts()
        assert entry["classes"] == expected
        nones += sum(row["label"] == "(none)" for row in expected)
    assert nones  # customers without a label were counted
    assert_frame_equal(snaps.values, value_by_class(snaps.customers, snaps.as_of, label_outputs(snaps.selections)))


@pytest.mark.parametrize("id_type", [pl.Int64, pl.String, pl.UInt64, pl.Int32])
def test_every_snapshot_equals_a_single_run_on_lines_in_no_order(id_type, registry):
    """Lines in random order (ids neither sorted nor numbered), negative and large integer ids (grouped by one
    packed key, or by two columns: UInt64), returns, sales without an order id, an order with lines in two
    periods, customers who first buy between two snapshots: every snapshot's table (flagged sorted by customer
    without a sort) equals a single run at its as_of, and is sorted by customer."""
    import random

    rng = random.Random(11)
    ids = {pl.Int64: [-5, 0, 3, 17, 40, 2**40, 99, 123456], pl.Int32: [-5, 0, 3, 17, 40, 2**20, 99, 123456],
           pl.UInt64: [0, 3, 17, 40, 2**63 + 5, 99, 7, 2**40], pl.String: ["b", "a10", "a9", "7", "z", "C1", "c", "aa"],
           }[id_type]
    start = dt.date(2023, 1, 1)
    rows = []
    for n in range(400):
        customer = rng.choice(ids[: 3 + n // 60])  # later customers first buy in later periods
        order = rng.choice([None, *range(n // 3, n // 3 + 4)])  # some orders have lines far apart in time
        rows.append((customer, order, start + dt.timedelta(days=rng.randrange(n // 2, n // 2 + 200)),
                     rng.choice([-3.5, 0.0, 1.25, 20.0, 99.99])))
    rng.shuffle(rows)
    frame = pl.DataFrame(rows, schema={"customer_id": id_type, "order_id": pl.Int64, "order_date": pl.Date,
                                       "amount": pl.Float64}, orient="row")
    mapping = {"customer_id": "customer_id", "order_id": "order_id", "order_date": "order_date", "amount": "amount"}
    dates = [D(2023, 5, 1), D(2023, 7, 1), D(2023, 9, 1), D(2023, 11, 1)]
    snaps = run_snapshots(frame, as_of=dates, mapping=mapping, registry=registry)
    for as_of, table in zip(snaps.as_of, snaps.customers):
        assert table["customer_id"].to_list() == sorted(table["customer_id"].to_list())
        single = engine.classify(frame, mapping=mapping, as_of=as_of, registry=registry)
        assert_frame_equal(table, single)
    assert snaps.customers[0].height < snaps.customers[-1].height  # customers came in between


def test_snapshots_with_text_table_ids_beside_integer_ids_equal_single_runs(registry):
    """Each snapshot's table is flagged sorted by customer after the buckets' filter (integer ids here, in
    their numeric order); a customer table whose text ids do not all convert ('007') is joined as text, where
    that order is another: every snapshot still equals a single run, attributes and prospects included."""
    tx = pl.DataFrame({"customer_id": [3, 10, 9, 3, 10, 12], "order_id": [1, 2, 3, 4, 5, 6],
                       "order_date": [D(2024, 1, 2), D(2024, 1, 3), D(2024, 2, 4), D(2024, 3, 5), D(2024, 3, 9),
                                      D(2024, 4, 2)],
                       "amount": [1.0, 2.0, 3.0, 4.0, -1.0, 5.0]})
    table = pl.DataFrame({"customer_id": ["z1", "9", "007", "10", "3"], "region": ["n", "x", "s", "e", "w"]})
    dates = [D(2024, 2, 1), D(2024, 3, 1), D(2024, 4, 1), D(2024, 5, 1)]
    snaps = run_snapshots(tx, as_of=dates, customers=table, registry=registry)
    for as_of, got in zip(snaps.as_of, snaps.customers):
        assert_frame_equal(got, engine.classify(tx, customers=table, as_of=as_of, registry=registry))
    assert dict(zip(snaps.customers[-1]["customer_id"], snaps.customers[-1]["region"]))["3"] == "w"


def test_the_last_table_is_built_when_first_needed(registry):
    """The scan builds no table: the last one is built when asked for (or for the report, or before the running
    totals are let go), kept, and its customers go into the report; ``firsts`` are its customers' first
    purchases, which the cohorts read, without it (prospects of a customer table have none)."""
    from engine.data import read_customers, read_transactions
    from engine.snapshots import compute_snapshot_features, snapshot_spec

    tx = read_transactions(engine.sample_path(), SAMPLE_MAPPING)
    spec = snapshot_spec(as_of=QUARTERS)
    table = read_customers(customers_csv(), None)
    feats = compute_snapshot_features(tx, spec, customers=table)
    assert feats.last is None and feats.scan_report.customers == 0  # nothing built yet
    last = feats.table(-1)
    assert feats.last is last and feats.table(3) is last  # built once, kept
    single = engine.features.compute_features(tx, as_of=QUARTERS[-1], customers=table)
    assert_frame_equal(last.customers, single.customers)
    for name in ("customers", "customers_with_transactions", "prospects", "customers_from_table", "net_revenue"):
        assert getattr(feats.report, name) == getattr(single.report, name), name
    bought = last.customers.filter(pl.col("frequency") > 0).height
    assert feats.firsts["customer_id"].flags["SORTED_ASC"]
    assert_frame_equal(feats.firsts, last.customers.select("customer_id", "first_order")
                       .filter(pl.col("customer_id").is_in(feats.firsts["customer_id"].implode())))
    assert feats.firsts.height == last.customers.height - feats.report.prospects >= bought > 0

    # the report alone builds it; letting the running totals go builds it first
    other = compute_snapshot_features(tx, spec)
    assert other.report.customers == other.last.customers.height
    third = compute_snapshot_features(tx, spec)
    third.built()
    assert third.last is not None and third.build is None
    assert_frame_equal(third.table(-1).customers, other.last.customers)
    with pytest.raises(RuntimeError, match="let go"):
        third.table(0)


def test_the_activity_counts_revenue_in_int64_unless_the_scan_summed_wide(registry):
    from engine.data import read_transactions
    from engine.snapshots import compute_snapshot_features, snapshot_spec

    tx = read_transactions(engine.sample_path(), SAMPLE_MAPPING)
    spec = snapshot_spec(as_of=QUARTERS)
    narrow = compute_snapshot_features(tx, spec)
    wide = compute_snapshot_features(tx, spec, wide=True)
    assert narrow.activity.schema["revenue_units"] == pl.Int64
    assert wide.activity.schema["revenue_units"] == pl.Int128
    assert narrow.activity.equals(wide.activity.cast({"revenue_units": pl.Int64}))


def test_slim_snapshots_let_go_of_the_activity_once_counted(registry):
    """With keep="slim" (a playbook run) the activity is not kept: the KPIs and cohorts, counted from it on a
    deriving thread, are the same as a run that keeps it; kpi_table needs the activity or its counts."""
    from engine.kpi import kpi_table

    kwargs = dict(as_of=QUARTERS, mapping=SAMPLE_MAPPING, registry=registry)
    whole = run_snapshots(engine.sample_path(), **kwargs)
    slim = run_snapshots(engine.sample_path(), keep="slim", **kwargs)
    assert whole.activity is not None and slim.activity is None
    assert_frame_equal(slim.kpis, whole.kpis)
    assert_frame_equal(slim.cohorts, whole.cohorts)
    with pytest.raises(ValueError, match="activity"):
        kpi_table(None, whole.customers, QUARTERS, whole.spec.previous)
