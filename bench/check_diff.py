"""How fast `tierbook check` and `tierbook diff` are: the static analysis of a 200-rule playbook, and both
commands at 1M customers against `tierbook run` on the same data, in the same session.

    .venv/bin/python bench/check_diff.py --out bench/CHECK.md          # --size 10m --repeat 3 --rules 200

1. *Static analysis*: a 200-rule playbook over the built-in classifiers (ranges on features, label lists,
   NOT, OR, arithmetic the analysis cannot decide; generated with a fixed seed, written beside the data), loaded
   once; `engine.playbook.check.static_check` is timed in this process, median of ``--repeat`` x 5 runs.
2. *1M customers*: the 10M-row set of bench/generate.py (1M customers; generated into bench/data/ when
   missing) and bench/playbooks/bench-10m.yaml. Each command runs as a whole process (interpreter start to
   exit; wall time and peak RSS of that process, as bench/run.py measures): `tierbook run` (writes its four
   outputs), `tierbook check --json` (static analysis, then the data), `tierbook diff --set abc.a=0.7 --csv`
   (both sides, the changed customers written), interleaved (run, check, diff, run, check, diff, ...). The
   ratio is each command's median over run's median. The 1-minute load average before each run is recorded:
   on a shared machine the ratios, measured side by side, say more than the seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

_spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
bench_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_run)


def rules_playbook(n: int, path: Path, data: str, seed: int = 16) -> Path:
    """A playbook of ``n`` generated rules over abc, adc and rfm."""
    rnd = random.Random(seed)
    abc, adc = ["A", "B", "C"], ["active", "new", "dormant", "churned", "no-purchase", "prospect"]
    tiers = ["high-value", "potential", "ordinary"]

    def pick(options: list[str]) -> str:
        return ", ".join(f"'{o}'" for o in rnd.sample(options, rnd.randint(1, len(options) - 1)))

    def clause() -> str:
        k = rnd.randint(0, 9)
        if k == 0:
            return f"abc IN ({pick(abc)})"
        if k == 1:
            return f"adc IN ({pick(adc)})"
        if k == 2:
            return f"value_tier {'=' if rnd.random() < 0.5 else '<>'} '{rnd.choice(tiers)}'"
        if k == 3:
            lo = rnd.randint(0, 400)
            return f"recency_days BETWEEN {lo} AND {lo + rnd.randint(0, 300)}"
        if k == 4:
            return f"monetary {rnd.choice(['>', '>=', '<', '<='])} {rnd.randint(0, 5000)}"
        if k == 5:
            return f"frequency {rnd.choice(['>', '<', '='])} {rnd.randint(0, 20)}"
        if k == 6:
            return f"NOT (rfm_r = {rnd.randint(1, 5)})"
        if k == 7:
            return f"(rfm_f >= {rnd.randint(1, 5)} OR rfm_m >= {rnd.randint(1, 5)})"
        if k == 8:
            return f"tenure_days > {rnd.randint(0, 1000)} AND returns = 0"
        return f"monetary / frequency > {rnd.randint(10, 500)}"  # arithmetic: not decided

    lines = ["name: bench-rules", "data:", f"  transactions: {data}", "  map: {customer_id: CustomerID, "
             "order_id: InvoiceNo, order_date: InvoiceDate, quantity: Quantity, unit_price: UnitPrice}",
             "classifiers:", "  abc: {}", "  adc: {}", "  rfm: {}", "hit_policy: first", "rules:"]
    for i in range(n):
        when = " AND ".join(clause() for _ in range(rnd.randint(1, 4)))
        lines += [f"  - name: rule-{i:03d}", f"    when: {when}", f"    action: action-{i % 17}",
                  "    channel: email", "    owner: crm"]
    path.write_text("\n".join(lines) + "\n")
    return path


def time_static(n_rules: int, repeat: int) -> dict:
    import engine
    from engine.playbook.check import static_check

    work = bench_run.DATA / "playbooks"
    work.mkdir(parents=True, exist_ok=True)
    path = rules_playbook(n_rules, work / f"rules-{n_rules}.yaml", str(engine.sample_path()))
    pb = engine.load_playbook(path)
    times, cpu, report = [], [], None
    for _ in range(repeat * 5):
        t0, c0 = time.perf_counter(), time.process_time()
        report = static_check(pb)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    counts = {s: report.count(s) for s in ("ok", "dead", "shadowed", "unknown")}
    return {"rules": n_rules, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "median_cpu_s": statistics.median(cpu),
            "runs": len(times), "verdicts": counts, "overlaps": len(report.overlaps),
            "undecided_pairs": report.undecided_pairs, "load1": os.getloadavg()[0]}


def time_commands(size: str, repeat: int) -> dict:
    data = bench_run.ensure_data(size)
    playbook = BENCH / "playbooks" / f"bench-{size}.yaml"
    tb = str(bench_run.TB_BIN)
    csv = bench_run.OUT / f"diff_{size}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    commands = {
        "run": [tb, "run", str(playbook)],
        "check": [tb, "check", str(playbook), "--json"],
        "diff": [tb, "diff", str(playbook), "--set", "abc.a=0.7", "--csv", str(csv)],
    }
    log = bench_run.LOGS / f"check_diff_{size}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {k: [] for k in commands}
    for _ in range(repeat):
        for name, cmd in commands.items():
            r = bench_run.measure(cmd, log)
            if r["exit"] != 0:
                sys.exit(f"{name} failed (exit {r['exit']}); see {log}")
            runs[name].append(r)
    out = {"size": size, "data": str(data.relative_to(ROOT)), "runs": runs}
    base = statistics.median(r["wall_s"] for r in runs["run"])
    out["median_s"] = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    out["ratio_to_run"] = {k: out["median_s"][k] / base for k in runs}
    out["peak_rss_mb"] = {k: statistics.median(r["rss_bytes"] for r in v) / 1e6 for k, v in runs.items()}
    out["load1"] = [r["load1_before"] for v in runs.values() for r in v]
    out["changed_customers"] = sum(1 for _ in open(csv)) - 1
    return out


def report(results: dict) -> str:
    s, c = results["static"], results.get("commands")
    m = results["machine"]
    lines = ["# check and diff: speed", "",
             "Generated by `bench/check_diff.py` (its docstring says what is measured). Machine: "
             f"{m['cpus']} CPUs, {m['platform']}; tierbook commit {m['commit']}; {results['when']}.", ""]
    lines += ["## Static analysis of a 200-rule playbook", "",
              f"{s['rules']} generated rules (abc, adc, rfm labels, feature ranges, NOT, OR, and undecidable "
              f"arithmetic): **median {s['median_s'] * 1000:.0f} ms** (min {s['min_s'] * 1000:.0f}, max "
              f"{s['max_s'] * 1000:.0f}; {s['runs']} runs in one process; target: under 1 s), of which the "
              f"process had the CPU for {s['median_cpu_s'] * 1000:.0f} ms (median). Verdicts: "
              + ", ".join(f"{v} {k}" for k, v in s["verdicts"].items())
              + f"; {s['overlaps']:,} overlapping pairs proven, {s['undecided_pairs']:,} undecided. "
              f"Load average (1 min) at the end: {s['load1']:.1f}.", ""]
    if c:
        lines += [f"## check and diff at 1M customers ({c['size']} rows), against `tierbook run`", "",
                  "| command | median wall s | ratio to run | median CPU s (user + sys) | CPU ratio | peak RSS MB | "
                  "runs (wall s) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        cpu = {k: statistics.median(r["user_s"] + r["sys_s"] for r in v) for k, v in c["runs"].items()}
        for k in c["runs"]:
            walls = ", ".join(f"{r['wall_s']:.2f}" for r in c["runs"][k])
            lines.append(f"| `tierbook {k}` | {c['median_s'][k]:.2f} | {c['ratio_to_run'][k]:.2f} | {cpu[k]:.1f} | "
                         f"{cpu[k] / cpu['run']:.2f} | {c['peak_rss_mb'][k]:,.0f} | {walls} |")
        loads = c["load1"]
        lines += ["", f"Target: check and diff at most 1.5x a run. The diff changed {c['changed_customers']:,} "
                  f"customers' actions (`abc.a` 0.8 -> 0.7). Load average (1 min) before the runs: "
                  f"{min(loads):.1f} to {max(loads):.1f}"
                  + (" -- **measured under load** (the machine was shared with other test and benchmark runs); "
                     "the commands ran interleaved, so the ratios compare like with like."
                     if max(loads) > 1.5 else "."), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="10m", help="the transaction set (default 10m: 1M customers)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--static-only", action="store_true")
    ap.add_argument("--out", type=Path, help="write the Markdown report here (and the JSON beside it)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the JSON beside --out")
    args = ap.parse_args(argv)
    if args.report_only:
        args.out.write_text(report(json.loads(args.out.with_suffix(".json").read_text())))
        return 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    results = {"when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": {"cpus": os.cpu_count(), "platform": sys.platform, "commit": commit},
               "static": time_static(args.rules, args.repeat)}
    if not args.static_only:
        results["commands"] = time_commands(args.size, args.repeat)
    text = report(results)
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
