"""plugins.clv: the BTYD summary from the one pass, BG/NBD and Gamma-Gamma fits, CLV, bad input.

The CDNOW sample (tests/plugins/clv/data, real data shipped with lifetimes under the MIT licence; see
its README) is run through tierbook's own pass; the fitted parameters must be the published ones to
three significant digits.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import engine
from engine import DataError, ParamError
from engine.registry import get_registry
from plugins.clv import SUMMARY_COLUMNS, WEEKLY_COLUMNS, btyd_summary, models
from tests.engine.test_features_dense import spy_dense_pass

DATA = Path(__file__).parent / "data"
CDNOW_AS_OF = "1997-10-01"  # calibration period 1997-01-01 .. 1997-09-30 (39 weeks), as published


def sig3(x: float) -> float:
    return float(f"{x:.3g}")


def _cdnow_playbook(tmp_path, clv_params: str, when: str) -> None:
    """CDNOW's transactions as cdnow.csv and a one-rule playbook pb.yaml of the clv classifier beside them."""
    cdnow_transactions().write_csv(tmp_path / "cdnow.csv")
    (tmp_path / "pb.yaml").write_text(
        "name: cdnow\ndata: {transactions: cdnow.csv, as_of: 1997-10-01}\n"
        f"classifiers:\n  clv: {clv_params}\n"
        f"rules:\n  - {{name: keep, when: \"{when}\", action: call, channel: phone,"
        " owner: crm, due_days: 3, priority: 1}\n"
        "fallback: {action: none, channel: none, owner: crm}\n")


def cdnow_transactions() -> pl.DataFrame:
    """CDNOW_sample.txt: master id, sample id, date YYYYMMDD, CDs, dollar value (whitespace separated)."""
    lines = pl.read_csv(DATA / "CDNOW_sample.txt", has_header=False, separator="\n", new_columns=["line"])
    fields = pl.col("line").str.strip_chars().str.extract_all(r"\S+")
    return lines.select(fields.list.get(1).cast(pl.Int64).alias("customer_id"),
                        fields.list.get(2).str.to_date("%Y%m%d").alias("order_date"),
                        fields.list.get(4).cast(pl.Float64).alias("amount"))


@pytest.fixture(scope="module")
def clv_registry():
    return get_registry(allow=["abc", "adc", "rfm", "clv"], strict=True)


@pytest.fixture(scope="module")
def cdnow(clv_registry):
    return engine.prepare(cdnow_transactions(), as_of=CDNOW_AS_OF, registry=clv_registry, needs=SUMMARY_COLUMNS)


def test_cdnow_data_is_the_published_sample():
    tx = cdnow_transactions()
    assert tx.height == 6919 and tx["customer_id"].n_unique() == 2357
    assert tx["order_date"].min() == dt.date(1997, 1, 1) and tx["order_date"].max() == dt.date(1998, 6, 30)


def test_btyd_summary_from_the_pass_matches_the_shipped_summary(cdnow):
    """tierbook's summary (weeks) against the one shipped with the data (rounded to 2 decimals)."""
    ours = btyd_summary(cdnow.customers, "weeks")
    ref = pl.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    both = ours.join(ref, left_on="customer_id", right_on="ID", how="full", coalesce=True)
    assert both.height == 2357 and both["frequency"].null_count() == 0 and both["x"].null_count() == 0
    assert (both["frequency"] == both["x"]).all()
    assert (both["recency"] - both["t_x"]).abs().max() <= 0.005 + 1e-9  # the shipped values are rounded to 2 decimals
    assert (both["T"] - both["T_right"]).abs().max() <= 0.005 + 1e-9  # the shipped values are rounded to 2 decimals
    repeat = both.filter(pl.col("x") > 0)
    assert (repeat["monetary_value"] - repeat["zbar"]).abs().max() <= 0.005 + 1e-9  # the shipped values are rounded to 2 decimals


def test_btyd_summary_does_not_depend_on_the_order_of_the_lines(clv_registry):
    """Day values are summed exactly: the same lines in any order give the same summary, bit for bit (a
    float sum did not: the streaming engine's order varies between runs, and the Spark engine's differs)."""
    from engine.sample import SAMPLE_MAPPING

    lines = pl.read_csv(engine.sample_path(), infer_schema=False)
    tables = [engine.prepare(frame, mapping=SAMPLE_MAPPING, registry=clv_registry, needs=SUMMARY_COLUMNS).customers
              for frame in (lines, *(lines.sample(fraction=1.0, shuffle=True, seed=seed) for seed in range(3)))]
    for table in tables[1:]:
        assert table.select(SUMMARY_COLUMNS).equals(tables[0].select(SUMMARY_COLUMNS))


def test_cdnow_published_parameters(cdnow):
    """Fader, Hardie and Lee (2005): r 0.243, alpha 4.414, a 0.793, b 2.426 (weeks);
    Fader and Hardie (2013): p 6.25, q 3.74, gamma 15.44."""
    cdnow.classify(["clv"], {"clv.time_unit": "weeks"})
    fit = cdnow.fits["clv"]
    bg, gg = fit["bgnbd"]["params"], fit["gamma_gamma"]["params"]
    assert {k: sig3(v) for k, v in bg.items()} == {"r": 0.243, "alpha": 4.41, "a": 0.793, "b": 2.43}
    assert {k: sig3(v) for k, v in gg.items()} == {"p": 6.25, "q": 3.74, "v": 15.4}
    assert fit["customers_fitted"] == 2357 and fit["repeat_customers"] == 946
    assert fit["observation_end"] == "1997-09-30"
    # Standard errors: positive and finite, smaller than the parameters here (2,357 customers).
    for part in ("bgnbd", "gamma_gamma"):
        for name, se in fit[part]["standard_errors"].items():
            assert 0 < se < fit[part]["params"][name]
    # Days give the same r, a, b and alpha x 7 (the likelihood in a rescaled time).
    cdnow.classify(["clv"])
    days = cdnow.fits["clv"]["bgnbd"]["params"]
    assert days["r"] == pytest.approx(bg["r"], rel=1e-4) and days["b"] == pytest.approx(bg["b"], rel=1e-4)
    assert days["alpha"] == pytest.approx(bg["alpha"] * 7, rel=1e-4)


def test_predictions_match_their_definitions(cdnow):
    """P(alive), E[M] and CLV against the formulas, written out here independently for a few customers."""
    out = cdnow.classify(["clv"], {"clv.time_unit": "weeks", "clv.discount_rate": 0.0, "clv.horizon_months": 3})
    fit = cdnow.fits["clv"]
    r, alpha, a, b = (fit["bgnbd"]["params"][k] for k in ("r", "alpha", "a", "b"))
    p, q, v = (fit["gamma_gamma"]["params"][k] for k in ("p", "q", "v"))
    rows = out.filter(pl.col("customer_id").is_in([1, 2, 3, 18])).sort("customer_id").to_dicts()
    for row in rows:
        x, tx, T, m = row["btyd_frequency"], row["btyd_recency"] / 7, row["btyd_T"] / 7, row["btyd_monetary_value"]
        alive = 1.0 if x == 0 else 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x))
        assert row["clv_p_alive"] == pytest.approx(alive, rel=1e-12)
        value = (q - 1) / (p * x + q - 1) * (v * p / (q - 1)) + p * x / (p * x + q - 1) * m
        assert row["clv_expected_value"] == pytest.approx(value, rel=1e-12)
        # With no discount the monthly steps telescope: CLV = E[M] * E[Y(3 months)].
        assert row["clv"] == pytest.approx(value * row["clv_expected_purchases"], rel=1e-9)
    # E[Y(t)] by its series: the hypergeometric function summed term by term for customer 1.
    row = rows[0]
    x, tx, T, t = row["btyd_frequency"], row["btyd_recency"] / 7, row["btyd_T"] / 7, 3 * 4.345
    z = t / (alpha + T + t)
    term, series = 1.0, 0.0
    for j in range(400):
        series += term
        term *= (r + x + j) * (b + x + j) / ((a + b + x - 1 + j) * (j + 1)) * z
    expected = ((a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * series)
                / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x)))
    assert row["clv_expected_purchases"] == pytest.approx(expected, rel=1e-9)


def test_one_set_of_expressions_on_two_tables(cdnow):
    """The expected purchases and the CLV share the work per distinct (x, T) pair (computed by whichever runs first);
    the same expressions applied to another table compute that table's, never the first one's."""
    from engine import Context
    from plugins.clv import CLV

    cdnow.classify(["clv"])
    p = CLV.resolve()
    ctx = Context(as_of=cdnow.as_of, schema=cdnow.customers.schema, fit=cdnow.fits["clv"])

    def apply(table, exprs):
        first = ("clv_p_alive", "clv_expected_value")
        return (table.with_columns(exprs[c].alias(c) for c in first)
                .with_columns(exprs[c].alias(c) for c in ("clv_expected_purchases", "clv"))
                .select("clv_expected_purchases", "clv"))

    exprs = CLV.expressions(p, ctx)
    older = cdnow.customers.with_columns(pl.col("btyd_T") + 7)  # a week later: other (x, T) pairs
    first, again = apply(cdnow.customers, exprs), apply(older, exprs)
    assert again.equals(apply(older, CLV.expressions(p, ctx)))
    assert not again.equals(first)
    assert first.equals(apply(cdnow.customers, CLV.expressions(p, ctx)))


def test_discounting_and_tiers(cdnow):
    plain = cdnow.classify(["clv"], {"clv.discount_rate": 0.0})
    discounted = cdnow.classify(["clv"], {"clv.discount_rate": 0.05})
    assert (discounted["clv"] < plain["clv"]).all() and (discounted["clv"] > 0).all()
    tiers = discounted["clv_tier"].value_counts().sort("clv_tier")
    counts = dict(zip(tiers["clv_tier"].cast(pl.String), tiers["count"]))
    assert counts["high"] <= math.ceil(0.2 * 2357) + 50 and counts["high"] >= 400
    top = discounted.sort("clv", descending=True)
    assert top["clv_tier"][0] == "high" and top["clv_tier"][-1] == "low"
    floats = discounted.select(pl.col(pl.Float64))
    assert floats.select(pl.all().is_nan().any()).row(0) == (False,) * floats.width


def tx(rows):
    return pl.DataFrame(rows, schema={"customer_id": pl.Int64, "order_date": pl.Date, "amount": pl.Float64},
                        orient="row")


def test_summary_conventions_zero_amounts_returns_same_day(clv_registry):
    d = dt.date
    frame = tx([
        (1, d(2024, 1, 1), 10.0), (1, d(2024, 1, 1), 5.0),     # two lines on the first day: one purchase day
        (1, d(2024, 1, 5), 20.0), (1, d(2024, 1, 5), -8.0),    # a return on a purchase day: value stays 20
        (1, d(2024, 1, 9), -3.0),                              # a return-only day: not a purchase day
        (1, d(2024, 1, 20), 0.0),                              # a zero-amount line: a purchase of value 0
        (2, d(2024, 1, 3), -4.0),                              # returns only: no purchase, no summary
        (3, d(2024, 1, 10), 7.0),                              # one purchase day
        (4, d(2024, 1, 15), 0.0),                              # a zero amount only: a purchase day, no first_order
    ])
    prep = engine.prepare(frame, as_of="2024-02-01", registry=clv_registry, needs=SUMMARY_COLUMNS)
    c = {r["customer_id"]: r for r in prep.customers.to_dicts()}
    assert (c[1]["btyd_frequency"], c[1]["btyd_recency"], c[1]["btyd_T"]) == (2, 19, 30)  # T to 2024-01-31
    assert c[1]["btyd_monetary_value"] == pytest.approx(10.0)  # (20 + 0) / 2
    assert c[2]["btyd_frequency"] is None and c[2]["btyd_monetary_value"] is None
    assert (c[3]["btyd_frequency"], c[3]["btyd_recency"], c[3]["btyd_T"], c[3]["btyd_monetary_value"]) == (0, 0, 21, 0)
    assert (c[4]["btyd_frequency"], c[4]["btyd_recency"], c[4]["btyd_T"], c[4]["btyd_monetary_value"]) == (0, 0, 16, 0)
    # as_of defaults to the day after the last row, so T ends on the last day, as lifetimes' default
    prep = engine.prepare(frame, registry=clv_registry, needs=SUMMARY_COLUMNS)
    assert prep.customers.filter(pl.col("customer_id") == 1)["btyd_T"].item() == 19


def test_summary_only_when_needed(clv_registry):
    frame = tx([(1, dt.date(2024, 1, 1), 10.0)])
    prep = engine.prepare(frame, registry=clv_registry)  # clv does not run by default: no summary columns
    assert not set(SUMMARY_COLUMNS) & set(prep.customers.columns)
    assert "clv" not in [s.classifier.name for s in prep.select()]


def shop(repeat_buyers: int, one_timers: int = 20) -> pl.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    start = dt.date(2024, 1, 1)
    for i in range(repeat_buyers):
        for _ in range(int(rng.integers(2, 6))):
            rows.append((i, start + dt.timedelta(days=int(rng.integers(0, 300))), float(rng.integers(5, 50))))
    for i in range(one_timers):
        rows.append((10_000 + i, start + dt.timedelta(days=int(rng.integers(0, 300))), 12.0))
    return tx(rows)


@pytest.mark.parametrize("repeat, message", [
    (0, "all 20 customers with a purchase bought on one day only"),
    (3, "too few repeat buyers to fit"),
])
def test_too_few_repeat_buyers(clv_registry, repeat, message):
    prep = engine.prepare(shop(repeat), registry=clv_registry, needs=SUMMARY_COLUMNS)
    with pytest.raises(DataError, match=message):
        prep.classify(["clv"])


@pytest.mark.parametrize("setting, message", [
    ("clv.horizon_months=0", "below the minimum 1 of 'horizon_months'"),
    ("clv.discount_rate=-0.01", "below the minimum 0 of 'discount_rate'"),
])
def test_bad_parameters(clv_registry, setting, message):
    with pytest.raises(ParamError, match=message):
        engine.run.select(clv_registry, ["clv"], engine.run.split_params([setting]))


def test_cli_exit_2_and_summary_json(tmp_path, run_cli):
    path = tmp_path / "tx.csv"
    shop(0).write_csv(path)
    code, _, err = run_cli("classify", path, "--classifier", "clv", "-o", tmp_path / "out.parquet")
    assert code == 2 and "bought on one day only" in err and not (tmp_path / "out.parquet").exists()
    code, _, err = run_cli("classify", path, "--classifier", "clv", "--set", "clv.horizon_months=0",
                           "-o", tmp_path / "out.parquet")
    assert code == 2 and "horizon_months" in err

    _cdnow_playbook(tmp_path, "{time_unit: weeks}", "clv_tier = 'high' AND clv_p_alive > 0.5")
    code, _, err = run_cli("run", tmp_path / "pb.yaml")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "cdnow" / "summary.json").read_text())
    assert sig3(summary["fits"]["clv"]["bgnbd"]["params"]["r"]) == 0.243
    assert summary["fits"]["clv"]["gamma_gamma"]["standard_errors"]["q"] > 0
    customers = pl.read_parquet(tmp_path / "out" / "cdnow" / "customers.parquet")
    assert customers.height == 2357 and customers["clv"].null_count() == 0
    assert not customers["clv"].is_nan().any()


def test_fit_is_on_distinct_histories():
    """Weights: the fit on distinct (x, tx, T) with counts equals the fit on every customer (CDNOW)."""
    ref = pl.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    x, tx, T = (ref[c].to_numpy() for c in ("x", "t_x", "T"))
    every = models.fit_bgnbd(x, tx, T, np.ones(ref.height))
    frame = ref.group_by("x", "t_x", "T").len()
    distinct = models.fit_bgnbd(frame["x"].to_numpy(), frame["t_x"].to_numpy(), frame["T"].to_numpy(),
                                frame["len"].to_numpy())
    assert (every.distinct_inputs, distinct.distinct_inputs) == (2357, 1016)
    for k in every.params:
        assert distinct.params[k] == pytest.approx(every.params[k], rel=1e-6)
    assert distinct.log_likelihood == pytest.approx(every.log_likelihood, rel=1e-9)


@pytest.mark.parametrize("seed", [16, 43, 50])
def test_the_fit_converges_whatever_the_order_of_its_inputs(seed):
    """The same distinct (x, tx, T) in another order sums the likelihood in another order: the fit still
    converges, to the same parameters. (In 7 of 80 orders the gradient stayed just above its tolerance for
    good, and the fit failed after 500 iterations; these three orders are among them.)"""
    ref = pl.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    frame = ref.group_by("x", "t_x", "T").len().sort("x", "t_x", "T")
    cols = [frame[c].to_numpy() for c in ("x", "t_x", "T", "len")]
    sorted_fit = models.fit_bgnbd(*cols)
    order = np.random.default_rng(seed).permutation(frame.height)
    fit = models.fit_bgnbd(*(c[order] for c in cols))
    for k in sorted_fit.params:
        assert fit.params[k] == pytest.approx(sorted_fit.params[k], rel=1e-6)


def test_fit_in_two_halves_on_two_threads_equals_the_fit_in_one(monkeypatch):
    """Many repeat buyers' inputs: BG/NBD's evaluation in two halves on two threads. Forced here on CDNOW, the
    parameters, standard errors and log-likelihood are those of the evaluation in one piece, and every run
    gives the same (the halves are added in a fixed order)."""
    ref = pl.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    x, tx, T = (ref[c].to_numpy().astype(float) for c in ("x", "t_x", "T"))
    one = models.fit_bgnbd(x, tx, T, np.ones(x.size))
    halves = []
    original = models._bgnbd_repeat
    monkeypatch.setattr(models, "_bgnbd_repeat", lambda *a: halves.append(a[2].size) or original(*a))
    monkeypatch.setattr(models, "_PARALLEL_INPUTS", 2)
    two, again = (models.fit_bgnbd(x, tx, T, np.ones(x.size)) for _ in range(2))
    repeat = int((x > 0).sum())
    assert set(halves) == {repeat // 2, repeat - repeat // 2}
    assert two == again
    for k in one.params:
        assert two.params[k] == pytest.approx(one.params[k], rel=1e-9)
        assert two.standard_errors[k] == pytest.approx(one.standard_errors[k], rel=1e-6)
    assert two.log_likelihood == pytest.approx(one.log_likelihood, rel=1e-12)


def test_non_convergence_is_an_error():
    """Histories no BG/NBD explains (everyone buys at the same steady pace, up to the last day) drive the
    parameters off to infinity: a FitError, never parameters that are not finite."""
    x = np.array([5.0, 6.0, 7.0])
    T = np.array([50.0, 60.0, 70.0])
    with pytest.raises(models.FitError):
        models.fit_bgnbd(x, T, T, np.array([100.0, 100.0, 100.0]))


def test_holdout_table_on_cdnow(clv_registry):
    """Fit on the 39 calibration weeks, compare with the 39 holdout weeks (to the end of June 1998)."""
    from plugins.clv.holdout import holdout, holdout_chart

    raw = cdnow_transactions()
    result = holdout(raw, CDNOW_AS_OF, params={"time_unit": "weeks"}, registry=clv_registry)
    assert result.holdout_end == dt.date(1998, 7, 1) and result.customers.height == 2357
    # actual: purchase days in the holdout, counted here directly from the transactions
    days = raw.filter(pl.col("order_date") >= dt.date(1997, 10, 1)).group_by("customer_id").agg(
        pl.col("order_date").n_unique().alias("want"))
    both = result.customers.join(days, on="customer_id", how="left").with_columns(pl.col("want").fill_null(0))
    assert (both["actual_holdout"] == both["want"]).all() and both["want"].sum() == 1882
    # predicted: E[Y(39 weeks)] of the calibration fit
    bg = result.fit["bgnbd"]["params"]
    one = result.customers.filter(pl.col("customer_id") == 1)
    cust = cdnow_summary_row(1)
    h = models.Histories([cust["x"]], [cust["t_x"]], [cust["T"]])
    assert one["predicted_holdout"].item() == pytest.approx(models.expected_purchases(bg, 39.0, h)[0], rel=1e-2)
    table = result.table
    assert table["frequency_cal"].to_list() == ["0", "1", "2", "3", "4", "5", "6", "7+", "all"]
    assert table.filter(pl.col("frequency_cal") != "all")["customers"].sum() == 2357
    assert table.filter(pl.col("frequency_cal") == "all")["actual"].item() == pytest.approx(1882 / 2357)
    # the model tracks the holdout: each frequency's mean within 35% (the largest gap is at frequency 1)
    for row in table.iter_rows(named=True):
        assert abs(row["predicted"] - row["actual"]) <= 0.35 * row["actual"], row
    fig = holdout_chart(result)
    assert len(fig.axes[0].lines) == 2


def cdnow_summary_row(customer: int) -> dict:
    ref = pl.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    return ref.filter(pl.col("ID") == customer).row(0, named=True)


def test_predictions_equal_lifetimes_customer_by_customer(cdnow):
    """Every CDNOW customer's P(alive), expected purchases (360 days), expected spend and CLV (12 months,
    0.01 a month) against lifetimes 0.11.3's own output (tests/plugins/clv/data/README.md)."""
    out = cdnow.classify(["clv"])  # days, lifetimes' defaults
    ref = pl.read_csv(DATA / "lifetimes_cdnow_predictions.csv")
    both = out.join(ref, on="customer_id", how="full", coalesce=True)
    assert both.height == 2357
    for ours, theirs in (("clv_p_alive", "p_alive"), ("clv_expected_purchases", "expected_purchases"),
                         ("clv_expected_value", "expected_value"), ("clv", "clv")):
        # the two optimisers stop a few 1e-7 apart; the file has ten decimals
        worst = ((both[ours] - both[theirs]).abs() - 1e-4 * both[theirs].abs() - 1e-9).max()
        assert worst <= 0, (ours, worst)


def test_engine_classify_computes_the_summary_a_named_classifier_needs(clv_registry):
    out = engine.classify(cdnow_transactions(), as_of=CDNOW_AS_OF, classifiers=["clv"], registry=clv_registry)
    assert out.height == 2357 and out["clv"].null_count() == 0
    prep = engine.prepare(cdnow_transactions(), as_of=CDNOW_AS_OF, registry=clv_registry)
    with pytest.raises(engine.PluginError, match=r"btyd_frequency.*computed on demand.*needs="):
        prep.classify(["clv"])


def _captured_objective(monkeypatch, fit, *args):
    """The objective ``fit`` minimises (``evaluate(theta, hessian)``), captured from its optimiser call."""
    seen = []
    original = models._minimize

    def spy(evaluate, *a, **k):
        seen.append(evaluate)
        return original(evaluate, *a, **k)

    monkeypatch.setattr(models, "_minimize", spy)
    fit(*args)
    return seen[-1]


@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_analytic_gradient_and_hessian_equal_finite_differences(monkeypatch, penalizer):
    """Newton's method and the standard errors use the analytic gradient and Hessian (log-parameters)."""
    ref = pl.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    x, tx, T = (ref[c].to_numpy().astype(float) for c in ("x", "t_x", "T"))
    rep = ref.filter(pl.col("x") > 0)
    bg = _captured_objective(monkeypatch, lambda: models.fit_bgnbd(x, tx, T, np.ones(x.size), penalizer=penalizer))
    gg = _captured_objective(monkeypatch, lambda: models.fit_gamma_gamma(
        rep["x"].to_numpy().astype(float), rep["zbar"].to_numpy(), np.ones(rep.height), penalizer=penalizer))
    for evaluate, theta in ((bg, np.log([0.3, 0.5, 0.7, 2.0])), (gg, np.log([3.0, 2.0, 10.0]))):
        value, grad, hess = evaluate(theta, True)
        k, eps = theta.size, 1e-6
        num_grad = np.array([(evaluate(theta + e)[0] - evaluate(theta - e)[0]) / (2 * eps) for e in np.eye(k) * eps])
        num_hess = np.column_stack([(evaluate(theta + e)[1] - evaluate(theta - e)[1]) / (2 * eps)
                                    for e in np.eye(k) * eps])
        assert np.max(np.abs(num_grad - grad)) <= 1e-7 * np.max(np.abs(grad))
        assert np.max(np.abs(num_hess - hess)) <= 1e-7 * np.max(np.abs(hess))


def test_newton_from_a_subsample_gives_the_optimum_from_cold(monkeypatch):
    """Many distinct inputs: a warm start on a subsample, then Newton's method on all of them. Forced here on
    CDNOW (a 300-input subsample), it must land where the damped Newton's method from a cold start on every input
    does, standard errors included."""
    ref = pl.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    x, tx, T = (ref[c].to_numpy().astype(float) for c in ("x", "t_x", "T"))
    rep = ref.filter(pl.col("x") > 0)
    xr, m = rep["x"].to_numpy().astype(float), rep["zbar"].to_numpy()
    plain_bg, plain_gg = models.fit_bgnbd(x, tx, T, np.ones(x.size)), models.fit_gamma_gamma(xr, m, np.ones(xr.size))
    newton = []
    original = models._newton
    monkeypatch.setattr(models, "_newton", lambda *a, **k: newton.append(1) or original(*a, **k))
    monkeypatch.setattr(models, "_subsample", lambda n, size=300: np.arange(0, n, n // size)[:size] if n > size else None)
    warm_bg, warm_gg = models.fit_bgnbd(x, tx, T, np.ones(x.size)), models.fit_gamma_gamma(xr, m, np.ones(xr.size))
    assert len(newton) == 2
    for plain, warm in ((plain_bg, warm_bg), (plain_gg, warm_gg)):
        for k in plain.params:
            assert warm.params[k] == pytest.approx(plain.params[k], rel=1e-6)
            assert warm.standard_errors[k] == pytest.approx(plain.standard_errors[k], rel=1e-4)
        assert warm.log_likelihood == pytest.approx(plain.log_likelihood, rel=1e-10)


@pytest.mark.parametrize("ids", ["int", "text", "large"])
def test_summary_is_the_same_whatever_the_customer_ids(clv_registry, ids):
    """Integer ids within +-2^31 are grouped with the day by a packed key, the others by the pair of columns:
    both give the same summary (a mix of the two too: some ids of the large set fit, some do not)."""
    frame = cdnow_transactions()
    want = btyd_summary(engine.prepare(frame, as_of=CDNOW_AS_OF, registry=clv_registry,
                                       needs=SUMMARY_COLUMNS).customers)
    if ids == "text":
        frame = frame.with_columns(pl.format("c{}", "customer_id").alias("customer_id"))
        want = want.with_columns(pl.format("c{}", "customer_id").alias("customer_id"))
    elif ids == "large":  # odd customers beyond 2^31 (and negative), even ones not
        shift = pl.when(pl.col("customer_id") % 2 == 1).then(-(1 << 40)).otherwise(0)
        frame = frame.with_columns(pl.col("customer_id") + shift)
        want = want.with_columns(pl.col("customer_id") + shift)
    got = btyd_summary(engine.prepare(frame, as_of=CDNOW_AS_OF, registry=clv_registry,
                                      needs=SUMMARY_COLUMNS).customers)
    assert got.sort("customer_id").equals(want.sort("customer_id"))


def test_weekly_summary_equals_lifetimes_freq_w(clv_registry):
    """Calendar weeks as purchase periods (lifetimes' freq="W", pymc-marketing's time_unit="W") against lifetimes
    0.11.3's own summary of the CDNOW calibration period (bench/lifetimes_weekly_summary.py wrote the file)."""
    from plugins.clv import WEEKLY_COLUMNS

    prep = engine.prepare(cdnow_transactions(), as_of=CDNOW_AS_OF, registry=clv_registry, needs=WEEKLY_COLUMNS)
    assert not set(SUMMARY_COLUMNS) & set(prep.customers.columns)  # the daily query is not run for weeks alone
    ours = btyd_summary(prep.customers, "W")
    ref = pl.read_csv(DATA / "lifetimes_cdnow_summary_weekly.csv")
    both = ours.join(ref, on="customer_id", how="full", coalesce=True)
    assert both.height == 2357 and both["frequency"].null_count() == 0 and both["frequency_right"].null_count() == 0
    assert (both["frequency"] == both["frequency_right"]).all()
    assert (both["recency"] == both["recency_right"]).all() and (both["T"] == both["T_right"]).all()
    assert (both["monetary_value"] - both["monetary_value_right"]).abs().max() <= 1e-9
    # weeks merge days: fewer repeat periods than repeat days for someone, never more
    days = btyd_summary(engine.prepare(cdnow_transactions(), as_of=CDNOW_AS_OF, registry=clv_registry,
                                       needs=SUMMARY_COLUMNS).customers)
    merged = ours.join(days, on="customer_id", suffix="_days")
    assert (merged["frequency"] <= merged["frequency_days"]).all()
    assert (merged["frequency"] < merged["frequency_days"]).any()


def test_weekly_periods_are_monday_to_sunday(clv_registry):
    from plugins.clv import WEEKLY_COLUMNS

    d = dt.date
    frame = tx([
        (1, d(2024, 1, 7), 10.0),                               # a Sunday: the week of Monday 2024-01-01
        (1, d(2024, 1, 8), 4.0), (1, d(2024, 1, 14), 6.0),      # Monday and Sunday of the next week: one period
        (1, d(2024, 1, 16), -5.0),                              # a return only: no purchase week
        (1, d(2024, 1, 29), 0.0),                               # a zero amount: a purchase week of value 0
        (2, d(2024, 2, 4), 3.0),                                # a Sunday, in the last observed week
    ])
    # as_of 2024-02-05 (a Monday): the last observed day is Sunday 2024-02-04, its week starts 2024-01-29
    prep = engine.prepare(frame, as_of="2024-02-05", registry=clv_registry, needs=WEEKLY_COLUMNS)
    s = {r["customer_id"]: r for r in btyd_summary(prep.customers, "W").to_dicts()}
    assert (s[1]["frequency"], s[1]["recency"], s[1]["T"]) == (2, 4.0, 4.0)
    assert s[1]["monetary_value"] == pytest.approx(5.0)  # (4 + 6 + 0) / 2
    assert (s[2]["frequency"], s[2]["recency"], s[2]["T"], s[2]["monetary_value"]) == (0, 0.0, 0.0, 0.0)
    c = {r["customer_id"]: r for r in prep.customers.to_dicts()}
    assert c[1]["btyd_first_purchase_week"] == d(2024, 1, 1) and c[1]["btyd_last_purchase_week"] == d(2024, 1, 29)


def test_loading_the_plugin_does_not_import_scipy():
    """Every tierbook command loads every plugin; SciPy (longer to import than Polars), NumPy and threadpoolctl are
    for the runs that fit: a run of a playbook without clv never imports them."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from engine.registry import get_registry\n"
              "import engine\n"
              "get_registry()\n"
              "from engine.sample import SAMPLE_MAPPING\n"
              "engine.classify(engine.sample_path(), mapping=SAMPLE_MAPPING, classifiers=['abc', 'adc', 'rfm'])\n"
              "assert not [m for m in sys.modules if m.split('.')[0] in ('scipy', 'numpy', 'threadpoolctl')], "
              "'scipy, numpy or threadpoolctl imported'\n"
              "from plugins.clv import models\n"
              "assert models.MONTH and 'scipy.special' in sys.modules\n"
              "assert 'scipy.optimize' not in sys.modules, 'the fits need no SciPy optimiser'\n")
    subprocess.run([sys.executable, "-c", script], check=True)


def test_a_playbook_without_clv_never_imports_scipy(tmp_path):
    """Loading a playbook predicts every plugin's columns, clv's table function included (its query built, not run):
    a run of a playbook without clv never imports SciPy or threadpoolctl nor starts their import (a fresh process,
    as a command's), nor does validating a playbook with clv; running that one does, once, when its summary is
    computed."""
    import subprocess
    import sys

    cdnow_transactions().write_csv(tmp_path / "cdnow.csv")
    rules = ("rules:\n  - {name: keep, when: \"adc = 'active'\", action: call, channel: phone, owner: crm, "
             "due_days: 3, priority: 1}\nfallback: {action: none, channel: none, owner: crm}\n")
    head = "data: {transactions: cdnow.csv, as_of: 1997-10-01}\n"
    (tmp_path / "plain.yaml").write_text(f"name: plain\n{head}classifiers:\n  adc: {{}}\n  rfm: {{}}\n{rules}")
    (tmp_path / "clv.yaml").write_text(f"name: withclv\n{head}classifiers:\n  adc: {{}}\n  clv: {{}}\n{rules}")
    fit = "('scipy', 'threadpoolctl', 'plugins.clv.models')"
    script = ("import sys, engine.cli, plugins.clv as clv\n"
              f"def imported(): return [m for m in sys.modules if m.split('.')[0] in {fit} or m in {fit}]\n"
              f"assert engine.cli.main(['run', {str(tmp_path / 'plain.yaml')!r}]) == 0\n"
              "assert not imported() and not clv._loading, (imported(), clv._loading)\n"
              f"assert engine.cli.main(['validate', {str(tmp_path / 'clv.yaml')!r}]) == 0\n"
              "assert not imported() and not clv._loading, (imported(), clv._loading)\n"
              f"assert engine.cli.main(['run', {str(tmp_path / 'clv.yaml')!r}]) == 0\n"
              "assert [t.name for t in clv._loading] == ['clv-imports'], clv._loading\n"
              "assert {'scipy.special', 'threadpoolctl', 'plugins.clv.models'} <= set(sys.modules)\n")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)


@pytest.mark.parametrize("ids", ["integer", "text"])
def test_the_summary_loads_the_fit_libraries_beside_the_pass(ids, tmp_path):
    """A run that computes the BTYD summary (the clv classifier's, or a rule's) starts importing NumPy, SciPy and
    threadpoolctl in a thread of its own, once, when the summary's query runs (a fresh process, as a command's):
    integer ids before the summary's NumPy step, text ids (grouped by Polars) once their table is computed; a run
    without the summary does not (test_loading_the_plugin_does_not_import_scipy)."""
    import subprocess
    import sys

    cdnow_transactions().write_csv(tmp_path / "cdnow.csv")
    id_type = "pl.Int64" if ids == "integer" else "pl.String"
    script = ("import sys\n"
              "import polars as pl\n"
              "import engine\n"
              "from engine.registry import get_registry\n"
              "import plugins.clv as clv\n"
              "registry = get_registry(allow=['abc', 'adc', 'rfm', 'clv'], strict=True)\n"
              "assert not clv._loading and 'scipy' not in sys.modules\n"
              f"frame = pl.read_csv({str(tmp_path / 'cdnow.csv')!r}, schema_overrides={{'customer_id': {id_type}}})\n"
              "for _ in range(2):\n"
              "    engine.prepare(frame, as_of='1997-10-01', registry=registry, needs=clv.SUMMARY_COLUMNS)\n"
              "assert [t.name for t in clv._loading] == ['clv-imports'], clv._loading\n"
              "clv._loading[0].join()\n"
              "assert {'numpy', 'scipy.special', 'threadpoolctl', 'plugins.clv.models'} <= set(sys.modules)\n")
    subprocess.run([sys.executable, "-c", script], check=True)


def test_the_fits_run_with_blas_on_one_thread():
    """The fit limits BLAS to one thread; a limit applies to the libraries loaded when it is set, so the fit
    loads NumPy and SciPy before it (a fresh process, as a command's: nothing imported them before)."""
    import os
    import subprocess
    import sys

    script = ("import sys\n"
              "import plugins.clv as clv\n"
              "assert 'numpy' not in sys.modules\n"
              "seen = []\n"
              "def spy(customers, p, ctx):  # what the fit's body sees, importing NumPy and SciPy as it does\n"
              "    import numpy, scipy.special\n"
              "    from threadpoolctl import threadpool_info\n"
              "    seen.extend(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas')\n"
              "    return {}\n"
              "clv._fit = spy\n"
              "clv.fit(None, {}, None)\n"
              "assert seen and set(seen) == {1}, seen\n")
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "2"})


def test_weekly_fit_and_predictions_equal_lifetimes_freq_w(clv_registry):
    """clv.period=week fits and predicts on calendar weeks (lifetimes' freq="W"): the parameters and every CDNOW
    customer's P(alive), expected purchases (12 months of 4.345 weeks), expected spend and CLV (12 months, 0.01 a
    month) against lifetimes 0.11.3's own fit on its weekly summary (bench/lifetimes_weekly_summary.py)."""
    # engine.classify asks for the columns the classifier requires with period=week: the weekly summary only
    out = engine.classify(cdnow_transactions(), as_of=CDNOW_AS_OF, classifiers=["clv"], params={"clv.period": "week"},
                          registry=clv_registry)
    assert not set(SUMMARY_COLUMNS) & set(out.columns)
    ref = pl.read_csv(DATA / "lifetimes_cdnow_predictions_weekly.csv")
    both = out.join(ref, on="customer_id", how="full", coalesce=True)
    assert both.height == 2357 and both["clv"].null_count() == 0 and both["p_alive"].null_count() == 0
    for ours, theirs in (("clv_p_alive", "p_alive"), ("clv_expected_purchases", "expected_purchases"),
                         ("clv_expected_value", "expected_value"), ("clv", "clv")):
        # the same tolerance as the daily comparison: the two optimisers stop a few 1e-7 apart
        worst = ((both[ours] - both[theirs]).abs() - 1e-4 * both[theirs].abs() - 1e-9).max()
        assert worst <= 0, (ours, worst)
    prep = engine.prepare(cdnow_transactions(), as_of=CDNOW_AS_OF, registry=clv_registry,
                          needs=[*SUMMARY_COLUMNS, *WEEKLY_COLUMNS])
    prep.classify(["clv"], {"clv.period": "week"})
    fit = prep.fits["clv"]
    assert (fit["period"], fit["time_unit"], fit["customers_fitted"]) == ("week", "weeks", 2357)
    want = json.loads((DATA / "lifetimes_cdnow_params_weekly.json").read_text())
    for part in ("bgnbd", "gamma_gamma"):
        for name, value in want[part].items():
            assert fit[part]["params"][name] == pytest.approx(value, rel=1e-4), (part, name)
    # weeks are not days / 7: fewer repeat periods, another fit
    prep.classify(["clv"], {"clv.time_unit": "weeks"})
    assert prep.fits["clv"]["period"] == "day"
    assert prep.fits["clv"]["repeat_customers"] > fit["repeat_customers"]
    assert prep.fits["clv"]["bgnbd"]["params"]["r"] != pytest.approx(fit["bgnbd"]["params"]["r"], rel=1e-2)


def test_weekly_fit_from_a_playbook_and_its_errors(tmp_path, run_cli):
    """A playbook (and --set) tune the period like any parameter: the run computes the weekly summary it needs;
    a bad value, or calendar weeks all of one week, is one line and exit 2."""
    _cdnow_playbook(tmp_path, "{period: week}", "clv_tier = 'high'")
    code, _, err = run_cli("run", tmp_path / "pb.yaml")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "cdnow" / "summary.json").read_text())
    want = json.loads((DATA / "lifetimes_cdnow_params_weekly.json").read_text())
    assert summary["fits"]["clv"]["period"] == "week"
    assert summary["fits"]["clv"]["bgnbd"]["params"]["r"] == pytest.approx(want["bgnbd"]["r"], rel=1e-4)
    customers = pl.read_parquet(tmp_path / "out" / "cdnow" / "customers.parquet")
    assert customers.height == 2357 and customers["clv"].null_count() == 0 and not customers["clv"].is_nan().any()

    code, _, err = run_cli("classify", tmp_path / "cdnow.csv", "--classifier", "clv", "--set", "clv.period=month",
                           "-o", tmp_path / "o.parquet")
    assert code == 2 and "period" in err and "month" in err and len(err.strip().splitlines()) == 1
    d = dt.date
    frame = tx([(i, d(2024, 1, 1) + dt.timedelta(days=i % 7), 5.0) for i in range(30)]
               + [(i, d(2024, 1, 1) + dt.timedelta(days=6 - i % 7), 5.0) for i in range(30)])  # two days, one week
    frame.write_csv(tmp_path / "week.csv")
    code, _, err = run_cli("classify", tmp_path / "week.csv", "--classifier", "clv", "--set", "clv.period=week",
                           "-o", tmp_path / "o.parquet")
    assert code == 2 and "bought in one calendar week only" in err and not (tmp_path / "o.parquet").exists()
    assert len(err.strip().splitlines()) == 1

    from plugins.clv.holdout import holdout

    with pytest.raises(DataError, match="period 'week' is not supported"):
        holdout(cdnow_transactions(), CDNOW_AS_OF, params={"period": "week"})


@pytest.mark.parametrize("high, medium", [(0.2, 0.5), (0.0, 0.3), (0.1, 1.0), (0.0, 0.0), (1.0, 1.0), (0.333, 0.334)])
def test_tiers_are_the_min_ranks_within_the_shares(cdnow, high, medium):
    """clv_tier: high for the customers whose rank by CLV (highest first, ties sharing the lowest rank) is within
    ceil(n x high_share), medium within ceil(n x medium_share), low the rest; none without a CLV. CDNOW has many
    ties (customers with the same history have the same CLV), and a tie on a cut keeps all of it in the better tier."""
    out = cdnow.classify(["clv"], {"clv.high_share": high, "clv.medium_share": medium})
    n = out["clv"].count()
    rank = out["clv"].rank("min", descending=True)
    want = [None if r is None else "high" if r <= math.ceil(n * high) else "medium" if r <= math.ceil(n * medium)
            else "low" for r in rank.to_list()]
    assert out["clv_tier"].cast(pl.String).to_list() == want
    assert out.filter(pl.col("clv") == pl.col("clv").max())["clv_tier"].unique().to_list() == (
        ["high"] if high > 0 else ["medium"] if medium > 0 else ["low"])


def _summary_columns(customers: pl.DataFrame) -> pl.DataFrame:
    return customers.select("customer_id", *[c for c in customers.columns if c.startswith("btyd_")]).sort("customer_id")


def _plain_summary(frame: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """Per customer the purchase days, the first and the last, and the value after the first day, as a plain
    group_by of the lines says (amounts summed as floats of cents: exact at these sizes)."""
    lines = frame.filter(pl.col("order_date") < as_of, pl.col("amount") >= 0)
    days = lines.group_by("customer_id", "order_date").agg(pl.col("amount").sum())
    return days.group_by("customer_id").agg(
        pl.len().cast(pl.Int64).alias("btyd_purchase_days"), pl.col("order_date").min().alias("btyd_first_purchase"),
        pl.col("order_date").max().alias("btyd_last_purchase"),
        (pl.col("amount").sum() - pl.col("amount").sort_by("order_date").first()).alias("btyd_repeat_value"),
    ).sort("customer_id")


#: The ways the BTYD periods are read per customer, each forced by monkeypatching (see _force).
_WAYS = ("blocks", "blocks in chunks", "blocks in halves", "blocks in chunks and halves", "sorted keys",
         "periods by position", "periods by sorting")
_LINE_WAYS = 4  # the first four: blocks, which need lines in period order


def _force(clv, monkeypatch, way: str) -> None:
    """Make the summary read its periods per customer the one ``way`` (what the data would choose otherwise);
    ``blocks`` needs lines in period order."""
    if way.startswith("blocks"):  # every period a block, whatever the lines a period; never the sorted keys
        monkeypatch.setattr(clv, "_LINES_PER_BLOCK", 1)
        monkeypatch.setattr(clv, "_CHUNK_LINES", 1 if "chunks" in way else 1 << 30)  # a chunk a period
        # the lines copied and their blocks read in two halves on two threads, from two lines on
        monkeypatch.setattr(clv, "_PARALLEL_LINES", 2 if "halves" in way else 1 << 62)
        monkeypatch.setattr(clv, "_period_edges", lambda period, _f=clv._period_edges: _f(period) if (
            _f(period) is not None) else pytest.fail("lines not in period order"))
    elif way == "sorted keys":  # the lines never taken as in period order
        monkeypatch.setattr(clv, "_period_edges", lambda period: None)
    else:  # the lines grouped into periods (the way of ids too sparse for arrays over their range)
        monkeypatch.setattr(clv, "_dense_range", lambda ids, value: None)
        if way == "periods by sorting":
            monkeypatch.setattr(clv, "_by_position", lambda periods, id_type, weeks, names, low, span:
                                clv._by_sorting(periods.lazy(), id_type, weeks, names).collect())


@pytest.mark.parametrize("layout", ["by customer", "by date", "negative", "sparse"])
def test_summary_ways_agree(clv_registry, monkeypatch, layout):
    """The purchase periods are read per customer from the lines by position (ids dense: their range no larger
    than the number of lines), counting the distinct periods in blocks of one period (lines in period order) or by
    sorting packed keys; other ids group the lines into periods first, then read them by position or by sorting.
    Every way gives the same table on the same data, the one a plain group_by gives; dense ids take the lines' way
    (blocks for lines in date order, given enough lines a period), sparse ids the periods' way."""
    import plugins.clv as clv

    frame = cdnow_transactions()  # written by customer, then date
    if layout == "by date":
        frame = frame.sort("order_date", maintain_order=True)
    elif layout == "negative":  # dense, around 0
        frame = frame.with_columns(pl.col("customer_id") - 1000)
    elif layout == "sparse":  # a range 100,003 times the customer count: arrays over it would be too large
        frame = frame.with_columns(pl.col("customer_id") * 100_003)
    used = []

    def spy(name: str) -> None:
        real = getattr(clv, name)
        monkeypatch.setattr(clv, name, lambda *a: used.append(name) or real(*a))

    for name in ("_by_lines", "_in_blocks", "_per_customer"):
        spy(name)
    needs = (*SUMMARY_COLUMNS, *WEEKLY_COLUMNS)

    def summary() -> pl.DataFrame:
        return _summary_columns(engine.prepare(frame, as_of=CDNOW_AS_OF, registry=clv_registry, needs=needs).customers)

    got = summary()
    if layout == "sparse":
        assert used == ["_per_customer"] * 2  # days and weeks
    else:
        assert used == ["_by_lines"] * 2  # CDNOW has 12 lines a day: too few for blocks
        used.clear()
        with monkeypatch.context() as m:
            m.setattr(clv, "_LINES_PER_BLOCK", 10)  # 12 lines a day, 86 a week
            assert summary().equals(got)
        assert used == ["_by_lines", "_in_blocks"] * 2 if layout == "by date" else ["_by_lines"] * 2
    for way in _WAYS if layout == "by date" else _WAYS[_LINE_WAYS:]:
        with monkeypatch.context() as m:
            _force(clv, m, way)
            assert summary().equals(got), way
    plain = _plain_summary(frame, dt.date(1997, 10, 1))
    assert got.height == plain.height == 2357
    assert got.select(plain.columns).with_columns(pl.col("btyd_repeat_value").round(2)).equals(
        plain.with_columns(pl.col("btyd_repeat_value").round(2)))


@pytest.mark.parametrize("seed, in_order", [(1, True), (2, True), (3, True), (4, False)])
def test_summary_ways_agree_on_many_lines_a_day(clv_registry, monkeypatch, seed, in_order):
    """Customers with many lines on one day, among other customers' (a log written by date, as the bench set): the
    blocks flag one line of each customer and day, whichever their order; every way agrees with a plain group_by.
    Out of order (one day's lines in two places, the rest in date order): never blocks, which would count that
    day twice for a customer with lines in both places."""
    import plugins.clv as clv

    rng = np.random.default_rng(seed)
    n = 50_000
    frame = pl.DataFrame({"customer_id": rng.integers(1, 300, n),
                          "order_date": pl.Series(rng.integers(19_723, 19_763, n), dtype=pl.Int32).cast(pl.Date),
                          "amount": rng.integers(-50, 500, n) / 4}).sort("order_date", maintain_order=True)
    if not in_order:  # half the lines of 2024-01-10 moved to the end
        late = (pl.col("order_date") == dt.date(2024, 1, 10)) & (pl.int_range(pl.len()) % 2 == 0)
        frame = pl.concat([frame.filter(~late), frame.filter(late)])
    as_of = dt.date(2024, 2, 5)
    used = []
    monkeypatch.setattr(clv, "_in_blocks",
                        lambda *a, _f=clv._in_blocks: used.append(1) or _f(*a))

    def summary() -> pl.DataFrame:
        return _summary_columns(engine.prepare(frame, as_of=as_of, registry=clv_registry,
                                               needs=SUMMARY_COLUMNS).customers)

    got = summary()
    assert bool(used) == in_order  # 1,250 lines a day: blocks, when in order
    for way in _WAYS if in_order else _WAYS[_LINE_WAYS:]:
        with monkeypatch.context() as m:
            _force(clv, m, way)
            assert summary().equals(got), way
    plain = _plain_summary(frame, as_of)
    assert got.select(plain.columns).equals(plain)


@pytest.mark.parametrize("halves", [False, True])
@pytest.mark.parametrize("chunk", [1, 6, 1 << 30])
def test_summary_blocks_take_an_orders_lines_as_one_run(clv_registry, monkeypatch, chunk, halves):
    """In blocks, consecutive lines of one customer in one period are one run, its values summed; a run never
    spans two periods (the same customer's last line of a day and first of the next, side by side), two runs of a
    customer on one day (another customer's line between them) count the day once, and a zero amount is a purchase
    day, a return none; the customer of the first line (the run of index 0) buys once only. A chunk a day, or all
    days in one chunk, or two days a chunk (the second chunk's inner edge taken from its own start): the table a
    plain group_by gives. In two halves (the 17 purchase lines split at the edge nearest line 8: days 1-2 and 3-4),
    the same: customer 1's opening day in the second half is a repeat day, customer 6's (first seen there) is not,
    the last day is the second half's where it has one (1, 3, 4, 6), else the first's (2, 5)."""
    import plugins.clv as clv

    d = dt.date
    frame = tx([
        (5, d(2024, 1, 1), 3.0),                                # the first line's customer, who buys once only
        (1, d(2024, 1, 1), 10.0), (1, d(2024, 1, 1), 5.0),     # customer 1's first day: a run of two lines
        (2, d(2024, 1, 1), 7.0),
        (3, d(2024, 1, 1), 4.0),                                # 3's last line of 2024-01-01 ...
        (3, d(2024, 1, 2), 9.0), (3, d(2024, 1, 2), 1.0),      # ... beside the first of 2024-01-02: two days
        (2, d(2024, 1, 2), 3.0), (4, d(2024, 1, 2), 8.0),
        (2, d(2024, 1, 2), 6.0),                                # 2's second run of the day: one purchase day
        (1, d(2024, 1, 3), 2.0), (1, d(2024, 1, 3), -4.0),     # a return beside a purchase: not summed
        (4, d(2024, 1, 3), -2.0),                               # a return only: no purchase day
        (4, d(2024, 1, 4), 0.0), (1, d(2024, 1, 4), 0.5),      # a zero amount: a purchase day of value 0
        (3, d(2024, 1, 4), 2.5), (3, d(2024, 1, 4), 2.5),
    ]).vstack(tx([(6, d(2024, 1, 3), 1.5), (6, d(2024, 1, 4), 4.0)])).sort("order_date", maintain_order=True)
    monkeypatch.setattr(clv, "_LINES_PER_BLOCK", 1)
    monkeypatch.setattr(clv, "_CHUNK_LINES", chunk)
    monkeypatch.setattr(clv, "_PARALLEL_LINES", 17 if halves else 18)  # the 17 purchase lines: halves or not
    used, parts = [], []
    monkeypatch.setattr(clv, "_in_blocks", lambda *a, _f=clv._in_blocks: used.append(1) or _f(*a))
    monkeypatch.setattr(clv, "_blocks_part", lambda *a, _f=clv._blocks_part: parts.append([a[-2][0], a[-2][-1]])
                        or _f(*a))
    got = _summary_columns(engine.prepare(frame, as_of="2024-01-05", registry=clv_registry,
                                          needs=SUMMARY_COLUMNS).customers)
    assert used == [1]
    assert sorted(parts) == ([[0, 10], [10, 17]] if halves else [[0, 17]])  # each part's first and last bound
    assert got.select(_plain_summary(frame, d(2024, 1, 5)).columns).equals(_plain_summary(frame, d(2024, 1, 5)))
    c = {r["customer_id"]: r for r in got.to_dicts()}
    assert [c[i]["btyd_purchase_days"] for i in (1, 2, 3, 4, 5, 6)] == [3, 2, 3, 2, 1, 2]
    assert [c[i]["btyd_repeat_value"] for i in (1, 2, 3, 4, 5, 6)] == [2.5, 9.0, 15.0, 0.0, 0.0, 4.0]
    assert [c[i]["btyd_first_purchase"] for i in (1, 2, 3, 4, 5, 6)] == [d(2024, 1, 1)] * 3 + [
        d(2024, 1, 2), d(2024, 1, 1), d(2024, 1, 3)]
    assert [c[i]["btyd_last_purchase"] for i in (1, 2, 3, 4, 5, 6)] == [d(2024, 1, 4), d(2024, 1, 2), d(2024, 1, 4),
                                                                         d(2024, 1, 4), d(2024, 1, 1), d(2024, 1, 4)]


@pytest.mark.parametrize("halves", [False, True])
@pytest.mark.parametrize("weeks", [False, True])
@pytest.mark.parametrize("aligned", [True, False])
def test_purchase_lines_from_the_rows_chunks(monkeypatch, weeks, aligned, halves):
    """The NumPy step's purchase lines (amount >= 0, in the lines' order) from rows in several chunks, as the dense
    pass keeps them (a chunk with returns, one without, one of returns only), or with columns chunked unlike each
    other: what a Polars filter gives, periods as _period numbers them (days, or calendar weeks, before 1970 too:
    day numbers below 0, weeks rounded down)."""
    import plugins.clv as clv

    rng = np.random.default_rng(5)
    parts = []
    for n, low in ((700, -40), (500, 0), (300, None)):  # amounts from low (None: returns only)
        units = rng.integers(-500, -1, n) if low is None else rng.integers(low, 900, n)
        parts.append(pl.DataFrame({"customer_id": rng.integers(-3, 200, n), "order_date": pl.Series(
            rng.integers(-40, 60, n), dtype=pl.Int32).cast(pl.Date), "amount_units": units}))  # 1969 and 1970
    rows = pl.concat(parts, rechunk=False)
    assert rows.n_chunks() == 3
    lines = rows.select("customer_id", pl.col("order_date").cast(pl.Int32).alias("_day"), "amount_units")
    if not aligned:
        lines = lines.with_columns(lines["amount_units"].rechunk())
        assert lines["amount_units"].n_chunks() == 1 and lines["customer_id"].n_chunks() == 3
    monkeypatch.setattr(clv, "_PARALLEL_LINES", 2 if halves else 1 << 62)  # two halves of the chunks, two threads
    ids, period, value = clv._purchase_lines(lines, weeks)
    want = rows.filter(pl.col("amount_units") >= 0).with_columns(clv._period(weeks).alias("_period"))
    assert (ids.dtype, period.dtype, value.dtype) == (np.int64, np.int32, np.int64)
    assert ids.tolist() == want["customer_id"].to_list() and value.tolist() == want["amount_units"].to_list()
    assert period.tolist() == want["_period"].to_list()
    assert len(ids) == 700 + 500 - int((parts[0]["amount_units"] < 0).sum())


@pytest.mark.parametrize("sizes, split", [([100] * 5 + [300], (4, 6)), ([600, 100, 100], (1, 3)),
                                          ([100, 300, 400], (2, 3)), ([100, 700], (1, 2)), ([800], None),
                                          ([400, 1, 400], (1, 3))])
def test_purchase_lines_halves_split_where_half_the_purchases_are(monkeypatch, sizes, split):
    """From _PARALLEL_LINES purchase lines on (800 here: the threshold itself), the chunks are written in two halves
    on two threads, the second from the first chunk boundary with at least half the purchases before it (after the
    fourth of five chunks of 100 and one of 300: 400 of 800; after the first of 600, 100 and 100), or from the last
    chunk when it holds more than half; one chunk is not split; below the threshold nothing is. Half of an odd
    count is rounded down (400 of 801: after the first chunk). The lines as one thread writes them."""
    import plugins.clv as clv

    rows = pl.concat([pl.DataFrame({"customer_id": np.arange(n, dtype=np.int64) + k, "_day": pl.Series(
        np.full(n, k, dtype=np.int32)), "amount_units": np.arange(n, dtype=np.int64)}) for k, n in enumerate(sizes)],
        rechunk=False)
    splits = []

    class Pool(clv.ThreadPoolExecutor):
        def submit(self, fn, *args):
            splits.append(args)
            return super().submit(fn, *args)

    monkeypatch.setattr(clv, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(clv, "_PARALLEL_LINES", 800)
    ids, period, value = clv._purchase_lines(rows, False)
    assert splits == ([] if split is None else [split])  # the second half: chunks split[0] to split[1] - 1
    assert ids.tolist() == rows["customer_id"].to_list() and value.tolist() == rows["amount_units"].to_list()
    assert period.tolist() == rows["_day"].to_list()
    monkeypatch.setattr(clv, "_PARALLEL_LINES", sum(sizes) + 1)
    splits.clear()
    assert clv._purchase_lines(rows, False)[0].tolist() == ids.tolist() and splits == []


@pytest.mark.parametrize("last", [True, False])
def test_summary_blocks_halves_when_one_day_holds_most_lines(clv_registry, monkeypatch, last):
    """The blocks' two parts split at the first edge from the middle line on; when every edge comes before it (the
    last day holds more than half the lines), at the last edge: two parts still, the last day the second; when the
    first day holds more than half, at the first edge. The table a plain group_by gives."""
    import plugins.clv as clv

    d = dt.date
    many = [(c % 3 + 1, d(2024, 1, 3 if last else 1), 1.0 + c) for c in range(6)]
    few = [(1, d(2024, 1, 1), 2.0), (2, d(2024, 1, 2), 3.0)] if last else [(1, d(2024, 1, 2), 2.0),
                                                                            (4, d(2024, 1, 3), 3.0)]
    frame = tx([*few, *many] if last else [*many, *few])
    monkeypatch.setattr(clv, "_LINES_PER_BLOCK", 1)
    monkeypatch.setattr(clv, "_PARALLEL_LINES", 2)
    parts = []
    monkeypatch.setattr(clv, "_blocks_part", lambda *a, _f=clv._blocks_part: parts.append([a[-2][0], a[-2][-1]])
                        or _f(*a))
    got = _summary_columns(engine.prepare(frame, as_of="2024-02-01", registry=clv_registry,
                                          needs=SUMMARY_COLUMNS).customers)
    # the middle line 4: edges at lines 1 and 2, split at line 2; or edges at 6 and 7, split at 6
    assert sorted(parts) == ([[0, 2], [2, 8]] if last else [[0, 6], [6, 8]])
    plain = _plain_summary(frame, d(2024, 2, 1))
    assert got.select(plain.columns).equals(plain)


def test_summary_blocks_of_one_period(clv_registry, monkeypatch):
    """Lines of a single day read in blocks (one block, no edge between periods): every customer's one purchase
    day, as a plain group_by gives it."""
    import plugins.clv as clv

    d = dt.date
    frame = tx([(c % 4, d(2024, 1, 3), 1.0 + c) for c in range(12)])
    monkeypatch.setattr(clv, "_LINES_PER_BLOCK", 1)
    used = []
    monkeypatch.setattr(clv, "_in_blocks", lambda *a, _f=clv._in_blocks: used.append(1) or _f(*a))
    got = _summary_columns(engine.prepare(frame, as_of="2024-02-01", registry=clv_registry,
                                          needs=SUMMARY_COLUMNS).customers)
    assert used == [1] and got.height == 4
    plain = _plain_summary(frame, d(2024, 2, 1))
    assert got.select(plain.columns).equals(plain)


def test_summary_by_position_whenever_the_total_fits_an_int64(clv_registry, monkeypatch):
    """Dense ids are read by position whenever no Int64 sum of their units can wrap: the lines times the largest
    below 2^63 (a total of 5e18 units, above 2^62), or else the float total below 2^62 (three lines of 1e18 units
    among ten: 3e18); not with a float total from 2^62 on and the lines times the largest from 2^63 on (six of
    1e18 among ten), which the float's rounding could not tell from a wrapping one near 2^63; nor ids spread wider
    than the lines. Each way the table a plain group_by gives."""
    import plugins.clv as clv

    d = dt.date
    big = 1e14  # the largest amount a line may hold: 1e18 units
    cases = [
        (True, tx([(1, d(2024, 1, 1), big), (1, d(2024, 1, 2), big), *((c, d(2024, 1, 3), big) for c in (2, 3, 4))])),
        (True, tx([(c, d(2024, 1, c), big if c <= 3 else 1.5) for c in range(1, 11)])),
        (False, tx([(c, d(2024, 1, c), big if c <= 6 else 1.5) for c in range(1, 11)])),
        (False, tx([(1, d(2024, 1, 1), 1.0), (3, d(2024, 1, 2), 2.0)])),  # ids spread wider than the lines: sparse
        (True, tx([(1, d(2024, 1, 1), 1.0), (2, d(2024, 1, 2), 2.0)])),
    ]
    used = []
    monkeypatch.setattr(clv, "_by_lines", lambda *a, _f=clv._by_lines: used.append(1) or _f(*a))
    for by_position, frame in cases:
        used.clear()
        got = _summary_columns(engine.prepare(frame, as_of="2024-02-01", registry=clv_registry,
                                              needs=SUMMARY_COLUMNS).customers)
        assert bool(used) == by_position  # (in each pass: these sums make the feature pass run again, wide)
        plain = _plain_summary(frame, d(2024, 2, 1))
        assert got.select(plain.columns).equals(plain)


def test_summary_ids_beyond_31_bits(clv_registry):
    """Integer ids just beyond +-2^31 (within +-2^32, whose packed key id * 2^32 would leave an Int64) are grouped
    by the pair in the pass, those within by their lines; sparse ids in both parts: the table a plain group_by
    gives."""
    d = dt.date
    big = [-3_000_000_000, -(1 << 31) - 1, -(1 << 31), (1 << 31) - 1, 1 << 31, 3_000_000_000, 7]
    frame = tx([(c, d(2024, 1, 1 + k % 5), 2.0 + k) for k, c in enumerate(big * 3)]
               + [(c, d(2024, 1, 9), -1.0) for c in big])
    got = _summary_columns(engine.prepare(frame, as_of="2024-02-01", registry=clv_registry,
                                          needs=SUMMARY_COLUMNS).customers)
    plain = _plain_summary(frame, d(2024, 2, 1))
    assert got.height == len(big) and got.select(plain.columns).equals(plain)


def test_summary_exact_beyond_int64_units(clv_registry, monkeypatch):
    """Amounts whose units add up beyond an Int64 (the pass runs again with Int128 units): the purchase days'
    values are summed exactly, by sorting (a customer's total beyond Int64 cannot be kept by position)."""
    import plugins.clv as clv

    d = dt.date
    big = 1e14  # the largest amount a line may hold: 1e18 units; 12 of them pass 2^63
    frame = tx([(1, d(2024, 1, 1), 1.0), *((1, d(2024, 1, 2 + i), big) for i in range(12)), (2, d(2024, 1, 3), 5.0),
                (2, d(2024, 1, 20), 2.5)])
    sorted_ = []
    monkeypatch.setattr(clv, "_by_sorting", lambda *a, _f=clv._by_sorting: sorted_.append(1) or _f(*a))
    prep = engine.prepare(frame, as_of="2024-02-01", registry=clv_registry, needs=SUMMARY_COLUMNS)
    assert sorted_  # the total of customer 1 does not fit an Int64: by sorting
    c = {r["customer_id"]: r for r in prep.customers.to_dicts()}
    assert c[1]["btyd_purchase_days"] == 13 and c[1]["btyd_repeat_value"] == 12 * big
    assert c[1]["btyd_monetary_value"] == big and c[1]["btyd_frequency"] == 12
    assert c[2]["btyd_repeat_value"] == 2.5 and c[2]["btyd_recency"] == 17


def test_summary_on_the_dense_pass(clv_registry, monkeypatch):
    """Orders numbered in the input's order (CDNOW by date, a line an order): the feature pass takes the dense way
    (arrays indexed by id) and the summary rides on it, on the usable rows it keeps; the customer table, the
    summary and the fit's inputs are the streaming pass's."""
    import engine.features as features

    frame = cdnow_transactions().sort("order_date", maintain_order=True).with_row_index("order_id")
    frame = frame.with_columns(pl.col("order_id").cast(pl.Int64))
    ran = spy_dense_pass(monkeypatch)
    needs = (*SUMMARY_COLUMNS, *WEEKLY_COLUMNS)
    got = {}
    for dense in (True, False):
        monkeypatch.setattr(features, "DENSE_PASS", dense)
        got[dense] = engine.prepare(frame, as_of=CDNOW_AS_OF, registry=clv_registry, needs=needs)
    assert ran == [True]
    assert got[True].customers.equals(got[False].customers)
    assert got[True].report.orders_counted == "boundaries"
    plain = _plain_summary(frame, dt.date(1997, 10, 1))
    assert _summary_columns(got[True].customers).select(plain.columns).with_columns(
        pl.col("btyd_repeat_value").round(2)).equals(plain.with_columns(pl.col("btyd_repeat_value").round(2)))


def test_spend_in_cents_or_dollars_gives_the_same_fit(cdnow, clv_registry):
    """Gamma-Gamma's v is a scale: CDNOW's amounts in hundreds of dollars (every mean spend below 1) give the same
    p and q, v / 100 and the same customers fitted; the purchase process does not see amounts at all."""
    cdnow.classify(["clv"])
    fit = cdnow.fits["clv"]
    scaled = engine.prepare(cdnow_transactions().with_columns(pl.col("amount") / 100), as_of=CDNOW_AS_OF,
                            registry=clv_registry, needs=SUMMARY_COLUMNS)
    scaled.classify(["clv"])
    small = scaled.fits["clv"]
    assert small["repeat_customers"] == fit["repeat_customers"] == 946
    assert small["repeat_customers_without_spend"] == fit["repeat_customers_without_spend"] == 0
    gg, gg_small = fit["gamma_gamma"]["params"], small["gamma_gamma"]["params"]
    assert gg_small["p"] == pytest.approx(gg["p"], rel=1e-5) and gg_small["q"] == pytest.approx(gg["q"], rel=1e-5)
    assert gg_small["v"] == pytest.approx(gg["v"] / 100, rel=1e-5)
    assert small["bgnbd"]["params"] == pytest.approx(fit["bgnbd"]["params"], rel=1e-9)


def test_frequency_monetary_correlation_is_reported(cdnow):
    """summary.json's check of Gamma-Gamma's assumption: the Pearson correlation of frequency and mean spend over
    the repeat buyers, as a number wherever it is defined."""
    customers = cdnow.classify(["clv"])
    repeat = customers.filter(pl.col("btyd_frequency") > 0)
    expected = np.corrcoef(repeat["btyd_frequency"].to_numpy(), repeat["btyd_monetary_value"].to_numpy())[0, 1]
    got = cdnow.fits["clv"]["frequency_monetary_correlation"]
    assert isinstance(got, float) and got == pytest.approx(expected, rel=1e-9)


def _bgnbd_log_likelihood(params: dict, x, tx, T) -> float:
    """BG/NBD's log-likelihood (Fader, Hardie and Lee 2005, equation 6), written out here apart from the plugin."""
    from scipy.special import betaln, gammaln

    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    x, tx, T = (np.asarray(v, dtype=float) for v in (x, tx, T))
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
    alive = -(r + x) * np.log(alpha + T)
    died = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + tx), -np.inf)
    return float(np.sum(common + np.logaddexp(alive, died)))


@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_the_reported_log_likelihood_is_the_models_without_the_penalty(penalizer):
    """The fit reports the log-likelihood of its parameters, the penalty left out: CDNOW's published -9582.4
    unpenalised, and with a penalizer the (lower) likelihood of the penalised parameters."""
    ref = pl.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    x, tx, T = (ref[c].to_numpy() for c in ("x", "t_x", "T"))
    fit = models.fit_bgnbd(x, tx, T, np.ones(ref.height), penalizer=penalizer)
    assert fit.log_likelihood == pytest.approx(_bgnbd_log_likelihood(fit.params, x, tx, T), rel=1e-9)
    if penalizer == 0:
        assert round(fit.log_likelihood, 1) == -9582.4
    else:
        assert fit.log_likelihood < -9582.4


def test_min_repeat_customers_is_the_fewest_that_fit(cdnow):
    """clv.min_repeat_customers = n fits with exactly n repeat buyers (CDNOW's 946) and refuses n + 1."""
    cdnow.classify(["clv"], {"clv.min_repeat_customers": 946})
    assert cdnow.fits["clv"]["repeat_customers"] == 946
    with pytest.raises(DataError, match=r"only 946 of 2,357 .* fewer than min_repeat_customers \(947\)"):
        cdnow.classify(["clv"], {"clv.min_repeat_customers": 947})


def test_alphas_standard_error_follows_the_time_unit(cdnow):
    """alpha is a rate's scale: in days it is 7 times alpha in weeks, and so is its standard error; r, a and b and
    their standard errors do not depend on the unit."""
    cdnow.classify(["clv"], {"clv.time_unit": "weeks"})
    weeks = cdnow.fits["clv"]["bgnbd"]["standard_errors"]
    cdnow.classify(["clv"])
    days = cdnow.fits["clv"]["bgnbd"]["standard_errors"]
    assert days["alpha"] == pytest.approx(7 * weeks["alpha"], rel=1e-3)
    for name in ("r", "a", "b"):
        assert days[name] == pytest.approx(weeks[name], rel=1e-3)


@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_gamma_gammas_reported_log_likelihood_is_the_models(penalizer):
    """The Gamma-Gamma fit reports the log-likelihood of the mean spends at its parameters (Fader and Hardie's
    density of a customer's mean spend), the penalty left out."""
    from scipy.special import gammaln

    ref = pl.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv").filter(pl.col("x") > 0)
    x, m = ref["x"].to_numpy().astype(float), ref["zbar"].to_numpy()
    fit = models.fit_gamma_gamma(x, m, np.ones(ref.height), penalizer=penalizer)
    p, q, v = (fit.params[k] for k in ("p", "q", "v"))
    expected = np.sum(gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v) + (p * x - 1) * np.log(m)
                      + p * x * np.log(x) - (p * x + q) * np.log(v + x * m))
    assert fit.log_likelihood == pytest.approx(expected, rel=1e-9)
