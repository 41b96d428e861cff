"""Playbooks with ``snapshots:``: rules over change, explain of moves, outputs and summary keys (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

import engine
from engine.errors import PlaybookError
from engine.playbook import load_playbook

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = engine.sample_path()

HEAD = f"""name: snaps
data:
  transactions: {SAMPLE}
  map: {{customer_id: CustomerID, order_id: InvoiceNo, order_date: InvoiceDate, quantity: Quantity,
         unit_price: UnitPrice}}
classifiers:
  abc: {{}}
  adc: {{}}
"""
RULES = """rules:
  - name: slipping
    when: abc_prev = 'A' AND abc IN ('B', 'C')
    action: call
    channel: phone
    owner: ka
  - name: cooling
    when: adc_change = 'down'
    action: mail
    channel: email
    owner: crm
fallback: {action: none, channel: none, owner: none}
"""


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "pb.yaml"
    path.write_text(text)
    return path


def test_rules_read_the_previous_snapshot(tmp_path):
    path = write(tmp_path, HEAD + "snapshots: {every: quarter, periods: 4, end: 2011-12-01}\n" + RULES)
    result = load_playbook(path, output_dir=tmp_path / "out").run()
    snaps = result.snapshots
    before, now = snaps.customers[-2], snaps.customers[-1]
    joined = now.join(before.select("customer_id", pl.col("abc").alias("was")), on="customer_id", how="left")
    slipping = joined.filter(pl.col("was") == "A", pl.col("abc") != "A")["customer_id"].sort().to_list()
    assert slipping  # the sample has some, else this test would prove nothing
    actions = pl.read_csv(tmp_path / "out" / "actions.csv", schema_overrides={"customer_id": pl.String})
    assert actions.filter(pl.col("rule") == "slipping")["customer_id"].sort().to_list() == slipping
    cooling = result.customers.filter(pl.col("adc_change") == "down")
    assert cooling.height and (cooling["adc"].to_physical() > cooling["adc_prev"].to_physical()).all()


def test_outputs_and_summary_keys(tmp_path):
    plain = load_playbook(write(tmp_path, HEAD), output_dir=tmp_path / "plain").run()
    path = write(tmp_path, HEAD + "snapshots: {as_of: [2011-06-01, 2011-09-01, 2011-12-01], cohort: quarter}\n")
    load_playbook(path, output_dir=tmp_path / "out").run()
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert set(plain.summary) <= set(summary)  # no key renamed or dropped
    assert summary["snapshots"]["as_of"] == ["2011-06-01", "2011-09-01", "2011-12-01"]
    assert summary["kpis"]["definitions"]["active"].startswith("customers with at least one purchase")
    assert len(summary["kpis"]["periods"]) == 2 and summary["migration"]["flows"]
    assert summary["as_of"] == "2011-12-01" and summary["reconciliation"]["ok"]
    for name in ("snapshots.parquet", "migration.csv", "flows.csv", "kpis.csv", "cohorts.csv", "values.csv"):
        assert (out / name).exists(), name
    long = pl.read_parquet(out / "snapshots.parquet")
    assert long.group_by("as_of").len().sort("as_of")["len"].to_list() == [157, 199, 249]
    cohorts = pl.read_csv(out / "cohorts.csv", try_parse_dates=True)
    assert {d.month for d in cohorts["cohort"]} <= {1, 4, 7, 10}  # quarters


def test_prev_with_a_single_snapshot_names_the_key(tmp_path):
    path = write(tmp_path, HEAD + "snapshots: {as_of: [2011-12-01]}\n" + RULES)
    with pytest.raises(PlaybookError) as info:
        load_playbook(path)
    assert len(info.value.problems) == 2
    line = str(info.value.problems[0])
    assert "rule 'slipping': abc_prev reads the previous snapshot, but snapshots gives one snapshot" in line
    assert "(as_of: 2011-12-01); give two or more" in line
    path = write(tmp_path, HEAD + RULES)
    with pytest.raises(PlaybookError) as info:
        load_playbook(path)
    assert "the playbook has no snapshots" in str(info.value.problems[0])


def test_cli_options_give_snapshots(tmp_path, run_cli):
    path = write(tmp_path, HEAD + RULES)
    code, out, err = run_cli("run", path, "--every", "quarter", "--periods", "3", "--end", "2011-12-01",
                             "--window", "abc=6 months", "--output-dir", tmp_path / "out")
    assert code == 0, err
    assert "snapshots: 2011-06-01, 2011-09-01, 2011-12-01 (every 1 quarter)" in out
    assert "abc classified on the last 6 months before each as_of" in out
    one_rule = write(tmp_path, HEAD + RULES.split("  - name: cooling")[0])
    code, out, err = run_cli("run", one_rule, "--snapshots", "2011-12-01", "--dry-run")
    assert code == 2 and err.count("\n") == 1
    assert "abc_prev reads the previous snapshot" in err


def test_explain_says_what_moved_and_why(tmp_path, run_cli):
    path = write(tmp_path, HEAD + "snapshots: {every: quarter, periods: 4, end: 2011-12-01}\n" + RULES)
    code, out, err = run_cli("explain", path, "12679")
    assert code == 0, err
    assert "since the previous snapshot (2011-09-01 -> 2011-12-01):" in out
    assert "abc: A -> B (down)" in out
    assert "monetary: 869.13 (0.5% of the total) -> 1,058.67 (0.3% of the total)" in out


def test_the_json_schema_knows_snapshots():
    import jsonschema
    import yaml

    from engine.playbook import playbook_schema

    schema = playbook_schema()
    ok = yaml.safe_load(HEAD + "snapshots: {every: quarter, periods: 8, end: '2011-12-01', window: {abc: 12 months},"
                               " cohort: quarter}\n")
    jsonschema.validate(ok, schema)
    jsonschema.validate(yaml.safe_load(HEAD + "snapshots: {as_of: ['2011-06-01', '2011-12-01']}\n"), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(HEAD + "snapshots: {every: quarter, periods: 8, cohrt: month}\n"), schema)


def test_a_run_without_snapshots_retires_its_own_snapshot_files(tmp_path):
    """An earlier run's snapshot files do not stay beside the same playbook's later plain run; another
    playbook's files in the same directory (its snapshot files included) stay."""
    from engine.io import leftovers

    out = tmp_path / "out"
    other = tmp_path / "other.yaml"  # another playbook with snapshots, its outputs in the same directory
    other.write_text(HEAD.replace("name: snaps", "name: other") + "snapshots: {as_of: [2011-06-01, 2011-12-01]}\n"
                     "outputs: {customers: other.parquet, actions: other-actions.csv, cut: other-cut.csv, "
                     "summary: other-summary.json, control: other-control.csv}\n")
    load_playbook(other, output_dir=out).run()
    theirs = (out / "migration.csv").read_bytes()
    load_playbook(write(tmp_path, HEAD), output_dir=out).run()
    assert (out / "migration.csv").read_bytes() == theirs  # not this playbook's: kept
    path = write(tmp_path, HEAD + "snapshots: {as_of: [2011-06-01, 2011-09-01, 2011-12-01]}\n")
    load_playbook(path, output_dir=out).run(force=True)
    assert (out / "migration.csv").read_bytes() != theirs
    load_playbook(write(tmp_path, HEAD), output_dir=out).run()
    names = {p.name for p in out.iterdir()}
    for name in ("snapshots.parquet", "migration.csv", "flows.csv", "kpis.csv", "cohorts.csv", "values.csv"):
        assert name not in names, name
        assert not (out / ".tierbook" / "current" / name).exists(), name
    assert {"customers.parquet", "summary.json", "other.parquet", "other-summary.json"} <= names
    assert all((out / n).exists() for n in names)  # no dangling link
    assert "snapshots" not in json.loads((out / "summary.json").read_text())
    assert leftovers(out) == []


def test_the_snapshots_file_encoded_while_the_rules_run_is_the_file_a_write_gives(tmp_path, run_cli, monkeypatch):
    """``tierbook run`` encodes snapshots.parquet while the rules run (engine.playbook.write.encode_snapshot_files):
    the same bytes as the file written at the end, as a run from Python writes it; a failure while encoding fails
    the run's write in one line, and nothing of the set is written."""
    import engine.playbook.write as write_module

    path = write(tmp_path, HEAD + "snapshots: {as_of: [2011-06-01, 2011-09-01, 2011-12-01]}\n" + RULES)
    code, out, err = run_cli("run", path, "--output-dir", tmp_path / "cli")
    assert code == 0, err
    load_playbook(path, output_dir=tmp_path / "api").run()
    cli, api = ((tmp_path / d / "snapshots.parquet").read_bytes() for d in ("cli", "api"))
    assert cli == api and pl.read_parquet(tmp_path / "cli" / "snapshots.parquet").height > 0

    def failing(frame, name):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(write_module, "_encoded", failing)
    code, out, err = run_cli("run", path, "--output-dir", tmp_path / "failed")
    assert code != 0 and err.count("\n") == 1 and "No space left on device" in err, err
    assert not (tmp_path / "failed" / "snapshots.parquet").exists()
    assert not (tmp_path / "failed" / "customers.parquet").exists()


def test_the_summary_classes_are_the_last_snapshots_counted_with_its_figures(tmp_path):
    """A run with snapshots takes the summary's classes from the last snapshot's figures (counted while the rules
    run) instead of summarizing the table again: they must be summarize's of the table the rules read, which
    differ from the snapshot before's."""
    from engine.run import summarize

    path = write(tmp_path, HEAD + "snapshots: {every: quarter, periods: 4, end: 2011-12-01}\n" + RULES)
    pb = load_playbook(path, output_dir=tmp_path / "out")
    snaps = pb.compute_snapshots()
    assert snaps.last_classes() is not None  # counted, so the run does not summarize again
    result = pb.evaluate_snapshots(snaps)
    expected = summarize(result.customers, pb.selections)
    assert result.classes.equals(expected)
    assert result.summary["classes"] == expected.to_dicts()
    assert not summarize(snaps.customers[-2], pb.selections).equals(expected)


def test_a_file_encoded_already_is_not_made_again_for_the_write(tmp_path, monkeypatch):
    """write_outputs writes the encoded bytes of snapshots.parquet and does not make its table again (the other
    files' tables are made, in the same order)."""
    import engine.playbook.write as write_module
    from engine.playbook.spec import SNAPSHOT_OUTPUTS

    path = write(tmp_path, HEAD + "snapshots: {as_of: [2011-06-01, 2011-09-01, 2011-12-01]}\n" + RULES)
    pb = load_playbook(path, output_dir=tmp_path / "out")
    snaps = pb.compute_snapshots()
    whole = write_module.snapshot_frames(snaps)
    skipped = write_module.snapshot_frames(snaps, skip={SNAPSHOT_OUTPUTS["snapshots"]})
    assert list(skipped) == list(whole) == list(SNAPSHOT_OUTPUTS.values())
    assert skipped[SNAPSHOT_OUTPUTS["snapshots"]] is None
    for name, frame in whole.items():
        if name != SNAPSHOT_OUTPUTS["snapshots"]:
            assert frame.equals(skipped[name]), name
    write_module.encode_snapshot_files(snaps)
    made = []
    real = write_module._long_snapshots
    monkeypatch.setattr(write_module, "_long_snapshots", lambda s: made.append(1) or real(s))
    pb.write(pb.evaluate_snapshots(snaps), force=False)
    assert made == []
    assert pl.read_parquet(tmp_path / "out" / "snapshots.parquet").equals(whole[SNAPSHOT_OUTPUTS["snapshots"]])
