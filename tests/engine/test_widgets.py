"""The workbench: its numbers are the engine's numbers, whatever the controls say."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import types
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import engine
from engine import Classifier, Output, ParamSpec, hookimpl
from engine.features import LoadReport
from engine.registry import get_registry
from engine.run import Prepared, apply_classifiers, select, summarize
from engine.widgets import GenericPath, Workbench, WorkbenchModel

pytest.importorskip("ipywidgets")
ROOT = Path(__file__).resolve().parents[2]
ABC_PLAYBOOK = ROOT / "playbooks" / "abc-resource-allocation.yaml"
HV_PLAYBOOK = ROOT / "playbooks" / "high-value-care.yaml"


def engine_numbers(prepared: Prepared, selections) -> pl.DataFrame:
    classified = apply_classifiers(prepared.customers, selections, as_of=prepared.as_of, registry=prepared.registry)
    return summarize(classified, selections)


def shown_counts(wb: Workbench) -> dict[tuple[str, str], int]:
    """The class counts as the HTML shows them (what the browser test reads)."""
    found = re.findall(r'<td class="tierbook-count" data-classifier="[^"]*" data-column="([^"]*)" '
                       r'data-label="([^"]*)" data-value="(\d+)"', wb.summary.value)
    return {(c, lab): int(v) for c, lab, v in found}


@pytest.fixture(scope="module")
def abc_pb():
    return engine.load_playbook(ABC_PLAYBOOK)


@pytest.fixture(scope="module")
def abc_prepared(abc_pb):
    return abc_pb.prepare()


def test_controls_come_from_the_specs(abc_pb, abc_prepared):
    import ipywidgets as w

    wb = Workbench(abc_pb, prepared=abc_prepared, charts=False)
    a = wb.controls["abc.a"]
    assert isinstance(a, w.FloatSlider)
    spec = abc_pb.registry.classifier("abc").param("a")
    assert (a.min, a.max, a.step, a.value) == (spec.min, spec.max, spec.step, 0.8)
    assert isinstance(wb.controls["abc.mode"], w.Dropdown)
    assert wb.controls["abc.mode"].options == ("share", "rank")
    assert isinstance(wb.controls["abc.metric"], w.Dropdown)
    assert "frequency" in wb.controls["abc.metric"].options
    assert isinstance(wb.controls["adc.active_days"], w.IntSlider)
    assert wb.controls["adc.active_days"].max == 3650
    assert isinstance(wb.as_of, w.DatePicker) and wb.as_of.value == abc_prepared.as_of
    assert set(wb.controls) == {f"{n}.{p.name}" for n in ("abc", "adc") for p in
                                abc_pb.registry.classifier(n).params}


def test_moving_a_slider_changes_the_summary_to_the_engines(abc_pb, abc_prepared):
    wb = Workbench(abc_pb, prepared=abc_prepared, charts=False)
    before = shown_counts(wb)
    wb.controls["abc.a"].value = 0.6
    wb.controls["adc.active_days"].value = 45
    tuned = abc_pb.with_params({"abc.a": 0.6, "adc.active_days": 45})
    expected = engine_numbers(abc_prepared, tuned.selections)
    assert_frame_equal(wb.numbers, expected, check_exact=False, rel_tol=1e-9)
    shown = shown_counts(wb)
    assert shown == {(c, lab): n for c, lab, n in expected.select("column", "label", "customers").iter_rows()}
    assert shown[("abc", "A")] < before[("abc", "A")]
    # rules: the same hits and cuts as running the tuned playbook
    result = tuned.evaluate(abc_prepared)
    assert_frame_equal(wb.last_result.rule_summary, result.rule_summary)
    for row in result.rule_summary.iter_rows(named=True):
        assert f'class="tierbook-rule-hits" data-rule="{row["rule"]}" data-value="{row["hits"]}"' in wb.rules_box.value


def test_an_invalid_combination_is_reported_and_the_control_keeps_the_valid_value(abc_pb, abc_prepared):
    wb = Workbench(abc_pb, prepared=abc_prepared, charts=False)
    before = wb.numbers
    wb.controls["abc.a"].value = 0.97  # above b = 0.95
    assert "must be below b" in wb.status.value
    assert_frame_equal(wb.numbers, before)
    assert wb.controls["abc.a"].value == 0.8  # the slider keeps a < b: it shows the value in force
    assert wb.model.params["abc"]["a"] == 0.8
    assert not wb.has_unsaved_changes and wb.unsaved.value == ""
    wb.controls["abc.b"].value = 0.99
    wb.controls["abc.a"].value = 0.97  # now below b
    assert wb.status.value == ""
    assert wb.model.params["abc"]["a"] == 0.97
    assert "unsaved changes" in wb.unsaved.value


def test_save_after_a_refused_value_writes_what_the_controls_show(abc_pb, abc_prepared, tmp_path):
    target = tmp_path / "abc.yaml"
    shutil.copy(ABC_PLAYBOOK, target)
    wb = Workbench(abc_pb, prepared=abc_prepared, save_path=target, charts=False)
    wb.controls["abc.a"].value = 0.7
    wb.controls["abc.b"].value = 0.6  # refused: the control goes back to 0.95
    assert wb.controls["abc.b"].value == 0.95 and "kept the previous value" in wb.status.value
    wb.save_button.click()
    saved = yaml.safe_load(target.read_text())["classifiers"]["abc"]
    assert (saved["a"], saved.get("b", 0.95)) == (0.7, 0.95)
    assert (wb.controls["abc.a"].value, wb.controls["abc.b"].value) == (0.7, 0.95)
    assert "saved to" in wb.status.value and wb.unsaved.value == ""


def test_save_refuses_while_a_control_shows_a_value_not_in_force(abc_pb, abc_prepared, tmp_path):
    target = tmp_path / "abc.yaml"
    shutil.copy(ABC_PLAYBOOK, target)
    wb = Workbench(abc_pb, prepared=abc_prepared, save_path=target, charts=False)
    before = target.read_text()
    wb._syncing = True  # a control that moved without reaching the model (as a value in flight would)
    wb.controls["abc.a"].value = 0.5
    wb._syncing = False
    assert wb.save() is None
    assert "not saved" in wb.status.value and "abc.a" in wb.status.value
    assert target.read_text() == before


def test_the_diff_is_cleared_when_a_parameter_moves_after_save(abc_pb, abc_prepared, tmp_path):
    target = tmp_path / "abc.yaml"
    shutil.copy(ABC_PLAYBOOK, target)
    wb = Workbench(abc_pb, prepared=abc_prepared, save_path=target, charts=False)
    wb.controls["abc.a"].value = 0.7
    wb.save()
    assert "+    a: 0.7" in wb.diff_box.value
    wb.controls["abc.a"].value = 0.6
    assert wb.diff_box.value == "" and "unsaved changes" in wb.unsaved.value


def test_charts_and_samples(abc_pb, abc_prepared):
    wb = Workbench(engine.load_playbook(HV_PLAYBOOK), charts=True)
    images = {ident: img.value for ident, img in wb.chart_images.items()}
    # the classifiers' own charts, and class sizes for a classifier without one
    assert set(images) == {("rfm", "rf-grid"), ("abc", "pareto"), ("adc", "sizes-adc")}
    assert all(v[:4] == b"\x89PNG" for v in images.values())
    assert "tierbook-cut-table" in wb.rules_box.value  # vip-privileges has more takers than capacity
    wb.class_picker.value = ("value_tier", "high-value")
    assert "tierbook-sample" in wb.sample_box.value
    classified = wb.model.classified()
    top = classified.filter(pl.col("value_tier") == "high-value").sort("monetary", descending=True)
    assert str(top["customer_id"][0]) in wb.sample_box.value


def test_charts_redraw_only_when_what_they_show_changed(abc_pb, abc_prepared):
    wb = Workbench(engine.load_playbook(HV_PLAYBOOK), charts=True)
    assert wb.draws == {("rfm", "rf-grid"): 1, ("abc", "pareto"): 1, ("adc", "sizes-adc"): 1}
    wb.set({"rfm.hv_min_r": 4})  # value tiers move, the R x F grid and the Pareto curve do not
    assert wb.draws == {("rfm", "rf-grid"): 1, ("abc", "pareto"): 1, ("adc", "sizes-adc"): 1}
    wb.set({"abc.a": 0.6})
    assert wb.draws == {("rfm", "rf-grid"): 1, ("abc", "pareto"): 2, ("adc", "sizes-adc"): 1}
    wb.set({"rfm.bins": 4, "rfm.hv_min_r": 3})
    assert wb.draws == {("rfm", "rf-grid"): 2, ("abc", "pareto"): 2, ("adc", "sizes-adc"): 1}
    wb.set({"adc.active_days": 60})  # lifecycle stages move: their class sizes are drawn again
    assert wb.draws == {("rfm", "rf-grid"): 2, ("abc", "pareto"): 2, ("adc", "sizes-adc"): 2}


def test_a_classifier_without_a_fast_path_gets_a_class_size_chart(sample_path):
    registry = get_registry(allow=["abc"], modules=[BasketPlugin], strict=True)
    prepared = engine.prepare(sample_path, mapping=engine.sample.SAMPLE_MAPPING, registry=registry)
    wb = Workbench(prepared=prepared, selections=prepared.select(["basket", "abc"]))
    assert set(wb.chart_images) == {("basket", "sizes-basket"), ("abc", "pareto")}
    assert wb.chart_images[("basket", "sizes-basket")].value[:4] == b"\x89PNG"
    assert isinstance(wb.model.evaluator("basket"), GenericPath)
    sizes = wb.numbers.filter(pl.col("column") == "basket")["customers"].to_list()
    assert wb._chart_keys[("basket", "sizes-basket")] == ("basket", ("big", "small"), tuple(sizes))
    wb.set({"abc.a": 0.5})  # another classifier moved: the basket chart stays
    assert wb.draws[("basket", "sizes-basket")] == 1
    wb.set({"basket.min_aov": 100})
    assert wb.draws[("basket", "sizes-basket")] == 2


def test_save_writes_the_tuned_params_and_keeps_comments(abc_pb, abc_prepared, tmp_path):
    target = tmp_path / "abc.yaml"
    shutil.copy(ABC_PLAYBOOK, target)
    wb = Workbench(abc_pb, prepared=abc_prepared, save_path=target, charts=False)
    wb.controls["abc.a"].value = 0.7
    wb.save_button.click()
    text = target.read_text()
    assert "a: 0.7    # A: customers making up the top 80% of revenue" in text
    assert "# Goal: A customers get a senior account manager" in text
    assert "mode:" not in text  # untouched parameters are not written
    changed = [line for line in wb.diff_box.value.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ["-    a: 0.8    # A: customers making up the top 80% of revenue",
                       "+    a: 0.7    # A: customers making up the top 80% of revenue"]  # only the value moved
    assert ABC_PLAYBOOK.read_text() != text  # the repository's playbook is untouched


def test_a_mapping_parameter_reaches_the_playbook(tmp_path):
    pb = engine.load_playbook(HV_PLAYBOOK)
    model = WorkbenchModel.from_playbook(pb)
    grid = {"Top": ["55"], "Rest": [f"{r}{f}" for r in range(1, 6) for f in range(1, 6) if f"{r}{f}" != "55"]}
    model.set_params({"rfm": {"segments": grid}})
    assert model.playbook_now().classifiers["rfm"]["segments"] == grid
    assert model.numbers().filter(pl.col("column") == "rfm_segment")["label"].to_list()[:2] == ["Top", "Rest"]
    target = tmp_path / "hv.yaml"
    shutil.copy(HV_PLAYBOOK, target)
    assert "+    segments:" in model.save(target)


def test_as_of_recomputes_the_features(abc_pb, abc_prepared):
    wb = Workbench(abc_pb, prepared=abc_prepared, charts=False)
    day = abc_prepared.as_of - dt.timedelta(days=120)
    wb.as_of.value = day
    again = abc_pb.prepare(day)
    assert wb.model.n == again.customers.height
    assert_frame_equal(wb.numbers, engine_numbers(again, abc_pb.selections), check_exact=False, rel_tol=1e-9)


# ------------------------------------------------------- a third-party plugin
def _basket(p, ctx):
    big = pl.col("avg_order_value") >= p["min_aov"]
    if p["count_returns"]:
        big = big & (pl.col("returns") <= p["max_returns"])
    return {"basket": pl.when(big).then(pl.lit(p["big"])).otherwise(pl.lit("small"))}


BASKET = Classifier(
    name="basket", description="big or small baskets",
    outputs=lambda p: (Output("basket", "basket size", labels=(p["big"], "small")),),
    params=(ParamSpec("min_aov", "float", 300.0, "Average order value of a big basket.", min=0, max=1000, step=5),
            ParamSpec("max_returns", "int", 2, "Most returns a big basket may have.", min=0, max=20),
            ParamSpec("count_returns", "bool", False, "Also look at returns."),
            ParamSpec("big", "str", "big", "Name of the big class.", choices=("big", "large"))),
    requires=("avg_order_value", "returns"), expressions=_basket)


@hookimpl
def _register_basket(register):
    register(BASKET)


BasketPlugin = types.ModuleType("basket_plugin")  # a plugin module, as a notebook would define it
BasketPlugin.register_classifiers = _register_basket


def test_a_plugins_parameters_get_controls_and_engine_numbers(sample_path):
    import ipywidgets as w

    registry = get_registry(allow=["abc"], modules=[BasketPlugin], strict=True)
    prepared = engine.prepare(sample_path, mapping=engine.sample.SAMPLE_MAPPING, registry=registry)
    wb = Workbench(prepared=prepared, selections=prepared.select(["basket", "abc"]), charts=False)
    assert isinstance(wb.controls["basket.min_aov"], w.FloatSlider)
    assert isinstance(wb.controls["basket.max_returns"], w.IntSlider)
    assert isinstance(wb.controls["basket.count_returns"], w.Checkbox)
    assert isinstance(wb.controls["basket.big"], w.Dropdown)
    wb.controls["basket.min_aov"].value = 250
    wb.controls["basket.count_returns"].value = True
    wb.controls["basket.big"].value = "large"
    sels = prepared.select(["basket", "abc"], {"basket.min_aov": 250, "basket.count_returns": True,
                                               "basket.big": "large"})
    assert_frame_equal(wb.numbers, engine_numbers(prepared, sels), check_exact=False, rel_tol=1e-9)
    assert ("basket", "large") in shown_counts(wb)


# ------------------------------------------- fast evaluators = the engine
def synthetic(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    freq = rng.geometric(0.5, n)
    monetary = np.round(rng.choice([5.0, 10.0, 20.0, 50.0], n) * freq + rng.integers(-3, 3, n) * (rng.random(n) < 0.3), 0)
    rec = rng.integers(1, 800, n)
    no_purchase = rng.random(n) < 0.05     # no recency nor tenure: a prospect or a customer who only returned
    never_seen = no_purchase & (rng.random(n) < 0.5)   # no last_activity either: a prospect
    seen = pl.Series(np.datetime64("2024-01-01") - (rec - rng.integers(0, 2, n)).astype("timedelta64[D]")).dt.date()
    df = pl.DataFrame({"customer_id": np.arange(n), "recency_days": rec, "frequency": freq, "monetary": monetary,
                       "tenure_days": rec + rng.integers(0, 400, n), "last_activity": seen})
    return df.with_columns(
        *(pl.when(pl.Series(no_purchase)).then(None).otherwise(pl.col(c)).alias(c)
          for c in ("recency_days", "tenure_days")),
        pl.when(pl.Series(never_seen)).then(None).otherwise(pl.col("last_activity")).alias("last_activity"))


CHANGES = [
    {}, {"abc.a": 0.5, "abc.b": 0.7}, {"abc.a": 0.33}, {"abc.mode": "rank", "abc.a_rank": 0.1, "abc.b_rank": 0.3},
    {"abc.a_rank": 0.5, "abc.b_rank": 0.51}, {"abc.metric": "frequency", "abc.mode": "share", "abc.a": 0.8, "abc.b": 0.95},
    {"adc.active_days": 30, "adc.churn_days": 31}, {"adc.new_days": 0}, {"adc.new_days": 400, "adc.churn_days": 700},
    {"rfm.bins": 3, "rfm.hv_min_r": 2, "rfm.hv_min_f": 3, "rfm.hv_min_m": 1, "rfm.potential_min_total": 5},
    {"rfm.bins": 10, "rfm.prospects_are_potential": False}, {"rfm.potential_min_total": 30},
    {"rfm": {"segments": {"Top": ["55", "54", "45", "44"],
                          "Rest": [f"{r}{f}" for r in range(1, 6) for f in range(1, 6)
                                   if f"{r}{f}" not in ("55", "54", "45", "44")]}}},
    # the conventions' switches at their defaults: still the fast path
    {"rfm": {"segments": {}, "binning": "rank", "monetary": "total", "segments_by": "grid", "bins": 5,
             "potential_min_total": 9}},
]
#: The peers' conventions (plugins/rfm): the RFM fast path declines them, the generic path answers.
PEER_CHANGES = [
    {"rfm": {"bins": 4, "binning": "qcut", "monetary": "mean", "segments_by": "code"}},
    {"rfm": {"segments_by": "code", "segment_codes": {"Top": ["44*"]}, "segment_other": "Rest"}},
    {"rfm": {"segments_by": "grid", "monetary": "mean"}},
    {"rfm": {"monetary": "total", "binning": "rank", "bins": 5}},  # back to the defaults: the fast path again
]


@pytest.mark.parametrize("n,seed,max_cells", [(1, 0, None), (7, 1, None), (500, 2, None), (3000, 3, None),
                                              (3000, 3, 10)])
def test_fast_evaluators_equal_the_engine(registry, n, seed, max_cells, monkeypatch):
    from plugins.adc.workbench import AdcFastPath

    if max_cells is not None:  # the ADC path for too many (recency, tenure) cells
        monkeypatch.setattr(AdcFastPath, "MAX_CELLS", max_cells)
    customers = synthetic(n, seed)
    prepared = Prepared(customers, dt.date(2024, 1, 1), LoadReport("synthetic"), registry)
    model = WorkbenchModel(prepared, select(registry, None))
    assert {type(e).__name__ for e in model.fast_paths.values()} == {"AbcFastPath", "AdcFastPath", "RfmFastPath"}
    for change in CHANGES:
        model.set_params(change)
        assert all(model.evaluator(name) is model.fast_paths[name] for name in model.params)  # not the generic path
        sels = model.selections()
        classified = apply_classifiers(customers, sels, as_of=prepared.as_of, registry=registry)
        # revenue from cumulative sums: equal up to float rounding
        assert_frame_equal(model.numbers(), summarize(classified, sels), check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-6)
        assert_frame_equal(model.classified(), classified)


def test_the_rfm_fast_path_declines_the_peers_conventions(registry):
    customers = synthetic(500, 6)
    prepared = Prepared(customers, dt.date(2024, 1, 1), LoadReport("synthetic"), registry)
    model = WorkbenchModel(prepared, select(registry, ["rfm"]))
    for i, change in enumerate(PEER_CHANGES):
        model.set_params(change)
        fast = model.evaluator("rfm") is model.fast_paths["rfm"]
        assert fast == (i == len(PEER_CHANGES) - 1), change
        sels = model.selections()
        classified = apply_classifiers(customers, sels, as_of=prepared.as_of, registry=registry)
        assert_frame_equal(model.numbers(), summarize(classified, sels), check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-6)
        assert_frame_equal(model.classified(), classified)


def test_all_negative_or_zero_metric_is_all_c(registry):
    customers = synthetic(50, 4).with_columns(pl.lit(-1.0).alias("monetary"))
    model = WorkbenchModel(Prepared(customers, dt.date(2024, 1, 1), LoadReport("x"), registry),
                           select(registry, ["abc"]))
    assert model.numbers().filter(pl.col("label") == "C")["customers"].item() == 50


@pytest.fixture(scope="module")
def random_model():
    registry = get_registry(allow=["abc", "adc", "rfm"], strict=True)
    customers = synthetic(800, 11)
    prepared = Prepared(customers, dt.date(2024, 1, 1), LoadReport("synthetic"), registry)
    return WorkbenchModel(prepared, select(registry, None)), customers, registry


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=st.floats(0.01, 0.98), gap=st.floats(0.01, 0.5), rank=st.booleans(), active=st.integers(1, 400),
       churn_gap=st.integers(1, 500), new=st.integers(0, 300), bins=st.integers(2, 10), hv=st.integers(1, 10),
       total=st.integers(3, 30))
def test_any_thresholds_give_the_engines_labels(random_model, a, gap, rank, active, churn_gap, new, bins, hv, total):
    model, customers, registry = random_model
    b = min(a + gap, 1.0)
    hv, total = min(hv, bins), min(total, 3 * bins)
    model.set_params({"abc": {"mode": "rank" if rank else "share", "a": a, "b": b, "a_rank": a, "b_rank": b},
                      "adc": {"active_days": active, "churn_days": active + churn_gap, "new_days": new},
                      "rfm": {"bins": bins, "hv_min_r": hv, "hv_min_f": hv, "hv_min_m": 1,
                              "potential_min_total": total}})
    assert all(model.evaluator(name) is model.fast_paths[name] for name in model.params)
    sels = model.selections()
    classified = apply_classifiers(customers, sels, as_of=model.as_of, registry=registry)
    assert_frame_equal(model.classified(), classified)
    assert_frame_equal(model.numbers(), summarize(classified, sels), check_exact=False, rel_tol=1e-9, abs_tol=1e-6)


def test_without_a_playbook_save_to_writes_into_the_path_given(sample_path, tmp_path):
    registry = get_registry(allow=["abc", "adc"], modules=[BasketPlugin], strict=True)
    prepared = engine.prepare(sample_path, mapping=engine.sample.SAMPLE_MAPPING, registry=registry)
    wb = Workbench(prepared=prepared, selections=prepared.select(["basket", "abc"]), charts=False)
    assert wb.save_button.description == "Save to..." and wb.save_button.disabled  # no path yet
    assert wb.save() is None and "give a path" in wb.status.value
    wb.controls["basket.min_aov"].value = 250
    # a new file: a classifiers: section with what differs from the defaults
    new = tmp_path / "params.yaml"
    wb.path_box.value = str(new)
    assert not wb.save_button.disabled
    wb.save_button.click()
    assert yaml.safe_load(new.read_text()) == {"classifiers": {"basket": {"min_aov": 250.0}, "abc": {}}}
    assert "saved to" in wb.status.value and wb.unsaved.value == ""
    # an existing playbook: its values change, its comments stay
    book = tmp_path / "book.yaml"
    book.write_text(ABC_PLAYBOOK.read_text().replace("../engine/sample/", f"{sample_path.parent}/"))
    wb.controls["basket.min_aov"].value = 300  # the default: nothing for a playbook without basket
    wb.controls["abc.a"].value = 0.7
    wb.path_box.value = str(book)
    diff = wb.save()
    assert "+    a: 0.7" in diff and "# A: customers making up the top 80% of revenue" in book.read_text()
    # a classifier the playbook does not have is named, nothing is written
    wb.controls["basket.min_aov"].value = 260
    before = book.read_text()
    assert wb.save() is None and "basket not in the playbook&#x27;s classifiers" in wb.status.value
    assert book.read_text() == before


# ------------------------------------------------------- the as_of move shows the migration
def _shown_migration(wb: Workbench) -> dict[tuple[str, str, str], int]:
    found = re.findall(r'data-column="([^"]*)" data-from="([^"]*)" data-to="([^"]*)" data-value="(\d+)"',
                       wb.migration_box.value)
    return {(c, f, t): int(v) for c, f, t, v in found}


def test_moving_as_of_shows_the_migration_from_the_table_shown_before(abc_pb, abc_prepared):
    wb = Workbench(abc_pb, prepared=abc_prepared, charts=False)
    assert wb.model.migration() is None and wb.migration_box.value == ""
    end = abc_prepared.as_of
    day = end - dt.timedelta(days=91)
    wb.as_of.value = day  # back a quarter: the migration from that date to the one shown before
    # the same two dates as snapshots from one scan (engine.snapshots): the same matrices, cell for cell
    expected = engine.load_playbook(ABC_PLAYBOOK, snapshots={"as_of": [day, end]}).compute_snapshots().migration
    key = ["column", "from", "to"]
    assert_frame_equal(wb.model.migration().sort(key), expected.sort(key))
    shown = _shown_migration(wb)
    assert shown == {(c, f, t): n for c, f, t, n in expected.select("column", "from", "to", "customers").iter_rows()}
    assert f"migration from {day} to {end}" in wb.migration_box.value
    moved = dict(re.findall(r'data-column="abc" data-move="(\w+)" data-value="(\d+)"', wb.migration_box.value))
    abc = expected.filter(pl.col("column") == "abc")
    down = abc.filter(pl.col("to_rank") > pl.col("from_rank"))["customers"].sum()
    assert int(moved["down"]) == down and int(moved["stayed"]) == abc.filter(
        pl.col("to_rank") == pl.col("from_rank"))["customers"].sum()
    # a threshold move recomputes both tables' classes: the snapshot run with the same parameters
    assert wb.set({"abc.a": 0.6})
    tuned = engine.load_playbook(ABC_PLAYBOOK, snapshots={"as_of": [day, end]}).with_params({"abc.a": 0.6})
    again = tuned.compute_snapshots().migration
    assert _shown_migration(wb) == {(c, f, t): n for c, f, t, n in
                                    again.select("column", "from", "to", "customers").iter_rows()}
    assert _shown_migration(wb) != shown


def test_save_shows_the_customers_who_change_action_beside_the_yaml_diff(abc_pb, abc_prepared, tmp_path):
    from engine.playbook.diff import diff_playbooks

    target = tmp_path / "abc.yaml"
    shutil.copy(ABC_PLAYBOOK, target)
    wb = Workbench(abc_pb, prepared=abc_prepared, save_path=target, charts=False)
    wb.controls["abc.a"].value = 0.7
    wb.save()
    assert "+    a: 0.7" in wb.diff_box.value  # the YAML diff, and beside it the customers it moves
    # the same customers as tierbook diff finds between the parameters before and after the save
    assert yaml.safe_load(target.read_text())["classifiers"]["abc"]["a"] == 0.7
    expected = diff_playbooks(abc_pb, abc_pb.with_params({"abc.a": 0.7}), prepared=abc_prepared)
    assert expected.changes.height > 0
    assert f'data-value="{expected.changes.height}"' in wb.changes_box.value
    assert "customers who change action" in wb.changes_box.value
    shown = {int(v) for v in re.findall(r'class="tierbook-transition-count" data-value="(\d+)"', wb.changes_box.value)}
    assert shown == set(expected.transitions["customers"].to_list())
    assert "abc: A -&gt; B (abc.a 0.8 -&gt; 0.7)" in wb.changes_box.value
    # a second save compares with what the first one wrote, not with the playbook as loaded
    wb.controls["abc.a"].value = 0.6
    assert wb.changes_box.value == ""
    wb.save()
    second = diff_playbooks(abc_pb.with_params({"abc.a": 0.7}), abc_pb.with_params({"abc.a": 0.6}),
                            prepared=abc_prepared)
    assert f'data-value="{second.changes.height}"' in wb.changes_box.value
    assert "(abc.a 0.7 -&gt; 0.6)" in wb.changes_box.value


# ------------------------------------------ a whole move = a fresh evaluation
def fresh_sample(classified: pl.DataFrame, column: str, label: str, k: int = 10) -> pl.DataFrame:
    """The sample customers from a fresh, full classification (the engine's, not the model's)."""
    cond = pl.col(column).is_null() if label == "(none)" else pl.col(column).cast(pl.String) == label
    return classified.filter(cond).sort(["monetary", "customer_id"], descending=[True, False], nulls_last=True).head(k)


def assert_move_is_fresh(wb: Workbench, playbook) -> None:
    """Numbers, rule hits, cut customers and every class's sample equal a fresh evaluation of the tuned playbook."""
    m = wb.model
    tuned = m.playbook_now()
    expected = tuned.evaluate(m.prepared)
    assert type(wb.last_result).__name__ == "RuleCounts"  # counted incrementally, not the full evaluation
    assert_frame_equal(wb.last_result.rule_summary, expected.rule_summary)
    assert wb.last_result.unmatched == expected.summary["unmatched"]
    assert_frame_equal(wb.last_result.cut_head(10), expected.cut.head(10))
    assert f'class="tierbook-cut" data-value="{expected.cut.height}"' in wb.rules_box.value
    assert f'class="tierbook-actions" data-value="{expected.actions.height}"' in wb.rules_box.value
    assert_frame_equal(wb.numbers, engine_numbers(m.prepared, tuned.selections), check_exact=False, rel_tol=1e-9)
    classified = apply_classifiers(m.prepared.customers, tuned.selections, as_of=m.as_of,
                                   registry=m.prepared.registry)
    for column, label in wb.numbers.select("column", "label").iter_rows():
        assert_frame_equal(m.sample(column, label), fresh_sample(classified, column, label), check_column_order=False)
    shown = fresh_sample(classified, *wb.class_picker.value)
    for cid in shown["customer_id"]:
        assert f"<td>{cid}</td>" in wb.sample_box.value


@pytest.mark.parametrize("playbook,moves", [
    (HV_PLAYBOOK, [{"rfm.hv_min_r": 4}, {"abc.a": 0.6}, {"rfm.bins": 4, "rfm.hv_min_r": 3}, {"adc.active_days": 45},
                   {"abc.mode": "rank", "abc.a_rank": 0.1, "abc.b_rank": 0.4}]),
    (ROOT / "playbooks" / "lifecycle-winback.yaml", [{"adc.churn_days": 200}, {"rfm.bins": 3, "rfm.hv_min_r": 2,
                                                      "rfm.hv_min_f": 2, "rfm.hv_min_m": 2,
                                                      "rfm.potential_min_total": 6}, {"adc.new_days": 0}]),
])
def test_after_every_move_hits_and_samples_are_a_fresh_evaluations(playbook, moves):
    pb = engine.load_playbook(playbook)
    wb = Workbench(pb, charts=False)
    assert_move_is_fresh(wb, pb)
    for move in moves:
        assert wb.set(move), wb.status.value
        assert_move_is_fresh(wb, pb)


def test_a_third_party_classifiers_move_gives_a_fresh_evaluations_hits(sample_path, tmp_path):
    registry = get_registry(allow=["abc"], modules=[BasketPlugin], strict=True)
    path = tmp_path / "basket.yaml"
    path.write_text(yaml.safe_dump({
        "name": "baskets", "description": "big baskets",
        "data": {"transactions": str(sample_path), "map": dict(engine.sample.SAMPLE_MAPPING)},
        "classifiers": {"basket": {"min_aov": 300.0}, "abc": {"a": 0.8}},
        "hit_policy": "first",
        "rules": [{"name": "big-a", "when": "basket <> 'small' AND abc = 'A'", "action": "call", "channel": "phone",
                   "owner": "sales", "capacity": {"max": 5, "order_by": "monetary desc"}},
                  {"name": "small", "when": "basket = 'small' AND monetary > 100", "action": "mail",
                   "channel": "email", "owner": "crm"},
                  {"name": "no-basket", "when": "basket IS NULL", "action": "ask", "channel": "email",
                   "owner": "crm"}],
    }), encoding="utf-8")
    pb = engine.load_playbook(path, registry=registry)
    wb = Workbench(pb, charts=False)
    assert isinstance(wb.model.evaluator("basket"), GenericPath)
    assert_move_is_fresh(wb, pb)
    for move in ({"basket.min_aov": 150}, {"basket.big": "large"}, {"abc.a": 0.5}, {"basket.count_returns": True}):
        assert wb.set(move), wb.status.value
        assert_move_is_fresh(wb, pb)


def test_the_kept_class_size_figure_draws_what_a_new_one_draws():
    from engine.widgets import SizesPlot, class_sizes_png

    labels = ("active", "new", "dormant")
    plot = SizesPlot("adc", labels)
    moves = [(10, 20, 30), (0, 5, 1_000_000), (10, 20, 30)]
    pictures = [plot.draw(k) for k in moves]
    assert pictures == [class_sizes_png("adc", labels, k) for k in moves]
    assert pictures[0] == pictures[2] != pictures[1]


def test_the_migration_counted_from_codes_is_the_migration_of_the_classified_tables(registry):
    """After an as_of move each slider move recounts only the moved classifier's cells (from label codes);
    the matrix is migration_table's over the two fully classified tables, cell for cell, revenue exact."""
    from engine.migration import label_outputs, migration_table

    before = synthetic(700, 21)
    after = pl.concat([synthetic(700, 22), synthetic(100, 23).with_columns(pl.col("customer_id") + 5000)])
    after = after.with_columns(pl.col("monetary") * 1000.37)  # large, signed amounts with cents
    start, end = dt.date(2024, 1, 1), dt.date(2024, 4, 1)
    model = WorkbenchModel(Prepared(after, end, LoadReport("x"), registry), select(registry, None))
    model.set_as_of(Prepared(before, start, LoadReport("x"), registry))  # back a quarter
    for change in [{}, {"abc.a": 0.5, "abc.b": 0.7}, {"adc.active_days": 30, "adc.churn_days": 45},
                   {"rfm.bins": 3, "rfm.hv_min_r": 2, "rfm.hv_min_f": 2, "rfm.hv_min_m": 1,
                    "rfm.potential_min_total": 5}, {"abc.mode": "rank"}]:
        model.set_params(change)
        got = model.migration()
        prev = model._previous_model
        full = migration_table([model.classified(), prev.classified()], [start, end],
                               label_outputs(model.selections()))
        assert_frame_equal(got, full)
    assert set(model._migration[2]) == {"abc", "adc", "rfm_segment", "value_tier"}


@pytest.mark.parametrize("scale", [10**6, 2**61])  # one float part; three 22-bit limbs
def test_the_migrations_revenue_sums_are_exact(scale):
    from engine.widgets import _exact_sums, _limbs

    rng = np.random.default_rng(scale % 1000)
    units = rng.integers(-scale, scale, 5000, dtype=np.int64)
    code = rng.integers(0, 9, 5000)
    low, parts = _limbs(units)
    assert len(parts) == (1 if scale == 10**6 else 3)
    expected = [sum(int(u) for u, c in zip(units, code) if c == k) for k in range(9)]
    assert _exact_sums(code, (low, parts), 9) == expected
