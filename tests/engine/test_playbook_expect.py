"""``expect:`` cases in playbooks, checked by ``tierbook validate`` and ``tierbook test`` (issue 16 item 3)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.errors import PlaybookError
from engine.playbook import load_playbook
from engine.playbook.expect import run_cases
from playbook_files import copy_playbook as _copy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "playbooks").glob("*.yaml"))
ABC = ROOT / "playbooks" / "abc-resource-allocation.yaml"
WINBACK = ROOT / "playbooks" / "lifecycle-winback.yaml"


def _with_cases(tmp_path: Path, cases: str, source: Path = ABC) -> Path:
    text = source.read_text()
    start = text.index("\nexpect:\n")
    end = text.index("\noutputs:")
    return _copy(tmp_path, source, **{text[start:end]: "\nexpect:\n" + cases})


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_bundled_playbooks_state_their_policy_and_hold_it(path, run_cli):
    pb = load_playbook(path)
    assert len(pb.expectations) >= 5
    code, out, err = run_cli("test", path)
    assert code == 0, out + err
    assert out.rstrip().splitlines()[-1] == f"{len(pb.expectations)} of {len(pb.expectations)} expect: cases hold"
    code, out, err = run_cli("validate", path)
    assert code == 0 and f"{len(pb.expectations)} expect: cases hold" in out


def test_a_policy_change_that_breaks_a_case_fails_test_and_validate(tmp_path, run_cli):
    # the key-account rule narrowed to active customers: new A customers no longer are key accounts
    path = _copy(tmp_path, **{"when: abc = 'A' AND adc IN ('active', 'new')": "when: abc = 'A' AND adc = 'active'"})
    code, out, err = run_cli("test", path)
    assert code == 1
    lines = out.splitlines()
    fail = [line for line in lines if line.startswith("FAIL")]
    line_no = path.read_text().splitlines().index("  - name: a new A customer is a key account too") + 1
    assert fail == [f"FAIL  a new A customer is a key account too ({path}:{line_no}): must get its action from rule "
                    f"'key-accounts', got 'quarterly-re-evaluation' (rule 're-evaluate', the fallback)"]
    block = out[out.index("FAIL"):]
    assert "the case gives abc = 'A', adc = 'new' (as of " in block
    assert "[FALSE] adc = 'active'   (adc = 'new')" in block  # why: the clause that failed, with the values
    assert "verdict: no rule matched, so the fallback 're-evaluate' applies: quarterly-re-evaluation" in block
    assert lines[-1] == "5 of 6 expect: cases hold, 1 fail"
    code, out, err = run_cli("validate", path)
    assert code == 1
    assert err.splitlines() == [
        f"{path}:{line_no}: expect 'a new A customer is a key account too': must get its action from rule "
        f"'key-accounts', got 'quarterly-re-evaluation' (rule 're-evaluate', the fallback)",
        f"{path}: 1 of 6 expect: cases fail (tierbook test {path} explains each)"]


def test_a_case_that_gets_the_wrong_action_says_what_it_got_and_why(tmp_path, run_cli):
    path = _with_cases(tmp_path, "  - customer: {adc: churned}\n    action: reactivation-offer\n"
                                 "  - customer: {adc: active, rfm_segment: Lost}\n    action: personalised-offer\n",
                       source=WINBACK)
    code, out, _ = run_cli("test", path)
    assert code == 1
    assert "FAIL  case 1" in out and "got 'feedback-survey-with-winback-offer' (rule 'churned-survey')" in out
    assert "FAIL  case 2" in out and "must get 'personalised-offer', got no action (no rule matched and there is no " \
                                     "fallback)" in out
    assert "verdict: no rule matched and there is no fallback: no action" in out


def test_a_column_a_case_does_not_name_is_missing(tmp_path):
    # no monetary: the valuable-churned rule's monetary >= 1000 is unknown, so it does not hold
    path = _with_cases(tmp_path, "  - customer: {adc: churned}\n    action: feedback-survey-with-winback-offer\n",
                       source=WINBACK)
    [outcome] = run_cases(load_playbook(path))
    assert outcome.ok and outcome.row["monetary"].to_list() == [None]


def test_capacity_does_not_apply_to_cases(tmp_path):
    # key-accounts takes 40 customers at most; a case is one customer, and never cut
    [outcome] = run_cases(load_playbook(_with_cases(tmp_path, "  - customer: {abc: 'A', adc: active, monetary: 0}\n"
                                                              "    action: key-account-review\n")))
    assert outcome.ok


def test_a_playbook_without_cases(tmp_path, run_cli):
    text = ABC.read_text()
    path = _copy(tmp_path, **{text[text.index("\n# The agreed policy"):text.index("\noutputs:")]: "\n"})
    code, out, _ = run_cli("test", path)
    assert (code, out.strip()) == (0, f"{path}: no expect: cases to check")


@pytest.mark.parametrize("cases, message", [
    ("  - customer: {abc: 'A', adc: actve}\n    action: key-account-review\n",
     "expect 'case 1': 'actve' is not a label of adc (did you mean 'active'?) (labels: active, new, dormant, "
     "churned, no-purchase, prospect)"),
    ("  - customer: {abc: 'A', monetray: 5}\n    action: key-account-review\n",
     "expect 'case 1': unknown column 'monetray' (did you mean 'monetary'?) (a case names columns of the customer "
     "table: features, data.customers attributes, classifiers' labels)"),
    ("  - customer: {abc: 'A', frequency: 2.5}\n    action: key-account-review\n",
     "expect 'case 1': frequency is a whole number, got 2.5"),
    ("  - customer: {abc: 'A', last_order: yesterday}\n    action: key-account-review\n",
     "expect 'case 1': last_order is a date YYYY-MM-DD, got 'yesterday'"),
    ("  - customer: {customer_id: '12361'}\n    action: none\n",
     "expect 'case 1': customer_id is not given in a case (each case is a customer of its own)"),
    ("  - customer: {abc: 'A'}\n    action: key-account-reveiw\n",
     "expect 'case 1': no rule gives the action 'key-account-reveiw' (did you mean 'key-account-review'?)"),
    ("  - customer: {abc: 'A'}\n    rule: key-acounts\n",
     "expect 'case 1': unknown rule 'key-acounts' (did you mean 'key-accounts'?)"),
    ("  - customer: {abc: 'A'}\n    action: [key-account-review, retention-visit]\n",
     "expect 'case 1': 2 actions, but under hit_policy: first a customer gets at most one"),
    ("  - customer: {abc: 'A'}\n", "expect 'case 1': say the action it must get (action: NAME, or action: none) or "
                                   "the rule (rule: NAME)"),
    ("  - customer: {abc: 'A'}\n    acton: none\n", "expect 'case 1': unknown key 'acton' (did you mean 'action'?)"),
    ("  - name: x\n    customer: abc\n    action: none\n", "expect 'x': customer must be a mapping of column: value"),
    ("  - customer: {abc: 'A'}\n    action: none\n    as_of: 2011-13-01\n",
     "YAML syntax: '2011-13-01' is not a date (month must be in 1..12)"),
    ("  - customer: {abc: 'A'}\n    action: none\n    as_of: '2011-13-01'\n",
     "expect 'case 1': as_of: '2011-13-01' is not a date in the form YYYY-MM-DD"),
])
def test_a_bad_case_is_one_line_naming_its_line(tmp_path, run_cli, cases, message):
    path = _with_cases(tmp_path, cases)
    for command in ("validate", "test", "run"):
        code, out, err = run_cli(command, path)
        assert code == 2, (command, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        line = re.match(rf"tierbook: error: {re.escape(str(path))}:(\d+): (.*)$", lines[0])
        assert line and message in line.group(2), lines[0]
        text = path.read_text().splitlines()
        assert text[int(line.group(1)) - 1].startswith(("  - ", "    ")), "the line is the case's own"
    assert not (tmp_path / "out").exists()


def test_cases_need_the_customer_tables_columns():
    pb = load_playbook(ABC, check_data=False)
    with pytest.raises(PlaybookError, match="check_data=True"):
        run_cases(pb)
