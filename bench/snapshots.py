"""Eight quarterly snapshots with migration and KPIs against one snapshot's ``tierbook run`` (issue 11).

    .venv/bin/python bench/snapshots.py [--size 10m] [--rounds 3] [--periods 8]

``--size`` takes bench/run.py's names, variants included: ``10m-numbered`` is the same set with its
order ids numbered as the orders come in the file (as shops number invoices), where both runs count
orders from boundaries (issue 14); ``10m`` itself (order ids scrambled) is hashed by both.

Both are whole ``tierbook run`` processes on the same playbook (bench/playbooks/bench-10m.yaml: ABC,
ADC, RFM, five rules, every output written) and the same generated data (bench/generate.py, seeded:
10M lines, 1M customers, 2022-01-01 to 2024-12-31):

* ``one``: ``tierbook run bench-10m.yaml`` (as of the day after the last transaction, 2025-01-01);
* ``snapshots``: ``tierbook run bench-10m.yaml --every quarter --periods 8 --end 2025-01-01``: eight
  snapshots from one scan, each classified, rules on the last with ``*_prev`` columns, migration of
  every label column, KPIs, cohorts, values, and the six extra files in the same output set.

Each is measured as a fresh process (wall time, and peak RSS from ``wait4`` through bench/run.py's
launcher), the two interleaved round by round so that load from other processes hits both alike; the
ratios compare medians of the same session. CPU time (user + system of every thread, from ``wait4``) is
printed beside them: on a shared machine it is the steadier figure to judge a change by. Writes bench/snapshots-results.json and prints a table
for bench/SNAPSHOTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import DATA, LOGS, TB_BIN, compile_bytecode, ensure_data, machine, measure, tool_command  # noqa: E402

RESULTS = BENCH / "snapshots-results.json"
TARGETS = {"time": 2.0, "memory": 1.5}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="10m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--periods", type=int, default=8)
    args = ap.parse_args(argv)
    ensure_data(args.size)
    compile_bytecode()  # as an installed copy runs: no module compiled again in every process
    LOGS.mkdir(parents=True, exist_ok=True)
    playbook = tool_command("tierbook", args.size)[0][2]  # a variant: its set's playbook pointed at its data
    out = DATA / "out" / "snapshots" / args.size  # one directory per set: each is its own playbook's outputs
    commands = {
        "one": [str(TB_BIN), "run", str(playbook), "--output-dir", str(out / "one")],
        "snapshots": [str(TB_BIN), "run", str(playbook), "--output-dir", str(out / "snapshots"),
                      "--every", "quarter", "--periods", str(args.periods), "--end", "2025-01-01"],
    }
    log = LOGS / f"snapshots-{args.size}.log"
    runs: dict[str, list[dict]] = {k: [] for k in commands}
    for r in range(args.rounds):
        for name, cmd in commands.items():
            result = measure(cmd, log)
            if result["exit"] != 0:
                print(f"{name} failed (exit {result['exit']}); see {log}", file=sys.stderr)
                return 1
            runs[name].append(result)
            print(f"round {r + 1} {name:<10} {result['wall_s']:7.2f} s  {result['rss_bytes'] / 2**30:5.2f} GiB  "
                  f"CPU {result['user_s'] + result['sys_s']:6.2f} s  (load {result['load1_before']:.1f}; "
                  f"orders counted by {result.get('orders', '?')})", flush=True)
    med = {k: {"wall_s": statistics.median(x["wall_s"] for x in v),
               "rss_gib": statistics.median(x["rss_bytes"] for x in v) / 2**30,
               "cpu_s": statistics.median(x["user_s"] + x["sys_s"] for x in v)} for k, v in runs.items()}
    ratio = {"time": med["snapshots"]["wall_s"] / med["one"]["wall_s"],
             "memory": med["snapshots"]["rss_gib"] / med["one"]["rss_gib"]}
    # on a shared machine wall times are mostly waiting for a core: CPU (user + system, every thread) is the
    # steadier figure to compare changes by; the targets are on wall time and peak memory
    cpu_ratio = med["snapshots"]["cpu_s"] / med["one"]["cpu_s"]
    summary = {"size": args.size, "periods": args.periods, "rounds": args.rounds, "runs": runs, "median": med,
               "ratio": ratio, "cpu_ratio": cpu_ratio, "targets": TARGETS, "cpus": os.cpu_count(),
               "load_after": os.getloadavg(), "machine": machine()}
    results = RESULTS if args.size == "10m" else RESULTS.with_name(f"snapshots-results-{args.size}.json")
    results.write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print("| run | median wall (s) | median peak RSS (GiB) | median CPU (s) |\n| --- | --- | --- | --- |")
    for k in commands:
        print(f"| {k} | {med[k]['wall_s']:.2f} | {med[k]['rss_gib']:.2f} | {med[k]['cpu_s']:.2f} |")
    print(f"CPU (user + system): {cpu_ratio:.2f}x")
    m = summary["machine"]
    print(f"measured on host {m['host']} ({m['cpu']}, {m['cores']} cores), tierbook {m['tierbook_commit']} "
          f"(uncommitted files in engine/ and plugins/: {m['engine_uncommitted_files']})")
    for k, target in TARGETS.items():
        print(f"{k}: {ratio[k]:.2f}x (target at most {target}x: {'met' if ratio[k] <= target else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
