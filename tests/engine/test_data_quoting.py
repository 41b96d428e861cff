"""engine.data: a quoted empty field ("") is a missing value, like an unquoted one (issue 10, item 5).

pandas writes a missing value as ``""`` with ``QUOTE_NONNUMERIC`` and ``QUOTE_ALL``; it was a real customer
(an empty id), and an empty date or amount stopped the run as unparseable.
"""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import polars as pl
import pytest

import engine
from engine import DataError

FRAME = pd.DataFrame({
    "customer_id": ["c1", None, "c2", np.nan, "c3", "c3", "c1"],
    "order_id": ["o1", "o2", None, "o4", "o5", "o6", "o7"],
    "order_date": ["2011-01-02", None, "2011-01-03", "2011-01-04", "", "2011-01-05", "2011-01-06"],
    "amount": [1.5, 2.0, np.nan, 3.0, 4.0, 5.25, np.nan],
})


def write(tmp_path, quoting):
    path = tmp_path / f"tx-{quoting}.csv"
    FRAME.to_csv(path, index=False, quoting=quoting)
    return path


def run(path, tmp_path):
    prepared = engine.prepare(path)
    rejects = tmp_path / f"rejects-{path.stem}.csv"
    code = engine.cli.main(["classify", str(path), "-o", str(tmp_path / f"out-{path.stem}.csv"),
                            "--rejects", str(rejects)])
    assert code == 0
    return prepared, pl.read_csv(rejects, infer_schema=False)


@pytest.mark.parametrize("quoting", [csv.QUOTE_NONNUMERIC, csv.QUOTE_ALL])
def test_pandas_quoted_empty_fields_are_missing_values(tmp_path, quoting):
    text = write(tmp_path, quoting).read_text()
    assert '""' in text  # pandas did write quoted empty fields
    plain, plain_rejects = run(write(tmp_path, csv.QUOTE_MINIMAL), tmp_path)
    assert '""' not in (tmp_path / f"tx-{csv.QUOTE_MINIMAL}.csv").read_text()
    quoted, quoted_rejects = run(write(tmp_path, quoting), tmp_path)
    assert quoted.customers.equals(plain.customers)
    assert quoted.report.rejected == plain.report.rejected == {
        "null_customer": 2, "null_date": 1, "null_amount": 2}
    assert quoted.customers["customer_id"].to_list() == ["c1", "c3"]  # no customer ""
    assert quoted_rejects["row"].to_list() == plain_rejects["row"].to_list() == ["2", "3", "4", "5", "7"]
    assert quoted_rejects["reason"].to_list() == plain_rejects["reason"].to_list()


def test_quoted_empty_quantity_and_price_and_order_id(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text('"customer_id","order_id","order_date","quantity","unit_price"\n'
                    '"c1","","2011-01-02",2,""\n"c1","o2","2011-01-03","",1.5\n"c1","o3","2011-01-04",1,2.5\n')
    got = engine.prepare(path)
    assert got.report.rejected["null_amount"] == 2
    assert got.customers.select("monetary", "frequency").row(0) == (2.5, 1)


def test_quoted_empty_id_in_a_customer_table(tmp_path):
    (tmp_path / "tx.csv").write_text("customer_id,order_date,amount\nc1,2011-01-02,1\n")
    (tmp_path / "customers.csv").write_text('"customer_id","region"\n"c1","north"\n"","south"\n')
    with pytest.raises(DataError, match=r"customers.csv: column 'customer_id', row 2: the customer id is empty"):
        engine.prepare(tmp_path / "tx.csv", customers=tmp_path / "customers.csv")
