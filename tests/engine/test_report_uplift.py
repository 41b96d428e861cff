"""The report's uplift section from a measurement (what ``tierbook measure --json`` prints)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.errors import DataError
from engine.report.uplift import read_measurement, uplift_figure

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "high-value-care.yaml"


def arm(n, buyers, rpc):
    return {"customers": n, "buyers": buyers, "conversion": buyers / n, "revenue": rpc * n,
            "revenue_per_customer": rpc, "revenue_sd": 3.0}


MEASUREMENT = {
    "playbook": "high-value-care", "as_of": "2011-12-10", "outcomes": "january.csv",
    "period": {"from": "2012-01-01", "to": "2012-01-31"}, "customers_buying_in_period": 90, "new_customers": 0,
    "outcome_rows": 400, "outcome_rows_unusable": 0, "confidence": 0.95,
    "methods": {"conversion": "Newcombe hybrid score (Wilson)"},
    "rules": [
        {"rule": "vip-privileges", "treatment": arm(45, 20, 31.5), "control": arm(5, 1, 12.0),
         "conversion_uplift": {"estimate": 0.244, "low": 0.01, "high": 0.41, "significant": True},
         "revenue_uplift": {"estimate": 19.5, "low": -2.5, "high": 41.0, "significant": False, "p_value": 0.08},
         "srm": {"expected_control_share": 0.1, "observed_control_share": 0.1, "chi2": 0.0, "p_value": 1.0,
                 "mismatch": False}},
        {"rule": "grow-potential", "treatment": arm(46, 10, 8.0), "control": {"customers": 0, "buyers": 0,
                                                                             "conversion": None, "revenue": 0.0,
                                                                             "revenue_per_customer": None,
                                                                             "revenue_sd": None},
         "conversion_uplift": None, "revenue_uplift": None, "srm": {"mismatch": True}, "note": "no control group"},
    ],
}


def test_the_report_shows_each_rules_uplift(tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(MEASUREMENT))
    out = tmp_path / "r.html"
    assert main(["report", str(PLAYBOOK), "-o", str(out), "--measurement", str(path)]) == 0
    text = out.read_text()
    assert '<section id="uplift">' in text
    assert '<tr data-rule="vip-privileges">' in text and "24.4% [1.0%, 41.0%] *" in text
    assert "19.50 [-2.50, 41.00]</td>" in text
    assert ">no control group<" in text and ">mismatch<" in text
    assert 'data-chart="uplift/uplift-conversion"' in text and 'data-chart="uplift/uplift-revenue"' in text


def test_the_uplift_chart_marks_what_the_interval_says():
    fig = uplift_figure(MEASUREMENT["rules"], "conversion_uplift", percent=True, confidence=0.95)
    trace = fig.data[0]
    assert trace["y"] == ["vip-privileges"]  # a rule without a control group has no dot
    assert trace["x"] == [0.244] and trace["error_x"]["array"] == [pytest.approx(0.166)]
    assert trace["error_x"]["arrayminus"] == [pytest.approx(0.234)]
    assert trace["marker"]["color"] == ["#009E73"]  # above zero: green
    rev = uplift_figure(MEASUREMENT["rules"], "revenue_uplift", percent=False, confidence=0.95).data[0]
    assert rev["marker"]["color"] == ["#7f8c97"]  # includes zero: grey


@pytest.mark.parametrize("content, message", [
    (None, "no such measurement file"),
    ("{not json", ":1: not JSON"),
    ("[1, 2]", "not a measurement"),
    (json.dumps({**MEASUREMENT, "playbook": "other"}), "a measurement of playbook 'other', not of 'high-value-care'"),
    (json.dumps({**MEASUREMENT, "rules": [{"rule": 3}]}), "rules[0] is not a rule's measurement"),
])
def test_a_bad_measurement_is_one_line(tmp_path, content, message):
    path = tmp_path / "m.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=None) as info:
        read_measurement(path, "high-value-care")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_real_measurement_end_to_end(tmp_path, capsys):
    """examples/holdout_uplift.py's run and outcomes, `tierbook measure --json`, then `tierbook report
    --measurement`: the page shows measure's numbers for each rule."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("holdout_uplift", ROOT / "examples" / "holdout_uplift.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.run(tmp_path, customers=4_000, seed=17)
    playbook = tmp_path / "playbook.yaml"
    capsys.readouterr()
    assert main(["measure", str(playbook), "--outcomes", str(tmp_path / "outcomes.csv"), "--from", "2026-01-01",
                 "--to", "2026-01-31", "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    (tmp_path / "m.json").write_text(json.dumps(measured))
    out = tmp_path / "report.html"
    assert main(["report", str(playbook), "-o", str(out), "--measurement", str(tmp_path / "m.json")]) == 0
    text = out.read_text()
    assert [r["rule"] for r in measured["rules"]] == ["win-back", "newsletter"]
    for r in measured["rules"]:
        row = text[text.index(f'<tr data-rule="{r["rule"]}">'):]
        row = row[:row.index("</tr>")]
        assert f'data-field="treatment" data-value="{r["treatment"]["customers"]}"' in row
        assert f'data-field="control" data-value="{r["control"]["customers"]}"' in row
        conv = r["conversion_uplift"]
        assert (f'{100 * conv["estimate"]:.1f}% [{100 * conv["low"]:.1f}%, {100 * conv["high"]:.1f}%]'
                + (" *" if conv["significant"] else "")) in row
    page_figures = json.loads(text[text.index('id="figures">') + len('id="figures">'):].split("</script>")[0])
    dots = [f for f in page_figures if f["data"] and f["data"][0].get("error_x")]
    assert len(dots) == 2 and dots[0]["data"][0]["y"] == ["win-back", "newsletter"]
    assert dots[0]["data"][0]["x"] == [r["conversion_uplift"]["estimate"] for r in measured["rules"]]
