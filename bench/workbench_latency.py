"""Workbench recompute latency: how long a threshold change takes to reach the summary numbers.

    python bench/workbench_latency.py [--sizes 100k,1m,3m] [--repeat 20] [--seed 20240601] [--out bench/WORKBENCH.md]

For each size and each built-in classifier (abc, adc, rfm) it builds the
workbench model (:class:`engine.widgets.WorkbenchModel`) once, then makes
``--repeat`` threshold changes and reports the median of

numbers
    new value -> class sizes and revenue shares (what the workbench shows first);
labels
    the full customer table with the new label columns (what the rules, the
    sample customers and ``Playbook.save`` work from), measured after the numbers;
chart
    redrawing the classifier's chart (ABC Pareto curve, RFM R x F heat map) to PNG.

A second table measures a whole move as the widget makes it, on the
abc-resource-allocation playbook's classifiers and rules: the numbers, the
hits per rule (``WorkbenchModel.rules``: label columns, rules, capacity,
actions) and the redraw of every chart whose content changed, in that order.

It also reports the one-off set-up (the sorts and histograms cached per table)
and, for comparison, the engine's full path for one change
(``apply_classifiers`` + ``summarize``), which the workbench avoids.

The customer table is generated directly, one row per customer, with a seed
(not through ``bench/generate.py`` and the feature pass: the workbench starts
from the computed features, and generating 3M customers' transactions would
only measure the feature pass again). Its shape: frequency geometric (most buy
once or twice, so R, F and M scores tie heavily), monetary log-normal times
frequency and rounded to cents (ties), 2% zero or negative (returns), 2%
prospects without orders (null recency), recency uniform over three years.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.features import LoadReport  # noqa: E402
from engine.registry import get_registry  # noqa: E402
from engine.run import Prepared, apply_classifiers, select, summarize  # noqa: E402
from engine.widgets import WorkbenchModel  # noqa: E402

SIZES = {"100k": 100_000, "1m": 1_000_000, "3m": 3_000_000}
AS_OF = dt.date(2025, 1, 1)
CHANGES = {
    "abc": [{"abc.a": a} for a in (0.6, 0.65, 0.7, 0.75, 0.85, 0.9)],
    "adc": [{"adc.active_days": d} for d in (30, 45, 60, 75, 120, 180)],
    "rfm": [{"rfm.hv_min_r": 2}, {"rfm.potential_min_total": 8}, {"rfm.hv_min_r": 4},
            {"rfm.potential_min_total": 10}, {"rfm.hv_min_m": 3}, {"rfm.hv_min_m": 4}],
}


def customers_table(n: int, seed: int) -> pl.DataFrame:
    """A seeded customer table with the features the built-in classifiers need."""
    rng = np.random.default_rng(seed)
    frequency = rng.geometric(0.45, n).astype(np.int64)
    monetary = np.round(rng.lognormal(3.5, 1.2, n) * frequency, 2)
    bad = rng.random(n) < 0.02
    monetary[bad] = np.round(-rng.lognormal(2, 1, bad.sum()), 2) * (rng.random(bad.sum()) < 0.5)
    recency = rng.integers(1, 1096, n)
    tenure = recency + rng.integers(0, 1096, n) * (frequency > 1)
    prospect = rng.random(n) < 0.02
    df = pl.DataFrame({
        "customer_id": np.arange(1, n + 1, dtype=np.int64),
        "recency_days": recency, "frequency": frequency, "monetary": monetary, "tenure_days": tenure,
    })
    return df.with_columns(
        pl.when(pl.Series(~prospect)).then(pl.col(c)).otherwise(None).alias(c)
        for c in ("recency_days", "tenure_days")
    ).with_columns(pl.when(pl.Series(prospect)).then(0).otherwise(pl.col("frequency")).alias("frequency"),
                   pl.when(pl.Series(prospect)).then(0.0).otherwise(pl.col("monetary")).alias("monetary"))


def measure(n: int, name: str, repeat: int, seed: int, registry, engine_path: bool) -> dict:
    customers = customers_table(n, seed)
    report = LoadReport(source="synthetic", customers=n, net_revenue=float(customers["monetary"].sum()))
    prepared = Prepared(customers, AS_OF, report, registry)
    t0 = time.perf_counter()
    model = WorkbenchModel(prepared, select(registry, [name]))
    model.numbers()
    setup = time.perf_counter() - t0
    numbers, labels, charts = [], [], []
    for i in range(repeat):
        change = CHANGES[name][i % len(CHANGES[name])]
        t = time.perf_counter()
        model.set_params(change)
        model.numbers()
        numbers.append(time.perf_counter() - t)
        t = time.perf_counter()
        model.classified()
        labels.append(time.perf_counter() - t)
        t = time.perf_counter()
        own = model.fast_paths[name].charts(model.params[name])  # the classifier's own charts, drawn
        for chart in own:
            chart.draw()
        if own:
            charts.append(time.perf_counter() - t)
    out = {"n": n, "classifier": name, "setup": setup, "numbers": statistics.median(numbers),
           "numbers_max": max(numbers), "labels": statistics.median(labels),
           "chart": statistics.median(charts) if charts else None, "engine": None}
    if engine_path:
        sels = model.selections()
        t = time.perf_counter()
        summarize(apply_classifiers(customers, sels, as_of=AS_OF, registry=registry), sels)
        out["engine"] = time.perf_counter() - t
    return out


def measure_move(n: int, name: str, repeat: int, seed: int) -> dict:
    """A whole move: numbers, rule hits, and the charts whose key changed (as Workbench.refresh does)."""
    import engine

    playbook = engine.load_playbook(ROOT / "playbooks" / "abc-resource-allocation.yaml")
    customers = customers_table(n, seed)
    report = LoadReport(source="synthetic", customers=n, net_revenue=float(customers["monetary"].sum()))
    model = WorkbenchModel(Prepared(customers, AS_OF, report, playbook.registry), playbook.selections,
                           playbook=playbook)
    keys = {}

    def redraw() -> int:
        drawn = 0
        for clf in model.classifiers:
            for chart in model.charts(clf):
                if keys.get((clf, chart.name)) != chart.key:
                    chart.draw()
                    keys[(clf, chart.name)] = chart.key
                    drawn += 1
        return drawn

    model.numbers()
    model.rules()
    redraw()
    parts = {"numbers": [], "rules": [], "charts": [], "total": []}
    for i in range(repeat):
        change = CHANGES[name][i % len(CHANGES[name])]
        t0 = time.perf_counter()
        model.set_params(change)
        model.numbers()
        t1 = time.perf_counter()
        model.rules()
        t2 = time.perf_counter()
        redraw()
        t3 = time.perf_counter()
        for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            parts[key].append(value)
    return {"n": n, "classifier": name, **{k: statistics.median(v) for k, v in parts.items()},
            "total_max": max(parts["total"])}


def ms(x: float | None) -> str:
    return "–" if x is None else f"{1000 * x:,.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100k,1m,3m")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--no-engine", action="store_true", help="skip the engine-path comparison")
    ap.add_argument("--no-moves", action="store_true", help="skip the whole-move table")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = ap.parse_args(argv)
    registry = get_registry(allow=["abc", "adc", "rfm"], strict=True)
    rows = []
    for size in args.sizes.split(","):
        n = SIZES.get(size.lower()) or int(size)
        for name in ("abc", "adc", "rfm"):
            r = measure(n, name, args.repeat, args.seed, registry, not args.no_engine)
            rows.append(r)
            print(f"{n:>9,} {name}: numbers {ms(r['numbers'])} ms (max {ms(r['numbers_max'])}), labels "
                  f"{ms(r['labels'])} ms, chart {ms(r['chart'])} ms, set-up {ms(r['setup'])} ms, engine path "
                  f"{ms(r['engine'])} ms", flush=True)
    table = ["| customers | classifier | numbers: median (max) ms | labels ms | chart redraw ms | set-up ms "
             "| engine path ms |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        table.append(f"| {r['n']:,} | {r['classifier']} | {ms(r['numbers'])} ({ms(r['numbers_max'])}) | "
                     f"{ms(r['labels'])} | {ms(r['chart'])} | {ms(r['setup'])} | {ms(r['engine'])} |")
    if not args.no_moves:
        table += ["", "Whole moves with the abc-resource-allocation playbook's rules (target: 100 ms at 1M customers):",
                  "", "| customers | moved | numbers ms | rule hits ms | charts ms | whole move: median (max) ms |",
                  "| ---: | --- | ---: | ---: | ---: | ---: |"]
        for size in args.sizes.split(","):
            n = SIZES.get(size.lower()) or int(size)
            for name in ("abc", "adc"):
                r = measure_move(n, name, args.repeat, args.seed)
                print(f"{n:>9,} {name} move: numbers {ms(r['numbers'])} ms, rules {ms(r['rules'])} ms, charts "
                      f"{ms(r['charts'])} ms, whole {ms(r['total'])} ms (max {ms(r['total_max'])})", flush=True)
                table.append(f"| {n:,} | {name} | {ms(r['numbers'])} | {ms(r['rules'])} | {ms(r['charts'])} | "
                             f"{ms(r['total'])} ({ms(r['total_max'])}) |")
    text = "\n".join(table)
    print(text)
    if args.out:
        import os

        env = (f"{platform.python_version()}, polars {pl.__version__}, numpy {np.__version__}, "
               f"{os.cpu_count()} cores, seed {args.seed}, {args.repeat} changes")
        args.out.write_text(args.out.read_text().split("<!-- results -->")[0] + "<!-- results -->\n\n"
                            + f"Measured with `python bench/workbench_latency.py` ({env}):\n\n" + text + "\n"
                            if args.out.exists() else text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
