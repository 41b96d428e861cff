"""Shared fixtures: the real data sets, fresh registries, the CLI runner."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

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
