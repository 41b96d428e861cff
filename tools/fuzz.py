"""The long fuzz run of the playbook loader, the rule compiler and data loading (outside CI).

    .venv/bin/python tools/fuzz.py --seconds 600 [--long-rules]

Runs the hypothesis strategies and checks of tests/engine/test_fuzz.py in rounds
of fresh random examples until the time is up. Only the documented validation
error (TierbookError) may come out of either; a compiled rule must evaluate, and a
valid generated rule must compile and match what SQLite returns for it.
Prints one line per round and a summary; exits 1 on the first failure, with the
minimal failing example hypothesis found. The result is recorded in
docs/fuzzing.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


def _load_fuzz_module():
    spec = importlib.util.spec_from_file_location("tierbook_fuzz", ROOT / "tests" / "engine" / "test_fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT))
    spec.loader.exec_module(module)
    return module


class _Capture:
    """A stand-in for pytest's ``capsys``: the command's output goes to buffers, read and reset here."""

    def __init__(self):
        import io

        self.out, self.err = io.StringIO(), io.StringIO()

    def readouterr(self):
        out, err = self.out.getvalue(), self.err.getvalue()
        for buf in (self.out, self.err):
            buf.seek(0)
            buf.truncate()
        return out, err


def _check_data_quietly(fz, data, directory, as_of) -> None:
    import contextlib

    capture = _Capture()
    with contextlib.redirect_stdout(capture.out), contextlib.redirect_stderr(capture.err):
        fz.check_data(data, directory, as_of, capture)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600, help="how long to fuzz (default 600)")
    parser.add_argument("--examples", type=int, default=500, help="examples per round and target (default 500)")
    parser.add_argument("--long-rules", action="store_true",
                        help="more rules near the 10,000-character limit")
    args = parser.parse_args(argv)

    fz = _load_fuzz_module()
    from engine.registry import get_registry

    registry = get_registry(allow=["abc", "adc", "rfm"], strict=True)
    workdir = Path(tempfile.mkdtemp(prefix="tierbook-fuzz-"))
    (workdir / "tx.csv").write_text("customer_id,order_id,order_date,amount\nc1,o1,2011-01-02,10\n")

    rules = fz.any_rule
    if args.long_rules:
        rules = st.one_of(rules, st.integers(120, 700).map(lambda n: " AND ".join(["monetary > 1"] * n)))
    noise = st.one_of(fz.yaml_noise, st.builds(lambda base, n, at: base[:at] + n + base[at:],
                                                st.just(fz._dump(fz.BASE)), fz.yaml_noise, st.integers(0, 300)))
    slowest = {"rules": 0.0, "valid rules vs SQLite": 0.0, "playbook structure": 0.0, "playbook text": 0.0, "data files": 0.0}
    counts = dict.fromkeys(slowest, 0)

    def timed(target, fn):
        def run(*a):
            start = time.perf_counter()
            fn(*a)
            counts[target] += 1
            slowest[target] = max(slowest[target], time.perf_counter() - start)
        return run

    check_rule = timed("rules", fz.check_rule)
    check_valid = timed("valid rules vs SQLite", lambda case: fz.check_valid_rule(*case))
    check_structure = timed("playbook structure", lambda data: fz.check_playbook(
        fz._dump(fz._mutate(fz.BASE, data)), workdir, registry))
    check_text = timed("playbook text", lambda text: fz.check_playbook(text, workdir, registry))
    datadir = workdir / "data"
    datadir.mkdir()
    check_data = timed("data files", lambda data, as_of: _check_data_quietly(fz, data, datadir, as_of))

    cfg = settings(max_examples=args.examples, deadline=None, database=None, print_blob=True,
                   suppress_health_check=list(HealthCheck))
    targets = [("rules", lambda: given(text=rules)(lambda text: check_rule(text))),
               ("valid rules vs SQLite", lambda: given(case=fz.valid_rules)(lambda case: check_valid(case))),
               ("playbook structure", lambda: given(data=st.data())(lambda data: check_structure(data))),
               ("playbook text", lambda: given(text=noise)(lambda text: check_text(text))),
               ("data files", lambda: given(data=fz.csv_bytes,
                                            as_of=st.sampled_from([None, None, "2024-01-03", "0001-01-01"]))(
                   lambda data, as_of: check_data(data, as_of)))]
    os.environ["TIERBOOK_LOAD_PLUGINS"] = "abc,adc,rfm"
    start = time.monotonic()
    rounds = 0
    while time.monotonic() - start < args.seconds:
        for name, make in targets:
            try:
                cfg(make())()  # a fresh test each round: fresh random examples
            except BaseException as exc:  # hypothesis attaches the minimal example as notes
                for note in getattr(exc, "__notes__", []):
                    print(note, flush=True)
                print(f"FAILED after {time.monotonic() - start:.0f} s in {name}: {type(exc).__name__}: {exc}",
                      flush=True)
                return 1
        rounds += 1
        print(f"round {rounds}: {time.monotonic() - start:.0f} s, examples " +
              ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)
    total = sum(counts.values())
    print(f"OK: {total:,} examples in {time.monotonic() - start:.0f} s, no failure other than TierbookError, every valid rule as SQLite; "
          + "; ".join(f"{k}: {counts[k]:,} (slowest {slowest[k]:.2f} s)" for k in counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
