"""Holdout groups: the bucket hash pinned by fixed vectors, its properties, and what a run writes.

The fixed vectors were computed with Python's hashlib alone (``sha256(salt + b"\\0" + id).digest()[:8]``,
big-endian, mod 10,000), independently of engine.holdout: they pin the byte encoding documented in
docs/holdouts.md across machines, thread counts and library versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import DataError
from engine.holdout import BUCKETS, Holdout, bucket_of, buckets, control_share, id_bytes
from engine.playbook import load_playbook

# (salt, customer id as the source holds it, bucket, first 16 hex digits of the SHA-256 digest)
VECTORS = [
    ("win-back-2026-11", 12347, 5875, "8ffcd00cee3574f3"),
    ("win-back-2026-11", -5, 9812, "3f60392db826b864"),
    ("win-back-2026-11", 0, 9334, "608bd1e8cc4f2346"),
    ("win-back-2026-11", 2**64 - 1, 1985, "c47a343767453d11"),
    ("global", "\u00e9l\u00e8ve-7", 732, "8a0544e341f555cc"),
    ("global", "C 001", 2396, "d4bb3f0d206ea6bc"),
    ("s\u00e4lt", 12347, 4310, "65757a07221427e6"),
    ("x", 2**53, 539, "3915588d8a1d3abb"),
]


@pytest.mark.parametrize(("salt", "cid", "bucket", "head"), VECTORS)
def test_fixed_vectors_by_the_reference(salt, cid, bucket, head):
    message = salt.encode("utf-8") + b"\x00" + id_bytes(cid)
    assert hashlib.sha256(message).hexdigest()[:16] == head
    assert int(head, 16) % BUCKETS == bucket
    assert bucket_of(cid, salt) == bucket


@pytest.mark.parametrize("dtype", [pl.Int64, pl.Int32, pl.UInt64, pl.Float64, pl.String, pl.Categorical])
def test_fixed_vectors_vectorised_for_every_id_type(dtype):
    rows = [(s, c, b) for s, c, b, _ in VECTORS if _fits(c, dtype)]
    assert rows
    for salt in {s for s, _, _ in rows}:
        ids = [c if dtype not in (pl.String, pl.Categorical) else str(c) for s, c, _ in rows if s == salt]
        if dtype == pl.Float64:
            ids = [float(c) for c in ids]
        series = pl.Series("customer_id", ids, dtype=dtype)
        want = [b for s, _, b in rows if s == salt]
        assert buckets(series, salt).to_list() == want


def _fits(cid, dtype) -> bool:
    if dtype in (pl.String, pl.Categorical):
        return True
    if not isinstance(cid, int):
        return False
    if dtype == pl.Int32:
        return -(2**31) <= cid < 2**31
    if dtype == pl.Int64:
        return -(2**63) <= cid < 2**63
    if dtype == pl.UInt64:
        return cid >= 0
    return abs(cid) <= 2**53  # Float64: whole numbers up to 2^53


def test_an_id_keeps_its_bucket_when_its_column_turns_from_float_to_integer_to_text():
    salt = "s"
    ints = pl.Series([1, 12347, -3, 10**15])
    assert buckets(ints, salt).to_list() == buckets(ints.cast(pl.Float64), salt).to_list() \
        == buckets(ints.cast(pl.String), salt).to_list()


@pytest.mark.parametrize("bad", [1.5, float("nan"), float("inf"), 2.0**60])
def test_float_ids_that_are_not_whole_numbers_are_refused(bad):
    with pytest.raises(DataError, match="whole numbers or text"):
        buckets(pl.Series([1.0, bad]), "s")
    with pytest.raises(DataError, match="whole numbers or text"):
        bucket_of(bad, "s")


def test_an_id_type_that_cannot_be_hashed_is_refused():
    with pytest.raises(DataError, match="customer_id is of type Date"):
        buckets(pl.Series([0]).cast(pl.Date), "s")


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=30, unique=True),
       salt=st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1,
                    max_size=20))
def test_vectorised_equals_the_reference_on_integers(ids, salt):
    assert buckets(pl.Series(ids, dtype=pl.Int64), salt).to_list() == [bucket_of(i, salt) for i in ids]


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12), min_size=1,
                    max_size=30),
       salt=st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1,
                    max_size=20))
def test_vectorised_equals_the_reference_on_text(ids, salt):
    assert buckets(pl.Series(ids, dtype=pl.String), salt).to_list() == [bucket_of(i, salt) for i in ids]


IDS = pl.Series("customer_id", range(100_000, 120_000))


@settings(max_examples=25, deadline=None)
@given(low=st.integers(0, BUCKETS), high=st.integers(0, BUCKETS), salt=st.text(min_size=1, max_size=8).filter(
    lambda s: "\x00" not in s))
def test_raising_the_share_only_adds_customers(low, high, salt):
    low, high = sorted((low, high))
    b = buckets(IDS, salt)
    small = set(IDS.filter(b < Holdout(low / BUCKETS, salt).threshold).to_list())
    large = set(IDS.filter(b < Holdout(high / BUCKETS, salt).threshold).to_list())
    assert small <= large


@settings(max_examples=10, deadline=None)
@given(a=st.text(min_size=1, max_size=8), b=st.text(min_size=1, max_size=8))
def test_a_new_salt_reshuffles(a, b):
    a, b = a.replace("\x00", "_"), b.replace("\x00", "_")
    if a == b:
        return
    share = 0.2
    in_a = buckets(IDS, a) < share * BUCKETS
    in_b = buckets(IDS, b) < share * BUCKETS
    n_a = int(in_a.sum())
    both = int((in_a & in_b).sum())
    # Independent draws: about share of salt a's control group is in salt b's too (20,000 ids: the
    # binomial's standard deviation is about 0.006; 6 of them is 0.036), and each group is about share.
    assert abs(n_a / IDS.len() - share) < 0.02
    assert abs(both / n_a - share) < 0.04


def test_buckets_are_the_same_with_one_thread(tmp_path):
    """Polars' thread pool size changes nothing (a fresh process with POLARS_MAX_THREADS=1): 300,000 ids are
    hashed in morsels on two threads here (when Polars has two or more) and on one there."""
    ids = pl.Series("customer_id", range(0, 900_000, 3))
    here = buckets(ids, "threads")
    script = textwrap.dedent("""
        import sys, polars as pl
        from engine.holdout import buckets
        assert pl.thread_pool_size() == 1
        buckets(pl.Series("customer_id", range(0, 900_000, 3)), "threads").to_frame().write_parquet(sys.argv[1])
    """)
    out = tmp_path / "b.parquet"
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, env={**os.environ, "POLARS_MAX_THREADS": "1"})
    assert pl.read_parquet(out).to_series().equals(here)


def test_control_share_of_independent_holdouts():
    assert control_share(None, None) == 0
    assert control_share(Holdout(0.1, "a"), None) == pytest.approx(0.1)
    assert control_share(Holdout(0.1, "a"), Holdout(0.2, "b")) == pytest.approx(1 - 0.9 * 0.8)


# ------------------------------------------------------------------------------------------ playbook runs

def _tx(path: Path, n: int = 3000) -> Path:
    rows = ["customer_id,order_id,order_date,amount"]
    for c in range(n):
        for k in range(1 + c % 3):
            rows.append(f"{1000 + c},o{c}-{k},2024-0{1 + k}-{1 + c % 27:02d},{10 + (c * 7919) % 500}")
    path.write_text("\n".join(rows) + "\n")
    return path


PLAYBOOK = """
name: ho
data: {transactions: tx.csv}
classifiers: {abc: {}}
hit_policy: HIT
%PLAYBOOK_HOLDOUT%
rules:
  - name: big
    when: abc = 'A'
    action: call
    channel: phone
    owner: sales
    capacity: {max: 150, order_by: monetary desc}
    holdout: {share: 0.2, salt: big-1}
  - name: rest
    when: monetary > 0
    action: mail
    channel: email
    owner: crm
fallback: {action: none, channel: none, owner: crm}
"""


def _playbook(tmp_path: Path, *, hit: str = "first", playbook_holdout: str = "holdout: {share: 0.1, salt: g}") -> Path:
    _tx(tmp_path / "tx.csv")
    pb = tmp_path / "pb.yaml"
    pb.write_text(PLAYBOOK.replace("HIT", hit).replace("%PLAYBOOK_HOLDOUT%", playbook_holdout))
    return pb


@pytest.mark.parametrize("hit", ["first", "all"])
def test_a_run_splits_each_rule_after_capacity(tmp_path, hit):
    pb = load_playbook(_playbook(tmp_path, hit=hit))
    result = pb.run()
    out = pb.output_dir
    actions = pl.read_csv(out / "actions.csv", infer_schema=False)
    control = pl.read_csv(out / "control.csv", infer_schema=False)
    summary = json.loads((out / "summary.json").read_text())
    customers = pl.read_parquet(out / "customers.parquet")
    assert control.columns == ["customer_id", "rule", "group", "holdout", "bucket"]
    assert set(control["group"]) == {"control"}
    ids = customers["customer_id"]
    global_control = set(ids.filter(buckets(ids, "g") < 1000).cast(pl.Int64).to_list())
    for r in summary["rules"]:
        name = r["rule"]
        treated = set(actions.filter(pl.col("rule") == name)["customer_id"].cast(pl.Int64).to_list())
        held = control.filter(pl.col("rule") == name)
        held_ids = set(held["customer_id"].cast(pl.Int64).to_list())
        assert r["treatment"] == r["actions"] == len(treated)
        assert r["control"] == len(held_ids) == held.height
        assert not treated & held_ids
        assert r["hits"] == r["treatment"] + r["control"] + r["cut_by_capacity"]
        assert not treated & global_control  # the playbook's control group gets no action from any rule
        for row in held.iter_rows(named=True):  # each control row says which holdout and its bucket
            salt = "g" if row["holdout"] == "playbook" else "big-1"
            assert bucket_of(int(row["customer_id"]), salt) == int(row["bucket"])
            assert int(row["bucket"]) < (1000 if salt == "g" else 2000)
        if name != "big":
            assert held_ids == (treated | held_ids) & global_control
    big = next(r for r in summary["rules"] if r["rule"] == "big")
    assert big["treatment"] + big["control"] == 150  # capacity first, then the holdout
    assert 0 < big["control"] < 150
    assert summary["control"] == control.height == result.control.height
    assert summary["holdouts"]["playbook"] == {"share": 0.1, "salt": "g", "buckets": 1000}
    assert [h["expected_control_share"] for h in summary["holdouts"]["rules"]] == \
        [pytest.approx(0.28), pytest.approx(0.1), pytest.approx(0.1)]


def test_the_same_salt_holds_out_the_same_customers_run_after_run(tmp_path):
    pb = load_playbook(_playbook(tmp_path))
    first = pb.run().control
    assert first.height > 0
    assert pb.run().control.equals(first)


def test_without_holdouts_control_csv_has_its_columns_and_no_row(tmp_path):
    pb = load_playbook(_playbook(tmp_path, playbook_holdout=""))
    pb = pb.__class__(**{**pb.__dict__, "rules": [r.__class__(**{**r.__dict__, "holdout": None}) for r in pb.rules]})
    result = pb.run()
    control = pl.read_csv(pb.output_dir / "control.csv")
    assert control.height == 0 and control.columns == ["customer_id", "rule", "group", "holdout", "bucket"]
    assert all(r["control"] == 0 and r["treatment"] == r["actions"] for r in result.summary["rules"])
    assert result.summary["holdouts"]["playbook"] is None


def test_share_zero_holds_out_no_one_and_share_one_everyone(tmp_path):
    for share, none_treated in ((0, False), (1, True)):
        pb = load_playbook(_playbook(tmp_path, playbook_holdout=f"holdout: {{share: {share}, salt: g}}"))
        summary = pb.run().summary
        rest = next(r for r in summary["rules"] if r["rule"] == "rest")
        assert (rest["treatment"] == 0) is none_treated
        assert (rest["control"] == 0) is not none_treated


def test_a_customer_whose_bucket_is_the_threshold_is_not_held_out(tmp_path):
    """``bucket < share * 10,000``: the share's own bucket is the first one not held out."""
    ids = pl.Series([str(1000 + c) for c in range(3000)])
    b = buckets(ids, "g")
    edge = int(b[0])  # customer 1000's bucket becomes the threshold
    pb = load_playbook(_playbook(tmp_path, playbook_holdout=f"holdout: {{share: {edge / BUCKETS}, salt: g}}"))
    result = pb.run()
    held = set(result.control["customer_id"].cast(pl.String).to_list())
    cut = set(result.cut["customer_id"].cast(pl.String).to_list())  # no action, so nothing to hold out
    want = set(ids.filter(b < edge).to_list()) - cut
    assert "1000" not in held and "1000" not in cut
    assert held >= want  # every customer below the threshold is held out of their rule ...
    assert not (held - want - set(result.control.filter(pl.col("holdout") == "rule")["customer_id"]
                                  .cast(pl.String).to_list()))  # ... and the playbook holds out no one else


def test_explain_says_a_customer_was_held_out(tmp_path):
    from engine.playbook import explain_customer

    pb = load_playbook(_playbook(tmp_path))
    prepared = pb.prepare()
    result = pb.evaluate(prepared)
    for which, whose in (("playbook", "the playbook's control group"), ("rule", "the rule's holdout")):
        row = result.control.filter(pl.col("holdout") == which).row(0, named=True)
        text = explain_customer(pb, prepared, result, str(row["customer_id"]))
        line = next(ln for ln in text.splitlines() if ln.startswith(f"- {row['rule']}"))
        assert f"held out: {whose} (bucket {row['bucket']}), no action (control group)" in line
        if not result.actions.filter(pl.col("customer_id") == row["customer_id"]).height:  # no other rule's action
            assert text.splitlines()[-1] == f"verdict: held out of {row['rule']!r} (control group): no action"


def test_the_json_schema_knows_holdouts(tmp_path):
    import jsonschema
    import yaml

    from engine.playbook import playbook_schema

    schema = playbook_schema()
    doc = yaml.safe_load(_playbook(tmp_path).read_text())
    jsonschema.validate(doc, schema)  # playbook-wide, on a rule and (none here) on the fallback
    doc["fallback"]["holdout"] = {"share": 0.25, "salt": "fb"}
    jsonschema.validate(doc, schema)
    for bad in ({"share": 1.5, "salt": "x"}, {"share": 0.1}, {"share": 0.1, "salt": ""},
                {"share": 0.1, "salt": "x", "shares": 1}):
        doc["rules"][0]["holdout"] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, schema)


def test_the_workbench_counts_actions_as_a_run_does(tmp_path):
    """The workbench's rules (hits, actions per rule) hold out the same customers as ``tierbook run``."""
    from engine.widgets import WorkbenchModel

    pb = load_playbook(_playbook(tmp_path))
    prepared = pb.prepare()
    run = pb.evaluate(prepared)
    model = WorkbenchModel.from_playbook(pb, prepared)
    rr = model.rules()
    assert [r["control"] for r in run.summary["rules"]] == list(rr.control_per_rule)
    assert [r["actions"] for r in run.summary["rules"]] == list(rr.actions_per_rule)
    assert sum(rr.control_per_rule) > 0


# ------------------------------------------------------------------------------------------ evaluate_rules directly

AS_OF = __import__("datetime").date(2025, 1, 1)


def _rules_with(holdout: Holdout | None, when: str = "monetary > 0"):
    from engine.playbook import Rule

    return [Rule(name="r", when=when, action="mail", channel="email", owner="crm", due_days=7, priority=1,
                 holdout=holdout)]


def _customers(ids) -> pl.DataFrame:
    return pl.DataFrame({"customer_id": ids, "monetary": [10.0] * len(ids)})


def test_a_rule_holdout_alone_and_a_playbook_holdout_alone_each_hold_out_their_buckets():
    from engine.playbook import evaluate_rules

    ids = [str(i) for i in range(400)]
    customers = _customers(ids)
    b = {i: bucket_of(i, "s") for i in ids}
    want = {i for i in ids if b[i] < 5000}
    assert 0 < len(want) < len(ids)
    for playbook, rule, which in ((None, Holdout(0.5, "s"), "rule"), (Holdout(0.5, "s"), None, "playbook")):
        rr = evaluate_rules(customers, _rules_with(rule), as_of=AS_OF, holdout=playbook)
        assert set(rr.control["customer_id"]) == want and set(rr.control["holdout"]) == {which}
        assert set(rr.actions["customer_id"]) == set(ids) - want
        assert rr.control_per_rule == (len(want),) and rr.actions_per_rule == (len(ids) - len(want),)


def test_ids_no_holdout_can_hash_are_refused_only_when_there_is_a_holdout():
    """docs/holdouts.md: a holdout needs whole-number or text ids; a run without one takes any id."""
    from engine.errors import DataError
    from engine.playbook import evaluate_rules

    customers = _customers([1.5, 2.0, 3.25])
    rr = evaluate_rules(customers, _rules_with(None), as_of=AS_OF)
    assert rr.actions["customer_id"].to_list() == [1.5, 2.0, 3.25] and rr.control.height == 0
    with pytest.raises(DataError, match=r"playbook:0: holdout: customer_id 1.5: a holdout needs whole numbers"):
        evaluate_rules(customers, _rules_with(Holdout(0.1, "s")), as_of=AS_OF)


def test_the_smallest_share_holds_out_bucket_zero():
    """share 0.0001 is one bucket of 10,000: the customers in bucket 0, and no one else."""
    from engine.playbook import evaluate_rules

    ids = [str(i) for i in range(30_000)]
    zero = {i for i, b in zip(ids, buckets(pl.Series(ids), "s").to_list()) if b == 0}
    assert zero
    rr = evaluate_rules(_customers(ids), _rules_with(Holdout(0.0001, "s")), as_of=AS_OF)
    assert set(rr.control["customer_id"]) == zero and rr.control_per_rule == (len(zero),)
    assert rr.control["bucket"].to_list() == [0] * len(zero)


def test_a_rule_with_a_single_customer_holds_them_out_too():
    from engine.playbook import evaluate_rules

    rr = evaluate_rules(_customers(["only"]), _rules_with(Holdout(1.0, "s")), as_of=AS_OF)
    assert rr.control["customer_id"].to_list() == ["only"] and rr.actions.height == 0
    assert rr.control_per_rule == (1,) and rr.actions_per_rule == (0,)


def test_a_control_row_gives_the_bucket_of_the_holdout_that_held_the_customer_out():
    """A customer whose playbook bucket is the playbook's threshold is not in its control group (``bucket <
    threshold``); the rule's holdout (share 1) holds them out, and the row gives the rule salt's bucket."""
    from engine.playbook import evaluate_rules

    ids = [str(i) for i in range(50)]
    edge = next(i for i in ids if 0 < bucket_of(i, "pb") < BUCKETS)
    playbook = Holdout(bucket_of(edge, "pb") / BUCKETS, "pb")
    rr = evaluate_rules(_customers(ids), _rules_with(Holdout(1.0, "rule-salt")), as_of=AS_OF, holdout=playbook)
    row = rr.control.filter(pl.col("customer_id") == edge).row(0, named=True)
    assert row["holdout"] == "rule" and row["bucket"] == bucket_of(edge, "rule-salt") != bucket_of(edge, "pb")
    for r in rr.control.iter_rows(named=True):
        assert r["bucket"] == bucket_of(r["customer_id"], "pb" if r["holdout"] == "playbook" else "rule-salt")
