"""``tierbook explain`` and ``validate`` as new users meet them: values compared, a verdict, every problem."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from engine.playbook import load_playbook
from playbook_files import copy_playbook as _copy

ROOT = Path(__file__).resolve().parents[2]
ABC_PLAYBOOK = ROOT / "playbooks" / "abc-resource-allocation.yaml"


def _one(result, expr) -> str:
    return str(result.customers.filter(expr)["customer_id"][0])


NARROW_C = {"when: abc = 'C'": "when: abc = 'C' AND frequency > 1"}  # one-order C customers: no rule


def test_explain_ends_with_the_fallback_as_verdict_when_no_rule_matched(run_cli, tmp_path):
    path = _copy(tmp_path, **NARROW_C)
    result = load_playbook(path).run(write=False)
    customer = str(result.actions.filter(pl.col("rule") == "re-evaluate")["customer_id"][0])
    code, out, err = run_cli("explain", path, customer)
    assert code == 0, err
    assert out.rstrip().splitlines()[-1] == ("verdict: no rule matched, so the fallback 're-evaluate' applies: "
                                             "quarterly-re-evaluation")


def test_explain_verdict_without_a_fallback_says_no_action(run_cli, tmp_path):
    text = ABC_PLAYBOOK.read_text()
    fallback = text[text.index("fallback:"):text.index("outputs:")]
    path = _copy(tmp_path, **{fallback: ""}, **NARROW_C)
    result = load_playbook(path).run(write=False)
    customer = _one(result, (pl.col("abc") == "C") & (pl.col("frequency") == 1))
    code, out, err = run_cli("explain", path, customer)
    assert code == 0, err
    assert out.rstrip().splitlines()[-1] == "verdict: no rule matched and there is no fallback: no action"


def test_explain_verdict_names_the_action_or_the_capacity_that_cut(run_cli):
    result = load_playbook(ABC_PLAYBOOK).run(write=False)
    taken = str(result.actions.filter(pl.col("rule") == "cultivate-b")["customer_id"][0])
    code, out, _ = run_cli("explain", ABC_PLAYBOOK, taken)
    assert out.rstrip().splitlines()[-1] == "verdict: growth-incentive (rule 'cultivate-b')"
    cut = result.cut["customer_id"]
    assert cut.len() > 0, "the example's capacity of 40 cuts some A customers"
    code, out, _ = run_cli("explain", ABC_PLAYBOOK, str(cut[0]))
    assert out.rstrip().splitlines()[-1] == "verdict: cut by the capacity of 'key-accounts': no action"


def test_explain_prints_the_values_each_clause_compared(run_cli, tmp_path):
    path = _copy(tmp_path, **{"when: abc = 'C'": "when: abc = 'C' AND monetary / frequency >= 0"})
    result = load_playbook(path).run(write=False)
    row = result.customers.filter((pl.col("abc") == "C") & (pl.col("frequency") > 0)).row(0, named=True)
    code, out, err = run_cli("explain", path, str(row["customer_id"]))
    assert code == 0, err
    average = row["monetary"] / row["frequency"]
    assert (f"[true ] monetary / frequency >= 0   (frequency = {row['frequency']}, monetary = {row['monetary']!r}; "
            f"compared {average!r} >= 0)") in out


def test_validate_reports_every_problem_of_every_rule(run_cli, tmp_path):
    path = _copy(tmp_path, **{
        "when: abc = 'A' AND adc IN ('active', 'new')": 'when: abc = "A" AND adc IN (active, \'new\') AND monetary => 5',
        "when: abc = 'C'": "when: abc = 'D' OR frequncy > 1"})
    code, out, err = run_cli("validate", path)
    assert code == 2
    lines = err.strip().splitlines()
    assert [re.sub(r"^(tierbook: error: )?.*?:\d+: ", "", line) for line in lines] == [
        "rule 'key-accounts': unknown column \"A\": 'A' is a label of abc, and labels are written in single quotes: abc = 'A' "
        "(at column 7)",
        "rule 'key-accounts': unknown column active: 'active' is a label of adc, and labels are written in single quotes: "
        "adc = 'active' (at column 23)",
        "rule 'key-accounts': '=>' is not an operator: did you mean '>='? (at column 51)",
        "rule 'automate-c': 'D' is not a label of abc (labels: A, B, C) (at column 7)",
        "rule 'automate-c': unknown column 'frequncy' (did you mean 'frequency'?) (at column 14)",
    ]
    assert lines[0].startswith(f"tierbook: error: {path}:29: ")
    assert all(line.startswith(f"{path}:") for line in lines[1:])
