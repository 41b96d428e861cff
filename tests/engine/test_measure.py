"""tierbook measure: the statistics against published values and scipy, and a measurement worked by hand."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from engine.errors import DataError
from engine.measure import measure, mde, newcombe, ratio_of_means_ci, relative_risk_ci, srm, welch, wilson
from engine.playbook import load_playbook

# Newcombe (1998), "Interval estimation for the difference between independent proportions: comparison of
# eleven methods", Statistics in Medicine 17:873-890, Table II, method 10 (the hybrid score interval), to
# the 4 decimals printed there. (a) and (b) are also the values another implementation's tests pin.
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),   # (a)
    ((9, 10, 3, 10), (0.1705, 0.8090)),     # (b)
    ((5, 56, 0, 29), (-0.0381, 0.1926)),    # (d)
    ((0, 10, 0, 20), (-0.1611, 0.2775)),    # (e)
    ((0, 10, 0, 10), (-0.2775, 0.2775)),    # (f)
    ((10, 10, 0, 20), (0.6791, 1.0000)),    # (g)
    ((10, 10, 0, 10), (0.6075, 1.0000)),    # (h)
]


@pytest.mark.parametrize(("counts", "interval"), NEWCOMBE_TABLE_II)
def test_newcombe_reproduces_the_published_table(counts, interval):
    x1, n1, x2, n2 = counts
    d, low, high = newcombe(x1, n1, x2, n2)
    assert d == pytest.approx(x1 / n1 - x2 / n2)
    assert (round(low, 4), round(high, 4)) == interval


@pytest.mark.parametrize(("x", "n"), [(0, 10), (1, 10), (56, 70), (48, 80), (10, 10), (517, 10_000), (3, 1_000_000)])
def test_wilson_agrees_with_scipy(x, n):
    ci = stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(x, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


@pytest.mark.parametrize("counts", [(30, 100, 20, 100), (1030, 6742, 151, 1645), (5, 56, 3, 29), (1, 10, 9, 10)])
def test_relative_uplift_agrees_with_scipys_relative_risk(counts):
    x1, n1, x2, n2 = counts
    rr, low, high = relative_risk_ci(x1, n1, x2, n2)
    ref = stats.contingency.relative_risk(x1, n1, x2, n2)
    ci = ref.confidence_interval(0.95)
    assert (rr, low, high) == pytest.approx((ref.relative_risk, ci.low, ci.high), rel=1e-9)
    assert relative_risk_ci(0, n1, x2, n2) is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_welch_agrees_with_scipy(seed):
    rng = np.random.default_rng(seed)
    a = np.where(rng.random(800) < 0.2, rng.lognormal(3, 1, 800), 0.0)
    b = np.where(rng.random(150) < 0.1, rng.lognormal(3, 1.2, 150), 0.0)
    d, low, high, p = welch(a.mean(), a.var(ddof=1), a.size, b.mean(), b.var(ddof=1), b.size)
    ref = stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert (d, low, high, p) == pytest.approx((a.mean() - b.mean(), ci.low, ci.high, ref.pvalue), rel=1e-9)


def test_ratio_of_means_interval_covers_like_it_should():
    """The delta-method interval of a ratio of means: on simulated groups with a true ratio of 1.25, it
    holds the truth in about 95% of 400 draws (binomial sd about 1.1%), and it needs positive means."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(400):
        a = rng.exponential(12.5, 3000)
        b = rng.exponential(10.0, 1000)
        r, low, high = ratio_of_means_ci(a.mean(), a.var(ddof=1), a.size, b.mean(), b.var(ddof=1), b.size)
        hits += low <= 1.25 <= high
    assert 0.92 <= hits / 400 <= 0.98
    assert ratio_of_means_ci(0.0, 1.0, 10, 1.0, 1.0, 10) is None


def test_srm_agrees_with_scipys_chisquare():
    out = srm(8200, 1800, 0.2)
    ref = stats.chisquare([1800, 8200], [2000, 8000])
    assert (out["chi2"], out["p_value"]) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
    assert out["mismatch"] and out["observed_control_share"] == 0.18
    assert not srm(8010, 1990, 0.2)["mismatch"]
    assert srm(10, 0, 0.0)["p_value"] is None  # nothing was meant to be held out: no test


def test_mde_is_the_difference_found_with_80_percent_power():
    """Simulated: at the MDE, a two-sided z-test at 5% rejects in about 80% of 2,000 draws."""
    rng = np.random.default_rng(3)
    n1, n2, p = 4000, 1000, 0.1
    delta = mde(n1, n2, math.sqrt(p * (1 - p)))
    x1 = rng.binomial(n1, p + delta, 2000)
    x2 = rng.binomial(n2, p, 2000)
    p1, p2 = x1 / n1, x2 / n2
    se = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    power = float(np.mean(np.abs(p1 - p2) / se > stats.norm.ppf(0.975)))
    assert 0.76 <= power <= 0.84


# ------------------------------------------------------------------------------------- a measured run

PLAYBOOK = """
name: m
data: {transactions: tx.csv}
classifiers: {abc: {}}
rules:
  - name: all
    when: monetary > 0
    action: mail
    channel: email
    owner: crm
    holdout: {share: 0.3, salt: all-1}
  - name: nothing
    when: monetary < 0
    action: call
    channel: phone
    owner: crm
"""


@pytest.fixture
def measured_run(tmp_path) -> Path:
    rows = ["customer_id,order_id,order_date,amount"]
    rows += [f"{c},h{c},2024-01-{1 + c % 28:02d},{10 + c % 7}" for c in range(1, 401)]
    (tmp_path / "tx.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "pb.yaml").write_text(PLAYBOOK)
    load_playbook(tmp_path / "pb.yaml").run()
    # Outcomes: every third customer buys in February (a return too for some), one line in March.
    out = ["customer_id,order_id,order_date,amount"]
    out += [f"{c},f{c},2024-02-{1 + c % 28:02d},{5 + c % 11}" for c in range(1, 401) if c % 3 == 0]
    out += [f"{c},r{c},2024-02-10,-2" for c in range(1, 401) if c % 15 == 0]
    out += ["7,late,2024-03-05,100"]
    (tmp_path / "outcomes.csv").write_text("\n".join(out) + "\n")
    return tmp_path


def test_a_measurement_worked_by_hand(measured_run):
    pb = load_playbook(measured_run / "pb.yaml")
    m = measure(pb, measured_run / "outcomes.csv", start="2024-02-01", end="2024-02-29")
    # By hand from the written files: each arm's customers, who bought in February, what they spent.
    out = pb.output_dir
    oc = pl.read_csv(measured_run / "outcomes.csv").filter(pl.col("order_date").str.starts_with("2024-02"))
    spend = oc.group_by("customer_id").agg(pl.col("amount").sum(), (pl.col("amount") > 0).any().alias("bought"))
    arms = {"treatment": pl.read_csv(out / "actions.csv").filter(pl.col("rule") == "all"),
            "control": pl.read_csv(out / "control.csv").filter(pl.col("rule") == "all")}
    assert [r["rule"] for r in m["rules"]] == ["all"]  # a rule without a holdout is not measured
    r = m["rules"][0]
    for group, frame in arms.items():
        j = frame.join(spend, on="customer_id", how="left").with_columns(pl.col("amount").fill_null(0),
                                                                          pl.col("bought").fill_null(False))
        arm = r[group]
        assert arm["customers"] == frame.height
        assert arm["buyers"] == j["bought"].sum()
        assert arm["revenue"] == pytest.approx(j["amount"].sum())
        assert arm["revenue_per_customer"] == pytest.approx(j["amount"].mean())
        assert arm["revenue_sd"] == pytest.approx(j["amount"].std())
    t, c = r["treatment"], r["control"]
    assert t["customers"] + c["customers"] == 400
    d, low, high = newcombe(t["buyers"], t["customers"], c["buyers"], c["customers"])
    assert r["conversion_uplift"] == {"estimate": d, "low": low, "high": high, "significant": low > 0 or high < 0}
    assert r["srm"]["expected_control_share"] == 0.3
    assert r["mde"]["conversion"] > 0
    assert m["customers_buying_in_period"] == 133 and m["new_customers"] == 0
    json.dumps(m)  # JSON-ready


def test_measure_from_the_command_line_text_and_json(measured_run, run_cli):
    pb = str(measured_run / "pb.yaml")
    args = ("measure", pb, "--outcomes", str(measured_run / "outcomes.csv"), "--from", "2024-02-01",
            "--to", "2024-02-29")
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert "rule all" in out and "conversion uplift" in out and "split:" in out
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    assert json.loads(out)["rules"][0]["rule"] == "all"


def test_bad_periods_and_strangers_stop_with_one_line(measured_run):
    pb = load_playbook(measured_run / "pb.yaml")
    outcomes = measured_run / "outcomes.csv"
    with pytest.raises(DataError, match=r"no transaction from 2025-01-01 to 2025-01-31 \(its dates run from "
                                        r"2024-02-01 to 2024-03-05\)"):
        measure(pb, outcomes, start="2025-01-01", end="2025-01-31")
    with pytest.raises(DataError, match="the period is empty"):
        measure(pb, outcomes, start="2024-02-10", end="2024-02-01")
    with pytest.raises(DataError, match="is before the run's as_of"):
        measure(pb, outcomes, start="2023-12-01", end="2024-02-01")
    stranger = measured_run / "with-stranger.csv"
    stranger.write_text(outcomes.read_text() + "999999,x,2024-02-03,50\n")
    with pytest.raises(DataError, match=r"1 of the 134 customers who bought .* were not in the playbook's run "
                                        r"\(customer '999999', for one\)"):
        measure(pb, stranger, start="2024-02-01", end="2024-02-29")
    m = measure(pb, stranger, start="2024-02-01", end="2024-02-29", count_new_customers=True)
    assert m["new_customers"] == 1
    assert m["rules"][0]["treatment"]["customers"] + m["rules"][0]["control"]["customers"] == 400


def test_ids_match_across_types(measured_run):
    """Outcomes whose ids are floats (a Parquet file) match a run whose ids were read from CSV."""
    pb = load_playbook(measured_run / "pb.yaml")
    frame = pl.read_csv(measured_run / "outcomes.csv").with_columns(pl.col("customer_id").cast(pl.Float64))
    frame.write_parquet(measured_run / "outcomes.parquet")
    a = measure(pb, measured_run / "outcomes.csv", start="2024-02-01", end="2024-02-29")
    b = measure(pb, measured_run / "outcomes.parquet", start=dt.date(2024, 2, 1), end=dt.date(2024, 2, 29))
    assert a["rules"] == b["rules"]


def test_unusable_outcome_rows_are_counted_not_dropped_silently(measured_run):
    pb = load_playbook(measured_run / "pb.yaml")
    outcomes = measured_run / "outcomes.csv"
    clean = measure(pb, outcomes, start="2024-02-01", end="2024-02-29")
    assert clean["outcome_rows_unusable"] == 0
    messy = measured_run / "messy.csv"
    messy.write_text(outcomes.read_text() + ",x1,2024-02-03,50\n3,x2,,50\n3,x3,2024-02-04,\n")
    m = measure(pb, messy, start="2024-02-01", end="2024-02-29")
    assert (m["outcome_rows"], m["outcome_rows_unusable"]) == (clean["outcome_rows"] + 3, 3)
    assert m["rules"] == clean["rules"]
    from engine.measure import format_measurement
    assert "not used: 3 of the outcomes' " in format_measurement(m)


def test_integer_ids_join_as_integers_and_match_text(measured_run):
    """A run over Parquet with integer ids: integer outcomes join on integers, text outcomes on text; same result."""
    tx = pl.read_csv(measured_run / "tx.csv")
    assert tx.schema["customer_id"] == pl.Int64
    tx.write_parquet(measured_run / "tx.parquet")
    (measured_run / "pb.yaml").write_text(PLAYBOOK.replace("tx.csv", "tx.parquet"))
    pb = load_playbook(measured_run / "pb.yaml")
    pb.run()
    assert pl.read_parquet(pb.output_dir / "customers.parquet").schema["customer_id"] == pl.Int64
    oc = pl.read_csv(measured_run / "outcomes.csv")
    oc.write_parquet(measured_run / "int.parquet")
    oc.with_columns(pl.col("customer_id").cast(pl.String)).write_parquet(measured_run / "text.parquet")
    a = measure(pb, measured_run / "int.parquet", start="2024-02-01", end="2024-02-29")
    b = measure(pb, measured_run / "text.parquet", start="2024-02-01", end="2024-02-29")
    assert a["rules"] == b["rules"] and a["rules"][0]["treatment"]["buyers"] > 0
    pl.concat([oc, pl.DataFrame({"customer_id": [999_999], "order_id": ["x"], "order_date": ["2024-02-03"],
                                 "amount": [5]})]).write_parquet(measured_run / "stranger.parquet")
    with pytest.raises(DataError, match=r"\(customer '999999', for one\)"):
        measure(pb, measured_run / "stranger.parquet", start="2024-02-01", end="2024-02-29")
