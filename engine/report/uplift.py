"""The report's uplift section: what ``tierbook measure --json`` measured for each rule with a holdout.

The measurement is read as the JSON ``tierbook measure --json`` prints (``docs/holdouts.md``): per rule the
treatment and control arms, the conversion and revenue-per-customer uplift with their confidence
intervals, the sample-ratio check and the minimum detectable effect. Nothing is recomputed here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .figures import LEGEND_ON_TOP, PALETTE, Figure

__all__ = ["read_measurement", "uplift_figure"]


def read_measurement(path: str | Path, playbook: str) -> dict[str, Any]:
    """The measurement in ``path`` (``tierbook measure --json``'s output), checked; one-line errors."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such measurement file (tierbook measure writes one as JSON)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the measurement: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not JSON ({exc.msg}, column {exc.colno}); expected the JSON "
                        f"measurement of tierbook measure") from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or "period" not in data:
        raise DataError(f"{path}: not a measurement (no 'rules' list and 'period'); expected the JSON "
                        f"measurement of tierbook measure")
    if data.get("playbook") != playbook:
        raise DataError(f"{path}: a measurement of playbook {data.get('playbook')!r}, not of {playbook!r}",
                        value=data.get("playbook"))
    for i, rule in enumerate(data["rules"]):
        if not isinstance(rule, dict) or not isinstance(rule.get("rule"), str) or not isinstance(
                rule.get("treatment"), dict) or not isinstance(rule.get("control"), dict):
            raise DataError(f"{path}: rules[{i}] is not a rule's measurement (rule, treatment, control)")
    return data


def _interval(rule: Mapping[str, Any], key: str) -> tuple[float, float, float] | None:
    iv = rule.get(key)
    if not isinstance(iv, Mapping) or any(not isinstance(iv.get(k), (int, float)) for k in ("estimate", "low", "high")):
        return None
    return float(iv["estimate"]), float(iv["low"]), float(iv["high"])


def uplift_figure(rules: Sequence[Mapping[str, Any]], key: str, *, percent: bool, confidence: float) -> Figure:
    """One dot per rule with its confidence interval (``key``: ``conversion_uplift`` or ``revenue_uplift``)."""
    names, est, plus, minus, colours = [], [], [], [], []
    for r in rules:
        iv = _interval(r, key)
        if iv is None:
            continue
        e, lo, hi = iv
        names.append(r["rule"])
        est.append(e)
        plus.append(hi - e)
        minus.append(e - lo)
        colours.append(PALETTE[2] if lo > 0 else PALETTE[5] if hi < 0 else "#7f8c97")
    fmt = ".2%" if percent else ",.2f"
    data = [{"type": "scatter", "mode": "markers", "x": est, "y": names, "name": "uplift",
             "marker": {"size": 11, "color": colours},
             "error_x": {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "thickness": 2,
                         "color": "#444",
                         "width": 6},
             "hovertemplate": "%{y}: %{x:" + fmt + "}<extra></extra>"}]
    what = "conversion (percentage points)" if percent else "revenue per customer"
    layout = {"height": max(220, 90 + 44 * len(names)), "showlegend": False, **LEGEND_ON_TOP,
              "shapes": [{"type": "line", "xref": "x", "yref": "paper", "x0": 0, "x1": 0, "y0": 0, "y1": 1,
                          "line": {"color": "#444", "width": 1}}],
              "xaxis": {"title": {"text": f"treatment minus control: {what}"}, "tickformat": ".1%" if percent else ",",
                        "zeroline": True},
              "yaxis": {"autorange": "reversed", "automargin": True, "type": "category"}}
    name = "uplift-conversion" if percent else "uplift-revenue"
    title = "Uplift in conversion" if percent else "Uplift in revenue per customer"
    return Figure(name, title, data, layout,
                  caption=f"Each rule's effect with its {confidence:.0%} confidence interval: green when the "
                          "whole interval is above zero, red when below, grey when it includes zero (no effect "
                          "shown). Rules without both groups have no dot.")
