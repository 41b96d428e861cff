"""Where tierbook's time and memory go, and what the one-pass query's parts cost.

    .venv/bin/python bench/profile.py [--size 10m] [--repeat 3]

Part 1, stages (one process, in-process timers): interpreter + imports,
loading and validating the playbook, the one-pass query (collect), the rest of
``compute_features`` (filters, as_of, derived columns, sort), the classifiers,
the rules (actions, cut, summary), and writing each output. Peak RSS is reset
before each stage (``/proc/self/clear_refs``), so each stage's own high-water
mark is shown. Repeated ``--repeat`` times in fresh processes; medians.

Part 2, query variants (each a fresh, measured process like bench/run.py,
interleaved, ``--repeat`` rounds): the floor query, then the floor with one
change at a time towards tierbook's query, then tierbook's own query as the
engine builds it, then tierbook's query with one aggregation changed. This is
what the recommendations in bench/PROFILE.md are based on.

Writes bench/PROFILE.md and bench/profile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import run as bench_run  # noqa: E402  (bench/run.py: measure, paths)

# ----------------------------------------------------------------------------- part 1
STAGES_CODE = r"""
import json, os, sys, time
t0 = time.perf_counter()
marks = []
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
def reset():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
def mark(name, start):
    marks.append({"stage": name, "s": time.perf_counter() - start, "peak_rss": hwm()})
    reset()
    return time.perf_counter()

import polars as pl
import engine
from engine.playbook import load_playbook
from engine.playbook.evaluate import _playbook_result
from engine.run import apply_classifiers
from engine.features import compute_features, _queries
from engine.data import read_transactions
import plugins.abc, plugins.adc, plugins.rfm
marks.append({"stage": "interpreter start + imports (polars, engine, plugins)", "s": time.perf_counter() - t0 +
              float(sys.argv[3]), "peak_rss": hwm()})
reset()
t = time.perf_counter()
pb = load_playbook(sys.argv[1])
t = mark("load + validate playbook (reads the Parquet header)", t)
tx = read_transactions(pb.data["transactions"], pb.data.get("map") or None)
grouped = pl.collect_all(list(_queries(tx, None, pb.registry.features)), engine="streaming")
t = mark("one pass: the three queries over one scan (streaming collect_all)", t)
del grouped
t = time.perf_counter()
prepared = pb.prepare()
t_prepare = time.perf_counter() - t
marks.append({"stage": "prepare() again, whole (group_by + post-processing)", "s": t_prepare, "peak_rss": hwm(),
              "info": True})
reset()
t = time.perf_counter()
customers = apply_classifiers(prepared.customers, pb.selections, as_of=prepared.as_of, registry=pb.registry)
t = mark("classifiers (ABC, ADC, RFM)", t)
result = _playbook_result(pb, prepared, customers)
t = mark("rules: match, capacity, actions, cut, summary", t)
pb.write(result)
t = mark("write outputs (customers.parquet, actions.csv, cut.csv, summary.json)", t)
json.dump({"marks": marks, "customers": customers.height,
           "actions": result.actions.height}, open(os.environ["BENCH_RESULT"], "w"))
"""


def interpreter_start() -> float:
    """Wall time of starting the interpreter alone (added to the import stage)."""
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([str(bench_run.TB_PY), "-c", "pass"], check=True)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def stages(size: str, repeat: int) -> dict:
    playbook = BENCH / "playbooks" / f"bench-{size}.yaml"
    start = interpreter_start()
    runs = []
    for _ in range(repeat):
        out = bench_run.LOGS / f".profile-{os.getpid()}.json"
        env = dict(os.environ, BENCH_RESULT=str(out))
        subprocess.run([str(bench_run.TB_PY), "-c", STAGES_CODE, str(playbook), str(BENCH), str(start)],
                       check=True, env=env, cwd=ROOT)
        runs.append(json.loads(out.read_text()))
        out.unlink()
    table = []
    for i, m in enumerate(runs[0]["marks"]):
        table.append({"stage": m["stage"], "info": m.get("info", False),
                      "s": statistics.median(r["marks"][i]["s"] for r in runs),
                      "peak_rss": statistics.median(r["marks"][i]["peak_rss"] for r in runs)})
    return {"size": size, "repeat": repeat, "stages": table}


# ----------------------------------------------------------------------------- part 2
# Each variant is a group_by("customer_id") over the Parquet file, collected with the streaming engine.
VARIANTS: dict[str, str] = {
    "floor: max date, n_unique(order_id), sum(amount)":
        "[d.max(), o.n_unique(), a.sum()]",
    "floor + min date":
        "[d.min().alias('f'), d.max(), o.n_unique(), a.sum()]",
    "floor, n_unique over positive lines by filter: o.filter(a > 0).n_unique()":
        "[d.max(), o.filter(a > 0).n_unique(), a.sum()]",
    "floor, n_unique over positive lines by when/then: when(a > 0).then(o).drop_nulls().n_unique()":
        "[d.max(), pl.when(a > 0).then(o).drop_nulls().n_unique(), a.sum()]",
    "floor without n_unique (max date, sum amount)":
        "[d.max(), a.sum()]",
    "tierbook's three queries over one scan, as the engine runs them (read_transactions + _queries)":
        "TIERBOOK",
    "tierbook's customer query alone (without the exceptions and totals queries, so without the shared scan)":
        "TIERBOOK_CUSTOMERS",
    "all of tierbook's features, written directly on the raw columns (no masking / units columns)":
        "[pl.len().alias('n'), pl.when(a > 0).then(o).drop_nulls().n_unique().alias('fr'), "
        "(a * 10000).round(0).cast(pl.Int64).sum().alias('u'), a.filter(a < 0).sum().alias('r'), "
        "(a < 0).sum().alias('nr'), d.min().alias('f'), d.max().alias('l'), a.count().alias('c')]",
}

VARIANT_CODE = r"""
import json, os, sys
import polars as pl
data, spec = sys.argv[1], sys.argv[2]
a, d, o = pl.col("amount"), pl.col("order_date"), pl.col("order_id")
if spec.startswith("TIERBOOK"):
    from engine.data import read_transactions
    from engine.features import _queries
    from engine.registry import get_registry
    queries = list(_queries(read_transactions(data), None, get_registry().features))
    out = pl.collect_all(queries if spec == "TIERBOOK" else queries[:1], engine="streaming")[0]
else:
    out = pl.scan_parquet(data).group_by("customer_id").agg(eval(spec)).collect(engine="streaming")
assert out.height > 0
"""


def variants(size: str, repeat: int, log: Path) -> dict:
    data = BENCH / "data" / f"tx_{size}.parquet"
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for i in range(repeat):
        for name, spec in VARIANTS.items():
            r = bench_run.measure([str(bench_run.TB_PY), "-c", VARIANT_CODE, str(data), spec], log)
            if r["exit"] != 0:
                sys.exit(f"variant failed: {name}; see {log}")
            runs[name].append(r)
            print(f"  round {i + 1} {r['wall_s']:6.2f} s {r['rss_bytes'] / 1e6:7.0f} MB  {name}", flush=True)
    table = []
    for name, rs in runs.items():
        table.append({"variant": name, "spec": VARIANTS[name],
                      "wall": bench_run.stats([r["wall_s"] for r in rs]),
                      "rss": bench_run.stats([r["rss_bytes"] for r in rs]),
                      "load": statistics.mean(r["load1_before"] for r in rs)})
    return {"size": size, "repeat": repeat, "variants": table}


def write_markdown(result: dict) -> None:
    st, va = result["stages"], result["variants"]
    lines = ["# Profile of `tierbook run` (generated part)", "",
             f"Generated by `bench/profile.py` on the {st['size']} set; medians of {st['repeat']} processes "
             "(stages) and {0} interleaved rounds (variants). Machine and noise: see RESULTS.md.".format(va["repeat"]),
             ""]
    lines += ["## Stages", "", "| stage | time | peak RSS during the stage |", "| --- | ---: | ---: |"]
    for s in st["stages"]:
        name = f"*{s['stage']}*" if s["info"] else s["stage"]
        lines.append(f"| {name} | {s['s']:.2f} s | {s['peak_rss'] / 1e6:,.0f} MB |")
    total = sum(s["s"] for s in st["stages"] if not s["info"])
    lines += ["", f"Sum of the stages (without the italic row, which repeats the query to time the "
              f"post-processing): {total:.2f} s.", "",
              "## One-pass query variants", "",
              "| variant | wall, median [min-max] | peak RSS, median [min-max] | load |",
              "| --- | ---: | ---: | ---: |"]
    for v in va["variants"]:
        lines.append(f"| {v['variant']} | {bench_run.fmt_s(v['wall'])} | {bench_run.fmt_mb(v['rss'])} | "
                     f"{v['load']:.1f} |")
    (BENCH / "PROFILE.generated.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="profile tierbook run and the one-pass query")
    ap.add_argument("--size", default="10m")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-stages", action="store_true")
    ap.add_argument("--skip-variants", action="store_true")
    args = ap.parse_args(argv)
    bench_run.LOGS.mkdir(parents=True, exist_ok=True)
    bench_run.ensure_data(args.size)
    log = bench_run.LOGS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.log"
    path = BENCH / "profile.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    if not args.skip_stages:
        print("stages ...", flush=True)
        result["stages"] = stages(args.size, args.repeat)
        for s in result["stages"]["stages"]:
            print(f"  {s['s']:6.2f} s {s['peak_rss'] / 1e6:7.0f} MB  {s['stage']}")
    if not args.skip_variants:
        print("query variants ...", flush=True)
        result["variants"] = variants(args.size, args.repeat, log)
    path.write_text(json.dumps(result, indent=1) + "\n")
    if "stages" in result and "variants" in result:
        write_markdown(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
