"""CLV benchmark: tierbook's clv classifier against lifetimes and pymc-marketing on the same customers.

    .venv/bin/python bench/clv.py [--size 10m] [--repeat 3] [--tools features,clv,lifetimes,pymc-clv]

Each tool runs as a whole, separate process (interpreter start, imports, reading, computing, writing
one row per customer), measured like bench/run.py (wall time and peak RSS of that process, wait4),
in interleaved rounds:

* ``features``: ``tierbook classify DATA --classifier adc``: the one-pass features and a trivial
  classifier, the reference the CLV's cost is counted beyond;
* ``clv``: ``tierbook classify DATA --classifier clv``: the features, the BTYD summary (its query in
  the same scan), the BG/NBD and Gamma-Gamma fits and every customer's P(alive), expected purchases,
  expected spend, CLV and tier;
* ``lifetimes``: bench/baseline_lifetimes.py (lifetimes 0.11.3: the summary, both fits, the same four
  predictions for every customer);
* ``pymc-clv``: bench/baseline_pymc_clv.py (pymc-marketing: ``rfm_summary``, MAP fits, the same
  predictions).

The first round's outputs are compared customer by customer (tierbook's clv against lifetimes' and
pymc-marketing's: P(alive), expected purchases, expected spend, CLV). Writes bench/clv-results.json and
bench/CLV.md. The baselines need bench/.venv-baselines (bench/run.py creates it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: measure, machine, the paths)

RESULTS_JSON = bench.BENCH / "clv-results.json"
RESULTS_MD = bench.BENCH / "CLV.md"
TOOLS = ["features", "clv", "lifetimes", "pymc-clv"]


def command(tool: str, size: str) -> tuple[list[str], Path]:
    data = bench.DATA / f"tx_{size}.parquet"
    out = bench.OUT / f"clv-{tool}_{size}.parquet"
    if tool == "features":
        return [str(bench.TB_BIN), "classify", str(data), "--classifier", "adc", "-o", str(out)], out
    if tool == "clv":
        return [str(bench.TB_BIN), "classify", str(data), "--classifier", "clv", "-o", str(out)], out
    script = {"lifetimes": "baseline_lifetimes.py", "pymc-clv": "baseline_pymc_clv.py"}[tool]
    return [str(bench.BL_PY), str(bench.BENCH / script), str(data), str(out)], out


def agreement(size: str, base: str) -> dict:
    """Max relative differences between tierbook's and a baseline's per-customer predictions."""
    ours = pl.read_parquet(command("clv", size)[1])
    theirs = pl.read_parquet(command(base, size)[1])
    theirs = theirs.select("customer_id", *[pl.col(c).alias(f"{base}_{c}") for c in
                                            ("p_alive", "expected_purchases", "expected_value", "clv")])
    both = ours.join(theirs, on="customer_id", how="inner")
    out = {"customers_tierbook": ours.height, f"customers_{base}": theirs.height, "joined": both.height}
    for a, b in (("clv_p_alive", "p_alive"), ("clv_expected_purchases", "expected_purchases"),
                 ("clv_expected_value", "expected_value"), ("clv", "clv")):
        b = f"{base}_{b}"
        rel = ((both[a] - both[b]).abs() / both[b].abs().clip(lower_bound=1e-9)).max()
        out[a] = float(rel)
    return out


def compile_installed(python: Path) -> None:
    """Compile the installed packages of ``python``'s environment to bytecode, as ``pip install`` does.

    ``uv pip install`` does not (without ``--compile-bytecode``), and where ``PYTHONDONTWRITEBYTECODE`` is set
    (it is on the benchmark machine) no run writes it either: every process then compiled Polars, NumPy and
    SciPy (tierbook) or pandas, SciPy, lifetimes, PyMC and PyTensor (the baselines) from source again, a
    cost no installed package has. Both sides are compiled, once (compileall skips what is up to date).
    Files that do not compile (some packages ship templates) are left as they are.
    """
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([str(python), "-m", "compileall", "-q", "-j", "0", purelib], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="10m")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default=",".join(TOOLS))
    args = ap.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",")]
    bench.OUT.mkdir(parents=True, exist_ok=True)
    bench.LOGS.mkdir(parents=True, exist_ok=True)
    bench.ensure_data(args.size)
    if any(t in ("lifetimes", "pymc-clv") for t in tools):
        bench.ensure_baselines_venv()
    bench.compile_bytecode()
    compile_installed(bench.TB_PY)
    if any(t in ("lifetimes", "pymc-clv") for t in tools):
        compile_installed(bench.BL_PY)
    log = bench.LOGS / "clv.log"
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    checks: dict[str, dict] = {}
    for round_ in range(args.repeat):
        for tool in tools:
            cmd, _ = command(tool, args.size)
            r = bench.measure(cmd, log)
            r["round"] = round_
            runs[tool].append(r)
            print(f"round {round_ + 1}: {tool}: {r['wall_s']:.2f} s, CPU {r['user_s'] + r['sys_s']:.2f} s, "
                  f"{r['rss_bytes'] / 1e6:.0f} MB, exit {r['exit']}, "
                  f"load {r['load1_before']:.1f}", flush=True)
            if r["exit"] != 0:
                sys.exit(f"{tool} failed (exit {r['exit']}): see {log}")
        if round_ == 0:
            for base in ("lifetimes", "pymc-clv"):
                if {"clv", base} <= set(tools):
                    checks[base] = agreement(args.size, base)
                    print(f"agreement with {base}: {checks[base]}", flush=True)
    results = {"size": args.size, "runs": runs, "machine": bench.machine(), "agreement": checks,
               "command": " ".join([".venv/bin/python", "bench/clv.py", *(argv if argv is not None else sys.argv[1:])])}
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    write_report(results)
    print(f"wrote {RESULTS_JSON} and {RESULTS_MD}")
    return 0


def write_report(results: dict) -> None:
    runs = results["runs"]
    med = {t: {"wall": statistics.median(r["wall_s"] for r in rs),
               "cpu": statistics.median(r["user_s"] + r["sys_s"] for r in rs),
               "rss": statistics.median(r["rss_bytes"] for r in rs) / 1e6,
               "lo": min(r["wall_s"] for r in rs), "hi": max(r["wall_s"] for r in rs)} for t, rs in runs.items()}
    loads = [r["load1_before"] for rs in runs.values() for r in rs]
    lines = [
        "# CLV benchmark (bench/clv.py)", "",
        f"`{results['size']}` set: {len(next(iter(runs.values())))} interleaved rounds, whole processes, median "
        f"(min-max) wall time, median CPU time (user + system, all threads) and median peak RSS. Load average "
        f"before the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} cores"
        + (" -- measured under load (other sessions running their tests), so the ratios mean more than the "
           "seconds." if max(loads) > (os.cpu_count() or 1) + 0.5 else " (the benchmark's own processes)."), "",
        f"Command: `{results.get('command', '')}` (from the repository root; the baselines run in "
        f"bench/.venv-baselines, bench/requirements-baselines.txt).", "",
        "| tool | wall | CPU | peak RSS |", "| --- | ---: | ---: | ---: |",
    ]
    for tool, m in med.items():
        lines.append(f"| {tool} | {m['wall']:.2f} s ({m['lo']:.2f}-{m['hi']:.2f}) | {m['cpu']:.2f} s | "
                     f"{m['rss']:,.0f} MB |")
    lines.append("")
    if "features" in med and "clv" in med:
        lines.append(f"CLV beyond the features (clv - features): wall {med['clv']['wall'] - med['features']['wall']:.2f} s, "
                     f"CPU {med['clv']['cpu'] - med['features']['cpu']:.2f} s (target: at most 3 s).")
    for base in ("lifetimes", "pymc-clv"):
        if base in med and "clv" in med:
            lines.append(f"tierbook clv vs {base}: {med[base]['wall'] / med['clv']['wall']:.1f}x faster in wall time, "
                         f"{med[base]['cpu'] / med['clv']['cpu']:.1f}x in CPU time (target 10x); {base} takes "
                         f"{med[base]['rss'] / med['clv']['rss']:.1f}x tierbook's peak memory")
    for base, check in results.get("agreement", {}).items():
        lines += ["", f"Agreement with {base}, largest relative difference per customer: {json.dumps(check)}"]
    # A hand-written "## Notes" section (what the run was, what it shows) is kept under the new figures.
    notes = RESULTS_MD.read_text().partition("\n## Notes")[2] if RESULTS_MD.exists() else ""
    RESULTS_MD.write_text("\n".join(lines) + "\n" + (f"\n## Notes{notes}" if notes else ""))


if __name__ == "__main__":
    raise SystemExit(main())
