"""The summary's reconciliation can fail: each side is counted on its own, and a corrupted side is caught.

Input side: the scan of the transactions sums the usable rows' amounts itself (apart from the feature
group_by) and counts the customer table's ids without a usable row by an anti-join. Output side: the
customers file as written, read back from disk. A run whose sides differ stops, and writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

import engine.features
import engine.playbook.write
from engine.errors import DataError
from engine.playbook import load_playbook
from engine.registry import get_registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def playbook(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text((ROOT / "playbooks" / "abc-resource-allocation.yaml").read_text()
                    .replace("../engine/sample", f"{ROOT}/engine/sample"))
    return load_playbook(path, output_dir=tmp_path / "out",
                         registry=get_registry(allow=["abc", "adc", "rfm"], strict=True))


def test_a_run_reconciles_against_the_written_files(playbook):
    playbook.run()
    rec = json.loads((playbook.output_dir / "summary.json").read_text())["reconciliation"]
    assert rec == {"customers_in": 250, "customers_out": 250, "distinct_customers_out": 250,
                   "revenue_in": 381284.521, "revenue_out": 381284.521,
                   "counted_from": "the scan of the transactions / the written customers.parquet", "ok": True}


@pytest.mark.parametrize("name", ["customers.csv", "customers.json", "customers.ndjson", "customers.xlsx"])
def test_every_customers_format_is_read_back_and_reconciled(tmp_path, monkeypatch, name):
    """The read-back reads the customers file in its own format (a JSON array is not NDJSON, nor the reverse),
    so each format reconciles, and a row lost on the way to disk fails in each."""
    path = tmp_path / "p.yaml"
    path.write_text((ROOT / "playbooks" / "abc-resource-allocation.yaml").read_text()
                    .replace("../engine/sample", f"{ROOT}/engine/sample")
                    .replace("  actions: actions.csv", f"  actions: actions.csv\n  customers: {name}"))
    pb = load_playbook(path, output_dir=tmp_path / "out", registry=get_registry(allow=["abc", "adc", "rfm"], strict=True))
    pb.run()
    rec = json.loads((pb.output_dir / "summary.json").read_text())["reconciliation"]
    assert (rec["customers_out"], rec["revenue_out"], rec["ok"]) == (250, 381284.521, True)
    assert rec["counted_from"] == f"the scan of the transactions / the written {name}"
    real = engine.playbook.write._write_frame

    def lossy(frame, path):
        real(frame.head(-1) if "monetary" in frame.columns else frame, path)

    monkeypatch.setattr(engine.playbook.write, "_write_frame", lossy)
    with pytest.raises(DataError, match=rf"reconciliation failed .*{name}\): customers in 250, out 249"):
        pb.with_params({"abc.a": 0.6}).run()


def test_a_written_file_that_lost_a_customer_fails_and_nothing_changes(playbook, monkeypatch):
    playbook.run()
    before = {p.name: p.read_bytes() for p in playbook.output_dir.iterdir() if p.is_file()}
    real = engine.playbook.write._write_frame

    def lossy(frame, path):  # the customers file loses its last row on the way to disk
        real(frame.head(-1) if "monetary" in frame.columns else frame, path)

    monkeypatch.setattr(engine.playbook.write, "_write_frame", lossy)
    with pytest.raises(DataError, match=r"reconciliation failed \(the scan of the transactions / the written "
                                        r"customers.parquet\): customers in 250, out 249"):
        playbook.with_params({"abc.a": 0.6}).run()
    assert {p.name: p.read_bytes() for p in playbook.output_dir.iterdir() if p.is_file()} == before


def test_a_feature_pass_that_lost_revenue_fails(playbook, monkeypatch):
    real = engine.features._queries

    def lossy(*args, **kwargs):  # the group_by loses one customer; the scan's own total does not
        customers, *others = real(*args, **kwargs)
        return customers.filter(pl.col("customer_id") != pl.col("customer_id").min()), *others

    monkeypatch.setattr(engine.features, "_queries", lossy)
    with pytest.raises(DataError, match=r"reconciliation failed \(the scan of the transactions / the customer "
                                        r"table\): customers in 249, out 249 \(249 distinct\); revenue in "
                                        r"381,284.5210, out 38\d,\d{3}\.\d{4}"):
        playbook.run()
    assert not playbook.output_dir.exists()


def test_a_run_whose_revenue_nets_to_zero_reconciles(tmp_path):
    """One customer's purchase and another's return of the same amount: revenue in and out are both 0."""
    (tmp_path / "tx.csv").write_text("customer_id,order_id,order_date,amount\n"
                                     "a,o1,2024-03-01,10.00\nb,o2,2024-03-02,-10.00\n")
    path = tmp_path / "p.yaml"
    path.write_text("name: zero\ndata: {transactions: tx.csv}\nclassifiers: {abc: {}}\n")
    pb = load_playbook(path, output_dir=tmp_path / "out", registry=get_registry(allow=["abc"], strict=True))
    pb.run()
    rec = json.loads((pb.output_dir / "summary.json").read_text())["reconciliation"]
    assert (rec["customers_in"], rec["customers_out"], rec["revenue_in"], rec["revenue_out"], rec["ok"]) == \
        (2, 2, 0.0, 0.0, True)
