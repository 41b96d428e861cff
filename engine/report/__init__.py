"""``tierbook report``: one self-contained HTML file of a playbook run, readable offline.

The page holds the run's figures as tables (class sizes and revenue shares of every class
output, rule hits with capacity cuts and the fallback, the reconciliation of customers and
revenue in and out, what the input scan counted) and as charts drawn by plotly.js, which is
inlined into the file with the styles and the figures' data: opening it makes no network
request (``tests/browser/test_report_browser.py`` blocks and records every request and finds
none). The run's ``summary`` is embedded too (``<script type="application/json" id="summary">``).

Charts that only one classifier can draw (a Pareto curve, a score grid) come from the
classifier: the optional ``report`` field of :class:`~engine.classifier.Classifier`, a callable
``report(classifier, table, params) -> Sequence[Figure]`` (``table`` an
:class:`engine.fastpath.Table` of the classified customers, ``params`` the resolved parameters).
A classifier without it gets the class-size chart every class output gets. See
``docs/decisions/0014-report-charts-plotly.md``.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError, PluginError
from .figures import LEGEND_ON_TOP, PALETTE, SEQUENTIAL, Figure, class_size_figure, rules_figure

if TYPE_CHECKING:
    from ..playbook import Playbook, Result

__all__ = ["Figure", "to_plotly", "BASE_LAYOUT", "build_report", "write_report", "check_report_target", "classifier_figures", "REPORT_SUFFIXES",
           "PALETTE",
           "SEQUENTIAL", "LEGEND_ON_TOP"]

REPORT_SUFFIXES = (".html", ".htm")


# ----------------------------------------------------------------------------------------- target
def check_report_target(path: str | Path) -> Path:
    """Fail (``DataError``, one line) unless the report can be written at ``path``; before any data is read.

    The directory is probed by creating (and removing) a temporary file in it, so a read-only file
    system or a directory the user may not write is found whoever runs the command.
    """
    path = Path(path)
    text = str(path)
    if len(text) > 200:
        text = text[:80] + "..."
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise DataError(f"{text}: a report is an HTML file: give a name ending in .html (got "
                        f"{path.suffix or 'no suffix'!r})")
    try:
        if path.is_dir():
            raise DataError(f"{text}: is a directory, expected an output file")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise DataError(f"{text}: the directory {parent} does not exist")
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:  # read-only file system, no permission, a name too long
        where = path.parent if str(path.parent) else Path(".")
        raise DataError(f"{text}: cannot write into {where}: {exc.strerror}") from None
    return path


def write_report(pb: Playbook, result: Result, path: str | Path, *,
                 measurement: Mapping[str, Any] | None = None) -> Path:
    """Build the report of ``result`` and write it to ``path`` atomically (temporary file, fsync, rename)."""
    from ..io import atomic_write_text

    path = check_report_target(path)
    page = build_report(pb, result, measurement=measurement)
    try:
        atomic_write_text(page, path)
    except OSError as exc:  # e.g. the disk filled up: the previous file (if any) is untouched
        raise DataError(f"{path}: cannot write the report: {exc.strerror or exc}; nothing was written") from None
    return path


# ------------------------------------------------------------------------------------- classifiers
def classifier_figures(pb: Playbook, result: Result) -> list[tuple[str, list[Figure]]]:
    """``(classifier, figures)`` for each selected classifier that brings report charts.

    A classifier's ``report`` that raises (``sys.exit`` included), overruns ``TIERBOOK_PLUGIN_TIMEOUT`` or
    returns anything but :class:`Figure` values stops the report with a :class:`PluginError` naming the
    classifier and its plugin.
    """
    from ..fastpath import Table
    from ..registry import describe_failure, plugin_time_limit, stops_tierbook

    out: list[tuple[str, list[Figure]]] = []
    table = None
    for sel in pb.selections:
        clf = sel.classifier
        draw = getattr(clf, "report", None)
        if draw is None:
            continue
        if table is None:
            table = Table.of(result.customers, result.as_of, pb.registry)
        info = pb.registry.owners.get(clf.name)
        owner = info.label() if info is not None else "its plugin"
        try:
            with plugin_time_limit(f"classifier {clf.name!r} of {owner}: report()"):
                figures = draw(clf, table, dict(sel.params))
                figures = list(figures) if isinstance(figures, (list, tuple)) else figures
        except PluginError:
            raise
        except BaseException as exc:  # a plugin's bug: named, one line
            if stops_tierbook(exc):
                raise
            raise PluginError(f"classifier {clf.name!r} of {owner}: report() failed: {describe_failure(exc)}",
                              classifier=clf.name) from None
        if not isinstance(figures, list) or not all(isinstance(f, Figure) for f in figures):
            got = type(figures).__name__ if not isinstance(figures, list) else next(
                type(f).__name__ for f in figures if not isinstance(f, Figure))
            raise PluginError(f"classifier {clf.name!r} of {owner}: report() must return a list of "
                              f"engine.report.Figure, got a {got}", classifier=clf.name)
        out.append((clf.name, figures))
    return out


# --------------------------------------------------------------------------------------------- page
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: int) -> str:
    return f"{value:,}"


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


class _Page:
    """Collects sections and figures; renders the one HTML document."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures: list[dict[str, Any]] = []
        self.toc: list[tuple[str, str]] = []

    def section(self, anchor: str, title: str, intro: str = "") -> None:
        self.toc.append((anchor, title))
        self.parts.append(f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>')
        if intro:
            self.parts.append(f"<p class=intro>{intro}</p>")

    def end(self) -> None:
        self.parts.append("</section>")

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig: Figure, group: str) -> None:
        index = len(self.figures)
        self.figures.append({"id": f"plot-{index}", "data": list(fig.data), "layout": dict(fig.layout)})
        caption = f"<figcaption>{_e(fig.caption)}</figcaption>" if fig.caption else ""
        self.parts.append(f'<figure class=chart data-chart="{_e(group)}/{_e(fig.name)}"><h3>{_e(fig.title)}</h3>'
                          f'<div class=plot id="plot-{index}"></div>{caption}</figure>')


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no "</script>", "<!--" or line separators from the data."""
    text = json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _clean(value: Any) -> Any:
    """NaN and infinities (not JSON) as null, recursively."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _overview(page: _Page, pb: Playbook, s: Mapping[str, Any]) -> None:
    inp = s["input"]
    rec = s["reconciliation"]
    page.section("overview", "Run", "What was read, and the reconciliation: every customer and every unit of revenue "
                                    "read from the transactions is in the classified customer table, each side "
                                    "counted on its own.")
    rows = [("playbook", pb.name), ("description", pb.description or ""), ("as of", s["as_of"]),
            ("hit policy", s["hit_policy"]), ("transactions", inp.get("source", "")),
            ("rows read", _num(inp["rows"])), ("rows used", _num(inp["rows_used"]))]
    rejected = inp.get("rejected") or {}
    for reason, n in rejected.items():
        if n:
            rows.append((f"rows not used ({reason.replace('_', ' ')})", _num(n)))
    page.add("<table class=facts>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
             + "</table>")
    for note in [*inp.get("notes", []), *inp.get("warnings", [])]:
        page.add(f"<p class=note>{_e(note)}</p>")
    ok = "ok" if rec["ok"] else "FAILED"
    page.add('<h3>Reconciliation</h3><table class="numbers reconciliation"><thead><tr><th></th><th>in</th>'
             '<th>out</th></tr></thead><tbody>'
             f'<tr><th>customers</th><td class=num data-field="customers_in" data-value="{rec["customers_in"]}">'
             f'{_num(rec["customers_in"])}</td><td class=num data-field="customers_out" '
             f'data-value="{rec["customers_out"]}">{_num(rec["customers_out"])}</td></tr>'
             f'<tr><th>net revenue</th><td class=num data-field="revenue_in" data-value="{rec["revenue_in"]!r}">'
             f'{_money(rec["revenue_in"])}</td><td class=num data-field="revenue_out" '
             f'data-value="{rec["revenue_out"]!r}">{_money(rec["revenue_out"])}</td></tr></tbody></table>'
             f'<p class="verdict {ok.lower()}" data-field="ok" data-value="{str(rec["ok"]).lower()}">'
             f'Reconciliation {ok}: counted from {_e(rec["counted_from"])}; '
             f'{_num(inp.get("prospects", 0))} prospects (customers from the customer table without a '
             f'transaction) are included.</p>')
    page.end()


def _classes(page: _Page, s: Mapping[str, Any], extra: list[tuple[str, list[Figure]]]) -> None:
    page.section("classes", "Classes", "Class sizes and revenue shares of every class output, labels in the "
                                       "classifier's order (best first). Shares are of all customers and of the net "
                                       "revenue; customers without a label are counted under (none).")
    by_column: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in s["classes"]:
        by_column.setdefault((row["classifier"], row["column"]), []).append(row)
    extra_by = dict(extra)
    done: set[str] = set()
    for (classifier, column), rows in by_column.items():
        page.add(f'<div class=classifier data-classifier="{_e(classifier)}">')
        body = "".join(
            f'<tr data-column="{_e(column)}" data-label="{_e(r["label"])}"><th>{_e(r["label"])}</th>'
            f'<td class=num data-field="customers" data-value="{r["customers"]}">{_num(r["customers"])}</td>'
            f'<td class=num data-field="customer_share" data-value="{r["customer_share"]!r}">'
            f'{_pct(r["customer_share"])}</td>'
            f'<td class=num data-field="revenue" data-value="{r["revenue"]!r}">{_money(r["revenue"])}</td>'
            f'<td class=num data-field="revenue_share" data-value="{r["revenue_share"]!r}">'
            f'{_pct(r["revenue_share"])}</td></tr>' for r in rows)
        page.add(f'<div class=pair><table class="numbers classes"><caption>{_e(classifier)}: {_e(column)}</caption>'
                 '<thead><tr><th>class</th><th>customers</th><th>% customers</th><th>revenue</th><th>% revenue</th>'
                 f'</tr></thead><tbody>{body}</tbody></table>')
        page.figure(class_size_figure(classifier, column, rows), "classes")
        page.add("</div>")
        if classifier not in done and classifier in extra_by:
            for fig in extra_by[classifier]:
                page.figure(fig, classifier)
        done.add(classifier)
        page.add("</div>")
    page.end()


def _rules(page: _Page, pb: Playbook, s: Mapping[str, Any]) -> None:
    page.section("rules", "Rules", f"Hit policy <b>{_e(s['hit_policy'])}</b>: "
                 + ("each customer gets the first rule that matches; a customer cut by capacity does not fall "
                    "through to later rules." if s["hit_policy"] == "first" else "every rule that matches gives its "
                                                                                  "action."))
    rules = {r.name: r for r in pb.rules}
    fallback = pb.fallback.name if pb.fallback is not None else None
    body = []
    for i, r in enumerate(s["rules"]):
        is_fallback = fallback is not None and i == len(s["rules"]) - 1 and r["rule"] == fallback
        spec = pb.fallback if is_fallback else rules.get(r["rule"])
        when = "(no rule matched)" if is_fallback else (spec.when if spec is not None else "")
        capacity = "" if spec is None or spec.capacity is None else f"{spec.capacity:,} by {spec.order_by} " + (
            "desc" if spec.descending else "asc")
        action = "" if spec is None else spec.action
        cells = "".join(f'<td class=num data-field="{k}" data-value="{r[k]}">{_num(r[k])}</td>'
                        for k in ("matched", "hits", "cut_by_capacity", "actions"))
        body.append(f'<tr data-rule="{_e(r["rule"])}" data-position="{i}"{" class=fallback" if is_fallback else ""}>'
                    f'<th>{_e(r["rule"])}{" (fallback)" if is_fallback else ""}</th><td><code>{_e(when)}</code></td>'
                    f'<td>{_e(action)}</td><td>{_e(capacity)}</td>{cells}</tr>')
    page.add('<table class="numbers rules"><thead><tr><th>rule</th><th>when</th><th>action</th><th>capacity</th>'
             '<th>matched</th><th>hits</th><th>cut by capacity</th><th>actions</th></tr></thead><tbody>'
             + "".join(body) + "</tbody></table>")
    totals = [("unmatched", s["unmatched"], "customers no rule matched"),
              ("cut_by_capacity", s["cut_by_capacity"], "customers cut by capacity"),
              ("actions", s["actions"], "actions in actions.csv")]
    page.add("<p class=totals>" + "; ".join(f'<span data-field="{k}" data-value="{v}">{_num(v)}</span> {_e(text)}'
                                            for k, v, text in totals) + "</p>")
    for item in s.get("skipped_rules", []):
        page.add(f"<p class=note>skipped rule {_e(item['rule'])} (not evaluated): {_e(item['reason'])}</p>")
    if s["rules"]:
        page.figure(rules_figure(s["rules"], fallback), "rules")
    page.end()


def _cell(value: Any, kind: str = "int") -> str:
    if value is None:
        return "<td class=num></td>"
    text = {"int": _num, "money": _money, "pct": _pct}[kind](value)
    return f"<td class=num data-value=\"{value!r}\">{text}</td>"


def _snapshots(page: _Page, pb: Playbook, snaps: Any, s: Mapping[str, Any]) -> None:
    from ..migration import label_outputs
    from .timeline import (cohort_figure, flows_rows, kpi_count_figure, kpi_rate_figure, migration_figure,
                           sankey_figure)

    info = s["snapshots"]
    page.section("snapshots", "Snapshots",
                 f"{len(snaps.as_of)} snapshots from one scan of the transactions"
                 + (f", one every {_e(info['every'])}" if info.get("every") else "")
                 + ". Each is the customer table a run with that as_of gives; the rules and the tables above are "
                   "the last snapshot's." + (" Lookback windows: " + ", ".join(
                       f"{_e(k)} on the last {_e(v)}" for k, v in info["windows"].items()) + "."
                                              if info.get("windows") else ""))
    page.add('<table class="numbers snapshot-list"><thead><tr><th>as of</th><th>customers</th><th>net revenue</th>'
             "</tr></thead><tbody>" + "".join(
                 f'<tr data-as-of="{_e(t["as_of"])}"><th>{_e(t["as_of"])}</th>{_cell(t["customers"])}'
                 f'{_cell(t["revenue"], "money")}</tr>' for t in info["tables"]) + "</tbody></table>")
    page.end()

    page.section("migration", "Migration between snapshots",
                 "For every class output: where the customers of each class went between the last two snapshots "
                 "(the table), the whole matrix for any pair (the heat map and its slider), and the flows across "
                 "every snapshot (the Sankey diagram). Up and down follow the classifier's order of its labels, "
                 "best first. " + "; ".join(f"<i>{_e(k)}</i>: {_e(v)}"
                                            for k, v in s["migration"]["definitions"].items()) + ".")
    for classifier, output in label_outputs(pb.selections):
        column = output.column
        rows = flows_rows(snaps.flows, column)
        if not rows:
            continue
        page.add(f'<div class=classifier data-classifier="{_e(classifier)}" data-column="{_e(column)}">'
                 f"<h3>{_e(classifier)}: {_e(column)}, {_e(rows[0]['from_as_of'])} → {_e(rows[0]['to_as_of'])}</h3>")
        keys = ("customers_from", "stayed", "moved_up", "moved_down", "left", "entered", "customers_to",
                "net_flow")
        body = "".join(
            f'<tr data-column="{_e(column)}" data-label="{_e(r["label"])}"><th>{_e(r["label"])}</th>'
            + "".join(_cell(r[k]).replace("<td class=num", f'<td class=num data-field="{k}"', 1) for k in keys)
            + _cell(r["revenue_moved_down"], "money").replace("<td class=num",
                                                             '<td class=num data-field="revenue_moved_down"', 1)
            + "</tr>" for r in rows)
        page.add('<table class="numbers flows"><thead><tr><th>class</th><th>before</th><th>stayed</th><th>moved up'
                 "</th><th>moved down</th><th>left</th><th>entered</th><th>now</th><th>net flow</th><th>revenue "
                 f"of those who moved down</th></tr></thead><tbody>{body}</tbody></table>")
        page.add("<div class=pair>")
        page.figure(migration_figure(snaps.migration, classifier, column), "migration")
        page.figure(sankey_figure(snaps.migration, classifier, column), "sankey")
        page.add("</div></div>")
    page.end()

    kpis = snaps.kpis.sort("as_of")
    page.section("kpis", "KPIs per period",
                 "A period runs from one snapshot (inclusive) to the next (exclusive). A customer is active in a "
                 "period with at least one purchase line in it; a customer with only returns is not a buyer.")
    keys = [("active", "int"), ("new", "int"), ("reactivated", "int"), ("retained", "int"), ("churned", "int"),
            ("retention_rate", "pct"), ("churn_rate", "pct"), ("revenue", "money"), ("revenue_retention", "pct")]
    body = "".join(
        f'<tr data-period="{r["period"]}"><th>{_e(r["period_start"])} – {_e(r["as_of"])}</th>'
        + "".join(_cell(r[k], kind).replace("<td class=num", f'<td class=num data-field="{k}"', 1) for k, kind in keys)
        + "</tr>" for r in kpis.to_dicts())
    page.add('<table class="numbers kpis"><thead><tr><th>period</th>' + "".join(
        f"<th>{_e(k.replace('_', ' '))}</th>" for k, _ in keys) + f"</tr></thead><tbody>{body}</tbody></table>")
    page.add("<details open><summary>Definitions</summary><dl class=definitions>" + "".join(
        f"<dt>{_e(k.replace('_', ' '))}</dt><dd>{_e(v)}</dd>" for k, v in s["kpis"]["definitions"].items())
        + "</dl></details>")
    if kpis.height:
        page.add("<div class=pair>")
        page.figure(kpi_count_figure(kpis), "kpis")
        page.figure(kpi_rate_figure(kpis), "kpis")
        page.add("</div>")
    page.end()

    page.section("cohorts", "Cohorts",
                 "Customers by the " + _e(info.get("cohort") or "month") + " of their first purchase. "
                 + "; ".join(f"<i>{_e(k.replace('_', ' '))}</i>: {_e(v)}"
                             for k, v in s["kpis"]["cohort_definitions"].items()) + ".")
    if snaps.cohorts.height:
        page.add("<div class=pair>")
        page.figure(cohort_figure(snaps.cohorts, value="active_share"), "cohorts")
        page.figure(cohort_figure(snaps.cohorts, value="revenue"), "cohorts")
        page.add("</div>")
    page.end()


def _uplift(page: _Page, m: Mapping[str, Any]) -> None:
    from .uplift import uplift_figure

    period = m["period"]
    conf = float(m.get("confidence") or 0.95)
    page.section("uplift", "Uplift (holdout measurement)",
                 f"What the customers of each rule bought from {_e(period.get('from'))} to {_e(period.get('to'))}, "
                 f"those who got the action (treatment) against those held out (control), as measured by "
                 f"tierbook measure on {_e(m.get('outcomes', 'the outcomes'))} after the run as of "
                 f"{_e(m.get('as_of'))}. Intervals at {conf:.0%} confidence ("
                 + "; ".join(f"{_e(k.replace('_', ' '))}: {_e(v)}" for k, v in (m.get("methods") or {}).items())
                 + ").")
    body = []
    for r in m["rules"]:
        t, c = r["treatment"], r["control"]
        conv = r.get("conversion_uplift") or {}
        rev = r.get("revenue_uplift") or {}
        srm = r.get("srm") or {}

        def iv(x: Mapping[str, Any], kind: str) -> str:
            if not x:
                return "<td></td>"
            f = _pct if kind == "pct" else _money
            return (f'<td class=num data-value="{x.get("estimate")!r}">{f(x.get("estimate"))} '
                    f'[{f(x.get("low"))}, {f(x.get("high"))}]{" *" if x.get("significant") else ""}</td>')

        body.append(
            f'<tr data-rule="{_e(r["rule"])}"><th>{_e(r["rule"])}</th>'
            f'<td class=num data-field="treatment" data-value="{t.get("customers")}">{_num(t.get("customers", 0))}</td>'
            f'<td class=num data-field="control" data-value="{c.get("customers")}">{_num(c.get("customers", 0))}</td>'
            f'<td class=num>{_pct(t.get("conversion"))}</td><td class=num>{_pct(c.get("conversion"))}</td>'
            f'{iv(conv, "pct")}<td class=num>{_money(t.get("revenue_per_customer"))}</td>'
            f'<td class=num>{_money(c.get("revenue_per_customer"))}</td>{iv(rev, "money")}'
            f'<td>{"mismatch" if srm.get("mismatch") else "ok" if srm else ""}</td>'
            f'<td>{_e(r.get("note", ""))}</td></tr>')
    page.add('<table class="numbers uplift"><thead><tr><th>rule</th><th>treatment</th><th>control</th>'
             "<th>conversion (treatment)</th><th>conversion (control)</th><th>conversion uplift [interval]</th>"
             "<th>revenue per customer (treatment)</th><th>(control)</th><th>revenue uplift [interval]</th>"
             "<th>sample ratio</th><th>note</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
             "<p class=intro>* the interval excludes zero. A sample-ratio mismatch means the groups were not "
             "split as the holdout asked: do not trust that rule's uplift.</p>")
    page.add("<div class=pair>")
    page.figure(uplift_figure(m["rules"], "conversion_uplift", percent=True, confidence=conf), "uplift")
    page.figure(uplift_figure(m["rules"], "revenue_uplift", percent=False, confidence=conf), "uplift")
    page.add("</div>")
    page.end()


STYLE = """
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d2731; background: #fbfcfd; margin: 0; }
header { background: #12324a; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; opacity: .85; }
nav { padding: 8px 28px; border-bottom: 1px solid #d9dee3; background: #fff; position: sticky; top: 0;
      z-index: 5; }
nav a { margin-right: 18px; color: #12324a; text-decoration: none; }
main { padding: 8px 28px 40px; max-width: 1400px; }
section { margin-top: 22px; }
h2 { font-size: 19px; border-bottom: 2px solid #12324a; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
p.intro { color: #5b6770; max-width: 900px; }
table { border-collapse: collapse; background: #fff; margin: 6px 0 12px; }
th, td { border: 1px solid #d9dee3; padding: 3px 9px; text-align: left; vertical-align: top; }
thead th { background: #eef2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
tr.fallback th, tr.fallback td { background: #f6f3ea; }
code { font-size: 12.5px; }
.pair { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.pair > table { flex: 0 0 auto; }
figure.chart { margin: 6px 0 16px; background: #fff; border: 1px solid #d9dee3; padding: 6px 10px;
               flex: 1 1 520px; min-width: 420px; }
figure.chart h3 { margin: 4px 0; }
figcaption { color: #5b6770; font-size: 12.5px; max-width: 900px; }
.plot { width: 100%; min-height: 200px; }
.classifier { border-top: 1px dashed #d9dee3; padding-top: 6px; }
p.verdict.ok { color: #1b6e3a; font-weight: 600; }
p.verdict.failed { color: #b00020; font-weight: 700; }
p.note { color: #7a5a00; }
dl.definitions { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; max-width: 1100px; }
dl.definitions dt { font-weight: 600; }
dl.definitions dd { margin: 0; color: #5b6770; }
footer { color: #5b6770; font-size: 12px; padding: 12px 28px 24px; }
"""

#: The layout every figure starts from (its own layout keys win; margins are merged).
BASE_LAYOUT = {"font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, Helvetica Neue, Arial, sans-serif",
                        "size": 12}, "margin": {"l": 60, "r": 24, "t": 16, "b": 48}, "paper_bgcolor": "#fff",
               "plot_bgcolor": "#fff", "colorway": list(PALETTE)}

# Draws every figure; marks each drawn one (data-rendered) and the page when all are (body data-rendered).
RENDER = """
(function () {
  var figures = JSON.parse(document.getElementById("figures").textContent);
  var base = %(base)s;
  var config = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud"]};
  var done = 0, failed = [];
  function finish() {
    done += 1;
    if (done === figures.length) {
      document.body.setAttribute("data-rendered", failed.length ? "failed" : String(done));
    }
  }
  if (!figures.length) { document.body.setAttribute("data-rendered", "0"); }
  figures.forEach(function (f) {
    var el = document.getElementById(f.id);
    var layout = Object.assign({}, base, f.layout);
    layout.margin = Object.assign({}, base.margin, f.layout.margin || {});
    try {
      Plotly.newPlot(el, f.data, layout, config).then(function () {
        el.setAttribute("data-rendered", "yes"); finish();
      }, function (err) { el.setAttribute("data-rendered", "error: " + err); failed.push(f.id); finish(); });
    } catch (err) {
      el.setAttribute("data-rendered", "error: " + err); failed.push(f.id); finish();
    }
  });
})();
"""


def to_plotly(fig: Figure):
    """The figure as a ``plotly.graph_objects.Figure``, as the report draws it, with its title (for notebooks).

    >>> f = to_plotly(Figure("x", "Sizes", [{"type": "bar", "x": ["a"], "y": [1]}]))
    >>> f.layout.title.text, f.data[0].type
    ('Sizes', 'bar')
    """
    try:
        import plotly.graph_objects as go
    except ModuleNotFoundError:
        raise DataError("the report's charts need the plotly package: pip install 'tierbook[report]'") from None
    layout = {**BASE_LAYOUT, **dict(fig.layout), "title": {"text": fig.title, "x": 0.01}}
    margin = {**BASE_LAYOUT["margin"], **dict(fig.layout).get("margin", {})}
    layout["margin"] = {**margin, "t": max(margin.get("t", 0), 40) + (60 if "sliders" in layout else 0)}
    return go.Figure(data=[dict(t) for t in fig.data], layout=layout)


def _plotly_js() -> str:
    """plotly.js, as the plotly package ships it (one minified file, MIT)."""
    try:
        from plotly.offline import get_plotlyjs
    except ModuleNotFoundError:
        raise DataError("tierbook report needs the plotly package (it ships plotly.js): "
                        "pip install 'tierbook[report]'") from None
    return get_plotlyjs()


def build_report(pb: Playbook, result: Result, *, measurement: Mapping[str, Any] | None = None,
                 sections: Sequence[Any] = ()) -> str:
    """The report of one playbook run as one HTML document (a string; nothing is read from the network).

    ``measurement``: what ``tierbook measure --json`` printed for this playbook
    (:func:`engine.report.uplift.read_measurement`), drawn as the uplift section.

    ``sections`` are extra callables ``section(page)`` drawn after the rules (time-series sections).
    """
    s = result.summary
    page = _Page()
    extra = classifier_figures(pb, result)
    _overview(page, pb, s)
    _classes(page, s, extra)
    _rules(page, pb, s)
    snaps = getattr(result, "snapshots", None)
    if snaps is not None and len(snaps.as_of) > 1:
        _snapshots(page, pb, snaps, s)
    if measurement is not None:
        _uplift(page, measurement)
    for draw in sections:
        draw(page)
    js = _plotly_js().replace("</script", "<\\/script")
    nav = "".join(f'<a href="#{_e(a)}">{_e(t)}</a>' for a, t in page.toc)
    version = _version()
    title = f"tierbook report: {pb.name} (as of {s['as_of']})"
    return "".join([
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>",
        # No request leaves the page: everything is inline, and the policy says so to the browser too.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline' "
        "'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:\">",
        f"<meta name=viewport content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<header><h1>{_e(pb.name)}</h1><p>tierbook report, as of {_e(s['as_of'])}; "
        f"{_num(s['reconciliation']['customers_out'])} customers, net revenue "
        f"{_money(s['reconciliation']['revenue_out'])}</p></header>",
        f"<nav>{nav}</nav><main>", *page.parts, "</main>",
        f"<footer>Written by tierbook {_e(version)} from {_e(pb.path.name)}. Charts: plotly.js (MIT), inlined: "
        "this file needs no network.</footer>",
        f'<script type="application/json" id="summary">{_script_json(_clean(s))}</script>',
        f'<script type="application/json" id="figures">{_script_json(_clean(page.figures))}</script>',
        f"<script>{js}</script>",
        "<script>", RENDER % {"base": json.dumps(BASE_LAYOUT)}, "</script>",
        "</body></html>\n",
    ])


def _version() -> str:
    import importlib.metadata as md

    try:
        return md.version("tierbook")
    except md.PackageNotFoundError:
        return "(not installed)"
