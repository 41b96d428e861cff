"""``tierbook report`` in a real browser: the page opens offline, every chart is drawn, the numbers are the run's.

Runs ``tierbook run`` and ``tierbook report`` on the same playbook (the bundled sample, four quarterly snapshots,
so the page has every kind of chart: bars, lines, heat maps, Sankey diagrams), opens the report in
headless Chromium (Debian's package, driven by Playwright) from a ``file://`` URL with every request routed
through the test: the page itself is the only request allowed, anything else is recorded and refused, and the
test asserts there was nothing else (the context is offline too). Then every chart of the page must have been
drawn by plotly.js (an SVG with marks in it: bars, lines, heat-map images, Sankey nodes), and the class sizes,
revenue, rule counts, reconciliation, flows between the last two snapshots and KPIs the page shows must equal the
run's summary.json.

A screenshot of the whole page is saved as test-artifacts/report.png.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.browser.test_workbench_browser import CHROMIUM_FLAGS, chromium

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
PLAYBOOK = ROOT / "playbooks" / "high-value-care.yaml"
TIERBOOK = [sys.executable, "-m", "engine"]
SNAPSHOTS = ["--every", "quarter", "--periods", "4"]

# Marks a drawn plotly.js chart holds: bars and markers, lines, heat-map images, Sankey nodes and links.
MARKS = "g.point path, path.point, path.js-line, .heatmaplayer image, .sankey-node rect, .sankey-link"


def test_report_opens_offline_draws_every_chart_and_shows_the_runs_numbers(tmp_path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "out"
    report = tmp_path / "report.html"
    for argv in (["run", str(PLAYBOOK), *SNAPSHOTS, "--output-dir", str(out), "--allow-outside"],
                 ["report", str(PLAYBOOK), *SNAPSHOTS, "-o", str(report)]):
        done = subprocess.run([*TIERBOOK, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    ARTIFACTS.mkdir(exist_ok=True)
    url = report.resolve().as_uri()

    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)

            def route(r):
                requests.append(r.request.url)
                if r.request.url == url:
                    r.continue_()
                else:
                    r.abort()

            context.route("**/*", route)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # plotly.js warns on the console about a figure it draws wrongly (an invalid colour, an attribute)
            page.on("console", lambda m: errors.append(f"{m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.goto(url)
            page.wait_for_selector("body[data-rendered]", timeout=60_000)

            assert requests == [url], f"the report made network requests: {requests[1:]}"
            assert errors == []
            charts = page.eval_on_selector_all("figure.chart", f"""els => els.map(f => {{
                const plot = f.querySelector('.plot');
                const svg = plot.querySelector('svg.main-svg');
                const box = svg ? svg.getBoundingClientRect() : {{width: 0, height: 0}};
                return {{name: f.dataset.chart, rendered: plot.dataset.rendered,
                         width: box.width, height: box.height, marks: plot.querySelectorAll({MARKS!r}).length}};
            }})""")
            names = [c["name"] for c in charts]
            # one class-size chart per class output, the classifiers' own charts, the rules
            columns = list(dict.fromkeys(r["column"] for r in summary["classes"]))
            assert [n for n in names if n.startswith("classes/")] == [f"classes/classes-{c}" for c in columns]
            assert {"abc/pareto", "rfm/rf-grid", "rules/rules"} <= set(names), names
            # over time: a heat map and a Sankey diagram per class output, the KPI trends, the cohort heat maps
            assert [n for n in names if n.startswith("migration/")] == [f"migration/migration-{c}" for c in columns]
            assert [n for n in names if n.startswith("sankey/")] == [f"sankey/sankey-{c}" for c in columns]
            assert {"kpis/kpi-customers", "kpis/kpi-rates", "cohorts/cohorts-active_share",
                    "cohorts/cohorts-revenue"} <= set(names), names
            assert page.get_attribute("body", "data-rendered") == str(len(charts))
            for c in charts:
                assert c["rendered"] == "yes", c
                assert c["width"] > 200 and c["height"] > 150, c
                assert c["marks"] > 0, c

            # the numbers shown are the run's (summary.json written by `tierbook run`)
            for row in summary["classes"]:
                sel = f"tr[data-column='{row['column']}'][data-label=\"{row['label']}\"]"
                cells = {k: page.locator(f"{sel} td[data-field='{k}']") for k in ("customers", "revenue",
                                                                                   "customer_share",
                                                                                   "revenue_share")}
                assert cells["customers"].inner_text() == f"{row['customers']:,}"
                assert cells["revenue"].inner_text() == f"{row['revenue']:,.2f}"
                assert cells["customer_share"].inner_text() == f"{100 * row['customer_share']:.1f}%"
                assert cells["revenue_share"].inner_text() == f"{100 * row['revenue_share']:.1f}%"
            for i, rule in enumerate(summary["rules"]):
                for key in ("matched", "hits", "cut_by_capacity", "actions"):
                    cell = page.locator(f"tr[data-position='{i}'][data-rule='{rule['rule']}'] td[data-field='{key}']")
                    assert cell.inner_text() == f"{rule[key]:,}", (rule, key)
            rec = summary["reconciliation"]
            for key in ("customers_in", "customers_out"):
                assert page.locator(f".reconciliation td[data-field='{key}']").inner_text() == f"{rec[key]:,}"
            for key in ("revenue_in", "revenue_out"):
                assert page.locator(f".reconciliation td[data-field='{key}']").inner_text() == f"{rec[key]:,.2f}"
            for key in ("unmatched", "cut_by_capacity", "actions"):
                assert page.locator(f".totals [data-field='{key}']").inner_text() == f"{summary[key]:,}"
            last = max(f["to_as_of"] for f in summary["migration"]["flows"])
            flows = [f for f in summary["migration"]["flows"] if f["to_as_of"] == last]
            assert len(flows) == sum(len([r for r in summary["classes"] if r["column"] == c and r["label"] != "(none)"])
                                     for c in columns)
            for f in flows:
                row = f".flows tr[data-column='{f['column']}'][data-label=\"{f['label']}\"]"
                for key in ("customers_from", "stayed", "moved_up", "moved_down", "left", "entered", "customers_to",
                            "net_flow"):
                    assert page.locator(f"{row} td[data-field='{key}']").inner_text() == f"{f[key]:,}", (f, key)
                assert (page.locator(f"{row} td[data-field='revenue_moved_down']").inner_text()
                        == f"{f['revenue_moved_down']:,.2f}")
            assert len(summary["kpis"]["periods"]) == 3
            for k in summary["kpis"]["periods"]:
                row = f".kpis tr[data-period='{k['period']}']"
                for key in ("active", "new", "reactivated", "retained", "churned"):
                    assert page.locator(f"{row} td[data-field='{key}']").inner_text() == f"{k[key]:,}"
                for key in ("retention_rate", "churn_rate", "revenue_retention"):
                    assert page.locator(f"{row} td[data-field='{key}']").inner_text() == f"{100 * k[key]:.1f}%"
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()


def test_the_uplift_section_draws_offline(tmp_path):
    """A real holdout measurement (examples/holdout_uplift.py, `tierbook measure --json`) in the report."""
    import importlib.util

    from playwright.sync_api import sync_playwright

    spec = importlib.util.spec_from_file_location("holdout_uplift", ROOT / "examples" / "holdout_uplift.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.run(tmp_path, customers=4_000, seed=17)
    playbook = tmp_path / "playbook.yaml"
    done = subprocess.run([*TIERBOOK, "measure", str(playbook), "--outcomes", str(tmp_path / "outcomes.csv"),
                           "--from", "2026-01-01", "--to", "2026-01-31", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (tmp_path / "m.json").write_text(done.stdout)
    report = tmp_path / "report.html"
    done = subprocess.run([*TIERBOOK, "report", str(playbook), "-o", str(report), "--measurement",
                           str(tmp_path / "m.json")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    url = report.resolve().as_uri()
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
            context.route("**/*", lambda r: (requests.append(r.request.url),
                                             r.continue_() if r.request.url == url else r.abort()))
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(f"{m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.goto(url)
            page.wait_for_selector("body[data-rendered]", timeout=60_000)
            assert requests == [url] and errors == []
            marks = page.eval_on_selector_all(
                "figure.chart[data-chart^='uplift/'] .plot",
                "els => els.map(p => [p.dataset.rendered, p.querySelectorAll('path.point').length,"
                "                     p.querySelectorAll('g.errorbar').length])")
            # one dot and one error bar per rule (win-back, newsletter) in each chart
            assert marks == [["yes", 2, 2], ["yes", 2, 2]], marks
            page.locator("#uplift").screenshot(path=str(ARTIFACTS / "report-uplift.png"))
        finally:
            browser.close()
