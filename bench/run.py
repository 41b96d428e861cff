"""The benchmark, in one command.

    .venv/bin/python bench/run.py [--sizes 10m,50m] [--repeat 3] [--tools floor,tierbook,...]

With no options this is the whole benchmark (see bench/README.md): the 10M
block with every tool, tierbook run on 50M (streaming), and ``tierbook --help``.
``--sizes 200m`` adds a 200M-row block measured like the 50M one (floor and
tierbook run); its data set is generated in blocks (bench/generate.py).

1. Generates the data sets that are missing (bench/generate.py, seeded): 1M
   for the agreement check, then each size timed.
2. Creates bench/.venv-baselines (pandas, DuckDB, pymc-marketing; never in
   tierbook's environment) if it does not exist.
3. Agreement check on the 1M set, before anything is timed: every baseline's
   per-customer output is compared with tierbook's customers.parquet (last
   date / recency, frequency, monetary, and the class labels where the baseline
   computes tierbook's). A baseline that disagrees stops the benchmark.
4. Times each tool as a whole, separate process (interpreter start, imports,
   reading, computing, writing): wall time, and peak RSS from ``wait4`` on
   that very child. Runs are interleaved (floor, tierbook, ..., floor,
   tierbook, ...) so that load from other processes hits every tool alike.
5. Writes bench/results.json (merged per size, so sizes can be re-run one at a
   time) and bench/RESULTS.md (tables, ratios, targets, machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
OUT = DATA / "out"
LOGS = DATA / "logs"
TB_PY = ROOT / ".venv" / "bin" / "python"
TB_BIN = ROOT / ".venv" / "bin" / "tierbook"
BL_VENV = BENCH / ".venv-baselines"
BL_PY = BL_VENV / "bin" / "python"
RESULTS_JSON = BENCH / "results.json"
RESULTS_MD = BENCH / "RESULTS.md"

SIZES = {"1m": 1_000_000, "10m": 10_000_000, "50m": 50_000_000, "200m": 200_000_000}
# Also accepted: any "<n>k" / "<n>m" (small sizes try the mechanics), "<size>-messy", the messy variant of a
# set (bench/generate.py --messy: empty customer ids, order ids, dates and amounts, zero amounts), and
# "<size>-numbered" / "<size>-shuffled", the set with its order ids numbered as they come in the file / its rows
# shuffled (bench/generate.py --variant; issue 14: the ordered-input path and the fallback).
SUFFIXES = ("-messy", "-numbered", "-shuffled")


def base_size(size: str) -> str:
    """The size a variant is made from ("10m-shuffled" -> "10m")."""
    for suffix in SUFFIXES:
        size = size.removesuffix(suffix)
    return size


def variant(size: str) -> str | None:
    """"numbered" or "shuffled" for those variants, else None."""
    return next((v for v in ("numbered", "shuffled") if size.endswith(f"-{v}")), None)


def size_rows(size: str) -> int | None:
    """Rows of a size name ("10m", "20k", "1m-messy", "10m-shuffled"), None if it is not one."""
    base = base_size(size)
    if base in SIZES:
        return SIZES[base]
    try:
        n = float(base[:-1])
    except ValueError:
        return None
    return int(n * {"k": 1_000, "m": 1_000_000}[base[-1]]) if base[-1:] in ("k", "m") and n > 0 else None
ALL_TOOLS = ["floor", "tierbook", "tierbook-classify", "polars-script", "duckdb", "pandas", "pymc-marketing"]
# At 50M and 200M: tierbook run (the streaming engine, peak RSS against the input's in-memory size) and the floor.
BIG_TOOLS = ["floor", "tierbook"]
BIG_SIZES = ["50m", "200m"]
# Sizes whose input is too large to load for an in-memory figure: estimated from the Parquet schema x rows.
SCHEMA_ESTIMATE_SIZES = ["200m"]
LABELS = ["abc", "adc", "rfm_r", "rfm_f", "rfm_m", "rfm_segment", "value_tier"]

TARGETS = {
    "wall_vs_floor": 1.4, "rss_vs_floor": 1.3, "pandas_speedup": 3.0, "pymc_speedup": 12.0,
    "rss_50m_gb": 3.0, "help_s": 0.5,
}


# --------------------------------------------------------------------------- tools
def tool_command(tool: str, size: str) -> tuple[list[str], Path]:
    """The command line of one tool on one size, and the per-customer file it writes."""
    data = DATA / f"tx_{size}.parquet"
    out = OUT / f"{tool}_{size}.parquet"
    scripts = {"floor": (TB_PY, "floor.py"), "polars-script": (TB_PY, "baseline_polars.py"),
               "duckdb": (BL_PY, "baseline_duckdb.py"), "pandas": (BL_PY, "baseline_pandas.py"),
               "pymc-marketing": (BL_PY, "baseline_pymc.py")}
    if tool == "tierbook":
        playbook = BENCH / "playbooks" / f"bench-{size}.yaml"
        base = base_size(size)
        if variant(size) and (BENCH / "playbooks" / f"bench-{base}.yaml").exists():
            # a variant: its set's own playbook, pointed at the variant's data (the same rules and outputs)
            playbook = DATA / "playbooks" / f"bench-{size}.yaml"
            playbook.parent.mkdir(parents=True, exist_ok=True)
            text = (BENCH / "playbooks" / f"bench-{base}.yaml").read_text()
            text = text.replace(f"name: bench-{base}", f"name: bench-{size}").replace(
                f"transactions: ../data/tx_{base}.parquet", f"transactions: {data}").replace(
                f"dir: out/bench-{base}", f"dir: out/bench-{size}")
            playbook.write_text(text)
        elif not playbook.exists():  # a size without a committed playbook: the 1M one, pointed at this size's data
            playbook = DATA / "playbooks" / f"bench-{size}.yaml"
            playbook.parent.mkdir(parents=True, exist_ok=True)
            text = (BENCH / "playbooks" / "bench-1m.yaml").read_text()
            text = text.replace("name: bench-1m", f"name: bench-{size}").replace(
                "transactions: ../data/tx_1m.parquet", f"transactions: {data}").replace(
                "dir: out/bench-1m", f"dir: out/bench-{size}")
            playbook.write_text(text)
        return [str(TB_BIN), "run", str(playbook)], playbook.parent / "out" / f"bench-{size}" / "customers.parquet"
    if tool == "tierbook-classify":
        return [str(TB_BIN), "classify", str(data), "-o", str(out)], out
    py, script = scripts[tool]
    return [str(py), str(BENCH / script), str(data), str(out)], out


# A tiny launcher process starts each tool. On Linux a child's ru_maxrss keeps the high-water mark of
# the process it was forked from (it survives execve), so forking the tools straight from this script,
# which holds Polars and the check's frames, would put a floor of this script's RSS under every number.
# The launcher is a bare interpreter (~10 MB) that forks, execs the tool and reports wait4's figures.
LAUNCHER = r"""
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(os.environ["BENCH_RESULT"], "w") as fh:
    json.dump({"wall_s": wall, "rss_bytes": ru.ru_maxrss * 1024, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
               "exit": os.waitstatus_to_exitcode(status)}, fh)
"""


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` as a fresh process: its wall time and peak RSS (ru_maxrss of that process via wait4), and,
    for tierbook, how it counted orders (the ``orders counted by ...`` line it printed)."""
    load = os.getloadavg()[0]
    result = LOGS / f".result-{os.getpid()}.json"
    start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        env = dict(os.environ, BENCH_RESULT=str(result))
        subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *cmd], stdout=fh, stderr=fh, cwd=ROOT, env=env)
    r = json.loads(result.read_text())
    result.unlink()
    r["load1_before"] = load
    with open(log, "rb") as fh:
        fh.seek(start)
        said = [line.strip() for line in fh.read().decode(errors="replace").splitlines()
                if line.strip().startswith("orders counted by ")]
    if said:
        r["orders"] = said[-1].removeprefix("orders counted by ")
    return r


# ------------------------------------------------------------------------ set-up
def ensure_data(size: str) -> Path:
    path = DATA / f"tx_{size}.parquet"
    if not path.exists():
        need = size_rows(size) * 60  # bytes, generous: the file is ~10 B/row, generation peaks higher in memory
        free = shutil.disk_usage(DATA).free
        if free < need:
            sys.exit(f"not enough disk for {path} ({free / 1e9:.1f} GB free, want {need / 1e9:.1f} GB)")
        base = base_size(size)
        if variant(size):  # made from the set itself, which is generated first when missing
            source = ensure_data(base)
            print(f"writing {path} ({variant(size)}) ...", flush=True)
            subprocess.run([str(TB_PY), str(BENCH / "generate.py"), "--rows", base, "--variant", variant(size),
                            "--base", str(source), "--out", str(path)], check=True)
            return path
        print(f"generating {path} ...", flush=True)
        subprocess.run([str(TB_PY), str(BENCH / "generate.py"), "--rows", base, "--out", str(path),
                        *(["--messy"] if size.endswith("-messy") else [])], check=True)
    return path


def ensure_baselines_venv() -> None:
    if BL_PY.exists():
        return
    print(f"creating {BL_VENV} (pandas, DuckDB, pymc-marketing) ...", flush=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(BL_VENV)], check=True)
    subprocess.run([str(BL_PY), "-m", "pip", "install", "-q", "-r", str(BENCH / "requirements-baselines.txt")],
                   check=True)


# ------------------------------------------------------------------ agreement check
def check_agreement(tools: list[str], log: Path) -> dict[str, str]:
    """Run every tool once on the 1M set and compare its per-customer output with tierbook's."""
    import polars as pl

    size = "1m"
    data = ensure_data(size)
    verdicts: dict[str, str] = {}
    runs = {}
    ref = "tierbook" if "tierbook" in tools else "tierbook-classify"
    for tool in [ref, *[t for t in tools if t != ref]]:
        cmd, out = tool_command(tool, size)
        if out.exists():
            out.unlink()
        r = measure(cmd, log)
        if r["exit"] != 0:
            sys.exit(f"check: {tool} failed (exit {r['exit']}); see {log}")
        runs[tool] = out
    tb = pl.read_parquet(runs[ref]).select(
        "customer_id", "last_order", "last_activity", "recency_days", "frequency", "monetary",
        *[pl.col(c).cast(pl.String) for c in LABELS])
    n = tb.height
    problems: list[str] = []

    def joined(other: pl.DataFrame, name: str) -> pl.DataFrame | None:
        if other.height != n or other["customer_id"].n_unique() != n:
            problems.append(f"{name}: {other.height:,} rows, tierbook {n:,} customers")
            return None
        j = tb.join(other, on="customer_id", how="inner", suffix="_b")
        if j.height != n:
            problems.append(f"{name}: {n - j.height:,} customers missing")
            return None
        return j

    def expect(name: str, what: str, bad: int, detail: str = "") -> None:
        if bad:
            problems.append(f"{name}: {what}: {bad:,} of {n:,} customers differ{detail}")

    for tool in tools:
        if tool == ref:
            continue
        out = pl.read_parquet(runs[tool])
        before = len(problems)
        if tool == "floor":
            j = joined(out, tool)
            if j is not None:
                # the floor's last date is of any line, tierbook's last_order of a purchase: last_activity
                expect(tool, "last date", j.filter(pl.col("last_activity") != pl.col("last_order_b")).height)
                diff = (j["monetary"] - j["monetary_b"]).abs().max()
                expect(tool, "net revenue (|diff| > 0.005)", j.filter((pl.col("monetary") - pl.col("monetary_b")).abs() > 0.005).height)
                expect(tool, "orders < frequency", j.filter(pl.col("orders") < pl.col("frequency")).height)
                extra = j.filter(pl.col("orders") != pl.col("frequency")).height
                verdicts[tool] = (f"last date equal for all {n:,} customers; net revenue within {diff:.1e}; "
                                  f"distinct orders = tierbook frequency for {n - extra:,}, more for {extra:,} "
                                  f"(the floor also counts return-only credit notes, by design)")
        elif tool == "pymc-marketing":
            j = joined(out, tool)
            days = (pl.scan_parquet(data).group_by("customer_id")
                    .agg(pl.col("order_date").n_unique().alias("active_days")).collect())
            if j is not None:
                j = j.join(days, on="customer_id")
                # its recency counts from the last line of any kind, a return included: tierbook's last_activity
                as_of = pl.col("last_order") + pl.duration(days=pl.col("recency_days"))
                seen = (as_of - pl.col("last_activity")).dt.total_days()
                expect(tool, "recency + 1 = days since last_activity", j.filter((pl.col("recency") + 1) != seen).height)
                rev = pl.col("monetary_value") * pl.col("frequency_b")
                expect(tool, "monetary_value x frequency = monetary",
                       j.filter((rev - pl.col("monetary")).abs() > 0.005 + 1e-9 * pl.col("monetary").abs()).height)
                expect(tool, "frequency = distinct days with a transaction",
                       j.filter(pl.col("frequency_b") != pl.col("active_days")).height)
                same_f = j.filter(pl.col("frequency_b") == pl.col("frequency")).height
                verdicts[tool] = (f"recency + 1 = days since last_activity and monetary_value x frequency = net revenue "
                                  f"(within 0.005) for all {n:,} customers; its frequency is distinct active days, "
                                  f"checked against an independent count; it equals tierbook's order count for "
                                  f"{same_f:,} ({same_f / n:.1%}); quartile segments are its own, not compared")
        else:
            out = out.select("customer_id", pl.col("last_order").cast(pl.Date), "recency_days", "frequency",
                             "monetary", *[pl.col(c).cast(pl.String) for c in LABELS])
            j = joined(out, tool)
            if j is not None:
                expect(tool, "last date", j.filter(pl.col("last_order") != pl.col("last_order_b")).height)
                expect(tool, "recency_days", j.filter(pl.col("recency_days") != pl.col("recency_days_b")).height)
                expect(tool, "frequency", j.filter(pl.col("frequency") != pl.col("frequency_b")).height)
                expect(tool, "monetary", j.filter((pl.col("monetary") - pl.col("monetary_b")).abs() > 1e-6).height)
                for c in LABELS:
                    expect(tool, c, j.filter(pl.col(c) != pl.col(f"{c}_b")).height)
                verdicts[tool] = (f"last date, recency_days, frequency, monetary and all of {', '.join(LABELS)} "
                                  f"identical for all {n:,} customers")
        if len(problems) > before:
            verdicts[tool] = "DISAGREES: " + "; ".join(problems[before:])
        print(f"check {tool}: {verdicts[tool]}", flush=True)
    if problems:
        sys.exit("agreement check failed, nothing timed:\n  " + "\n  ".join(problems))
    return verdicts


def reference(data: Path):
    """The per-customer features by tierbook's documented definitions, in plain Polars over the file:
    rows without customer, date or amount are not used; last date; orders = distinct order ids of the
    lines with a positive amount (a sale without an order id is one order); net revenue."""
    import polars as pl

    amount = pl.col("amount")
    return (pl.scan_parquet(data)
            .filter(pl.col("customer_id").is_not_null() & pl.col("order_date").is_not_null() & amount.is_not_null())
            .group_by("customer_id")
            .agg(pl.col("order_date").filter(amount > 0).max().alias("last_order_r"),   # last purchase
                 pl.col("order_date").max().alias("last_activity_r"),                    # last line of any kind
                 pl.col("order_id").filter(amount > 0).n_unique().alias("frequency_r"),
                 amount.sum().alias("monetary_r"))
            .collect(engine="streaming"))


def check_timed_outputs(size: str, tools: list[str]) -> dict[str, str]:
    """Agreement on the data of a timed size, from the outputs the timed runs wrote (no extra run):
    tierbook's customers against the definitions computed independently from the file (``reference``),
    and every other tool against tierbook as in the 1M check. On messy data only tierbook is compared:
    the baselines do not leave out unusable rows (they would group the rows without a customer id)."""
    import polars as pl

    data = DATA / f"tx_{size}.parquet"
    verdicts: dict[str, str] = {}
    ref_tool = "tierbook" if "tierbook" in tools else "tierbook-classify" if "tierbook-classify" in tools else None
    if ref_tool is None:
        return {"-": "not checked: no tierbook run in this block"}
    tb = pl.read_parquet(tool_command(ref_tool, size)[1])  # no customer table here, so no prospects
    j = tb.join(reference(data), on="customer_id", how="full", coalesce=True)
    n = j.height
    bad = {
        "customers": j.filter(pl.col("monetary").is_null() | pl.col("monetary_r").is_null()).height,
        "last date": j.filter(pl.col("last_order").ne_missing(pl.col("last_order_r"))
                              | pl.col("last_activity").ne_missing(pl.col("last_activity_r"))).height,
        "frequency": j.filter(pl.col("frequency") != pl.col("frequency_r")).height,
        "monetary (|diff| > 0.005)": j.filter((pl.col("monetary") - pl.col("monetary_r")).abs() > 0.005).height,
    }
    problems = [f"{what}: {k:,} of {n:,} customers differ" for what, k in bad.items() if k]
    verdicts[ref_tool] = ("DISAGREES with the definitions: " + "; ".join(problems) if problems else
                          f"customers, last date, frequency and net revenue (within 0.005) as defined, for all "
                          f"{n:,} customers (reference computed from the file)")
    for tool in tools:
        if tool == ref_tool:
            continue
        if size.endswith("-messy"):
            verdicts[tool] = "not compared on messy data (no rule for unusable rows)"
            continue
        out = pl.read_parquet(tool_command(tool, size)[1])
        if tool == "floor":  # last date, net revenue; its order count includes return-only credit notes
            jj = tb.join(out, on="customer_id", how="full", coalesce=True, suffix="_b")
            wrong = {
                "customers": jj.filter(pl.col("frequency").is_null() | pl.col("orders").is_null()).height,
                # the floor's last date is of any line: tierbook's last_activity (last_order is a purchase's)
                "last date": jj.filter(pl.col("last_activity").ne_missing(pl.col("last_order_b"))).height,
                "net revenue": jj.filter((pl.col("monetary") - pl.col("monetary_b")).abs().fill_null(1) > 0.005).height,
                "orders < frequency": jj.filter(pl.col("orders") < pl.col("frequency")).height,
            }
            wrong = {k: v for k, v in wrong.items() if v}
            verdicts[tool] = ("DISAGREES: " + ", ".join(f"{c} {k:,}" for c, k in wrong.items()) if wrong else
                              f"last date and net revenue (within 0.005) equal, orders >= frequency, for all "
                              f"{jj.height:,} customers")
            continue
        if tool == "pymc-marketing":  # its own recency/frequency conventions: the customers are compared
            missing = len(set(tb["customer_id"]) ^ set(out["customer_id"]))
            verdicts[tool] = (f"DISAGREES: {missing:,} customers on one side only" if missing else
                              f"the same {tb.height:,} customers (its own RFM conventions, see the 1M check)")
            continue
        out = out.select("customer_id", pl.col("last_order").cast(pl.Date), "frequency", "monetary",
                         *[pl.col(c).cast(pl.String) for c in LABELS])
        jj = tb.select("customer_id", "last_order", "frequency", "monetary",
                       *[pl.col(c).cast(pl.String) for c in LABELS]).join(out, on="customer_id", how="full",
                                                                          coalesce=True, suffix="_b")
        diffs = {c: jj.filter(pl.col(c).ne_missing(pl.col(f"{c}_b"))).height
                 for c in ["last_order", "frequency", *LABELS]}
        diffs["monetary"] = jj.filter((pl.col("monetary") - pl.col("monetary_b")).abs().fill_null(1) > 1e-6).height
        wrong = {c: k for c, k in diffs.items() if k}
        verdicts[tool] = ("DISAGREES: " + ", ".join(f"{c} {k:,}" for c, k in wrong.items()) if wrong else
                          f"last date, frequency, monetary and {', '.join(LABELS)} identical for all "
                          f"{jj.height:,} customers")
    for tool, text in verdicts.items():
        print(f"  check {size} {tool}: {text}", flush=True)
    return verdicts


# ---------------------------------------------------------------------- timing
def input_profile(path: Path) -> dict:
    import polars as pl

    rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    sample = pl.read_parquet(path, n_rows=min(rows, 200_000))
    return {"rows": rows, "file_bytes": path.stat().st_size,
            "in_memory_bytes": int(sample.estimated_size() * rows / sample.height)}


# Bytes a value of a fixed-width Polars type takes in memory (the generated columns have no nulls).
FIXED_WIDTH = {"Int64": 8, "UInt64": 8, "Float64": 8, "Datetime": 8, "Int32": 4, "UInt32": 4, "Float32": 4,
               "Date": 4, "Int16": 2, "UInt16": 2, "Int8": 1, "UInt8": 1}


def input_profile_from_schema(path: Path) -> dict:
    """The input's in-memory size without reading its data: rows (Parquet metadata) x bytes a row (schema)."""
    import polars as pl

    lf = pl.scan_parquet(path)
    rows = lf.select(pl.len()).collect().item()
    widths = {name: FIXED_WIDTH.get(dtype.base_type().__name__) for name, dtype in lf.collect_schema().items()}
    unknown = [name for name, w in widths.items() if w is None]
    if unknown:  # not the generator's schema: estimate from the first rows instead (still not the whole file)
        return input_profile(path)
    row_bytes = sum(widths.values())
    return {"rows": rows, "file_bytes": path.stat().st_size, "in_memory_bytes": rows * row_bytes,
            "in_memory_estimate": f"rows x {row_bytes} bytes a row from the Parquet schema: "
                                  + ", ".join(f"{n} {w}" for n, w in widths.items())
                                  + " bytes, no nulls (the generator writes none); the file is not loaded"}


def time_size(size: str, tools: list[str], repeat: int, log: Path) -> dict:
    path = ensure_data(size)
    print(f"\n== {size}: {', '.join(tools)} x {repeat} (interleaved)", flush=True)
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    for i in range(repeat):
        for tool in tools:
            cmd, _ = tool_command(tool, size)
            r = measure(cmd, log)
            r["round"] = i
            runs[tool].append(r)
            status = "" if r["exit"] == 0 else f"  FAILED (exit {r['exit']}, see {log})"
            print(f"  round {i + 1} {tool:<15} {r['wall_s']:7.2f} s  {r['rss_bytes'] / 2**20:7.0f} MiB"
                  f"  load {r['load1_before']:.1f}{status}"
                  + (f"  orders by {r['orders'].split(':')[0]}" if r.get("orders") else ""), flush=True)
    profile = input_profile_from_schema(path) if size in SCHEMA_ESTIMATE_SIZES else input_profile(path)
    block = {"size": size, "input": profile, "repeat": repeat, "runs": runs,
             "measured_at": dt.datetime.now().isoformat(timespec="seconds")}
    if all(r["exit"] == 0 for rs in runs.values() for r in rs):
        block["checks"] = check_timed_outputs(size, tools)
    return block


def time_help(repeat: int, log: Path) -> dict:
    runs = [measure([str(TB_BIN), "--help"], log) for _ in range(repeat)]
    return {"repeat": repeat, "runs": runs, "measured_at": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": machine()}


# --------------------------------------------------------------------- report
def host_id() -> str:
    """Which machine this is, apart from what it is: two virtual machines of one type describe themselves alike
    (CPU, memory, kernel, versions) and may still differ in speed. The first 8 hex digits of a SHA-256 of the
    system's machine id (/etc/machine-id) and the kernel's boot id (/proc/sys/kernel/random/boot_id), else of the
    host name: machines started from one image share the machine id (two machines of different speed were both
    labelled by it alone), so each boot gets a label of its own, and a figure's label says which boot measured it."""
    parts = []
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id", "/proc/sys/kernel/random/boot_id"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text and not (parts and path.startswith("/var/lib/dbus")):
            parts.append(text)
    return hashlib.sha256("\n".join(parts or [platform.node()]).encode()).hexdigest()[:8]


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass

    def version(py: Path, mod: str) -> str:
        try:
            return subprocess.run([str(py), "-c", f"import importlib.metadata as m; print(m.version('{mod}'))"],
                                  capture_output=True, text=True, timeout=60).stdout.strip() or "?"
        except Exception:
            return "?"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "engine", "plugins")
    return {
        "host": host_id(), "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "polars": version(TB_PY, "polars"), "tierbook_commit": git("rev-parse", "--short", "HEAD"),
        "engine_uncommitted_files": len(dirty.splitlines()) if dirty else 0,
        "pandas": version(BL_PY, "pandas"), "duckdb": version(BL_PY, "duckdb"),
        "pymc-marketing": version(BL_PY, "pymc-marketing"),
    }


def stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt_s(v: tuple[float, float, float]) -> str:
    return f"{v[0]:.2f} s [{v[1]:.2f}-{v[2]:.2f}]"


def fmt_mb(v: tuple[float, float, float]) -> str:
    return f"{v[0] / 1e6:,.0f} MB [{v[1] / 1e6:,.0f}-{v[2] / 1e6:,.0f}]"


def summarise(block: dict) -> dict[str, dict]:
    out = {}
    runs = block["runs"]
    for tool, rs in runs.items():
        ok = [r for r in rs if r["exit"] == 0]
        if not ok:
            out[tool] = {"failed": True}
            continue
        s = {"wall": stats([r["wall_s"] for r in ok]), "rss": stats([r["rss_bytes"] for r in ok]), "n": len(ok),
             "cpu": stats([r["user_s"] + r["sys_s"] for r in ok]),
             "load": statistics.mean(r["load1_before"] for r in ok)}
        fl = runs.get("floor")
        if fl and tool != "floor" and all(r["exit"] == 0 for r in fl):
            paired = [r["wall_s"] / f["wall_s"] for r, f in zip(rs, fl) if r["exit"] == 0]
            s["paired_wall_ratio"] = statistics.median(paired) if paired else None
        out[tool] = s
    return out


def write_report(results: dict) -> None:
    lines = ["# Benchmark results", "",
             "Generated by `bench/run.py` (see [README.md](README.md)). Whole-process wall time and peak RSS "
             "of each tool as a separate process, median of the runs with [min-max]. Ratios are to the floor "
             "(a plain Polars lazy group_by) measured in the same, interleaved block; *paired* is the median of "
             "the per-round ratios (tool run right after the floor in the same round).", ""]
    machines = []  # each figure names the machine and commit that measured it (## Machines)
    for _, block in [*sorted(results.get("sizes", {}).items()), ("help", results.get("help"))]:
        if block:
            m = block.get("machine") or results.get("machine")
            if m and m not in machines:
                machines.append(m)
    if machines:
        lines += ["## Machines", "", "Each block below names the machine (M1, M2, ...) and the tierbook commit that "
                  "measured it; a block re-measured alone gets its own label, the others keep theirs. Page cache "
                  "warm (every file is read many times); no tool pinned to cores.", ""]
        for i, m in enumerate(machines, 1):
            lines.append(f"- **M{i}** (host {m.get('host', 'not recorded')}): CPU {m['cpu']}, {m['cores']} cores; memory {m['memory_gb']} GB; {m['os']}; "
                         f"Python {m['python']}; Polars {m['polars']}; baselines: pandas {m['pandas']}, DuckDB "
                         f"{m['duckdb']}, pymc-marketing {m['pymc-marketing']}")
        lines.append("")

    def label(block: dict) -> str:
        m = block.get("machine")
        inherited = m is None
        m = m or results.get("machine")
        if not m:
            return "machine not recorded"
        text = (f"machine M{machines.index(m) + 1}, tierbook {m['tierbook_commit']} (uncommitted files in engine/ "
                f"and plugins/: {m['engine_uncommitted_files']})")
        if inherited:
            text += (" -- recorded once for the whole file before figures carried their own label, so possibly the "
                     "machine and commit of a later partial run")
        return text
    lines += ["## Noise", "",
              "Other engineers ran test suites on this 2-core machine while these numbers were taken. The "
              "1-minute load average before each run is recorded (column *load*: mean over the tool's runs); a "
              "load near or above 2 means the tool shared the cores. Runs are interleaved so that noise spreads "
              "over all tools, but single numbers can still be off by tens of percent; compare ratios rather "
              "than absolute times. CPU time (user + system over all threads, median) is the least disturbed by "
              "the load, but it is not wall time: a tool that keeps both cores busy spends more CPU than it "
              "takes wall time.", ""]
    sizes = results.get("sizes", {})
    for size in sorted(sizes, key=lambda k: (k.endswith("-messy"), size_rows(k) or 0, k)):
        block = sizes[size]
        inp = block["input"]
        summ = summarise(block)
        estimate = inp.get("in_memory_estimate")
        lines += [f"## {inp['rows']:,} transactions ({size})", "",
                  f"Input: {inp['file_bytes'] / 1e6:,.0f} MB Parquet, {inp['in_memory_bytes'] / 1e6:,.0f} MB in "
                  f"memory as a Polars frame{f' (estimated as {estimate})' if estimate else ''}. "
                  f"{block['repeat']} interleaved round(s), measured {block['measured_at']} on {label(block)}.", "",
                  "| tool | rows | wall, median [min-max] | peak RSS, median [min-max] | wall / floor (paired) | "
                  "RSS / floor | CPU (user + sys) | CPU / floor | load |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        floor = summ.get("floor")
        for tool, s in summ.items():
            if s.get("failed"):
                lines.append(f"| {tool} | {inp['rows']:,} | failed | | | | | | |")
                continue
            if floor and not floor.get("failed"):
                wr = f"{s['wall'][0] / floor['wall'][0]:.2f}x"
                if s.get("paired_wall_ratio"):
                    wr += f" ({s['paired_wall_ratio']:.2f}x)"
                rr = f"{s['rss'][0] / floor['rss'][0]:.2f}x"
                cr = f"{s['cpu'][0] / floor['cpu'][0]:.2f}x"
            else:
                wr = rr = cr = ""
            lines.append(f"| {tool} | {inp['rows']:,} | {fmt_s(s['wall'])} | {fmt_mb(s['rss'])} | {wr} | {rr} | "
                         f"{s['cpu'][0]:.1f} s | {cr} | {s['load']:.1f} |")
        if "tierbook" in summ and not summ["tierbook"].get("failed"):
            rss = summ["tierbook"]["rss"][0]
            lines += ["", f"tierbook's peak RSS is {rss / inp['in_memory_bytes']:.2f}x the input's in-memory size"
                      + (" (estimated from the schema, see above)." if estimate else ".")]
        paths = {tool: sorted({r["orders"] for r in runs if r.get("orders")})
                 for tool, runs in block["runs"].items()}
        if any(paths.values()):
            lines += ["", "How tierbook counted orders (what each run printed; issue 14):", ""]
            lines += [f"- **{tool}**: " + "; ".join(f"by {p}" for p in said) for tool, said in paths.items() if said]
        if block.get("checks"):
            lines += ["", "Agreement on this block's data (the timed runs' outputs):", ""]
            lines += [f"- **{tool}**: {text}" for tool, text in block["checks"].items()]
        lines.append("")
    help_ = results.get("help")
    if help_:
        w = stats([r["wall_s"] for r in help_["runs"]])
        lines += ["## Startup", "", f"`tierbook --help`: {fmt_s(w)} over {help_['repeat']} runs, peak RSS "
                  f"{statistics.median(r['rss_bytes'] for r in help_['runs']) / 1e6:.0f} MB, measured "
                  f"{help_['measured_at']} on {label(help_)}.", ""]
    lines += targets_section(results)
    lines += ["Where tierbook's time and memory go against the floor, what was changed for these numbers and what "
              "is left: [PROFILE.md](PROFILE.md).", ""]
    if "200m" not in results.get("sizes", {}):
        lines += ["Not measured: a 200M-row set. `bench/run.py --sizes 200m` generates one (bench/generate.py "
                  "writes it in 10M-row blocks, never whole in memory) and measures the floor and tierbook run on "
                  "it, like the 50M block.", ""]
    notes = BENCH / "RESULTS-notes.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    checks = results.get("checks")
    if checks:
        m = results.get("checks_machine") or results.get("machine")
        lines += ["## Agreement check (1M set, before timing)", ""]
        if m:
            lines += [f"Run at tierbook {m['tierbook_commit']}.", ""]
        lines += [f"- **{tool}**: {text}" for tool, text in checks.items()]
        lines.append("")
    RESULTS_MD.write_text("\n".join(lines) + "\n")


def targets_section(results: dict) -> list[str]:
    rows = []
    s10 = results.get("sizes", {}).get("10m")
    if s10:
        s = summarise(s10)
        tb, fl = s.get("tierbook"), s.get("floor")
        if tb and fl and not tb.get("failed") and not fl.get("failed"):
            w, r = tb["wall"][0] / fl["wall"][0], tb["rss"][0] / fl["rss"][0]
            rows.append(("10M: tierbook run wall <= 1.4x floor", f"{w:.2f}x (paired {tb.get('paired_wall_ratio', 0):.2f}x)",
                         w <= TARGETS["wall_vs_floor"]))
            rows.append(("10M: tierbook run peak RSS <= 1.3x floor", f"{r:.2f}x", r <= TARGETS["rss_vs_floor"]))
            for tool, key, label in (("pandas", "pandas_speedup", ">= 3x faster than pandas"),
                                     ("pymc-marketing", "pymc_speedup", ">= 12x faster than pymc-marketing")):
                o = s.get(tool)
                if o and not o.get("failed"):
                    sp = o["wall"][0] / tb["wall"][0]
                    rows.append((f"10M: {label}", f"{sp:.1f}x", sp >= TARGETS[key]))
                    rows.append((f"10M: less memory than {tool}", f"{tb['rss'][0] / 1e6:,.0f} MB vs "
                                 f"{o['rss'][0] / 1e6:,.0f} MB", tb["rss"][0] < o["rss"][0]))
    rows += ordered_input_targets(results)
    s50 = results.get("sizes", {}).get("50m")
    if s50:
        tb = summarise(s50).get("tierbook")
        if tb and not tb.get("failed"):
            rows.append(("50M: tierbook run peak RSS < 3 GB", f"{tb['rss'][0] / 1e9:.2f} GB",
                         tb["rss"][0] < TARGETS["rss_50m_gb"] * 1e9))
    if results.get("help"):
        w = statistics.median(r["wall_s"] for r in results["help"]["runs"])
        rows.append(("`tierbook --help` < 0.5 s", f"{w:.2f} s", w < TARGETS["help_s"]))
    if not rows:
        return []
    out = ["## Targets", "", "| target | measured | met |", "| --- | ---: | :---: |"]
    out += [f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in rows]
    return out + [""]


#: Issue 14's targets, per set: (set, tool, wall / floor, RSS / floor).
ORDERED_TARGETS = [
    ("10m-numbered", "tierbook-classify", 1.0, 1.1),
    ("10m-numbered", "tierbook", 1.2, 1.2),
    ("10m-shuffled", "tierbook", 1.4, 1.3),
]


def ordered_input_targets(results: dict) -> list[tuple[str, str, bool]]:
    """Issue 14's targets where their sets were measured: ordered input (order ids numbered as they come),
    shuffled input, and 50M ordered under 2 GB; each names the way the runs counted orders."""
    rows = []
    sizes = results.get("sizes", {})
    for size, tool, wall_max, rss_max in ORDERED_TARGETS:
        if size not in sizes:
            continue
        block = sizes[size]
        s = summarise(block)
        t, fl = s.get(tool), s.get("floor")
        if not t or not fl or t.get("failed") or fl.get("failed"):
            continue
        w, r = t["wall"][0] / fl["wall"][0], t["rss"][0] / fl["rss"][0]
        how = "; ".join(sorted({x["orders"].split(":")[0] for x in block["runs"][tool] if x.get("orders")}))
        name = f"{size}: {'tierbook classify' if tool == 'tierbook-classify' else 'tierbook run'}"
        rows.append((f"{name} wall <= {wall_max}x floor", f"{w:.2f}x (paired {t.get('paired_wall_ratio', 0):.2f}x; "
                     f"orders by {how or '?'})", w <= wall_max))
        rows.append((f"{name} peak RSS <= {rss_max}x floor", f"{r:.2f}x", r <= rss_max))
    big = sizes.get("50m-numbered")
    if big:
        tb = summarise(big).get("tierbook")
        if tb and not tb.get("failed"):
            rows.append(("50m-numbered: tierbook run peak RSS < 2 GB", f"{tb['rss'][0] / 1e9:.2f} GB",
                         tb["rss"][0] < 2e9))
    return rows


# ------------------------------------------------------------------------ main
def compile_bytecode() -> None:
    """Compile the Python code every timed process imports to bytecode, as ``pip install`` does.

    An editable install has no bytecode until a first run writes it, and ``uv pip
    install`` (README's set-up) writes none for the packages it installs either.
    Where ``PYTHONDONTWRITEBYTECODE`` is set (it is on the benchmark machine) every
    process would then compile Polars, NumPy and the rest from source again: 0.2 s
    for the floor's ``import polars``, about 0.5 s for a ``tierbook run``, time no
    installed copy pays after its first run. So engine/, plugins/ and the
    site-packages of each interpreter the bench runs (tierbook's venv and the
    baselines' venv) are compiled first; a second call finds everything current
    and takes about a second.
    """
    def compile_with(python: Path, *paths: Path) -> None:
        subprocess.run([str(python), "-m", "compileall", "-q", "-j", "0", *map(str, paths)],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def site_packages(python: Path) -> Path:
        out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True)
        return Path(out.stdout.strip())

    tb_py = TB_BIN.with_name("python")
    compile_with(tb_py, ROOT / "engine", ROOT / "plugins", site_packages(tb_py))
    if BL_PY.exists():
        compile_with(BL_PY, site_packages(BL_PY))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="tierbook performance benchmark")
    ap.add_argument("--sizes", default="10m,50m", help="comma-separated: 1m, 10m, 50m, 200m (default 10m,50m)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool and size (default 3)")
    ap.add_argument("--big-repeat", type=int, default=3, help="runs per tool at 50m and 200m (default 3)")
    ap.add_argument("--tools", help=f"comma-separated subset of {','.join(ALL_TOOLS)}")
    ap.add_argument("--skip-check", action="store_true", help="do not run the agreement check (not for reporting)")
    ap.add_argument("--help-repeat", type=int, default=5, help="runs of `tierbook --help` (default 5; 0: skip)")
    ap.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md from results.json, run nothing")
    ap.add_argument("--workdir", type=Path, help="data, outputs, results.json and RESULTS.md under this directory "
                                                 "instead of bench/ (for trying the mechanics on small sizes)")
    args = ap.parse_args(argv)
    global DATA, OUT, LOGS, RESULTS_JSON, RESULTS_MD
    if args.workdir:
        DATA = args.workdir / "data"
        RESULTS_JSON, RESULTS_MD = args.workdir / "results.json", args.workdir / "RESULTS.md"
        OUT, LOGS = DATA / "out", DATA / "logs"
    if args.report_only:
        write_report(json.loads(RESULTS_JSON.read_text()))
        print(f"wrote {RESULTS_MD}")
        return 0

    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if size_rows(s) is None:
            ap.error(f"unknown size {s!r}; sizes: {', '.join(SIZES)}, <n>k, <n>m, each also as <size>-messy, "
                     f"<size>-numbered or <size>-shuffled")
    tools = [t.strip() for t in args.tools.split(",")] if args.tools else list(ALL_TOOLS)
    for t in tools:
        if t not in ALL_TOOLS:
            ap.error(f"unknown tool {t!r}; tools: {', '.join(ALL_TOOLS)}")
    for d in (DATA, OUT, LOGS):
        d.mkdir(parents=True, exist_ok=True)
    if any(t in ("duckdb", "pandas", "pymc-marketing") for t in tools):
        ensure_baselines_venv()
    log = LOGS / f"run-{dt.datetime.now():%Y%m%d-%H%M%S}.log"
    print(f"tool output goes to {log}", flush=True)
    compile_bytecode()

    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    here = machine()  # labels only what this run measures; older blocks keep their own
    if not args.skip_check:
        results["checks"] = check_agreement(tools, log)
        results["checks_machine"] = here
    results.setdefault("sizes", {})
    for size in sizes:
        big = base_size(size) in BIG_SIZES
        these = [t for t in tools if not big or t in BIG_TOOLS]
        repeat = args.big_repeat if big else args.repeat
        results["sizes"][size] = {**time_size(size, these, repeat, log), "machine": here}
        RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
        write_report(results)
    if args.help_repeat:
        results["help"] = time_help(args.help_repeat, log)
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    write_report(results)
    print(f"\nwrote {RESULTS_MD} and {RESULTS_JSON}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
