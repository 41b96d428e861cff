"""engine.features: the ordered-input path (orders counted from boundaries, proven in the pass) against hashing.

Every input is computed three ways: ``orders="boundaries"`` (try the boundary count, prove it, fall back),
``orders="auto"`` (the same after a look at the first rows) and ``orders="hashing"``. The customer tables must be
equal, and the path each run reports must be the one an independent check in plain Python says is exact:
boundaries exactly when the (order id, customer id) pairs of the counted lines (usable purchase lines with an
order id, in the input's order) never decrease.
"""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.errors import DataError
from engine.data import read_transactions
from engine.features import compute_features

KEY = settings(settings.get_profile("key"))
START = dt.date(2011, 1, 1)
MAPPING = {c: c for c in ("customer_id", "order_id", "order_date", "amount")}


def frame(rows, id_type=pl.String) -> pl.DataFrame:
    """rows: (customer, order, day offset or None, amount or None)."""
    return pl.DataFrame(
        {"customer_id": [r[0] for r in rows], "order_id": [r[1] for r in rows],
         "order_date": [None if r[2] is None else START + dt.timedelta(days=r[2]) for r in rows],
         "amount": [r[3] for r in rows]},
        schema={"customer_id": id_type, "order_id": id_type, "order_date": pl.Date, "amount": pl.Float64},
    )


def counted(rows, as_of=None):
    """(order id, customer) of the counted lines: usable purchase lines with an order id, in the input's order."""
    return [(r[1], r[0]) for r in rows
            if r[0] is not None and r[2] is not None and r[3] is not None and r[1] is not None
            and round(r[3] * 10_000) > 0 and (as_of is None or START + dt.timedelta(days=r[2]) < as_of)]


def in_doubt(rows, as_of=None) -> tuple[set, int, int]:
    """By the definition, in plain Python: a counted line continues a run when its order id is the largest of the
    earlier counted lines' and its customer the previous counted line's; every other one starts a run, in doubt
    when its order id is not larger than every earlier counted line's. Returns the customers with a run start in
    doubt, and how many run starts there are and how many are in doubt."""
    doubtful, starts, doubts, prev_customer, largest = set(), 0, 0, None, None
    for k, c in counted(rows, as_of):
        if not (largest is not None and k == largest and c == prev_customer):
            starts += 1
            if largest is not None and k <= largest:
                doubtful.add(c)
                doubts += 1
        prev_customer, largest = c, k if largest is None else max(largest, k)
    return doubtful, starts, doubts


def in_doubt_by_pairs(rows, as_of=None) -> set:
    """The customers in doubt by the earlier rule (a run starts where the (order id, customer) pair differs from
    the previous counted line's), which must be the same customers."""
    doubtful, prev, largest = set(), None, None
    for k, c in counted(rows, as_of):
        if (k, c) != prev and largest is not None and k <= largest:
            doubtful.add(c)
        prev, largest = (k, c), k if largest is None else max(largest, k)
    return doubtful


def orders_by_hand(rows, as_of=None) -> dict:
    """frequency by its definition: distinct order ids of purchase lines, a sale without one is one order."""
    out: dict = {}
    for c, o, d, a in rows:
        if c is None or d is None or a is None or (as_of is not None and START + dt.timedelta(days=d) >= as_of):
            continue
        out.setdefault(c, set())
        if round(a * 10_000) > 0:
            out[c].add(o)
    return {c: len(keys) for c, keys in out.items()}


def three_ways(data, as_of=None):
    tx = read_transactions(data, MAPPING)
    results, errors = {}, {}
    for how in ("boundaries", "auto", "hashing"):
        try:
            results[how] = compute_features(tx, as_of=as_of, orders=how)
        except DataError as exc:  # no usable row: the same error whichever path
            errors[how] = str(exc)
    if errors:
        assert not results and len(set(errors.values())) == 1, errors
        return None
    hashed = results["hashing"].customers
    for how in ("boundaries", "auto"):
        assert results[how].customers.equals(hashed), how
        assert results[how].as_of == results["hashing"].as_of
    assert results["hashing"].report.orders_counted == "hashing"
    return results


def check(rows, as_of=None, id_type=pl.String):
    results = three_ways(frame(rows, id_type), as_of)
    if results is None:
        assert not orders_by_hand(rows, as_of)
        return None
    doubtful, starts, doubts = in_doubt(rows, as_of)
    assert doubtful == in_doubt_by_pairs(rows, as_of)
    tried = results["boundaries"].report
    assert tried.orders_counted == "boundaries"
    assert tried.orders_recounted == len(doubtful)
    auto = results["auto"].report  # small inputs: the first rows are all the rows
    assert auto.orders_counted == ("boundaries" if doubts <= 0.01 * starts else "hashing")
    got = dict(results["hashing"].customers.select("customer_id", "frequency").iter_rows())
    assert got == orders_by_hand(rows, as_of)
    return results


# ------------------------------------------------------------------ generated inputs
customers = st.sampled_from(["a", "b", "c", "d", "12346", "007", "7"])
order_ids = st.one_of(st.none(), st.sampled_from(["536365", "536366", "536367", "536380", "C536379", "C536381",
                                                  "A563185", "o1", "o2", "o10"]))
amounts = st.one_of(st.none(), st.sampled_from([0.0, 0.00001, -2.5, 1.0, 10.0, 3.33]))
days = st.one_of(st.none(), st.integers(0, 40))
lines = st.lists(st.tuples(st.one_of(st.none(), customers), order_ids, days, amounts), min_size=1, max_size=40)


def written_order_by_order(rows):
    """The rows sorted by order id and customer (stably; nulls first), as a shop writes its log."""
    return sorted(rows, key=lambda r: ((r[1] is not None, r[1] or ""), (r[0] is not None, r[0] or "")))


breakers = st.sampled_from(["none", "swap", "move-to-end", "reverse", "shared-id", "split"])


def broken(rows, how: str, i: int, j: int):
    rows = list(rows)
    n = len(rows)
    i, j = i % n, j % n
    if how == "swap":
        rows[i], rows[j] = rows[j], rows[i]
    elif how == "move-to-end":
        rows.append(rows.pop(i))
    elif how == "reverse":
        rows.reverse()
    elif how == "shared-id":  # another customer's line inside an order
        c, o, d, a = rows[i]
        rows.insert(j, ("zz" if c != "zz" else "a", o, d, 5.0))
    elif how == "split":  # an order's line again after another order's
        c, o, d, a = rows[i]
        rows.append(("b", "536300", 1, 1.0))
        rows.append((c, o, d, 2.0))
    return rows


@KEY
@example(rows=[("a", "o1", 1, 1.0), ("b", "o2", 1, 1.0), ("a", "o1", 2, 1.0)], as_of=None)  # an order split
@example(rows=[("a", "o1", 1, 1.0), ("b", "o1", 1, 1.0), ("a", "o1", 1, 1.0)], as_of=None)  # a shared id
@example(rows=[("a", "536365", 1, 1.0), ("a", "C536366", 1, -1.0), ("a", "536367", 2, 1.0)], as_of=None)
@example(rows=[("a", "536365", 1, 1.0), ("a", "C536366", 1, 1.0), ("a", "536367", 2, 1.0)], as_of=None)
@example(rows=[("a", None, 1, 1.0), ("a", "o1", 1, 1.0), ("a", None, 2, 1.0)], as_of=None)
@given(rows=lines, as_of=st.one_of(st.none(), st.integers(1, 41).map(lambda d: START + dt.timedelta(days=d))))
def test_any_input_same_customers_and_right_path(rows, as_of):
    check(rows, as_of)


@KEY
@given(rows=lines, how=breakers, i=st.integers(0, 100), j=st.integers(0, 100))
def test_inputs_written_order_by_order_and_broken(rows, how, i, j):
    """Mostly ordered inputs (where the boundary path runs), then broken in one way or another."""
    check(broken(written_order_by_order(rows), how, i, j))


@KEY
@given(orders=st.lists(st.tuples(st.integers(0, 5), st.lists(st.sampled_from([1.0, -1.0, 0.0, None]), min_size=1,
                                                                  max_size=4)), min_size=1, max_size=30),
       how=breakers, i=st.integers(0, 100), j=st.integers(0, 100))
def test_integer_ids(orders, how, i, j):
    """Integer order ids numbered as they come (each order's lines together), then broken."""
    rows = [(str(c), str(100 + n), n % 7, a) for n, (c, amounts_) in enumerate(orders) for a in amounts_]
    rows = broken(rows, how, i, j)
    as_int = [(None if c is None else int(c.replace("zz", "99").replace("a", "98").replace("b", "97")),
               None if o is None else int(o), d, a) for c, o, d, a in rows]
    results = three_ways(frame(as_int, pl.Int64))
    assert results is not None or not orders_by_hand(as_int)
    assert results is None or results["boundaries"].report.orders_recounted == len(in_doubt(as_int)[0])
    assert in_doubt(as_int)[0] == in_doubt_by_pairs(as_int)


# ------------------------------------------------------------------ each way to break it, by name
def test_each_named_case():
    ordered = [("a", "536365", 0, 2.0), ("a", "536365", 0, 3.0), ("b", "536366", 1, 1.0), ("a", "536367", 2, 4.0)]
    assert check(ordered)["auto"].report.orders_counted == "boundaries"
    in_doubt_ = {
        "an order split in two places": (ordered + [("a", "536365", 3, 1.0)], {"a"}),
        "one order id shared by two customers": ([("a", "o1", 0, 1.0), ("b", "o1", 0, 1.0), ("a", "o1", 0, 1.0)],
                                                 {"a", "b"}),
        "an order shared, customer after customer": ([("a", "o1", 0, 1.0), ("b", "o1", 0, 1.0)], {"b"}),
        "order ids decreasing": (list(reversed(ordered)), {"a", "b"}),
        "an order id again after a later one": (ordered + [("b", "536366", 3, 1.0)], {"b"}),
        "a number after a prefixed id ('C' sorts after digits)": (
            [("a", "C536379", 0, 1.0), ("b", "536380", 0, 1.0)], {"b"}),
    }
    for name, (rows, who) in in_doubt_.items():
        assert in_doubt(rows)[0] == who, name
        results = check(rows)
        assert results["boundaries"].report.orders_recounted == len(who), name
        assert "counted again by hashing" in results["boundaries"].report.orders_check, name
    # What puts nobody in doubt: cancellations ('C' prefix, negative amounts) between orders, a line without an
    # order id, a zero amount, unusable rows.
    fine = {
        "UCI cancellations": [("a", "536365", 0, 2.0), ("a", "C536379", 0, -2.0), ("b", "536380", 1, 1.0)],
        "no order id": [("a", "o1", 0, 1.0), ("a", None, 0, 1.0), ("b", "o2", 0, 1.0), ("a", None, 1, 1.0)],
        "zero amounts and unusable rows": [("a", "o2", 0, 0.0), ("a", "o1", 0, 1.0), (None, "o0", 0, 1.0),
                                           ("b", "o0", None, 1.0), ("b", "o2", 0, None), ("b", "o2", 0, 1.0)],
    }
    for name, rows in fine.items():
        report = check(rows)["auto"].report
        assert (report.orders_counted, report.orders_recounted) == ("boundaries", 0), name


def test_a_line_after_as_of_does_not_count():
    """Rows on or after as_of are not used, so they neither put anyone in doubt nor count."""
    rows = [("a", "o2", 0, 1.0), ("a", "o1", 30, 1.0), ("b", "o3", 1, 1.0)]
    assert check(rows, as_of=START + dt.timedelta(days=10))["boundaries"].report.orders_recounted == 0
    assert check(rows)["boundaries"].report.orders_recounted == 1


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_across_chunks_and_row_groups(tmp_path, where):
    """The check sees every line whatever the chunks: one line out of place at the start, at a row group's edge
    in the middle or at the end of a file in many small row groups, read in small streaming chunks."""
    n = 30_000
    ordered = pl.DataFrame({"customer_id": pl.int_range(0, n, eager=True) // 3 % 997,
                            "order_id": pl.int_range(0, n, eager=True) // 3,
                            "order_date": pl.repeat(START, n, eager=True),
                            "amount": pl.repeat(1.0, n, eager=True)})
    at = {"first": 0, "middle": 4096 * 3, "last": n - 1}[where]
    # The line at ``at`` gets an earlier order's id (the first line: the largest id), so an order is split.
    bad = ordered.with_columns(pl.when(pl.int_range(0, n) == at).then(pl.col("order_id") - 2 if at else n)
                               .otherwise(pl.col("order_id")).alias("order_id"))
    for data, recounted in ((ordered, 0), (bad, 997 if where == "first" else 1)):
        path = tmp_path / f"{recounted}.parquet"
        data.write_parquet(path, row_group_size=4096)
        with pl.Config(streaming_chunk_size=1000):
            results = three_ways(path)
        assert results["boundaries"].report.orders_recounted == recounted
        # auto tries the boundary pass unless the first rows are out of order (then these integer ids are counted
        # as positions, decision 19), and it checks all the rows
        assert results["auto"].report.orders_counted == ("positions" if where == "first" and recounted else
                                                         "boundaries")
        if results["auto"].report.orders_counted == "boundaries":
            assert results["auto"].report.orders_recounted == recounted
        many_chunks = pl.concat([data.slice(i, 777) for i in range(0, n, 777)], rechunk=False)
        assert three_ways(many_chunks)["boundaries"].report.orders_recounted == recounted


def test_the_first_rows_decide_what_auto_tries_first():
    """auto hashes when more than 1% of the run starts in the first rows are in doubt."""
    r = check([("b", "o2", 0, 1.0), ("a", "o1", 0, 1.0)])["auto"].report
    assert r.orders_counted == "hashing" and "first" in r.orders_check


def test_categorical_ids():
    rows = [("a", "o1", 0, 1.0), ("a", "o1", 0, 1.0), ("b", "o2", 0, 1.0), ("a", "o3", 1, 1.0)]
    data = frame(rows).with_columns(pl.col("customer_id", "order_id").cast(pl.Categorical))
    assert three_ways(data)["auto"].report.orders_recounted == 0
    again = frame(rows + [("a", "o1", 2, 1.0)]).with_columns(pl.col("customer_id", "order_id").cast(pl.Categorical))
    assert three_ways(again)["boundaries"].report.orders_recounted == 1


def test_summary_and_terminal_say_which_path(tmp_path, run_cli):
    """summary.json's input.orders_counted and the line the CLI prints."""
    rows = [("a", "o1", 0, 1.0), ("b", "o2", 0, 1.0), ("a", "o3", 1, 1.0)]
    for data, want in ((rows, "boundaries"), (list(reversed(rows)), "hashing")):  # reversed: 2 of 3 in doubt
        src = tmp_path / f"{want}.csv"
        frame(data).write_csv(src)
        code, _, err = run_cli("classify", src, "-o", tmp_path / f"{want}.parquet")
        assert code == 0, err
        assert f"orders counted by {'order boundaries' if want == 'boundaries' else 'hashing'}" in err
        pb = tmp_path / f"{want}.yaml"
        pb.write_text(f"name: t\ndata:\n  transactions: {src.name}\nclassifiers:\n  abc: {{}}\nrules:\n"
                      f"  - {{name: r, when: abc = 'A', action: call, channel: phone, owner: me}}\n"
                      f"fallback: {{action: none, channel: none, owner: me}}\n")
        code, _, err = run_cli("run", pb, "--output-dir", tmp_path / f"out-{want}")
        assert code == 0, err
        summary = json.loads((tmp_path / f"out-{want}" / "summary.json").read_text())
        assert summary["input"]["orders_counted"] == want
        assert summary["input"]["orders_check"]


def test_the_flags_compute_each_look_back_once():
    """The boundary flags are built in steps, so the plan runs the forward fill (the previous counted line's
    customer; the previous counted key is not needed) and the running maximum once (written as one expression,
    Polars repeated the forward fills for the start and again for the doubt, which reads the start), and the helper
    columns do not reach the rows."""
    from engine.features import _order_flags

    rows = read_transactions(frame([("a", "1", 0, 5.0), ("a", "1", 0, 2.0), ("b", "2", 1, 3.0)]), MAPPING).frame
    flagged = _order_flags(rows, rows.collect_schema())
    plan = flagged.explain(optimized=False)
    assert plan.count("fill_null_with_strategy") == 1
    assert plan.count("cum_max") == 1
    assert flagged.collect_schema().names() == [*rows.collect_schema().names(), "_run"]
    assert flagged.collect()["_run"].to_list() == [1, 0, 1]



@pytest.mark.parametrize("id_type, keys", [
    (pl.Boolean, [False, True]),
    (pl.Categorical, ["c0", "o1", "o2"]),  # codes in the order of first appearance: 0, 1, 2
    (pl.Int64, [-3, 5, 7]),
    (pl.UInt8, [0, 1, 2]),
    (pl.Float64, [-7.0, -1.5, 3.0]),
    (pl.String, ["C1", "o1", "o2"]),
    (pl.Date, [START, START + dt.timedelta(days=1), START + dt.timedelta(days=2)]),
])
def test_a_line_before_the_first_purchase_puts_no_order_in_doubt(id_type, keys):
    """Order ids that grow, of any type with an order, and a return (no purchase, not counted) before the first
    purchase line: input written order by order, no customer counted again. The value standing for "no counted
    line before" must stay below the ids of the purchases that follow (here the type's ids above its lowest)."""
    rows = list(zip(["a", "a", "b"], keys, [-1.0, 5.0, 3.0]))
    category = id_type is pl.Categorical
    data = pl.DataFrame({"customer_id": [r[0] for r in rows], "order_id": [r[1] for r in rows],
                         "order_date": [START] * len(rows), "amount": [r[2] for r in rows]},
                        schema={"customer_id": pl.String, "order_id": pl.String if category else id_type,
                                "order_date": pl.Date, "amount": pl.Float64})
    if category:
        data = data.with_columns(pl.col("order_id").cast(pl.Categorical))
        assert data["order_id"].to_physical().to_list() == [0, 1, 2]
    results = three_ways(data)
    report = results["boundaries"].report
    assert (report.orders_counted, report.orders_recounted) == ("boundaries", 0)
    assert report.orders_check == "input written order by order (checked on every purchase line)"
    assert dict(results["hashing"].customers.select("customer_id", "frequency").iter_rows()) == (
        {"a": 1} if len(rows) == 2 else {"a": 1, "b": 1})


def test_auto_weighs_the_run_starts_in_doubt_against_the_run_starts_not_the_lines():
    """One run start in doubt out of two is 50% of the starts, however many lines the orders have: auto hashes.
    (The doubtful start's order id is the running maximum, so its 200 further lines continue its run.)"""
    rows = [("a", "o1", 0, 1.0), ("b", "o1", 0, 1.0)] + [("b", "o1", 0, 1.0)] * 200
    assert in_doubt(rows)[1:] == (2, 1)
    r = check(rows)["auto"].report
    assert r.orders_counted == "hashing" and "first" in r.orders_check


def test_a_recounted_customer_keeps_an_order_of_the_smallest_amount():
    """A customer in doubt is counted again by hashing; an order whose only line is 0.0001 (one unit) is a purchase
    there too."""
    results = check([("a", "o2", 0, 1.0), ("a", "o1", 0, 0.0001)])
    assert results["boundaries"].report.orders_recounted == 1
    assert dict(results["boundaries"].customers.select("customer_id", "frequency").iter_rows()) == {"a": 2}


def test_auto_tries_boundaries_with_one_run_start_in_doubt_in_a_hundred():
    """At most 1% of the first rows' run starts in doubt: auto tries the boundary pass (which counts the customer in
    doubt again by hashing)."""
    rows = [(f"c{i:03d}", f"o{i:03d}", 0, 1.0) for i in range(1, 101)] + [("zz", "o050", 0, 1.0)]
    assert in_doubt(rows)[1:] == (101, 1)
    r = check(rows)["auto"].report
    assert (r.orders_counted, r.orders_recounted) == ("boundaries", 1)


def test_a_recount_reads_the_usable_purchase_lines_only():
    """The customer in doubt is counted again from the purchase lines before as_of: not its return, not its order
    dated as_of; on the hashing path a zero-amount line is no order either, a sale without an order id is one."""
    as_of = START + dt.timedelta(days=5)
    rows = [("a", "o2", 0, 1.0), ("a", "o1", 1, 1.0), ("a", "c9", 2, -1.0), ("a", "o3", 5, 1.0), ("a", "o4", 3, 0.0),
            ("b", "o5", 0, 1.0), ("b", "o6", 1, 0.0),  # b: a zero-amount line and no return
            ("c", "o7", 0, 1.0), ("c", None, 1, 0.0001), ("c", "c8", 2, -1.0)]  # c: a sale of one unit without an id
    results = check(rows, as_of)
    assert results["boundaries"].report.orders_recounted == 1
    for how in ("boundaries", "hashing"):
        assert dict(results[how].customers.select("customer_id", "frequency").iter_rows()) == {"a": 2, "b": 1, "c": 2}, how


def test_auto_looks_at_the_usable_first_rows_only():
    """A line dated as_of is not used: it cannot put the first rows in doubt, so auto still tries boundaries."""
    rows = [("b", "o2", 0, 1.0), ("a", "o1", 5, 1.0)]
    assert in_doubt(rows, START + dt.timedelta(days=5))[1:] == (1, 0)
    assert check(rows, START + dt.timedelta(days=5))["auto"].report.orders_counted == "boundaries"
