"""SIGKILL at random moments never leaves a partial output file.

Each trial starts from the complete outputs of one run (version 1), starts a
run with other parameters (version 2) and kills it with SIGKILL after a random
delay. Every output file must then be byte-identical to version 1 or version 2.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = ("customers.parquet", "actions.csv", "cut.csv", "summary.json")
TRIALS = 24


def _command(playbook: Path, out: Path, a: str) -> list[str]:
    return [sys.executable, "-m", "engine", "run", str(playbook), "--output-dir", str(out), "--set", f"abc.a={a}"]


def _snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in FILES}


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
        states = []
        for name in FILES:
            data = (out / name).read_bytes()
            assert data in (v1[name], v2[name]), f"trial {trial}: {name} is neither the old nor the new version"
            states.append("old" if data == v1[name] else "new")
        outcomes["mixed" if len(set(states)) > 1 else states[0]] += 1
        leftovers = [p.name for p in out.iterdir() if p.name not in FILES]
        assert all(p.startswith(".") and p.endswith(".tmp") for p in leftovers), leftovers
    # the trials must have killed runs both before and after they finished writing
    assert outcomes["old"] > 0
    print(f"SIGKILL outcomes over {TRIALS} trials: {outcomes} (run takes {duration:.2f} s)")
