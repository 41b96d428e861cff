"""engine.cli: the ``tierbook`` command as a process (its entry point, ``run``)."""

from __future__ import annotations

import subprocess
import sys


def tierbook(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True)


def test_the_command_flushes_its_output_and_exit_code_before_exiting(tmp_path):
    # The tierbook command exits without the interpreter's teardown (engine.cli.run): what it printed
    # and its exit code must still arrive, through pipes as under a scheduler.
    data = tmp_path / "tx.csv"
    data.write_text("customer_id,order_id,order_date,amount\nc1,o1,2024-01-02,10.5\nc2,o2,2024-01-03,1\n")
    ok = tierbook("describe", str(data))
    assert ok.returncode == 0, ok.stderr
    assert "customers: 2" in ok.stdout and ok.stdout.rstrip().endswith("100.0%")  # the last line arrived
    bad = tierbook("describe", str(tmp_path / "missing.csv"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("tierbook: error:") and "missing.csv" in bad.stderr
    assert tierbook("--help").stdout.startswith("usage: tierbook")


def test_version_names_tierbook_python_and_polars_without_importing_polars():
    import importlib.metadata as md
    import platform

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine", "--version"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"tierbook {md.version('tierbook')} (")
    assert lines[1].startswith(f"Python {platform.python_version()} (")
    assert f"Polars {md.version('polars')}" in lines[2] and f"pluggy {md.version('pluggy')}" in lines[2]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "polars" not in imported and "engine.cli" in imported


def test_help_does_not_import_polars():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: tierbook")
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "engine.cli.classify" in imported  # the measurement sees the command modules
    assert not {m for m in imported if m == "polars" or m.startswith("polars.")}
