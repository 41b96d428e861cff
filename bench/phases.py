"""Where one ``tierbook run`` (or ``classify``) spends its wall time, CPU time and memory, phase by phase.

    .venv/bin/python bench/phases.py run bench/playbooks/bench-10m.yaml [--repeat 3]
    .venv/bin/python bench/phases.py classify bench/data/tx_10m.parquet -o /tmp/c.parquet [--repeat 3]

Each repeat is a fresh process that runs the command in-process (``engine.cli.main``, the function the
``tierbook`` command calls) with timers wrapped around the engine's functions that make up a run: the
playbook's loading, the probe and the feature pass (the streaming ``collect_all``), the recount, the
classifiers, the rules, the summary, the reconciliations, each file written, the manifest's hashes, the
fsyncs. A phase's figures include those of the phases under it (indented). CPU is user + system time of
every thread of the process (``time.process_time``): Polars' workers run while Python waits in a call, so a
phase's CPU is the work it caused, the figure to compare on a loaded machine; wall time is what a user
waits. Peak RSS is the process's high-water mark at the end of the phase, reset before each top-level phase
(``/proc/self/clear_refs``), so it is that phase's own peak.

Before the run, the child measures the interpreter's start (the time from the process's start, read from
``/proc/self/stat``, to its first line) and the imports the command makes before it reads data (``engine``'s
CLI and the modules the run imports; the plugins are imported by the registry while the playbook loads).
Medians over the repeats are printed as a Markdown table (``--json FILE`` writes every repeat's figures).

A ``run`` does some of its work on worker threads beside the main thread (the classes counted while the rules run;
the previous outputs' check, each file's hash, the customers file's read-back and each file's fsync while the next
file is written): such a phase shows up nested under whichever phase the main thread was in, and its CPU, being the
process's, includes the other threads' work meanwhile. Compare those phases by the whole write, not one by one.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, sys, time
t_main = time.perf_counter(); c_main = time.process_time()

def since_start():
    # seconds from this process's start (its starttime in /proc, clock ticks since boot) to now
    ticks = os.sysconf("SC_CLK_TCK")
    start = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]) / ticks
    return float(open("/proc/uptime").read().split()[0]) - start

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    return 0

def reset():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass

phases = []  # (depth, name, wall, cpu, peak)
start_s = since_start()
phases.append((0, "interpreter start (process start to the first line)", start_s, None, hwm()))
t = time.perf_counter(); c = time.process_time()
import engine.cli, engine.cli.playbook, engine.cli.classify  # what main() imports for the commands
import polars, engine.playbook, engine.playbook.write, engine.playbook.manifest, engine.io, engine.features
phases.append((0, "imports (CLI, Polars, engine: before any data is read)", time.perf_counter() - t,
               time.process_time() - c, hwm()))
reset()

import functools, importlib
from pathlib import Path as _P
stack = []

def label(name, args):
    for a in args:
        if isinstance(a, _P):
            return f"{name} {a.name}"
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], str) and name.endswith("output_hashes"):
            return name
    return name

def wrap(owner, attr, name, top=False):
    fn = getattr(owner, attr)
    if getattr(fn, "_phase", False):
        return
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        depth = len(stack)
        stack.append(name)
        if depth == 0:
            reset()
        t = time.perf_counter(); c = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            phases.append((depth, label(name, args), time.perf_counter() - t, time.process_time() - c, hwm()))
            stack.pop()
    inner._phase = True
    # replace it wherever a module of the engine or the plugins holds it under a name
    for mod in list(sys.modules.values()):
        mname = getattr(mod, "__name__", "") or ""
        if mname.split(".")[0] in ("engine", "plugins", "polars") or mod is owner:
            for k, v in list(vars(mod).items()):
                if v is fn:
                    setattr(mod, k, inner)

TARGETS = [
    ("engine.playbook.load", "load_playbook", "load the playbook (plugins, validation)"),
    ("engine.registry", "get_registry", "registry: load the plugins"),
    ("engine.cli.classify", "_classify_prepare", None),
    ("engine.run", "prepare", "read + feature pass (prepare)"),
    ("engine.data", "read_transactions", "open the input (schema, checks planned)"),
    ("engine.features", "_looks_ordered", "probe: the first rows written order by order?"),
    ("engine.features", "_compute", "the feature pass"),
    ("polars", "collect_all", "collect_all: the one scan (group_by, exceptions, totals)"),
    ("engine.features", "_dense_pass", "dense pass: the scan's batches into arrays by customer id (no hashing)"),
    ("engine.features", "_recount", "recount of customers in doubt"),
    ("engine.features", "complete_features", "complete_features (customer table, plugin tables)"),
    ("engine.run", "apply_classifiers", "classifiers (all, one with_columns)"),
    ("engine.run", "_fit", "fit"),
    ("engine.run", "_with_outputs", "classifiers' with_columns"),
    ("engine.playbook.evaluate", "evaluate_rules", "rules (actions, cut, control)"),
    ("engine.run", "summarize", "summary of classes"),
    ("engine.playbook.evaluate", "reconcile", "reconciliation"),
    ("engine.playbook.write", "write_outputs", "write the outputs (one set)"),
    ("engine.playbook.write", "with_actions", "customers + action columns (join)"),
    ("engine.playbook.manifest", "build_manifest", "manifest (versions, data fingerprint)"),
    ("engine.playbook.manifest", "check_replace", "check the previous outputs against their manifest"),
    ("engine.io", "write_output_set", "output set (generation, fsyncs, switch)"),
    ("engine.io", "_clean", "clean old generations"),
    ("engine.playbook.write", "_write_frame", "write"),
    ("engine.playbook.write", "_write_actions", "write"),
    ("engine.playbook.write", "_actions_csv_by_rule", "each rule's columns rendered once, the lines put together"),
    ("engine.io", "write_frame", "write_frame"),
    ("engine.io", "neutralise_formulas", "neutralise spreadsheet formulas"),
    ("engine.playbook.write", "_read_back", "read back"),
    ("engine.playbook.manifest", "output_hashes", "SHA-256 of the written files"),
    ("engine.io", "_fsync_file", "fsync"),
    ("engine.io", "_fsync_dir", "fsync dir"),
    ("engine.cli.playbook", "format_result", "format the summary for the terminal"),
    ("engine.cli.classify", "_write", None),
    ("engine.io", "atomic_write_frame", "write the output file (atomic)"),
]
for modname, attr, name in TARGETS:
    try:
        mod = importlib.import_module(modname)
    except ImportError:
        continue
    if name is not None and hasattr(mod, attr):
        wrap(mod, attr, name)

argv = json.loads(sys.argv[1])
from engine.cli import main
import contextlib, io
out = io.StringIO()
t = time.perf_counter(); c = time.process_time()
with contextlib.redirect_stdout(out):
    code = main(argv)
phases.append((0, "the command (main), whole", time.perf_counter() - t, time.process_time() - c, None))
phases.append((0, "whole process so far", since_start(), time.process_time(), None))
print(json.dumps({"code": code, "phases": phases}))
sys.stdout.flush()
os._exit(0)
"""


def one(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"phases: the run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        raise SystemExit(f"phases: tierbook {' '.join(argv)} exited with {result['code']}:\n{proc.stderr[-3000:]}")
    return result


def table(runs: list[dict]) -> str:
    """Medians per phase (matched by position and name: every run makes the same calls)."""
    rows = []
    first = runs[0]["phases"]
    # phases are appended when they end (children before parents): put each parent above its children
    order = _tree(first)
    for i in order:
        depth, name, *_ = first[i]
        walls = [r["phases"][i][2] for r in runs]
        cpus = [r["phases"][i][3] for r in runs if r["phases"][i][3] is not None]
        peaks = [r["phases"][i][4] for r in runs if r["phases"][i][4] is not None]
        rows.append((depth, name, statistics.median(walls), statistics.median(cpus) if cpus else None,
                     statistics.median(peaks) if peaks else None))
    out = ["| phase | wall s | CPU s | peak RSS MB |", "| --- | ---: | ---: | ---: |"]
    for depth, name, wall, cpu, peak in rows:
        pad = "&nbsp;&nbsp;" * depth * 2
        out.append(f"| {pad}{name} | {wall:.3f} | {'' if cpu is None else f'{cpu:.3f}'} | "
                   f"{'' if peak is None else f'{peak / 1e6:,.0f}'} |")
    return "\n".join(out)


def _tree(phases: list) -> list[int]:
    """Indices in display order: a phase before the deeper phases that ended just before it."""
    order: list[int] = []
    pending: list[list[int]] = [[]]  # children collected per depth
    for i, (depth, *_rest) in enumerate(phases):
        while len(pending) <= depth + 1:
            pending.append([])
        children = pending[depth + 1]
        pending[depth + 1] = []
        pending[depth].append(i)
        _subtrees[i] = children
    for i in pending[0]:
        _emit(i, order)
    return order


_subtrees: dict[int, list[int]] = {}


def _emit(i: int, order: list[int]) -> None:
    order.append(i)
    for c in _subtrees.get(i, []):
        _emit(c, order)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    options = {"--repeat": "3", "--json": None}
    command = []
    while argv:  # this script's own options, anywhere; everything else is the tierbook command
        arg = argv.pop(0)
        if arg in options and argv:
            options[arg] = argv.pop(0)
        else:
            command.append(arg)
    repeat = int(options["--repeat"])
    json_path = Path(options["--json"]) if options["--json"] else None
    load = os.getloadavg()[0]
    runs = [one(command) for _ in range(repeat)]
    print(f"tierbook {' '.join(command)}: median of {repeat} run(s), 1-minute load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after\n")
    print(table(runs))
    if json_path:
        json_path.write_text(json.dumps({"command": command, "load": load, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
