"""Migration between snapshots: matrices, flows per class, ``<label>_prev`` (engine/migration.py)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

import engine
from engine import Output
from engine.migration import flows_table, label_outputs, migration_table, with_previous
from engine.registry import get_registry
from engine.sample import SAMPLE_MAPPING
from engine.snapshots import run_snapshots

from test_snapshots import QUARTERS, plugin_module

D = dt.date
METAL = Output("metal", "tier", labels=("gold", "silver", "bronze"))
E = pl.Enum(["gold", "silver", "bronze"])


def table(rows):
    """(customer_id, metal or None, monetary) rows as a classified table."""
    return pl.DataFrame({"customer_id": [r[0] for r in rows], "metal": pl.Series([r[1] for r in rows], dtype=E),
                         "monetary": [r[2] for r in rows]})


BEFORE = table([(1, "gold", 100.0), (2, "silver", 50.0), (3, "bronze", 10.0), (4, "gold", 80.0), (5, None, 0.0),
                (6, "silver", 40.0)])
AFTER = table([(1, "gold", 120.0), (2, "gold", 90.0), (3, "silver", 30.0), (4, "bronze", 81.0), (5, "bronze", 5.0),
               (7, "silver", 20.0)])  # 6 is gone, 7 is new, 5 got a label
DATES = [D(2024, 1, 1), D(2024, 4, 1)]


def test_third_party_labels_define_up_and_down():
    flows = flows_table([BEFORE, AFTER], DATES, [("metals", METAL)])
    by = {r["label"]: r for r in flows.iter_rows(named=True)}
    assert (by["gold"]["stayed"], by["gold"]["moved_down"], by["gold"]["moved_up"]) == (1, 1, 0)
    assert (by["silver"]["moved_up"], by["silver"]["left"], by["silver"]["came_up"]) == (1, 1, 1)
    assert (by["bronze"]["moved_up"], by["bronze"]["came_down"], by["bronze"]["entered"]) == (1, 1, 1)
    assert by["gold"]["revenue_moved_down"] == 80.0  # customer 4, as of the earlier snapshot
    assert by["gold"]["period_revenue_moved_down"] == 1.0
    assert by["silver"]["entered"] == 1 and by["silver"]["net_flow"] == 0


def test_the_matrix_accounts_for_every_customer():
    m = migration_table([BEFORE, AFTER], DATES, [("metals", METAL)])
    assert m.height == 16  # (3 labels + entered) x (3 labels + left), zeros included
    cells = {(r["from"], r["to"]): r["customers"] for r in m.iter_rows(named=True)}
    assert cells[("gold", "bronze")] == 1 and cells[("silver", "left")] == 1 and cells[("entered", "silver")] == 1
    assert cells[("entered", "bronze")] == 1  # 5: no label before, one now
    assert m["customers"].sum() == 7  # the customers of both snapshots together
    assert m.filter(pl.col("from") == "gold")["row_share"].sum() == pytest.approx(1.0)
    assert m["revenue_from"].sum() == BEFORE["monetary"].sum()
    assert m["revenue_to"].sum() == AFTER["monetary"].sum()


def test_previous_label_and_change_columns():
    sel = [type("S", (), {"outputs": (METAL,), "classifier": type("C", (), {"name": "metals"})})()]
    out = with_previous(AFTER, BEFORE, sel)
    assert out["metal_prev"].dtype == E
    assert out.select("customer_id", pl.col("metal_change").cast(pl.String)).rows() == [
        (1, "same"), (2, "up"), (3, "up"), (4, "down"), (5, "entered"), (7, "entered")]


@pytest.mark.parametrize("classifiers", [["abc", "adc", "rfm"], ["abc", "metal"]])
def test_accounting_identities_on_real_snapshots(classifiers):
    registry = get_registry(allow=["abc", "adc", "rfm"], modules=[plugin_module()], strict=True)
    snaps = run_snapshots(engine.sample_path(), as_of=QUARTERS, mapping=SAMPLE_MAPPING, registry=registry,
                          classifiers=classifiers)
    outputs = label_outputs(snaps.selections)
    assert outputs and {o.column for _, o in outputs} >= {"abc"}
    for i in range(1, len(snaps.as_of)):
        before, after = snaps.customers[i - 1], snaps.customers[i]
        union = pl.concat([before["customer_id"], after["customer_id"]]).n_unique()
        for _, o in outputs:
            m = snaps.migration.filter(pl.col("column") == o.column, pl.col("to_as_of") == snaps.as_of[i])
            f = snaps.flows.filter(pl.col("column") == o.column, pl.col("to_as_of") == snaps.as_of[i])
            assert m["customers"].sum() == union
            for r in f.iter_rows(named=True):
                assert r["customers_from"] == r["stayed"] + r["moved_up"] + r["moved_down"] + r["left"]
                assert r["customers_to"] == r["stayed"] + r["came_down"] + r["came_up"] + r["entered"]
                assert r["net_flow"] == r["customers_to"] - r["customers_from"]
                assert r["customers_from"] == int((before[o.column].cast(pl.String) == r["label"]).sum())
                assert r["customers_to"] == int((after[o.column].cast(pl.String) == r["label"]).sum())
            # the ups of the classes are the downs seen from the other side
            assert f["moved_up"].sum() == f["came_up"].sum() and f["moved_down"].sum() == f["came_down"].sum()
            assert m["revenue_to"].sum() == pytest.approx(after["monetary"].sum())


def test_cells_from_one_packed_key_equal_one_group_by_per_column(monkeypatch):
    """Every label column's cells come from one grouping of the customers by all columns' (from, to) pairs;
    with too many combinations to pack, from one grouping per column: the same matrices either way, on the
    sample's real quarterly snapshots (four label columns, nulls, entered and left customers)."""
    import engine.migration as migration

    snaps = run_snapshots(engine.sample_path(), as_of=QUARTERS, mapping=SAMPLE_MAPPING,
                          classifiers=["abc", "adc", "rfm"])
    outputs = label_outputs(snaps.selections)
    assert len(outputs) >= 3
    packed = migration.migration_cells(snaps.customers, outputs)
    monkeypatch.setattr(migration, "_PACK_LIMIT", 0)
    apart = migration.migration_cells(snaps.customers, outputs)
    assert packed.keys() == apart.keys()
    for key, (labels, cells) in packed.items():
        assert labels == apart[key][0]
        assert cells.equals(apart[key][1]), key


TIER = Output("tier", "size", labels=("big", "small"))


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("case", ["grows", "leavers", "unsorted", "one column", "huge"])
def test_cells_equal_a_count_customer_by_customer(case, pack, monkeypatch):
    """Every cell of every column's matrix, counted customer by customer in plain Python, on random tables:
    a later snapshot holding every earlier customer, sorted (the two sides joined on sorted ids), customers
    who left, rows in no order (a full join), labels missing on either side; with both columns' ranks packed
    into one code and with too many combinations to pack (one grouping per column). The revenue units are
    summed in Int64 where no sum can leave it, and in Int128 where one could ("huge": a cell's sum past 2**63)."""
    import random
    from decimal import Decimal

    import engine.migration as migration

    if not pack:
        monkeypatch.setattr(migration, "_PACK_LIMIT", 0)
    rng = random.Random(f"{case}-{pack}")
    metals, tiers = [*METAL.labels, None], [*TIER.labels, None]
    outputs = [("metals", METAL)] + ([] if case == "one column" else [("tiers", TIER)])

    def amount():
        return rng.randrange(4 * 10**13, 9 * 10**13) if case == "huge" else rng.randrange(-5000, 90000) / 100

    def side(ids):
        rows = [(i, rng.choice(metals), rng.choice(tiers), amount()) for i in ids]
        if case == "unsorted":
            rng.shuffle(rows)
        return pl.DataFrame({"customer_id": [r[0] for r in rows], "metal": pl.Series([r[1] for r in rows], dtype=E),
                             "tier": pl.Series([r[2] for r in rows], dtype=pl.Enum(list(TIER.labels))),
                             "monetary": [r[3] for r in rows]})

    earlier_ids = sorted(rng.sample(range(10_000), 400))
    later_ids = sorted(set(earlier_ids) | set(rng.sample(range(10_000), 300)))
    if case in ("leavers", "unsorted"):
        gone = set(rng.sample(earlier_ids, 40))
        later_ids = [i for i in later_ids if i not in gone]
    before, after = side(earlier_ids), side(later_ids)
    assert (migration.cell_side(before, outputs).schema["_u"] == pl.Int128) == (case == "huge")
    m = migration_table([before, after], DATES, outputs)

    def units(x):
        return int(Decimal(repr(x)) * 10_000)

    was = {r["customer_id"]: r for r in before.iter_rows(named=True)}
    now = {r["customer_id"]: r for r in after.iter_rows(named=True)}
    for _, o in outputs:
        expected = {}
        for cid in set(was) | set(now):
            b, a = was.get(cid), now.get(cid)
            key = ((b and b[o.column]) or "entered", (a and a[o.column]) or "left")
            n, uf, ut = expected.get(key, (0, 0, 0))
            expected[key] = (n + 1, uf + (units(b["monetary"]) if b else 0), ut + (units(a["monetary"]) if a else 0))
        got = m.filter(pl.col("column") == o.column)
        assert got.height == (len(o.labels) + 1) ** 2
        for r in got.iter_rows(named=True):
            n, uf, ut = expected.get((r["from"], r["to"]), (0, 0, 0))
            assert r["customers"] == n, (o.column, r["from"], r["to"])
            assert r["revenue_from"] == float(Decimal(uf) / 10_000)
            assert r["revenue_to"] == float(Decimal(ut) / 10_000)
