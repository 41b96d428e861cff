"""SIGKILL at random moments leaves the whole old output set or the whole new one.

Each trial starts from the complete outputs of one run (version 1), starts a
run with other parameters (version 2) and kills it with SIGKILL after a random
delay. The four files must then all be version 1 or all be version 2, and the
next run into the directory must leave nothing of the killed one behind.

Random delays rarely land inside the write itself (about 12 ms of a 0.35 s
run): tests/engine/test_io_faults.py interrupts the write at every one of its
file-system calls instead. This test checks the whole process end to end.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.io import leftovers

ROOT = Path(__file__).resolve().parents[2]
FILES = ("customers.parquet", "actions.csv", "cut.csv", "summary.json")
TRIALS = 10


def _command(playbook: Path, out: Path, a: str) -> list[str]:
    return [sys.executable, "-m", "engine", "run", str(playbook), "--output-dir", str(out), "--set", f"abc.a={a}"]


def _snapshot(out: Path) -> dict[str, bytes]:
    """The files; summary.json without what its manifest says about the particular run (how long it took, into
    which directory), which differs between two runs with the same parameters."""
    files = {name: (out / name).read_bytes() for name in FILES}
    summary = json.loads(files["summary.json"])
    summary["manifest"].pop("durations_s")
    summary["manifest"]["parameters"]["outputs"].pop("dir")
    files["summary.json"] = json.dumps(summary, sort_keys=True).encode()
    return files


def test_sigkill_leaves_previous_or_new_outputs(tmp_path):
    playbook = tmp_path / "p.yaml"
    playbook.write_text((ROOT / "playbooks" / "abc-resource-allocation.yaml").read_text()
                        .replace("../engine/sample", f"{ROOT}/engine/sample"))
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    v1_dir, v2_dir = tmp_path / "v1", tmp_path / "v2"
    subprocess.run(_command(playbook, v1_dir, "0.8"), check=True, capture_output=True, env=env)
    start = time.perf_counter()
    subprocess.run(_command(playbook, v2_dir, "0.6"), check=True, capture_output=True, env=env)
    duration = time.perf_counter() - start
    v1, v2 = _snapshot(v1_dir), _snapshot(v2_dir)
    assert all(v1[name] != v2[name] for name in ("actions.csv", "summary.json"))

    rng = random.Random(20111209)
    outcomes = {"old": 0, "new": 0, "mixed": 0}
    for trial in range(TRIALS):
        out = tmp_path / f"t{trial}"
        shutil.copytree(v1_dir, out)
        # half the kills anywhere in the run, half in its last fifth, where the writing happens
        delay = rng.uniform(0, duration) if trial % 2 == 0 else rng.uniform(0.8 * duration, 1.1 * duration)
        proc = subprocess.Popen(_command(playbook, out, "0.6"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        got = _snapshot(out)
        assert got in (v1, v2), f"trial {trial}: the outputs are neither the whole old set nor the whole new one"
        outcomes["old" if got == v1 else "new"] += 1
        left = leftovers(out)
        if left:  # the next run removes what the killed one left
            subprocess.run(_command(playbook, out, "0.6"), check=True, capture_output=True, env=env)
            assert _snapshot(out) == v2 and leftovers(out) == [], f"trial {trial}: the next run left {left}"
    assert outcomes["old"] > 0
    print(f"SIGKILL outcomes over {TRIALS} trials: {outcomes} (run takes {duration:.2f} s)")
