"""Shared fixtures: the real data sets, fresh registries, the CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, settings

import engine
from engine.cli import main as cli_main
from engine.registry import get_registry

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
UCI = SHARED_DATA / "online_retail_uci.parquet"
UCI_MAPPING = {
    "customer_id": "CustomerID",
    "order_id": "InvoiceNo",
    "order_date": "InvoiceDate",
    "quantity": "Quantity",
    "unit_price": "UnitPrice",
}


# The key property tests (rules against SQLite, playbook semantics, features, classifiers) take
# ``settings(settings.get_profile("key"))``: 300 examples in CI (CI=true), 60 while developing;
# TIERBOOK_KEY_EXAMPLES overrides both (docs/testing.md has the timings).
_KEY_EXAMPLES = int(os.environ.get("TIERBOOK_KEY_EXAMPLES") or (300 if os.environ.get("CI") else 60))
# TIERBOOK_NO_SHRINK=1 (tools/mutate.py sets it) stops at the first failing example instead of shrinking it.
settings.register_profile("key", max_examples=_KEY_EXAMPLES, deadline=None,
                          phases=[p for p in Phase if p != Phase.shrink or not os.environ.get("TIERBOOK_NO_SHRINK")],
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                 HealthCheck.filter_too_much, HealthCheck.data_too_large])


@pytest.fixture
def registry():
    """A fresh registry with the built-in plugins only (installed third-party ones excluded)."""
    return get_registry(allow=["abc", "adc", "rfm"], strict=True)


@pytest.fixture(scope="session")
def uci_path() -> Path:
    if not UCI.exists():
        pytest.skip(f"the full UCI data set is not at {UCI}")
    return UCI


@pytest.fixture(scope="session")
def uci_frame(uci_path) -> pl.DataFrame:
    return pl.read_parquet(uci_path)


@pytest.fixture
def run_cli(capsys):
    """Run ``tierbook ARGS``; return (exit code, stdout, stderr)."""

    def run(*args: str):
        code = cli_main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def sample_path() -> Path:
    return engine.sample_path()


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for every Spark test (local[2], two shuffle partitions).

    Skipped with the reason when pyspark or a Java 17+ runtime is missing (CI installs both:
    the test extra and .ci/system-deps).
    """
    from engine.errors import DataError
    from engine.spark import SparkSettings, check_available, spark_session

    settings = SparkSettings(master="local[2]", config={
        "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2", "spark.driver.memory": "2g"})
    try:
        check_available(settings)
    except DataError as exc:
        pytest.skip(str(exc))
    session = spark_session(settings)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def bench_1m(tmp_path_factory) -> Path:
    """The benchmark's 1M-row set (bench/generate.py, its default seed), written once per test session."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "bench" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    out = tmp_path_factory.mktemp("bench") / "tx_1m.parquet"
    generate.write(1_000_000, out)
    return out


@pytest.fixture
def count_scans(monkeypatch):
    """``count_scans(path)`` -> a list that gets, for every collect whose plan reads ``path``, the number of
    scans of it in the optimised plan (``LazyFrame.collect`` and ``polars.collect_all`` both counted)."""

    def install(path: Path) -> list[int]:
        reads: list[int] = []
        original, original_all = pl.LazyFrame.collect, pl.collect_all

        def scans(plan: str) -> int:
            return sum(1 for line in plan.splitlines() if "SCAN" in line and path.name in line)

        def counting_collect(self, *args, **kwargs):
            if path.name in self.explain(optimized=False):
                reads.append(scans(self.explain()))
            return original(self, *args, **kwargs)

        def counting_collect_all(frames, *args, **kwargs):
            frames = list(frames)
            if any(path.name in f.explain(optimized=False) for f in frames):
                reads.append(scans(pl.explain_all(frames)))
            return original_all(frames, *args, **kwargs)

        monkeypatch.setattr(pl.LazyFrame, "collect", counting_collect)
        monkeypatch.setattr(pl, "collect_all", counting_collect_all)
        return reads

    return install
