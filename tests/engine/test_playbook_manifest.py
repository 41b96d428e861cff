"""The run manifest in summary.json, the refusal to replace another playbook's (or changed) outputs, and the
action of each customer in the customers file (issue 16 item 4)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from pathlib import Path

import polars as pl
import pytest

from engine.playbook import load_playbook
from engine.playbook.manifest import BLOCK, fingerprint
from engine.playbook.schema import summary_schema
from playbook_files import copy_playbook as _copy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "playbooks").glob("*.yaml"))
SAMPLE = ROOT / "engine" / "sample" / "online_retail_sample.csv"


def _tree(directory: Path) -> dict[str, bytes | str]:
    """Every entry under ``directory``: file bytes, or a link's target."""
    out = {}
    for p in sorted(directory.rglob("*")):
        key = str(p.relative_to(directory))
        out[key] = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


def test_summary_has_a_manifest_of_what_ran(tmp_path, run_cli):
    path = _copy(tmp_path)
    code, out, err = run_cli("run", path, "--set", "abc.a=0.7")
    assert code == 0, err
    directory = tmp_path / "out" / "abc-resource-allocation"
    summary = json.loads((directory / "summary.json").read_text())
    m = summary["manifest"]
    import importlib.metadata as md

    assert m["tierbook"] == md.version("tierbook") and m["polars"] == pl.__version__
    assert {p["name"] for p in m["plugins"]} >= {"abc", "adc", "rfm"}
    assert all(p["version"] == md.version("tierbook") for p in m["plugins"] if p["package"] == "tierbook")
    assert m["playbook"] == {"path": str(path.resolve()), "name": "abc-resource-allocation",
                             "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    tx = m["data"]["transactions"]
    stat = SAMPLE.stat()
    assert tx["path"] == str(SAMPLE) and tx["size"] == stat.st_size
    assert tx["mtime"] == dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc).isoformat()
    assert tx["rows"] == summary["input"]["rows"] == 24_798  # the sample's data rows (README of engine/sample)
    # the sample is above 2 MiB: its fingerprint is the sampled one
    data = SAMPLE.read_bytes()
    assert len(data) > 2 * BLOCK
    assert tx["fingerprint"] == hashlib.sha256(f"{len(data)}\n".encode() + data[:BLOCK] + data[-BLOCK:]).hexdigest()
    assert m["as_of"] == summary["as_of"] == "2011-12-10" and m["as_of_from"] == "the day after the last transaction"
    params = m["parameters"]
    assert params["classifiers"]["abc"]["a"] == 0.7 and params["classifiers"]["abc"]["b"] == 0.95
    assert params["classifiers"]["adc"] == {"active_days": 90, "churn_days": 365, "new_days": 30}  # defaults too
    assert params["overrides"] == {"abc.a": 0.7}
    assert params["hit_policy"] == "first" and params["engine"] == "polars"
    assert params["data"]["map"]["customer_id"] == "CustomerID"
    assert set(m["durations_s"]) == {"read_and_features", "classify_and_rules", "write_outputs"}
    assert all(v >= 0 for v in m["durations_s"].values())
    for name in ("customers.parquet", "actions.csv", "cut.csv"):
        written = (directory / name).read_bytes()
        assert m["outputs"][name] == {"size": len(written), "sha256": hashlib.sha256(written).hexdigest()}


def test_as_of_given_is_recorded_as_given(tmp_path, run_cli):
    path = _copy(tmp_path)
    code, _, err = run_cli("run", path, "--as-of", "2011-11-01")
    assert code == 0, err
    m = json.loads((tmp_path / "out" / "abc-resource-allocation" / "summary.json").read_text())["manifest"]
    assert (m["as_of"], m["as_of_from"]) == ("2011-11-01", "given")


def test_the_fingerprint_is_sampled_and_says_what_it_sees(tmp_path):
    small = tmp_path / "small.csv"
    small.write_bytes(b"a,b\n1,2\n")
    assert fingerprint(small) == hashlib.sha256(b"8\n" + b"a,b\n1,2\n").hexdigest()  # whole file up to 2 MiB
    big = tmp_path / "big.csv"
    body = bytearray(os.urandom(3 * BLOCK))
    big.write_bytes(body)
    first = fingerprint(big)
    body[10] ^= 1  # the first MiB: seen
    big.write_bytes(body)
    assert fingerprint(big) != first
    body[10] ^= 1
    body[-10] ^= 1  # the last MiB: seen
    big.write_bytes(body)
    assert fingerprint(big) != first
    body[-10] ^= 1
    big.write_bytes(body + b"x")  # appended: seen (size and last block)
    assert fingerprint(big) != first
    body[BLOCK + 5] ^= 1  # the middle, same size: not seen (documented; rows and mtime are beside it)
    big.write_bytes(body)
    assert fingerprint(big) == first


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_summary_matches_the_summary_schema(path, tmp_path, run_cli):
    jsonschema = pytest.importorskip("jsonschema")
    code, _, err = run_cli("run", path, "--output-dir", tmp_path)
    assert code == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    jsonschema.Draft202012Validator(summary_schema(), format_checker=jsonschema.FormatChecker()).validate(summary)
    code, out, _ = run_cli("schema", "--summary")
    assert code == 0 and json.loads(out) == summary_schema()


def test_the_summary_schema_pins_the_existing_keys():
    jsonschema = pytest.importorskip("jsonschema")
    # the keys scripts read since before the manifest: a summary without one of them is invalid
    keys = ["playbook", "as_of", "hit_policy", "input", "reconciliation", "classes", "rules", "unmatched",
            "cut_by_capacity", "actions"]
    assert set(keys) | {"manifest"} == set(summary_schema()["required"])
    validator = jsonschema.Draft202012Validator(summary_schema())
    assert not validator.is_valid({k: None for k in keys})


def test_a_run_refuses_to_replace_another_playbooks_outputs(tmp_path, run_cli):
    first = _copy(tmp_path, name="first.yaml")
    second = _copy(tmp_path, name="second.yaml")
    assert run_cli("run", first)[0] == 0
    directory = tmp_path / "out" / "abc-resource-allocation"  # both name it: out/<name>
    before = _tree(directory)
    code, out, err = run_cli("run", second)
    assert code == 2
    assert err.strip() == (f"tierbook: error: {directory}: these outputs were written by another playbook, "
                           f"{first} (name 'abc-resource-allocation'), not {second}; nothing was written; --force "
                           f"replaces them")
    assert _tree(directory) == before
    code, _, err = run_cli("run", second, "--force")
    assert code == 0, err
    assert json.loads((directory / "summary.json").read_text())["manifest"]["playbook"]["path"] == str(second)
    assert run_cli("run", second)[0] == 0  # its own outputs: replaced as always


@pytest.mark.parametrize("name, change, message", [
    ("actions.csv", lambda p: p.write_bytes(p.read_bytes() + b"x\n"),
     r"actions.csv: \d[\d,]* bytes, but the manifest of summary.json says \d[\d,]*: the file was changed after "
     r"tierbook wrote it"),
    ("cut.csv", lambda p: p.write_bytes(p.read_bytes().replace(b"key-accounts", b"key-accountz")),
     r"cut.csv: its SHA-256 is [0-9a-f]{12}\.\.\., but the manifest of summary.json says [0-9a-f]{12}\.\.\.: the "
     r"file was changed after tierbook wrote it"),
    ("summary.json", lambda p: p.write_text("{not json"), r"summary.json: not a tierbook summary \(JSONDecodeError"),
])
def test_a_manifest_that_does_not_match_its_outputs_stops_the_run(tmp_path, run_cli, name, change, message):
    path = _copy(tmp_path)
    assert run_cli("run", path)[0] == 0
    directory = tmp_path / "out" / "abc-resource-allocation"
    target = directory / ".tierbook" / "current" / name  # the file itself, not the link to it
    change(target)
    before = _tree(directory)
    code, out, err = run_cli("run", path)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), err
    assert lines[0].endswith("nothing was written; --force replaces them")
    assert _tree(directory) == before
    code, _, err = run_cli("run", path, "--force")
    assert code == 0, err


def test_customers_file_says_who_gets_what(tmp_path, run_cli):
    path = _copy(tmp_path, **{"when: abc = 'C'": "when: abc = 'C' AND frequency > 1"})  # some go to the fallback
    assert run_cli("run", path)[0] == 0
    directory = tmp_path / "out" / "abc-resource-allocation"
    customers = pl.read_parquet(directory / "customers.parquet")
    actions = pl.read_csv(directory / "actions.csv", schema_overrides={"customer_id": pl.String})
    cut = pl.read_csv(directory / "cut.csv", schema_overrides={"customer_id": pl.String})
    assert customers.columns[-2:] == ["action", "action_rule"]
    got = dict(zip(customers["customer_id"], zip(customers["action"], customers["action_rule"])))
    assert {c: a for c, a in got.items() if a[0] is not None} == \
        dict(zip(actions["customer_id"], zip(actions["action"], actions["rule"])))
    assert {c for c, a in got.items() if a[0] is None} == set(cut["customer_id"])  # cut: no action
    assert "re-evaluate" in customers["action_rule"].to_list()  # the fallback is an action like any other


def test_customers_file_under_hit_policy_all_lists_every_action(tmp_path):
    path = _copy(tmp_path, **{"hit_policy: first": "hit_policy: all", "when: abc = 'C'": "when: abc IN ('B', 'C')"})
    pb = load_playbook(path)
    pb.run()
    customers = pl.read_parquet(pb.output_dir / "customers.parquet")
    both = customers.filter(pl.col("action_rule") == "cultivate-b; automate-c")
    assert both.height > 0
    assert set(both["action"]) == {"growth-incentive; automated-newsletter"}


def test_a_customer_column_named_action_is_refused(tmp_path, run_cli):
    (tmp_path / "people.csv").write_text("customer_id,action\n12361,call\n")
    path = _copy(tmp_path, **{"  map:\n": "  customers: people.csv\n  map:\n"})
    code, out, err = run_cli("validate", path)
    assert code == 2
    assert err.strip() == (f"tierbook: error: {path}:8: data.customers: column 'action' is the name of the column the "
                           f"customers output gets for each customer's action; rename that column")


def test_the_manifest_hashes_the_playbook_as_it_was_loaded(tmp_path):
    path = _copy(tmp_path)
    loaded = path.read_bytes()
    pb = load_playbook(path)
    path.write_text(path.read_text() + "# edited after the run started\n")
    pb.run()
    m = json.loads((pb.output_dir / "summary.json").read_text())["manifest"]
    assert m["playbook"]["sha256"] == hashlib.sha256(loaded).hexdigest()


def test_a_snapshot_run_lists_every_file_of_its_set(tmp_path, run_cli):
    jsonschema = pytest.importorskip("jsonschema")
    path = _copy(tmp_path)
    code, _, err = run_cli("run", path, "--every", "quarter", "--periods", "3", "--output-dir", tmp_path / "snap")
    assert code == 0, err
    summary = json.loads((tmp_path / "snap" / "summary.json").read_text())
    m = summary["manifest"]
    on_disk = {p.name for p in (tmp_path / "snap").iterdir() if p.name not in (".tierbook", "summary.json")}
    assert set(m["outputs"]) == on_disk and "migration.csv" in on_disk  # the summary is written last, lists all
    assert m["as_of_from"] == "snapshots"
    jsonschema.Draft202012Validator(summary_schema()).validate(summary)
    (tmp_path / "snap" / ".tierbook" / "current" / "kpis.csv").write_text("edited\n")
    code, _, err = run_cli("run", path, "--every", "quarter", "--periods", "3", "--output-dir", tmp_path / "snap")
    assert code == 2 and "kpis.csv: " in err and "changed after tierbook wrote it" in err


def test_one_action_per_customer_joins_the_same_columns_as_grouping():
    """hit_policy first joins each customer's one action without grouping: the same table as the grouped way,
    nulls for customers without an action, and a second action for one customer refused (not silently kept)."""
    from engine.playbook.write import with_actions

    names = ["call", "mail"]
    customers = pl.DataFrame({"customer_id": [5, 3, 9, None, 7], "monetary": [1.0, 2.0, 3.0, 4.0, 5.0]})
    actions = pl.DataFrame({"customer_id": [9, 5, None],
                            "action": pl.Series(["mail", "call", "call"], dtype=pl.Enum(names)),
                            "rule": pl.Series(["r2", "r1", "r1"], dtype=pl.Enum(["r1", "r2"]))})
    grouped = with_actions(customers, actions)
    single = with_actions(customers, actions, one_per_customer=True)
    assert single.equals(grouped)
    assert single.schema["action"] == pl.String and single.schema["action_rule"] == pl.String
    assert single["action"].to_list() == ["call", None, "mail", "call", None]
    with pytest.raises(pl.exceptions.ComputeError):
        with_actions(customers, pl.concat([actions, actions.head(1)]), one_per_customer=True)


def test_the_summary_schema_says_how_orders_were_counted(tmp_path, run_cli):
    """input.orders_counted / orders_check / orders_recounted (the ordered-input pass) are in the schema:
    required, with their values and meanings, and a summary with an unknown way of counting is invalid."""
    jsonschema = pytest.importorskip("jsonschema")
    code, _, err = run_cli("run", EXAMPLES[0], "--output-dir", tmp_path)
    assert code == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    schema = summary_schema()
    keys = {"orders_counted", "orders_check", "orders_recounted"}
    assert keys <= set(schema["properties"]["input"]["required"]) and keys <= set(summary["input"])
    assert all(schema["properties"]["input"]["properties"][k]["description"] for k in keys)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(summary)
    for bad in ({"orders_counted": "guessing"}, {"orders_recounted": -1}):
        assert not validator.is_valid({**summary, "input": {**summary["input"], **bad}})
    missing = {k: v for k, v in summary["input"].items() if k != "orders_counted"}
    assert not validator.is_valid({**summary, "input": missing})
