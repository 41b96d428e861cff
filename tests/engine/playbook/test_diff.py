"""engine.playbook.diff and ``tierbook diff``: the customers whose action changes, counted against two
independent runs, with the reason that made the difference."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import polars as pl
import pytest

from engine import Classifier, Output, ParamSpec, hookimpl
from engine.playbook import load_playbook
from engine.playbook.diff import DiffError, diff_playbooks
from engine.testing import plugin_registry

ROOT = Path(__file__).resolve().parents[3]


def copy(tmp_path: Path, name: str, text: str) -> Path:
    """A playbook of playbooks/ written beside the sample, with ``text`` edits applied."""
    path = tmp_path / name
    path.write_text(text.replace("../engine/sample/", f"{ROOT / 'engine' / 'sample'}/"))
    return path


def source(name: str) -> str:
    return (ROOT / "playbooks" / name).read_text()


def actions_of(pb) -> dict:
    """Each customer's action as the run writes it (actions.csv and cut.csv), computed without diff."""
    result = pb.run(write=False)
    out: dict = {}
    for cid, action in result.actions.select("customer_id", pl.col("action").cast(pl.String)).iter_rows():
        out[cid] = action if cid not in out else f"{out[cid]} + {action}"
    cut, held = {}, {}
    for cid, rule in result.cut.select("customer_id", pl.col("rule").cast(pl.String)).iter_rows():
        cut[cid] = rule if cid not in cut else f"{cut[cid]} + {rule}"
    control = result.control if result.control is not None else pl.DataFrame(schema={"customer_id": pl.String,
                                                                                      "rule": pl.String})
    for cid, rule in control.select("customer_id", pl.col("rule").cast(pl.String)).iter_rows():
        held[cid] = rule if cid not in held else f"{held[cid]} + {rule}"
    ids = result.customers["customer_id"].to_list()
    shown = {}
    for cid in ids:
        a, c, h = out.get(cid), cut.get(cid), held.get(cid)
        why = "; ".join([*([f"cut by '{c}'"] if c else []), *([f"control group of '{h}'"] if h else [])])
        shown[cid] = (f"{a} (and {why})" if why else a) if a else (f"({why})" if why else "(none)")
    return shown


def independent_changes(old, new) -> dict:
    a, b = actions_of(old), actions_of(new)
    return {cid: (a[cid], b[cid]) for cid in a if a[cid] != b[cid]}


EDITS = {
    "threshold": ("lifecycle-winback.yaml", [("monetary >= 1000", "monetary >= 500")], "now matches; before, "
                  "monetary >= 1000 is not true"),
    "narrower": ("lifecycle-winback.yaml", [("when: adc = 'dormant'", "when: adc = 'dormant' AND frequency > 2")],
                 "rule 'reactivate-dormant': frequency > 2 is not true"),
    "capacity": ("lifecycle-winback.yaml", [("capacity: {max: 15,", "capacity: {max: 2,")],
                 "cut by the capacity of 'call-valuable-churned' (max 15 -> 2)"),
    "removed": ("lifecycle-winback.yaml", [("- name: welcome-new\n    when: adc = 'new'",
                                             "- name: welcome-big\n    when: adc = 'new' AND monetary > 1e9")],
                "rule 'welcome-new' was removed"),
    "action": ("abc-resource-allocation.yaml", [("action: key-account-review", "action: senior-review")],
               "rule 'key-accounts': action 'key-account-review' -> 'senior-review'"),
    "all-policy": ("high-value-care.yaml", [("recency_days > 60", "recency_days > 30")], "now matches"),
    "holdout": ("lifecycle-winback.yaml", [("    params: {offer: COMEBACK10, template: we-miss-you}\n",
                                            "    params: {offer: COMEBACK10, template: we-miss-you}\n"
                                            "    holdout: {share: 0.3, salt: diff-test}\n")],
                "held out of 'reactivate-dormant''s action (its control group: the rule's holdout none -> "
                "share 0.3)"),
    "playbook-holdout": ("abc-resource-allocation.yaml", [("hit_policy: first", "hit_policy: first\n"
                                                           "holdout: {share: 0.1, salt: diff-test}")],
                         "(its control group: holdout none -> share 0.1)"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_changed_customers_are_exactly_those_two_runs_disagree_on(tmp_path, edit):
    name, replacements, reason = EDITS[edit]
    text = source(name)
    new_text = text
    for a, b in replacements:
        assert a in new_text, a
        new_text = new_text.replace(a, b)
    old = load_playbook(copy(tmp_path, "old.yaml", text))
    new = load_playbook(copy(tmp_path, "new.yaml", new_text))
    d = diff_playbooks(old, new)
    expected = independent_changes(old, new)
    got = {r["customer_id"]: (r["old_action"], r["new_action"]) for r in d.changes.iter_rows(named=True)}
    assert got == expected and expected
    assert d.transitions["customers"].sum() == len(expected)
    assert d.transitions["revenue"].sum() == pytest.approx(d.changes["monetary"].sum())
    assert any(reason in r for r in d.changes["reason"]), d.changes["reason"].unique().to_list()
    assert d.changes["reason"].null_count() == 0


def test_a_parameter_change_names_the_class_and_the_threshold(tmp_path, run_cli):
    path = copy(tmp_path, "abc.yaml", source("abc-resource-allocation.yaml"))
    old = load_playbook(path)
    new = old.with_params({"abc.a": 0.7})
    d = diff_playbooks(old, new)
    assert set(independent_changes(old, new)) == set(d.changes["customer_id"].to_list())
    assert set(d.changes["reason"].to_list()) <= {"abc: A -> B (abc.a 0.8 -> 0.7)", "abc: B -> C (abc.a 0.8 -> 0.7)"}
    by_class = {(r["column"], r["old_label"], r["new_label"]): r["customers"] for r in d.by_class.iter_rows(named=True)}
    assert by_class[("abc", "A", "B")] == d.changes.height
    out = tmp_path / "changes.csv"
    code, text, err = run_cli("diff", path, "--set", "abc.a=0.7", "--csv", out)
    assert code == 0, err
    assert "abc.a: 0.8 -> 0.7" in text and "old action -> new action" in text and "abc A -> B" in text
    written = pl.read_csv(out, infer_schema=False)
    assert sorted(written["customer_id"].to_list()) == sorted(str(c) for c in d.changes["customer_id"].to_list())
    assert {"old_action", "new_action", "reason", "values", "abc_old", "abc_new"} <= set(written.columns)
    code, text, _ = run_cli("diff", path, "--set", "abc.a=0.7", "--json")
    doc = json.loads(text)
    assert doc["changed"] == d.changes.height and doc["params"] == {"abc.a": {"old": 0.8, "new": 0.7}}
    assert sum(t["customers"] for t in doc["transitions"]) == doc["changed"]


def test_nothing_changes_when_nothing_changed(tmp_path, run_cli):
    path = copy(tmp_path, "abc.yaml", source("abc-resource-allocation.yaml"))
    code, text, err = run_cli("diff", path, path)
    assert code == 0, err
    assert "customers whose action changes: 0 (0.0%)" in text


def test_different_data_or_classifiers_are_refused_and_nothing_is_written(tmp_path, run_cli):
    text = source("lifecycle-winback.yaml")
    old = copy(tmp_path, "old.yaml", text)
    other_data = copy(tmp_path, "data.yaml", text.replace("    quantity: Quantity\n", "    quantity: Quantity\n"
                                                          "    # same file, other as_of\n").replace(
        "hit_policy: first", "hit_policy: first").replace("data:\n", "data:\n  as_of: 2011-06-01\n", 1))
    out = tmp_path / "changes.csv"
    code, _, err = run_cli("diff", old, other_data, "--csv", out)
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and "data.as_of" in err and "different data" in err
    other_classifiers = copy(tmp_path, "cls.yaml", text.replace("  rfm:\n    bins: 5\n", "  rfm:\n    bins: 5\n"
                                                                                   "  abc: {}\n"))
    with pytest.raises(DiffError, match="different classifiers"):
        diff_playbooks(load_playbook(old), load_playbook(other_classifiers))
    code, _, err = run_cli("diff", old, other_classifiers, "--csv", out)
    assert code == 2 and not out.exists() and "only" in err and "cls.yaml has abc" in err
    code, _, err = run_cli("diff", old)
    assert code == 2 and "--set" in err


def tiering_plugin() -> types.ModuleType:
    plugin = types.ModuleType("spend_tiers")

    @hookimpl
    def register_classifiers(register):
        register(Classifier(
            name="spend", description="gold above a spend threshold", requires=("monetary",),
            params=(ParamSpec("gold", "float", 1000.0, "Spend from which a customer is gold.", min=0),),
            outputs=(Output("tier", "gold or plain", labels=("gold", "plain")),),
            expressions=lambda p, ctx: {"tier": pl.when(pl.col("monetary") >= p["gold"]).then(pl.lit("gold"))
                                        .otherwise(pl.lit("plain"))}))

    plugin.register_classifiers = register_classifiers
    return plugin


def test_a_third_party_classifiers_threshold(tmp_path, sample_path):
    path = tmp_path / "tiers.yaml"
    path.write_text(f"""\
name: tiers
data:
  transactions: {sample_path}
  map: {{customer_id: CustomerID, order_id: InvoiceNo, order_date: InvoiceDate, quantity: Quantity,
         unit_price: UnitPrice}}
classifiers:
  spend: {{gold: 1000}}
rules:
  - {{name: gold-care, when: tier = 'gold', action: call, channel: phone, owner: care}}
fallback: {{action: newsletter, channel: email, owner: crm}}
""")
    registry = plugin_registry(tiering_plugin())
    old = load_playbook(path, registry=registry)
    new = old.with_params({"spend.gold": 2000})
    d = diff_playbooks(old, new)
    assert set(d.changes["customer_id"].to_list()) == set(independent_changes(old, new))
    assert set(d.changes["reason"].to_list()) == {"tier: gold -> plain (spend.gold 1000.0 -> 2000.0)"}
    assert set(zip(d.changes["old_action"], d.changes["new_action"])) == {("call", "newsletter")}
    monetary = d.changes["monetary"]
    assert monetary.min() >= 1000 and monetary.max() < 2000


def test_reasons_show_the_customers_values(tmp_path):
    text = source("lifecycle-winback.yaml")
    old = load_playbook(copy(tmp_path, "old.yaml", text))
    new = load_playbook(copy(tmp_path, "new.yaml", text.replace("when: adc = 'dormant'",
                                                                "when: adc = 'dormant' AND frequency > 2")))
    d = diff_playbooks(old, new)
    for row in d.changes.iter_rows(named=True):
        m = re.fullmatch(r"frequency = (\d+)", row["values"])
        assert m and int(m.group(1)) <= 2


def test_check_and_diff_of_a_playbook_with_snapshots(tmp_path, sample_path, run_cli):
    """Rules over the previous snapshot's labels: check counts on the last snapshot as run does, and diff
    compares two playbooks' actions on it."""
    text = f"""name: snaps
data:
  transactions: {sample_path}
  map: {{customer_id: CustomerID, order_id: InvoiceNo, order_date: InvoiceDate, quantity: Quantity,
         unit_price: UnitPrice}}
classifiers:
  abc: {{}}
  adc: {{}}
snapshots: {{every: quarter, periods: 3, end: 2011-12-01}}
rules:
  - {{name: slipping, when: "abc_prev = 'A' AND abc IN ('B', 'C')", action: call, channel: phone, owner: ka}}
  - {{name: never, when: "abc_prev = 'A' AND abc_prev = 'C'", action: none, channel: none, owner: none}}
  - {{name: cooling, when: "adc_change = 'down'", action: mail, channel: email, owner: crm}}
fallback: {{action: none, channel: none, owner: none}}
"""
    old = tmp_path / "old.yaml"
    old.write_text(text)
    code, out, err = run_cli("check", old, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["dead"] == ["never"]
    summary = load_playbook(old, output_dir=tmp_path / "out").run(write=False).summary
    assert [(r["rule"], r["matched"], r["hits"]) for r in doc["data"]["rules"]] == [
        (r["rule"], r["matched"], r["hits"]) for r in summary["rules"] if r["rule"] != "fallback"]
    new = tmp_path / "new.yaml"
    new.write_text(text.replace("abc IN ('B', 'C')", "abc = 'C'"))
    d = diff_playbooks(load_playbook(old), load_playbook(new))
    assert set(d.changes["customer_id"].to_list()) == set(independent_changes(load_playbook(old),
                                                                              load_playbook(new)))
    assert d.changes.height and set(d.changes["reason"].to_list()) == {
        "rule 'slipping': abc = 'C' is not true (its condition was: abc_prev = 'A' AND abc IN ('B', 'C'))"}
    other = tmp_path / "other.yaml"
    other.write_text(text.replace("periods: 3", "periods: 2"))
    code, _, err = run_cli("diff", old, other)
    assert code == 2 and "snapshots" in err
