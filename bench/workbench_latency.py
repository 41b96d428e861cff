"""Workbench recompute latency: how long a threshold change takes to reach the summary numbers.

    python bench/workbench_latency.py [--sizes 100k,1m,3m] [--repeat 20] [--seed 20240601] [--out bench/WORKBENCH.md]
    python bench/workbench_latency.py --sizes 1m --repeat 12 --only-moves      # whole moves only

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

A second table measures a whole move in the widget itself: ``Workbench.set``
end to end (the numbers, the hits per rule, the sample customers, the redraw
of every chart whose content changed and every HTML box), on the
abc-resource-allocation playbook (``abc.a``, ``adc.active_days``) and on
high-value-care (RFM value-tier thresholds), with the widget's own breakdown
and the load average before and after (``--only-moves``: this table alone).

A third table (``--beside``) times the tutorial classifier of docs/plugins.md
(churn by inter-purchase time, with the page's own fast path, taken from the
page) beside ABC in one workbench, in the same process: interleaved rounds, each
moving ``churn.k`` and ``abc.a`` once in alternating order, with the load
average before and after.

It also reports the one-off set-up (the sorts and histograms cached per table)
and, for comparison, the engine's full path for one change
(``apply_classifiers`` + ``summarize``), which the workbench avoids.

The customer table is generated directly, one row per customer, with a seed
(not through ``bench/generate.py`` and the feature pass: the workbench starts
from the computed features, and generating 3M customers' transactions would
only measure the feature pass again). Its shape: frequency geometric (most buy
once or twice, so R, F and M scores tie heavily), monetary log-normal times
frequency and rounded to cents (ties), 2% zero or negative (returns), 2%
prospects without orders (null recency and last activity), recency uniform over three years.
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
    # The median gap between purchase days (the tutorial's feature): whole or half days, null for one purchase
    # day (about half the customers) and for prospects; drawn so that recency / gap spreads over the slider's range.
    gap = np.round(rng.lognormal(3.5, 1.0, n) * 2) / 2 + 1
    df = df.with_columns(median_gap_days=pl.when(pl.Series((frequency > 1) & ~prospect)).then(pl.Series(gap)))
    # The last transaction of any kind (the lifecycle classifier tells prospects by it): the last purchase here.
    df = df.with_columns(last_activity=pl.lit(AS_OF) - pl.duration(days=pl.col("recency_days")))
    return df.with_columns(
        pl.when(pl.Series(~prospect)).then(pl.col(c)).otherwise(None).alias(c)
        for c in ("recency_days", "tenure_days", "last_activity")
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


MOVE_PLAYBOOKS = {"abc": "abc-resource-allocation", "adc": "abc-resource-allocation", "rfm": "high-value-care"}


def measure_move(n: int, name: str, repeat: int, seed: int, after_as_of: bool = False) -> dict:
    """A whole move in the widget: ``Workbench.set`` (numbers, rule hits, sample customers, the charts whose
    key changed, every HTML box), timed end to end on the playbook of :data:`MOVE_PLAYBOOKS` over the seeded
    table, with the widget's own breakdown (``Workbench.timings``). ``after_as_of``: first move the widget's
    as_of back 90 days (to another seeded table of the same customers, handed to the widget as the table of
    that date), so that every move also recomputes the migration between the two tables."""
    import engine
    from engine.widgets import Workbench

    playbook = engine.load_playbook(ROOT / "playbooks" / f"{MOVE_PLAYBOOKS[name]}.yaml")
    customers = customers_table(n, seed)
    if any("birthday" in rule.when for rule in playbook.rules):  # high-value-care's birthday greetings
        rng = np.random.default_rng(seed + 1)
        days = rng.integers(0, 365 * 60, n)
        customers = customers.with_columns(birthday=pl.lit(dt.date(1950, 1, 1)) + pl.duration(days=pl.Series(days)))
    report = LoadReport(source="synthetic", customers=n, net_revenue=float(customers["monetary"].sum()))
    t0 = time.perf_counter()
    wb = Workbench(playbook, prepared=Prepared(customers, AS_OF, report, playbook.registry))
    setup = time.perf_counter() - t0
    if after_as_of:
        day = AS_OF - dt.timedelta(days=90)
        wb._prepared_by_date[day] = Prepared(customers_table(n, seed + 1), day, report, playbook.registry)
        wb.as_of.value = day
    parts = {k: [] for k in ("numbers", "rules", "migration", "sample", "charts", "total")}
    draws = sum(wb.draws.values())
    for i in range(repeat):
        change = CHANGES[name][i % len(CHANGES[name])]
        t = time.perf_counter()
        assert wb.set(change), wb.status.value
        total = time.perf_counter() - t
        for key in ("numbers", "rules", "migration", "sample", "charts"):
            parts[key].append(wb.timings[key])
        parts["total"].append(total)
    return {"n": n, "classifier": name + (" after an as_of move" if after_as_of else ""),
            "playbook": MOVE_PLAYBOOKS[name], "setup": setup,
            **{k: statistics.median(v) for k, v in parts.items()}, "total_max": max(parts["total"]),
            "redrawn": (sum(wb.draws.values()) - draws) / repeat}


def tutorial_plugin(directory: Path):
    """The churn plugin of docs/plugins.md with its fast path, written from the page into ``directory``."""
    import importlib
    import re

    page = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    files = dict(re.findall(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```", page, re.S))
    added = dict(re.findall(r"<!-- add to: (\S+) -->\n```\w*\n(.*?)```", page, re.S))
    code = files["tierbook_churn.py"].replace("        expressions=churn,\n",
                                              "        expressions=churn,\n        workbench=fast_path,\n")
    code = code.replace("\n@hookimpl\ndef register_classifiers",
                        "\n" + added["tierbook_churn.py"] + "\n\n@hookimpl\ndef register_classifiers")
    (directory / "tierbook_churn.py").write_text(code, encoding="utf-8")
    (directory / "tierbook_churn_workbench.py").write_text(files["tierbook_churn_workbench.py"], encoding="utf-8")
    sys.path.insert(0, str(directory))
    return importlib.import_module("tierbook_churn")


def measure_beside(n: int, rounds: int, seed: int, generic_rounds: int = 3) -> dict:
    """churn.k and abc.a moved in turn in one workbench (numbers, then labels), interleaved, same process."""
    import os
    import tempfile

    from engine.registry import get_registry

    tmp = tempfile.TemporaryDirectory()  # kept until the process ends: the fast path is imported when used
    churn = tutorial_plugin(Path(tmp.name))
    registry = get_registry(allow=["abc"], modules=[churn], strict=True)
    customers = customers_table(n, seed)
    report = LoadReport(source="synthetic", customers=n, net_revenue=float(customers["monetary"].sum()))
    prepared = Prepared(customers, AS_OF, report, registry)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    model = WorkbenchModel(prepared, select(registry, ["abc", "churn"]))
    model.numbers()
    setup = time.perf_counter() - t0
    assert type(model.evaluator("churn")).__name__ == "ChurnFastPath"
    moves = {"abc": [{"abc.a": a} for a in (0.6, 0.65, 0.7, 0.75, 0.85, 0.9)],
             "churn": [{"churn.k": k} for k in (1.5, 2.0, 2.5, 3.0, 4.0, 6.0)]}
    times: dict[str, dict[str, list[float]]] = {c: {"numbers": [], "labels": []} for c in moves}
    for i in range(rounds):
        for name in (("abc", "churn") if i % 2 == 0 else ("churn", "abc")):
            change = moves[name][i % len(moves[name])]
            t = time.perf_counter()
            model.set_params(change)
            model.numbers()
            t1 = time.perf_counter()
            model.columns(name)
            t2 = time.perf_counter()
            times[name]["numbers"].append(t1 - t)
            times[name]["labels"].append(t2 - t1)
    # The same slider without the fast path (the generic path: churn()'s expressions over the table).
    slow = WorkbenchModel(prepared, select(registry, ["churn"]), accelerate=False)
    generic = []
    for i in range(generic_rounds):
        t = time.perf_counter()
        slow.set_params(moves["churn"][i % len(moves["churn"])])
        slow.numbers()
        generic.append(time.perf_counter() - t)
    load_after = os.getloadavg()
    med = {c: {k: statistics.median(v) for k, v in parts.items()} for c, parts in times.items()}
    return {"n": n, "rounds": rounds, "setup": setup, "median": med,
            "max": {c: max(parts["numbers"]) for c, parts in times.items()},
            "generic": statistics.median(generic), "load": (load_before, load_after)}


def ms(x: float | None) -> str:
    return "–" if x is None else f"{1000 * x:,.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100k,1m,3m")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--no-engine", action="store_true", help="skip the engine-path comparison")
    ap.add_argument("--no-moves", action="store_true", help="skip the whole-move table")
    ap.add_argument("--only-moves", action="store_true", help="only the whole-move table")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    ap.add_argument("--beside", action="store_true",
                    help="only the docs/plugins.md churn classifier's slider beside ABC's (interleaved rounds)")
    args = ap.parse_args(argv)
    if args.beside:
        return main_beside(args)
    registry = get_registry(allow=["abc", "adc", "rfm"], strict=True)
    rows = []
    for size in ([] if args.only_moves else args.sizes.split(",")):
        n = SIZES.get(size.lower()) or int(size)
        for name in ("abc", "adc", "rfm"):
            r = measure(n, name, args.repeat, args.seed, registry, not args.no_engine)
            rows.append(r)
            print(f"{n:>9,} {name}: numbers {ms(r['numbers'])} ms (max {ms(r['numbers_max'])}), labels "
                  f"{ms(r['labels'])} ms, chart {ms(r['chart'])} ms, set-up {ms(r['setup'])} ms, engine path "
                  f"{ms(r['engine'])} ms", flush=True)
    table = [] if args.only_moves else [
        "| customers | classifier | numbers: median (max) ms | labels ms | chart redraw ms | set-up ms "
        "| engine path ms |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        table.append(f"| {r['n']:,} | {r['classifier']} | {ms(r['numbers'])} ({ms(r['numbers_max'])}) | "
                     f"{ms(r['labels'])} | {ms(r['chart'])} | {ms(r['setup'])} | {ms(r['engine'])} |")
    if not args.no_moves:
        import os

        load_before = os.getloadavg()
        moves = ["", "Whole moves in the widget, `Workbench.set` end to end (target: 100 ms at 1M customers):", "",
                 "| customers | moved | playbook | numbers ms | rule hits ms | migration ms | sample ms "
                 "| charts ms (drawn per move) | whole move: median (max) ms | widget set-up ms |",
                 "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for size in args.sizes.split(","):
            n = SIZES.get(size.lower()) or int(size)
            for name, after_as_of in (("abc", False), ("adc", False), ("rfm", False), ("abc", True)):
                r = measure_move(n, name, args.repeat, args.seed, after_as_of)
                name = r["classifier"]
                print(f"{n:>9,} {name} move ({r['playbook']}): numbers {ms(r['numbers'])} ms, rules {ms(r['rules'])} "
                      f"ms, migration {ms(r['migration'])} ms, sample {ms(r['sample'])} ms, charts {ms(r['charts'])} "
                      f"ms ({r['redrawn']:.1f} drawn), whole {ms(r['total'])} ms (max {ms(r['total_max'])}), set-up "
                      f"{ms(r['setup'])} ms", flush=True)
                moves.append(f"| {n:,} | {name} | {r['playbook']} | {ms(r['numbers'])} | {ms(r['rules'])} | "
                             f"{ms(r['migration'])} | {ms(r['sample'])} | {ms(r['charts'])} ({r['redrawn']:.1f}) | "
                             f"{ms(r['total'])} ({ms(r['total_max'])}) | {ms(r['setup'])} |")
        load_after = os.getloadavg()
        moves.append(f"\nLoad average before {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f}, "
                     f"after {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f}.")
        table += moves
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


def ms2(x: float) -> str:
    return f"{1000 * x:,.2f}"


def main_beside(args) -> int:
    table = ["| customers | slider | numbers: median (max) ms | labels ms | without the fast path ms |",
             "| ---: | --- | ---: | ---: | ---: |"]
    for size in args.sizes.split(","):
        n = SIZES.get(size.lower()) or int(size)
        r = measure_beside(n, args.repeat, args.seed)
        lb, la = r["load"]
        print(f"{n:>9,}: load average before {lb[0]:.1f} {lb[1]:.1f} {lb[2]:.1f}, after {la[0]:.1f} {la[1]:.1f} "
              f"{la[2]:.1f}; set-up of both {ms(r['setup'])} ms", flush=True)
        for name, slider in (("abc", "abc.a"), ("churn", "churn.k")):
            m = r["median"][name]
            generic = ms(r["generic"]) if name == "churn" else "–"
            print(f"  {slider}: numbers {ms2(m['numbers'])} ms (max {ms(r['max'][name])}), labels {ms(m['labels'])} ms"
                  + (f", generic path {generic} ms" if name == "churn" else ""), flush=True)
            table.append(f"| {n:,} | {slider} | {ms2(m['numbers'])} ({ms(r['max'][name])}) | {ms(m['labels'])} | "
                         f"{generic} |")
        ratio = r["median"]["churn"]["numbers"] / r["median"]["abc"]["numbers"]
        print(f"  churn / abc numbers: {ratio:.2f}x over {r['rounds']} interleaved rounds", flush=True)
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
