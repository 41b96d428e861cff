"""Playbooks end to end: the example playbooks, reconciliation, hit policies, capacity, save, one read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from engine.errors import ParamError, PlaybookError
from engine.io import leftovers
from engine.playbook import load_playbook, playbook_schema

ROOT = Path(__file__).resolve().parents[2]
UCI_MAPPING = {"customer_id": "CustomerID", "order_id": "InvoiceNo", "order_date": "InvoiceDate",
               "quantity": "Quantity", "unit_price": "UnitPrice"}

EXAMPLES = sorted((ROOT / "playbooks").glob("*.yaml"))


def _sample_net_revenue() -> tuple[int, float]:
    import engine

    raw = pl.read_csv(engine.sample_path(), infer_schema=False).filter(pl.col("CustomerID").is_not_null())
    amount = (raw["Quantity"].cast(pl.Float64) * raw["UnitPrice"].cast(pl.Float64) * 10_000).round(0).cast(pl.Int64)
    return raw["CustomerID"].n_unique(), amount.sum() / 10_000


def test_there_are_three_example_playbooks():
    names = {p.stem for p in EXAMPLES}
    assert {"abc-resource-allocation", "lifecycle-winback", "high-value-care"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_playbook_runs_and_reconciles(path: Path, run_cli, tmp_path):
    code, out, err = run_cli("run", path, "--output-dir", tmp_path)
    assert code == 0, err
    customers = pl.read_parquet(tmp_path / "customers.parquet")
    actions = pl.read_csv(tmp_path / "actions.csv", infer_schema=False)
    cut = pl.read_csv(tmp_path / "cut.csv", infer_schema=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    pb = load_playbook(path)

    # customers out = customers in (transactions' customers plus the customer table's prospects)
    n_tx_customers, net_revenue = _sample_net_revenue()
    table = pb.customer_table
    expected = n_tx_customers if table is None else len(
        set(pl.read_csv(pb.data["transactions"], infer_schema=False)["CustomerID"].drop_nulls().to_list())
        | set(table["customer_id"].cast(pl.String).to_list()))
    assert customers.height == expected
    assert customers["customer_id"].n_unique() == customers.height
    rec = summary["reconciliation"]
    assert rec["customers_in"] == rec["customers_out"] == customers.height
    # revenue in the summary equals the input's net revenue, to the cent
    assert rec["revenue_out"] == pytest.approx(round(net_revenue, 2), abs=0.005)
    assert round(customers["monetary"].sum(), 2) == pytest.approx(round(net_revenue, 2), abs=0.005)

    # every action and cut row names an existing customer
    ids = set(customers["customer_id"].cast(pl.String).to_list())
    assert set(actions["customer_id"].to_list()) <= ids
    assert set(cut["customer_id"].to_list()) <= ids
    assert set(actions.columns) == {"customer_id", "rule", "action", "channel", "owner", "due_date", "priority",
                                    "parameters"}

    # hits per rule add up under the hit policy
    rules = {r["rule"]: r for r in summary["rules"]}
    real_rules = [r.name for r in pb.rules]
    hits = sum(rules[name]["hits"] for name in real_rules)
    if pb.hit_policy == "first":
        assert hits + summary["unmatched"] == customers.height
        assert actions.filter(pl.col("rule").is_in(real_rules))["customer_id"].is_duplicated().sum() == 0
    else:
        assert hits >= customers.height - summary["unmatched"]
    for name in real_rules:
        r = rules[name]
        assert r["hits"] == r["actions"] + r["cut_by_capacity"]
        assert actions.filter(pl.col("rule") == name).height == r["actions"]
        assert cut.filter(pl.col("rule") == name).height == r["cut_by_capacity"]
    if pb.fallback is not None:
        assert rules[pb.fallback.name]["actions"] == summary["unmatched"]
    assert "rules" in out and "Traceback" not in err


def test_capacity_keeps_the_highest_monetary_and_lists_the_rest(tmp_path):
    pb = load_playbook(ROOT / "playbooks" / "abc-resource-allocation.yaml", output_dir=tmp_path)
    result = pb.run(write=False)
    rule = next(r for r in pb.rules if r.capacity)
    kept = result.actions.filter(pl.col("rule") == rule.name)
    cut = result.cut.filter(pl.col("rule") == rule.name)
    assert kept.height == rule.capacity
    assert cut.height > 0
    money = result.customers.select("customer_id", "monetary")
    kept_min = kept.join(money, on="customer_id")["monetary"].min()
    cut_max = cut.join(money, on="customer_id")["monetary"].max()
    assert kept_min >= cut_max
    assert cut["rank"].min() == rule.capacity + 1


def test_hit_policy_all_gives_every_matching_rule(tmp_path):
    text = (ROOT / "playbooks" / "abc-resource-allocation.yaml").read_text()
    text = text.replace("hit_policy: first", "hit_policy: all").replace(
        "  transactions: ../engine/sample", f"  transactions: {ROOT}/engine/sample")
    text = text.replace("when: abc = 'C'", "when: abc IN ('B', 'C')")
    path = tmp_path / "all.yaml"
    path.write_text(text)
    result = load_playbook(path).run(write=False)
    rules = {r["rule"]: r for r in result.summary["rules"]}
    n_b = result.customers.filter(pl.col("abc") == "B").height
    n_c = result.customers.filter(pl.col("abc") == "C").height
    assert rules["automate-c"]["hits"] == n_b + n_c
    # B customers hit both cultivate-b (unless churned) and automate-c
    both = result.actions.group_by("customer_id").agg(pl.len()).filter(pl.col("len") > 1)
    assert both.height > 0


def test_explain_names_the_failing_clause(run_cli):
    pb_path = ROOT / "playbooks" / "abc-resource-allocation.yaml"
    result = load_playbook(pb_path).run(write=False)
    dormant_a = result.customers.filter((pl.col("abc") == "A") & (pl.col("adc") == "dormant"))
    customer = str(dormant_a["customer_id"][0])
    code, out, err = run_cli("explain", pb_path, customer)
    assert code == 0, err
    assert f"customer {customer}" in out
    block = out.split("- key-accounts:")[1].split("- key-accounts-at-risk")[0]
    assert "not matched" in block
    assert "adc IN ('active', 'new')" in block
    assert "dormant" in block
    assert "- key-accounts-at-risk: matched -> retention-visit" in out


def test_explain_finds_what_a_customer_got_by_rule_position_not_name(tmp_path):
    """Two rules whose names cannot be told apart (the Python API does not stop them): explain says which one
    took the customer by its position, as the actions do, not by looking the name up."""
    import dataclasses

    from engine.playbook import explain_customer

    pb = load_playbook(ROOT / "playbooks" / "abc-resource-allocation.yaml")
    first, second = (dataclasses.replace(r, name="call", when="frequency >= 1", capacity=None) for r in pb.rules[:2])
    second = dataclasses.replace(second, action="second-action")
    prepared = pb.prepare()
    for policy in ("first", "all"):
        twins = dataclasses.replace(pb, rules=[first, second], hit_policy=policy)
        result = twins.evaluate(prepared)
        customer = result.actions["customer_id"][0]
        text = explain_customer(twins, prepared, result, str(customer))
        got = [line for line in text.splitlines() if line.startswith("- call:")]
        if policy == "first":
            assert got == [f"- call: matched -> {first.action} via {first.channel}, owner {first.owner}",
                           "- call: matched but an earlier rule took the customer (hit policy first)"], text
        else:
            assert got == [f"- call: matched -> {first.action} via {first.channel}, owner {first.owner}",
                           f"- call: matched -> second-action via {second.channel}, owner {second.owner}"], text
    # a capacity cut in the first rule, the customer taken by the second (hit policy all)
    capped = dataclasses.replace(first, capacity=1)
    twins = dataclasses.replace(pb, rules=[capped, second], hit_policy="all")
    result = twins.evaluate(prepared)
    customer = result.cut["customer_id"][0]
    text = explain_customer(twins, prepared, result, str(customer))
    assert [line for line in text.splitlines() if line.startswith("- call:")] == [
        "- call: matched but cut by capacity",
        f"- call: matched -> second-action via {second.channel}, owner {second.owner}"], text
    # a Result built without the position-keyed rule result: explain evaluates the rules again
    bare = dataclasses.replace(result, rule_result=None)
    assert explain_customer(twins, prepared, bare, str(customer)) == text


def test_explain_unknown_customer_is_a_clear_error(run_cli):
    code, out, err = run_cli("explain", ROOT / "playbooks" / "abc-resource-allocation.yaml", "99999999")
    assert code == 2
    assert "no customer '99999999'" in err


def test_validate_and_dry_run_write_nothing(run_cli, tmp_path):
    work = tmp_path / "pb"
    work.mkdir()
    src = (ROOT / "playbooks" / "lifecycle-winback.yaml").read_text().replace(
        "../engine/sample", f"{ROOT}/engine/sample")
    (work / "p.yaml").write_text(src)
    code, out, err = run_cli("validate", work / "p.yaml")
    assert code == 0 and "ok" in out
    code, out, err = run_cli("run", work / "p.yaml", "--dry-run")
    assert code == 0 and "dry run" in out
    assert sorted(p.name for p in work.iterdir()) == ["p.yaml"]


def test_set_overrides_and_validates(run_cli, tmp_path):
    path = ROOT / "playbooks" / "abc-resource-allocation.yaml"
    code, out, err = run_cli("run", path, "--dry-run", "--set", "abc.a=0.5")
    assert code == 0, err
    a_share = [line for line in out.splitlines() if line.strip().startswith("A ")][0]
    assert float(a_share.split()[-1].rstrip("%")) <= 50.0
    code, out, err = run_cli("run", path, "--dry-run", "--set", "abc.a=2")
    assert code == 2 and "--set abc.a: '2' is above the maximum 0.99 of 'a'" in err
    code, out, err = run_cli("run", path, "--dry-run", "--set", "rfm.bins=4")
    assert code == 2 and "classifier 'rfm' is not in this playbook" in err


def test_with_params_and_save_keep_comments(tmp_path):
    src = ROOT / "playbooks" / "abc-resource-allocation.yaml"
    path = tmp_path / "p.yaml"
    path.write_text(src.read_text().replace("../engine/sample", f"{ROOT}/engine/sample"))
    pb = load_playbook(path)
    tuned = pb.with_params({"abc.a": "0.7", "adc": {"active_days": 60}})
    assert tuned.classifiers["abc"]["a"] == 0.7
    assert pb.classifiers["abc"]["a"] == 0.8  # the original is unchanged
    with pytest.raises(ParamError):
        pb.with_params({"abc.a": 5})
    diff = tuned.save()
    text = path.read_text()
    assert "a: 0.7    # A: customers making up the top 80% of revenue" in text
    assert "active_days: 60" in text
    assert "# Goal: A customers get a senior account manager" in text
    assert "-    a: 0.8" in diff and "+    a: 0.7" in diff
    again = load_playbook(path)
    assert again.classifiers["abc"]["a"] == 0.7
    assert again.classifiers["adc"]["active_days"] == 60
    assert tuned.save() == ""  # nothing left to change


def test_schema_lists_classifier_parameters(run_cli):
    code, out, err = run_cli("schema")
    assert code == 0
    schema = json.loads(out)
    abc = schema["properties"]["classifiers"]["properties"]["abc"]["properties"]["a"]
    assert abc["maximum"] == 0.99 and abc["type"] == "number"
    assert "when" in schema["properties"]["rules"]["items"]["required"]
    assert playbook_schema()["properties"]["hit_policy"]["enum"] == ["first", "all"]


def test_example_playbooks_validate_against_the_json_schema():
    import jsonschema
    import yaml

    schema = playbook_schema()
    for path in EXAMPLES:
        doc = yaml.safe_load(path.read_text())
        doc["data"].pop("as_of", None)
        jsonschema.validate(doc, schema)


def test_all_problems_are_reported_together(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: x\n"
        "data:\n"
        f"  transactions: {ROOT}/engine/sample/online_retail_sample.csv\n"
        "  map: {customer_id: CustomerID, order_id: InvoiceNo, order_date: InvoiceDate, quantity: Quantity,"
        " unit_price: UnitPrice}\n"
        "classifiers:\n"
        "  abc: {a: 2}\n"
        "  rmf: {}\n"
        "hit_policy: some\n"
    )
    with pytest.raises(PlaybookError) as info:
        load_playbook(path)
    assert len(info.value.problems) == 3
    assert [p.line for p in info.value.problems] == [6, 7, 8]  # structured: no parsing of the text


def test_run_reads_the_transactions_once(uci_path, tmp_path, count_scans):
    """How we know: every collect whose plan reads the file is counted, and the scans of the file in each
    plan (the optimised one, where queries collected together share their scan); there is exactly one."""
    pb_path = tmp_path / "uci.yaml"
    mapping = "\n".join(f"    {k}: {v}" for k, v in UCI_MAPPING.items())
    pb_path.write_text(
        f"name: uci\ndata:\n  transactions: {uci_path}\n  map:\n{mapping}\n"
        "classifiers: {abc: {}, adc: {}, rfm: {}}\n"
        "rules:\n"
        "  - {name: a, when: \"abc = 'A'\", action: call, channel: phone, owner: ka, capacity: 50}\n"
        "  - {name: d, when: \"adc = 'dormant'\", action: mail, channel: email, owner: crm}\n"
    )
    reads = count_scans(uci_path)
    result = load_playbook(pb_path, output_dir=tmp_path / "out").run()
    # The feature pass: one collect, one scan in its plan. Before it, the look at the first 10,000 rows that
    # chooses how orders are counted; after it, the orders of the one customer whose lines the pass found out of
    # place (invoice 568391 after 568392) are counted again, reading only that customer's purchase lines.
    assert reads == [1, 1, 1]
    assert result.summary["input"]["orders_counted"] == "boundaries"
    assert result.summary["input"]["orders_recounted"] == 1
    assert result.summary["reconciliation"]["customers_out"] == 4372
    assert (tmp_path / "out" / "actions.csv").exists()


def test_outputs_are_replaced_not_partially_written(tmp_path):
    src = ROOT / "playbooks" / "abc-resource-allocation.yaml"
    path = tmp_path / "p.yaml"
    path.write_text(src.read_text().replace("../engine/sample", f"{ROOT}/engine/sample"))
    pb = load_playbook(path)
    first = pb.run()
    out = pb.output_dir
    before = (out / "actions.csv").read_bytes()
    second = pb.with_params({"abc.a": 0.5}).run()
    after = (out / "actions.csv").read_bytes()
    assert before != after
    assert leftovers(out) == []  # no temporary files left
    assert {p.name for p in out.iterdir()} == {".tierbook", "customers.parquet", "actions.csv", "cut.csv",
                                               "control.csv",
                                               "summary.json"}
    assert first.summary["actions"] != second.summary["actions"] or before != after
    shutil.rmtree(out)


def test_an_output_may_not_replace_an_input(tmp_path, run_cli):
    sample = ROOT / "engine" / "sample" / "online_retail_sample.csv"
    (tmp_path / "tx.csv").write_bytes(sample.read_bytes())
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\n"
        "data:\n"
        "  transactions: tx.csv\n"
        "  map: {customer_id: CustomerID, order_id: InvoiceNo, order_date: InvoiceDate, quantity: Quantity,"
        " unit_price: UnitPrice}\n"
        "classifiers: {abc: {}}\n"
        "outputs:\n"
        "  dir: .\n"
        "  customers: tx.csv\n"
        "  actions: p.yaml\n"
    )
    code, out, err = run_cli("run", path)
    assert code == 2
    assert f"{path}:8: outputs.customers: {tmp_path / 'tx.csv'} is data.transactions" in err
    assert f"{path}:9: outputs.actions: {path} is the playbook itself" in err
    assert (tmp_path / "tx.csv").read_bytes() == sample.read_bytes()


def test_high_value_care_offers_trials_to_prospects_only(run_cli, tmp_path):
    """Issue 10: the trial offer is for customers who never dealt with us, not for those who only returned goods."""
    path = next(p for p in EXAMPLES if p.stem == "high-value-care")
    code, _, err = run_cli("run", path, "--output-dir", tmp_path)
    assert code == 0, err
    customers = pl.read_parquet(tmp_path / "customers.parquet").with_columns(pl.col("customer_id").cast(pl.String))
    actions = pl.read_csv(tmp_path / "actions.csv", infer_schema=False)
    trials = set(actions.filter(pl.col("rule") == "convert-prospects")["customer_id"])
    prospects = set(customers.filter(pl.col("last_activity").is_null())["customer_id"])
    returners = set(customers.filter(pl.col("last_activity").is_not_null() & (pl.col("frequency") == 0))["customer_id"])
    assert len(prospects) == 20 and len(returners) == 2   # the sample's customer table and its two returners
    assert trials == prospects
    assert not trials & returners


def test_outputs_need_distinct_file_names(tmp_path, run_cli):
    """customers, actions, cut and summary all 'all.csv': three outputs would be lost; validate names each."""
    (tmp_path / "tx.csv").write_text("customer_id,order_id,order_date,amount\nc1,o1,2024-01-02,10\n")
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ndata:\n  transactions: tx.csv\nclassifiers: {abc: {}}\noutputs:\n"
                    "  customers: all.csv\n  actions: all.csv\n  cut: ALL.csv\n  summary: all.csv\n")
    code, out, err = run_cli("validate", path)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[1:] == [f"{path}:8: outputs.cut: 'ALL.csv' is also the file of outputs.customers (line 6); "
                         "each output needs its own file name",
                         f"{path}:9: outputs.summary: 'all.csv' is also the file of outputs.customers (line 6); "
                         "each output needs its own file name"]
    assert lines[0].endswith(f"{path}:7: outputs.actions: 'all.csv' is also the file of outputs.customers (line 6); "
                             "each output needs its own file name")


def test_hits_are_counted_by_rule_position_not_name(tmp_path):
    # A rule that shares the fallback's name (validation refuses that; the evaluation must not care):
    # its hits are its own customers, not the unmatched ones.
    import dataclasses

    pb = load_playbook(ROOT / "playbooks" / "abc-resource-allocation.yaml", output_dir=tmp_path)
    prepared = pb.prepare()
    before = pb.evaluate(prepared).summary["rules"]
    position = next(i for i, r in enumerate(pb.rules) if r.capacity is None)
    renamed = [dataclasses.replace(r, name=pb.fallback.name) if i == position else r for i, r in enumerate(pb.rules)]
    after = dataclasses.replace(pb, rules=renamed).evaluate(prepared).summary["rules"]
    assert after[position]["rule"] == after[-1]["rule"] == pb.fallback.name
    assert [{k: v for k, v in r.items() if k != "rule"} for r in after] == \
        [{k: v for k, v in r.items() if k != "rule"} for r in before]
    assert after[position]["hits"] != after[-1]["hits"]  # the case is a real one: the counts differ


def test_evaluate_rules_keys_everything_by_position():
    # Two rules and the fallback all named "x": masks and counts by position, checked against plain Polars.
    from engine.playbook import Rule, evaluate_rules

    customers = pl.DataFrame({"customer_id": ["c1", "c2", "c3", "c4", "c5"],
                              "monetary": [500.0, 50.0, 300.0, None, 20.0], "frequency": [5, 1, 3, 2, 1]})
    rules = [Rule(name="x", when="monetary > 100", action="a", channel="email", owner="o", due_days=1, priority=1,
                  capacity=1),
             Rule(name="x", when="frequency >= 2", action="b", channel="email", owner="o", due_days=1, priority=2)]
    fallback = Rule(name="x", when=None, action="c", channel="email", owner="o", due_days=1, priority=3)
    as_of = __import__("datetime").date(2024, 1, 1)
    for policy in ("first", "all"):
        rr = evaluate_rules(customers, rules, as_of=as_of, hit_policy=policy, fallback=fallback)
        big = (customers["monetary"] > 100).fill_null(False)
        frequent = customers["frequency"] >= 2
        assert rr.rules == (*rules, fallback) and rr.fallback == 2
        assert [m.to_list() for m in rr.masks] == [big.to_list(), frequent.to_list(), (~big & ~frequent).to_list()]
        assert rr.matched == (2, 3, 2)
        hits_1 = int((frequent & ~big).sum()) if policy == "first" else 3
        assert rr.hits == (2, hits_1, 2)
        assert rr.cut_by_capacity == (1, 0, 0)  # capacity 1 keeps c1 (monetary 500), cuts c3
        assert rr.actions_per_rule == (1, hits_1, 2)
        assert rr.cut["customer_id"].to_list() == ["c3"] and rr.unmatched == 2
        assert rr.actions.height == sum(rr.actions_per_rule)
        assert rr.rule_summary["hits"].to_list() == list(rr.hits)
    with pytest.raises(ValueError, match="hit_policy 'any'"):
        evaluate_rules(customers, rules, as_of=as_of, hit_policy="any")


def test_evaluate_rules_ranks_by_id_whatever_the_customers_row_order():
    """A rule's actions (without capacity) and the fallback's are in customer id order: a table already in id order
    (the feature pass's) is taken as it is, any other is sorted; both give the same actions, cut and control."""
    import datetime as dt
    import random

    from engine.holdout import Holdout
    from engine.playbook import Rule, evaluate_rules

    rng = random.Random(7)
    for ids in (list(range(-40, 160)), [f"c{i:03d}" for i in range(200)]):
        ordered = pl.DataFrame({"customer_id": ids, "monetary": [rng.choice([None, *range(50)]) for _ in ids],
                                "frequency": [rng.randrange(4) for _ in ids]},
                               schema_overrides={"monetary": pl.Float64})
        rules = [Rule(name="big", when="monetary > 30", action="a", channel="email", owner="o", due_days=1,
                      priority=2, capacity=9),
                 Rule(name="often", when="frequency >= 2", action="b", channel="mail", owner="o", due_days=2,
                      priority=1, holdout=Holdout(share=0.3, salt="s", line=1))]
        fallback = Rule(name="rest", when=None, action="c", channel="none", owner="p", due_days=3, priority=3)
        shuffled = ordered.sample(fraction=1.0, shuffle=True, seed=3)
        assert not shuffled["customer_id"].is_sorted()
        for policy in ("first", "all"):
            got = [evaluate_rules(t, rules, as_of=dt.date(2024, 1, 1), hit_policy=policy, fallback=fallback)
                   for t in (ordered, shuffled)]
            for name in ("actions", "cut", "control", "rule_summary", "action_positions", "cut_positions"):
                assert getattr(got[0], name).equals(getattr(got[1], name)), (name, policy)
            actions = got[1].actions
            for rule in ("often", "rest"):  # no capacity: in id order
                mine = actions.filter(pl.col("rule") == rule)["customer_id"]
                assert mine.len() and mine.to_list() == sorted(mine.to_list())
            often = got[1].masks[1] & (got[1].masks[0].not_() if policy == "first" else True)
            assert sorted(actions.filter(pl.col("rule") == "often")["customer_id"].to_list()
                          + got[1].control.filter(pl.col("rule") == "often")["customer_id"].to_list()) == \
                sorted(shuffled.filter(often)["customer_id"].to_list())


def test_the_classes_are_counted_while_the_rules_run(monkeypatch):
    """_playbook_result counts the classes (summarize) on a thread of its own while the rules are evaluated: the
    same summary; an error of either is raised, with nothing left running."""
    import threading

    import engine.playbook.evaluate as evaluate

    pb = load_playbook(ROOT / "playbooks" / "abc-resource-allocation.yaml")
    prepared = pb.prepare()
    expected = pb.evaluate(prepared).summary
    real_rules, real_summarize = evaluate.evaluate_rules, evaluate.summarize
    started, log = threading.Event(), []

    def rules(*args, **kwargs):
        started.set()
        log.append(("rules", threading.current_thread().name))
        return real_rules(*args, **kwargs)

    def summarize(*args, **kwargs):
        assert started.wait(10)  # the rules started meanwhile: the counting does not hold them up
        log.append(("classes", threading.current_thread().name.split("_")[0]))
        return real_summarize(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_rules", rules)
    monkeypatch.setattr(evaluate, "summarize", summarize)
    assert pb.evaluate(prepared).summary == expected
    assert sorted(log) == [("classes", "tierbook-classes"), ("rules", "MainThread")]

    def broken_rules(*args, **kwargs):
        raise RuntimeError("rules broke")

    def slow_summarize(*args, **kwargs):
        threading.Event().wait(0.3)
        return real_summarize(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_rules", broken_rules)
    monkeypatch.setattr(evaluate, "summarize", slow_summarize)
    with pytest.raises(RuntimeError, match="rules broke"):
        pb.evaluate(prepared)
    assert not [t for t in threading.enumerate() if t.name.startswith("tierbook-classes")]

    def broken_summarize(*args, **kwargs):
        raise RuntimeError("counting broke")

    monkeypatch.setattr(evaluate, "evaluate_rules", real_rules)
    monkeypatch.setattr(evaluate, "summarize", broken_summarize)
    with pytest.raises(RuntimeError, match="counting broke"):
        pb.evaluate(prepared)


def test_evaluate_rules_at_its_edges():
    """No rules (the fallback takes everyone), a rule on a skipped classifier's column (no one), and due dates up to
    the last date there is."""
    import dataclasses
    import datetime as dt

    from engine.errors import DataError
    from engine.playbook import evaluate_rules

    pb = load_playbook(ROOT / "playbooks" / "abc-resource-allocation.yaml")
    customers = pb.evaluate(pb.prepare()).customers
    n = customers.height
    rule = dataclasses.replace(pb.rules[0], when="frequency >= 1", capacity=None)
    fallback = dataclasses.replace(rule, name="everyone-else", when="")
    as_of = pb.prepare().as_of
    rr = evaluate_rules(customers, [], as_of=as_of, fallback=fallback)
    assert (rr.hits, rr.unmatched, rr.actions.height) == ((n,), n, n) and rr.masks[0].all()

    on_skipped = dataclasses.replace(rule, when="abc IS NULL OR frequency >= 0")
    rr = evaluate_rules(customers, [on_skipped], as_of=as_of, fallback=fallback, skipped_columns={"abc": "abc"})
    assert (rr.matched[0], rr.hits[0], rr.unmatched) == (0, 0, n)
    assert [r["rule"] for r in rr.skipped_rules] == [rule.name]

    last = dt.date.max - dt.timedelta(days=10)
    rr = evaluate_rules(customers, [dataclasses.replace(rule, due_days=10)], as_of=last)
    assert rr.actions["due_date"].unique().to_list() == [dt.date.max]
    with pytest.raises(DataError, match="is after 9999-12-31"):
        evaluate_rules(customers, [dataclasses.replace(rule, due_days=11)], as_of=last)


def test_label_sets_are_the_label_columns_with_their_labels(tmp_path):
    """What evaluate_rules checks labels against: every label column of the selected classifiers with its labels,
    best first; no numeric output (RFM's scores have no labels)."""
    from engine.playbook import label_sets
    from plugins.abc import LABELS
    from plugins.rfm import TIERS

    path = tmp_path / "p.yaml"
    (tmp_path / "tx.csv").write_text("customer_id,order_date,amount\na,2024-03-01,10\n")
    path.write_text("name: l\ndata: {transactions: tx.csv}\nclassifiers: {abc: {}, rfm: {}}\n")
    pb = load_playbook(path)
    sets = label_sets(pb.selections)
    assert set(sets) == {"abc", "rfm_segment", "value_tier"}
    assert sets["abc"] == LABELS and sets["value_tier"] == TIERS
    assert len(sets["rfm_segment"]) > 1 and all(isinstance(s, str) for s in sets["rfm_segment"])
