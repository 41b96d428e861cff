"""The feature pass on Spark local[N] beside the Polars one: wall time, peak memory, the customer table's size.

    python bench/spark.py [--data bench/data/tx_10m.parquet] [--rounds 2] [--master local[2]]

Each round runs, in fresh processes one after the other (interleaved), ``engine.prepare`` with the
Polars engine and with the Spark engine on the same Parquet file, and prints per run the wall time
of the feature pass (the Spark session's start apart), the peak resident memory of the whole process
tree (Python, and Spark's JVM) sampled every 50 ms, the customers, and the size of the customer table
the driver holds (Polars ``estimated_size``), per million customers. The two customer tables must be
equal (hash of every row): the run stops otherwise. Results go to bench/SPARK.md by hand, with the
machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import engine
from engine.registry import get_registry
engine_name, data, master = sys.argv[1], sys.argv[2], sys.argv[3]
registry = get_registry(allow=["abc", "adc", "rfm"], strict=True)
started = time.perf_counter()
session_s = 0.0
if engine_name == "spark":
    from engine.spark import SparkSettings, spark_session
    spark_session(SparkSettings(master, {"spark.sql.shuffle.partitions": "8"}))
    session_s = time.perf_counter() - started
t = time.perf_counter()
p = engine.prepare(data, registry=registry, engine=engine_name, spark={"master": master})
wall = time.perf_counter() - t
c = p.customers
print(json.dumps({"wall": wall, "session": session_s, "customers": c.height, "table_bytes": c.estimated_size(),
                  "hash": int(c.hash_rows().sum())}))
"""


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every descendant (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
        todo.extend(children.get(p, []))
    return total


def run(engine_name: str, data: str, master: str) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, engine_name, data, master], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{engine_name}: exit {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss"] = peak
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "bench" / "data" / "tx_10m.parquet"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args(argv)
    print(f"load average before: {os.getloadavg()}", flush=True)
    hashes = set()
    for r in range(args.rounds):
        for engine_name in ("polars", "spark"):
            res = run(engine_name, args.data, args.master)
            hashes.add(res["hash"])
            per_m = res["table_bytes"] / (res["customers"] / 1e6)
            print(f"round {r + 1} {engine_name:6}: feature pass {res['wall']:.1f} s"
                  + (f" (+ session start {res['session']:.1f} s)" if engine_name == "spark" else "")
                  + f", peak RSS {res['peak_rss'] / 2**20:,.0f} MB (process tree), {res['customers']:,} customers, "
                    f"customer table {per_m / 2**20:.0f} MB per million customers", flush=True)
    print(f"load average after: {os.getloadavg()}")
    if len(hashes) != 1:
        sys.exit("the engines' customer tables differ")
    print("customer tables equal (hash of every row)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
