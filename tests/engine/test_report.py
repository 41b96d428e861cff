"""``tierbook report`` and :mod:`engine.report`: one self-contained HTML file, the run's numbers, plugin charts."""

from __future__ import annotations

import html.parser
import json
import os
from pathlib import Path

import polars as pl
import pytest

from engine.cli import main
from engine.errors import DataError, PluginError
from engine.playbook import load_playbook
from engine.report import Figure, build_report, check_report_target, classifier_figures, write_report
from engine.report import _script_json

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "high-value-care.yaml"


class Page(html.parser.HTMLParser):
    """Tags with their attributes, the embedded JSON scripts, the table cells with data-field."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: dict[str, str] = {}
        self._script: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "script":
            self._script = a.get("id", "")
            self.scripts.setdefault(self._script, "")

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self.scripts[self._script] += data


@pytest.fixture(scope="module")
def sample_run():
    pb = load_playbook(PLAYBOOK)
    result = pb.run(write=False)
    return pb, result


@pytest.fixture(scope="module")
def sample_page(sample_run):
    pb, result = sample_run
    text = build_report(pb, result)
    page = Page()
    page.feed(text)
    return text, page


def test_the_page_references_nothing_outside_itself(sample_page):
    text, page = sample_page
    for tag, attrs in page.tags:
        assert tag not in ("link", "iframe", "object", "embed", "base"), tag
        for name in ("src", "href", "action", "data", "poster", "srcset"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith("#") or value.startswith("data:"), (tag, name, value)
    scripts = [a for t, a in page.tags if t == "script"]
    assert all("src" not in a for a in scripts)
    # plotly.js is in the page, once
    assert text.count("plotly.js v") == 1
    csp = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0].startswith("default-src 'none'")


def test_the_embedded_summary_is_the_runs(sample_run, sample_page):
    pb, result = sample_run
    _, page = sample_page
    assert json.loads(page.scripts["summary"]) == json.loads(json.dumps(result.summary, default=str))


def test_every_class_output_has_a_table_and_a_chart_and_the_plugins_add_theirs(sample_run, sample_page):
    pb, result = sample_run
    text, page = sample_page
    charts = [a["data-chart"] for t, a in page.tags if t == "figure"]
    columns = list(dict.fromkeys(r["column"] for r in result.summary["classes"]))
    assert [c for c in charts if c.startswith("classes/")] == [f"classes/classes-{c}" for c in columns]
    assert "abc/pareto" in charts and "rfm/rf-grid" in charts and "rules/rules" in charts
    # adc brings no report charts: only its class-size chart
    assert not [c for c in charts if c.startswith("adc/")]
    figures = json.loads(page.scripts["figures"])
    assert len(figures) == len(charts)
    ids = [a["id"] for t, a in page.tags if t == "div" and a.get("class") == "plot"]
    assert [f["id"] for f in figures] == ids
    assert all(f["data"] for f in figures)
    # the table rows are the summary's, each number with its exact value
    rows = [a for t, a in page.tags if t == "tr" and "data-label" in a]
    assert [(a["data-column"], a["data-label"]) for a in rows] == [(r["column"], r["label"])
                                                                    for r in result.summary["classes"]]


def test_numbers_shown_equal_the_summary(sample_run, sample_page):
    pb, result = sample_run
    text, _ = sample_page
    s = result.summary
    for r in s["classes"]:
        assert f'data-value="{r["customers"]}">{r["customers"]:,}</td>' in text
        assert f'>{r["revenue"]:,.2f}</td>' in text
    for i, r in enumerate(s["rules"]):
        assert f'data-rule="{r["rule"]}" data-position="{i}"' in text
        assert f'data-field="cut_by_capacity" data-value="{r["cut_by_capacity"]}">' in text
    rec = s["reconciliation"]
    assert f'data-field="customers_in" data-value="{rec["customers_in"]}">{rec["customers_in"]:,}<' in text
    assert 'data-field="ok" data-value="true"' in text


def test_script_json_cannot_close_the_script_element():
    text = _script_json({"label": "</script><script>alert(1)</script>", "x": "<!-- \u2028 &"})
    assert "</" not in text and "<!--" not in text and "\u2028" not in text and "&" not in text
    assert json.loads(text) == {"label": "</script><script>alert(1)</script>", "x": "<!-- \u2028 &"}


def test_labels_and_rule_names_are_escaped_in_the_page(tmp_path):
    (tmp_path / "tx.csv").write_text("customer_id,order_id,order_date,amount\nc1,o1,2024-01-02,10\n"
                                     "c2,o2,2024-01-03,5\n")
    (tmp_path / "pb.yaml").write_text(
        "name: case\ndescription: '<b>bold</b> & <script>x</script>'\ndata:\n  transactions: tx.csv\n"
        "classifiers:\n  abc: {}\nrules:\n  - name: a<i>b\n    when: abc = 'A'\n    action: call & <mail>\n"
        "    channel: phone\n    owner: x\n    due_days: 1\n    priority: 1\n")
    pb = load_playbook(tmp_path / "pb.yaml")
    text = build_report(pb, pb.run(write=False))
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;" in text
    assert "a<i>b" not in text and "a&lt;i&gt;b" in text
    assert "call &amp; &lt;mail&gt;" in text


def _registry_playbook(tmp_path, plugin_source: str):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "third.py").write_text(plugin_source)
    (tmp_path / "tx.csv").write_text("customer_id,order_id,order_date,amount\nc1,o1,2024-01-02,10\n"
                                     "c2,o2,2024-01-03,5\nc3,o3,2024-01-04,1\n")
    (tmp_path / "pb.yaml").write_text("name: case\ndata:\n  transactions: tx.csv\nclassifiers:\n  size: {}\n")
    return load_playbook(tmp_path / "pb.yaml", plugins_dir=tmp_path / "plug")


THIRD = '''
import polars as pl
from engine import Classifier, Output, ParamSpec, hookimpl
{extra}

def _expressions(p, ctx):
    return {{"size": pl.when(pl.col("monetary") >= p["min"]).then(pl.lit("big")).otherwise(pl.lit("small"))}}

@hookimpl
def register_classifiers(register):
    register(Classifier(name="size", description="big spenders", outputs=(Output("size", "", labels=("big", "small")),),
             params=(ParamSpec("min", "float", 4.0, "Least monetary of a big spender.", min=0, max=1000),),
             requires=("monetary",), expressions=_expressions{field}))
'''


def test_a_third_party_classifier_without_report_charts_gets_its_class_size_chart(tmp_path):
    pb = _registry_playbook(tmp_path, THIRD.format(extra="", field=""))
    result = pb.run(write=False)
    page = Page()
    page.feed(build_report(pb, result))
    assert [a["data-chart"] for t, a in page.tags if t == "figure"] == ["classes/classes-size"]


def test_a_third_party_classifier_brings_its_own_chart_through_the_report_field(tmp_path):
    extra = '''
from engine.report import Figure

def _report(classifier, table, params):
    n = int((table.customers["size"] == "big").sum())
    return [Figure("bigs", "Big spenders", [{"type": "bar", "x": ["big"], "y": [n]}], caption=f"min {params['min']}")]
'''
    pb = _registry_playbook(tmp_path, THIRD.format(extra=extra, field=", report=_report"))
    result = pb.run(write=False)
    [(name, figures)] = classifier_figures(pb, result)
    assert name == "size" and figures[0].data[0]["y"] == [2] and figures[0].caption == "min 4.0"
    page = Page()
    page.feed(build_report(pb, result))
    assert [a["data-chart"] for t, a in page.tags if t == "figure"] == ["classes/classes-size", "size/bigs"]


@pytest.mark.parametrize("body, message", [
    ("raise KeyError('colour')", "classifier 'size' of third (file "),
    ("return [{'data': []}]", "report() must return a list of engine.report.Figure, got a dict"),
    ("return None", "report() must return a list of engine.report.Figure, got a NoneType"),
    ("import sys; sys.exit(3)", "report() failed: SystemExit: the plugin called sys.exit(3)"),
])
def test_report_charts_that_fail_are_named(tmp_path, body, message):
    extra = f"\ndef _report(classifier, table, params):\n    {body}\n"
    pb = _registry_playbook(tmp_path, THIRD.format(extra=extra, field=", report=_report"))
    result = pb.run(write=False)
    with pytest.raises(PluginError, match=None) as info:
        build_report(pb, result)
    assert message in str(info.value)


def test_figure_refuses_what_is_not_a_plotly_figure():
    with pytest.raises(ValueError, match="data must be a list"):
        Figure("x", "X", {"type": "bar"})
    with pytest.raises(ValueError, match="needs a name"):
        Figure("", "X", [])


def test_the_cli_writes_the_report_atomically_and_keeps_the_old_one_on_failure(tmp_path, capsys, monkeypatch):
    target = tmp_path / "report.html"
    assert main(["report", str(PLAYBOOK), "-o", str(target)]) == 0
    first = target.read_text()
    assert first.startswith("<!DOCTYPE html>") and first.rstrip().endswith("</html>")
    assert f"wrote report: {target}" in capsys.readouterr().out
    import engine.report as report

    def broken(*args, **kwargs):
        raise DataError("broken on purpose")

    monkeypatch.setattr(report, "build_report", broken)
    assert main(["report", str(PLAYBOOK), "-o", str(target)]) == 2
    assert "broken on purpose" in capsys.readouterr().err
    assert target.read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary file left


def test_a_failed_write_leaves_no_file(tmp_path, sample_run, monkeypatch):
    pb, result = sample_run
    import engine.io as io

    def full(text, path):
        with io.atomic_path(path) as tmp:
            tmp.write_text(text[:100])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "atomic_write_text", full)
    with pytest.raises(DataError, match="No space left on device; nothing was written"):
        write_report(pb, result, tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []


def test_the_target_is_checked_before_anything_is_read(tmp_path):
    with pytest.raises(DataError, match="a report is an HTML file"):
        check_report_target(tmp_path / "r.csv")
    (tmp_path / "ro").mkdir()
    if os.geteuid() != 0:  # root writes anywhere; /proc refuses everyone (the bad-input corpus has that case)
        (tmp_path / "ro").chmod(0o500)
        with pytest.raises(DataError, match="cannot write into"):
            check_report_target(tmp_path / "ro" / "r.html")
    assert check_report_target(tmp_path / "r.HTML") == tmp_path / "r.HTML"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]  # the probe is gone


def test_without_plotly_the_command_says_what_to_install(sample_run, monkeypatch):
    import sys

    pb, result = sample_run
    monkeypatch.setitem(sys.modules, "plotly.offline", None)
    with pytest.raises(DataError, match=r"pip install 'tierbook\[report\]'"):
        build_report(pb, result)


def test_a_class_column_without_revenue_shares_draws(tmp_path):
    """Shares are None when the total revenue is 0 (every customer a prospect or returns only): the page draws."""
    (tmp_path / "tx.csv").write_text("customer_id,order_id,order_date,amount\nc1,o1,2024-01-02,5\n"
                                     "c1,o2,2024-01-03,-5\n")
    (tmp_path / "pb.yaml").write_text("name: case\ndata:\n  transactions: tx.csv\nclassifiers:\n  abc: {}\n")
    pb = load_playbook(tmp_path / "pb.yaml")
    result = pb.run(write=False)
    assert any(r["revenue_share"] is None for r in result.summary["classes"])
    page = Page()
    page.feed(build_report(pb, result))
    assert json.loads(page.scripts["figures"])
    assert pl.DataFrame(result.summary["classes"]).height == 3


# ------------------------------------------------------------------------------------------- over time
@pytest.fixture(scope="module")
def snapshot_run():
    pb = load_playbook(PLAYBOOK, snapshots={"every": "quarter", "periods": 4})
    result = pb.evaluate_snapshots(pb.compute_snapshots())
    return pb, result


def test_a_snapshot_run_has_migration_kpi_and_cohort_sections(snapshot_run):
    pb, result = snapshot_run
    snaps = result.snapshots
    page = Page()
    text = build_report(pb, result)
    page.feed(text)
    charts = [a["data-chart"] for t, a in page.tags if t == "figure"]
    columns = list(dict.fromkeys(r["column"] for r in result.summary["classes"]))
    assert [c for c in charts if c.startswith("migration/")] == [f"migration/migration-{c}" for c in columns]
    assert [c for c in charts if c.startswith("sankey/")] == [f"sankey/sankey-{c}" for c in columns]
    assert {"kpis/kpi-customers", "kpis/kpi-rates", "cohorts/cohorts-active_share", "cohorts/cohorts-revenue"} <= set(
        charts)
    sections = [a["id"] for t, a in page.tags if t == "section"]
    assert sections == ["overview", "classes", "rules", "snapshots", "migration", "kpis", "cohorts"]
    # the flows of the last pair, the KPIs: the summary's numbers
    last = max(f["to_as_of"] for f in result.summary["migration"]["flows"])
    for f in result.summary["migration"]["flows"]:
        if f["to_as_of"] == last:
            assert (f'data-field="moved_down" data-value="{f["moved_down"]}">{f["moved_down"]:,}</td>') in text
    for k in result.summary["kpis"]["periods"]:
        assert f'data-field="retained" data-value="{k["retained"]}">{k["retained"]:,}</td>' in text
    assert len(snaps.as_of) == 4
    for d in snaps.as_of:
        assert f'data-as-of="{d}"' in text


def test_a_single_snapshot_has_no_time_sections(sample_page):
    _, page = sample_page
    assert [a["id"] for t, a in page.tags if t == "section"] == ["overview", "classes", "rules"]


def test_migration_heat_map_and_sankey_carry_every_customer(snapshot_run):
    from engine.report.timeline import migration_figure, sankey_figure

    pb, result = snapshot_run
    snaps = result.snapshots
    m = snaps.migration
    for column in ("abc", "value_tier"):
        fig = migration_figure(m, "x", column)
        pairs = list(zip(snaps.as_of, snaps.as_of[1:]))
        assert len(fig.data) == len(pairs) and [t["visible"] for t in fig.data] == [False] * (len(pairs) - 1) + [True]
        for trace, (start, end) in zip(fig.data, pairs):
            both = {*snaps.customers[pairs.index((start, end))]["customer_id"].to_list(),
                    *snaps.customers[pairs.index((start, end)) + 1]["customer_id"].to_list()}
            assert sum(map(sum, trace["z"])) == len(both)  # every customer of either snapshot, once
            assert trace["y"][0] == "entered" and trace["x"][-1] == "left"
        sankey = sankey_figure(m, "x", column).data[0]
        assert sum(sankey["link"]["value"]) == int(m.filter(pl.col("column") == column)["customers"].sum())
        assert all(v > 0 for v in sankey["link"]["value"])
        assert len(sankey["node"]["label"]) == len(set(sankey["node"]["label"]))


def test_the_cohort_heat_map_is_the_cohort_table(snapshot_run):
    from engine.report.timeline import cohort_figure

    _, result = snapshot_run
    cohorts = result.snapshots.cohorts
    fig = cohort_figure(cohorts)
    z, xs, ys = fig.data[0]["z"], fig.data[0]["x"], fig.data[0]["y"]
    for c, p, share in cohorts.select("cohort", "as_of", "active_share").iter_rows():
        assert z[ys.index(c.isoformat())][xs.index(p.isoformat())] == share
    assert sum(v is not None for row in z for v in row) == cohorts.height
