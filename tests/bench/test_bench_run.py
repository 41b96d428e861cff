"""bench/run.py mechanics on small sizes: agreement on every timed size (messy data too), figures
labelled with the machine and commit that measured them, a partial re-run leaves older labels alone."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load("run")
gen = _load("generate")


def test_messy_variant_leaves_the_clean_set_alone_and_has_every_kind_of_mess():
    clean = gen.generate(20_000, 7)
    messy = gen.make_messy(clean, 7)
    assert clean.equals(gen.generate(20_000, 7))  # generate() is untouched by the messy draw
    assert messy.equals(gen.make_messy(clean, 7))
    for col in ("customer_id", "order_id", "order_date", "amount"):
        assert clean[col].null_count() == 0 and messy[col].null_count() > 0, col
    assert (messy["amount"] == 0).sum() > 0 and (messy["amount"] < 0).sum() > 0


def test_sizes():
    assert run.size_rows("10m") == 10_000_000 and run.size_rows("1m-messy") == 1_000_000
    assert run.size_rows("10m-shuffled") == run.size_rows("10m-numbered") == 10_000_000
    assert run.base_size("50m-numbered") == "50m" and run.variant("1m-shuffled") == "shuffled"
    assert run.size_rows("20k") == 20_000 and run.size_rows("nope") is None and run.size_rows("0k") is None


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Two small blocks, clean and messy, each timed once with the floor and tierbook run."""
    work = tmp_path_factory.mktemp("bench")
    assert run.main(["--workdir", str(work), "--sizes", "5k,5k-messy,5k-numbered,5k-shuffled", "--tools",
                     "floor,tierbook", "--repeat", "1", "--help-repeat", "0", "--skip-check"]) == 0
    return work


def test_variants_are_the_same_rows_renumbered_or_shuffled(tmp_path):
    base = tmp_path / "tx.parquet"
    gen.write(20_000, base, seed=7)
    original = pl.read_parquet(base)
    numbered = gen.derive(base, "numbered", tmp_path / "n.parquet")
    shuffled = gen.derive(base, "shuffled", tmp_path / "s.parquet")
    # numbered: every line where it was, with its customer, date and amount; orders keep their lines
    assert numbered.drop("order_id").equals(original.drop("order_id"))
    pairs = pl.DataFrame({"old": original["order_id"], "new": numbered["order_id"]}).unique()
    assert pairs.height == original["order_id"].n_unique() == pairs["new"].n_unique()
    assert numbered["order_id"].is_sorted() and not original["order_id"].is_sorted()
    # shuffled: the same rows in another order
    assert shuffled.sort(shuffled.columns).equals(original.sort(original.columns))
    assert not shuffled.equals(original)
    assert pl.read_parquet(tmp_path / "n.parquet").equals(numbered)


def test_each_block_says_how_tierbook_counted_orders(measured):
    """The ordered variant is counted from boundaries, bench's own set (ids scrambled within each day) and its
    shuffled copy with the (integer) order ids as array positions; the report says so per block; every variant
    passes the agreement check."""
    results = json.loads((measured / "results.json").read_text())
    said = {size: {r.get("orders", "").split(":")[0] for r in block["runs"]["tierbook"]}
            for size, block in results["sizes"].items()}
    assert said["5k-numbered"] == {"order boundaries"}
    assert said["5k"] == said["5k-shuffled"] == {"order ids as array positions"}
    for size in ("5k-numbered", "5k-shuffled"):
        assert results["sizes"][size]["checks"]["tierbook"].startswith("customers, last date, frequency")
        assert results["sizes"][size]["checks"]["floor"].startswith("last date and net revenue")
    text = (measured / "RESULTS.md").read_text()
    assert "How tierbook counted orders" in text and "by order boundaries: input written order by order" in text


def test_every_timed_size_is_checked_on_its_own_data(measured):
    results = json.loads((measured / "results.json").read_text())
    clean, messy = results["sizes"]["5k"], results["sizes"]["5k-messy"]
    assert clean["checks"]["tierbook"].startswith("customers, last date, frequency and net revenue")
    assert clean["checks"]["floor"].startswith("last date and net revenue")
    assert messy["checks"]["tierbook"].startswith("customers, last date, frequency and net revenue")
    assert messy["checks"]["floor"].startswith("not compared")
    text = (measured / "RESULTS.md").read_text()
    assert "Agreement on this block's data" in text and "(5k-messy)" in text


def test_the_check_can_fail(measured):
    """A tierbook output that lost one order of one customer is reported, against the reference and the floor."""
    out = run.tool_command("tierbook", "5k")[1]
    saved = out.read_bytes()
    try:
        frame = pl.read_parquet(out)
        frame.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.col("frequency") - 1)
                           .otherwise(pl.col("frequency")).alias("frequency")).write_parquet(out)
        verdicts = run.check_timed_outputs("5k", ["floor", "tierbook"])
        assert verdicts["tierbook"].startswith("DISAGREES") and "frequency: 1 of" in verdicts["tierbook"]
    finally:
        out.write_bytes(saved)


def test_a_partial_rerun_keeps_the_older_blocks_labels(measured, monkeypatch):
    results = json.loads((measured / "results.json").read_text())
    before = results["sizes"]["5k"]["machine"]
    assert before["tierbook_commit"]
    other = {**before, "tierbook_commit": "abc1234", "cpu": "another CPU"}
    monkeypatch.setattr(run, "machine", lambda: other)
    assert run.main(["--workdir", str(measured), "--sizes", "5k-messy", "--tools", "floor,tierbook",
                     "--repeat", "1", "--help-repeat", "0", "--skip-check"]) == 0
    after = json.loads((measured / "results.json").read_text())
    assert after["sizes"]["5k"]["machine"] == before  # not relabelled
    assert after["sizes"]["5k-messy"]["machine"]["tierbook_commit"] == "abc1234"
    text = (measured / "RESULTS.md").read_text()
    assert f"on machine M1, tierbook {before['tierbook_commit']}" in text
    assert "on machine M2, tierbook abc1234" in text and "another CPU" in text


def test_two_hosts_alike_in_every_description_get_two_labels(measured, monkeypatch):
    """Two virtual machines of one type describe themselves alike (CPU, memory, kernel, versions, commit) and may
    still differ in speed: the host id tells their figures apart."""
    results = json.loads((measured / "results.json").read_text())
    before = results["sizes"]["5k"]["machine"]
    assert len(before["host"]) == 8 and before["host"] == run.host_id()
    other = {**before, "host": "0123abcd"}
    monkeypatch.setattr(run, "machine", lambda: other)
    assert run.main(["--workdir", str(measured), "--sizes", "5k-messy", "--tools", "floor,tierbook",
                     "--repeat", "1", "--help-repeat", "0", "--skip-check"]) == 0
    text = (measured / "RESULTS.md").read_text()
    assert f"**M1** (host {before['host']})" in text and "**M2** (host 0123abcd)" in text
    assert f"on machine M2, tierbook {before['tierbook_commit']}" in text
