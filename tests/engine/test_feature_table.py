"""engine.feature_table: the one table of built-in features, and everything built from it."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import engine
from engine.feature_table import FEATURES, Agg, Derived
from engine.features import BUILTIN_FEATURES
from engine.playbook import FEATURE_DTYPES
from engine.registry import get_registry

ROOT = Path(__file__).resolve().parents[2]
D = dt.date


def test_docs_features_md_is_current():
    got = subprocess.run([sys.executable, str(ROOT / "tools" / "features_table.py")], capture_output=True,
                         text=True, check=True).stdout
    assert (ROOT / "docs" / "features.md").read_text(encoding="utf-8") == got, \
        "docs/features.md is stale: python tools/features_table.py > docs/features.md"


def test_readme_lists_every_feature_in_table_order():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Features", 1)[1].split("computes per\ncustomer:", 1)[1]
    assert re.findall(r"`([a-z_]+)`", section.split("Each is defined once")[0]) == [f.name for f in FEATURES]


def test_the_table_is_the_source_of_every_listing():
    assert list(BUILTIN_FEATURES) == [f.name for f in FEATURES]
    assert FEATURE_DTYPES == {f.name: f.dtype for f in FEATURES}
    for f in FEATURES:
        assert f.description and f.how
        assert isinstance(f.compute, (Agg, Derived))


def test_the_table_cannot_be_changed_at_run_time():
    # One table feeds the Polars and Spark passes, the playbook's predicted schema and every listing: its rows,
    # their aggregations and their derivations are frozen values (an assignment raises) and hashable.
    import dataclasses

    for f in FEATURES:
        part = "op" if isinstance(f.compute, Agg) else "formula"
        for obj, name in ((f, "name"), (f.compute, part)):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(obj, name, "changed")
    assert len({*FEATURES, *(f.compute for f in FEATURES)}) == 2 * len(FEATURES)


def test_plugins_command_lists_the_built_in_features(run_cli, monkeypatch):
    monkeypatch.setenv("TIERBOOK_LOAD_PLUGINS", "abc,adc,rfm")
    code, out, _ = run_cli("plugins")
    assert code == 0
    lines = out.splitlines()
    start = lines.index("built-in features (docs/features.md)")
    listed = [line.split()[0] for line in lines[start + 1:start + 1 + len(FEATURES)]]
    assert listed == [f.name for f in FEATURES]
    assert any(line.split()[:2] == ["last_activity", "Date"] for line in lines)
    code, out, _ = run_cli("plugins", "--json")
    import json

    built_in = json.loads(out)["builtin_features"]
    assert [(f["name"], f["dtype"]) for f in built_in] == [(f.name, str(f.dtype)) for f in FEATURES]


ROWS = [
    ("buyer", "o1", D(2011, 1, 10), 30.0),
    ("buyer", "c1", D(2011, 3, 28), -6.0),
    ("returner", "c2", D(2011, 3, 2), -1.0),
    ("zero", "o2", D(2011, 3, 3), 0.0),
    (None, "o3", D(2011, 3, 4), 5.0),
]


@pytest.mark.parametrize("as_of", [None, "2011-03-20"])
@pytest.mark.parametrize("id_dtype", [pl.String, pl.Int64])
def test_predicted_schema_is_the_computed_one_for_every_feature(tmp_path, as_of, id_dtype):
    """A playbook is validated against FEATURE_DTYPES; the feature pass must give exactly those dtypes."""
    ids = {"buyer": "1", "returner": "2", "zero": "3"} if id_dtype == pl.Int64 else {}
    tx = pl.DataFrame({"customer_id": [ids.get(r[0], r[0]) if r[0] else None for r in ROWS],
                       "order_id": [r[1] for r in ROWS], "order_date": [r[2] for r in ROWS],
                       "amount": [r[3] for r in ROWS]}).with_columns(pl.col("customer_id").cast(id_dtype))
    path = tmp_path / "tx.parquet"
    tx.write_parquet(path)
    table = pl.DataFrame({"customer_id": ["99"]}).with_columns(pl.col("customer_id").cast(id_dtype))
    registry = get_registry(allow=["abc", "adc", "rfm"], strict=True)
    prepared = engine.prepare(path, customers=table, as_of=as_of, registry=registry)
    schema = prepared.customers.schema
    for f in FEATURES:
        assert schema[f.name] == FEATURE_DTYPES[f.name], f.name
    # a playbook's rules are checked against FEATURE_DTYPES (engine.playbook.load._predicted_schema), before any data
    # is read: the prediction is the computed schema, feature for feature (checked above)
    # a prospect gets the table's empty values
    prospect = prepared.customers.filter(pl.col("customer_id") == table["customer_id"][0]).row(0, named=True)
    assert {f.name: prospect[f.name] for f in FEATURES} == {f.name: f.empty for f in FEATURES}


@pytest.mark.parametrize("args, message", [
    (("median", "amount"), r"unsupported aggregation median\(amount\)"),
    (("sum", "order_date"), r"unsupported aggregation sum\(order_date\)"),
    (("count", "amount", "refunds"), "unknown row selection 'refunds'; one of all, purchases, returns"),
])
def test_an_aggregation_the_engines_cannot_translate_is_refused(args, message):
    """Each engine translates only the listed operations on their listed columns (OPS), over the listed rows."""
    from engine.feature_table import Agg

    with pytest.raises(ValueError, match=message):
        Agg(*args)
