"""bench/generate.py: chunked generation of large sets (small sizes only, written to tmp_path)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

ROOT = Path(__file__).resolve().parents[2]

# bench/ is a folder of scripts, not a package: load the generator by its path.
_spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "bench" / "generate.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

ROWS, CHUNK, SEED = 30_000, 10_000, 20240601


@pytest.fixture(scope="module")
def chunked(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chunked") / "tx.parquet"
    assert gen.write(ROWS, path, SEED, chunk_rows=CHUNK) is None  # the chunked path (one piece returns the frame)
    return path


def blocks_of(path: Path, sizes: list[int]) -> list[pl.DataFrame]:
    df = pl.read_parquet(path)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [df.slice(s, n) for s, n in zip(starts, sizes)]


def test_block_sizes():
    assert gen.block_rows(ROWS, CHUNK) == [10_000] * 3
    assert gen.block_rows(25_001, 10_000) == [8_334, 8_334, 8_333]
    assert gen.block_rows(10_000, 10_000) == [10_000]
    # The existing sets stay one piece by default; 200m is 20 blocks of 10M.
    assert [gen.block_rows(gen.SIZES[s]) for s in ("1m", "10m", "50m")] == [[1_000_000], [10_000_000], [50_000_000]]
    assert gen.block_rows(gen.SIZES["200m"]) == [10_000_000] * 20


def test_chunked_is_deterministic(chunked, tmp_path):
    again = tmp_path / "again.parquet"
    gen.write(ROWS, again, SEED, chunk_rows=CHUNK)
    assert again.read_bytes() == chunked.read_bytes()
    other = tmp_path / "other.parquet"
    gen.write(ROWS, other, SEED + 1, chunk_rows=CHUNK)
    assert other.read_bytes() != chunked.read_bytes()


def test_file_is_the_blocks_in_order(chunked):
    sizes = gen.block_rows(ROWS, CHUNK)
    expected = pl.concat([gen.generate_block(sizes, i, SEED) for i in range(len(sizes))])
    assert_frame_equal(pl.read_parquet(chunked), expected)


def test_blocks_are_different_shops(chunked):
    # Each block has its own seed: with the id offsets taken off, no two blocks are the same draw.
    sizes = gen.block_rows(ROWS, CHUNK)
    blocks = blocks_of(chunked, sizes)
    amounts = [b["amount"].to_list() for b in blocks]
    assert len({tuple(a) for a in amounts}) == len(blocks)


def test_ids_unique_across_blocks(chunked):
    sizes = gen.block_rows(ROWS, CHUNK)
    blocks = blocks_of(chunked, sizes)
    customers = [set(b["customer_id"].to_list()) for b in blocks]
    orders = [set(b["order_id"].to_list()) for b in blocks]
    for i in range(len(blocks)):
        for j in range(i + 1, len(blocks)):
            assert not customers[i] & customers[j], f"blocks {i} and {j} share customers"
            assert not orders[i] & orders[j], f"blocks {i} and {j} share order ids"
    n_cust = sum(n // 10 for n in sizes)
    assert set().union(*customers) == set(range(1, n_cust + 1))
    # Within the file an order id belongs to one customer (ids are not reused by another block's customers).
    df = pl.read_parquet(chunked)
    assert df.group_by("order_id").agg(pl.col("customer_id").n_unique()).filter(pl.col("customer_id") > 1).height == 0


def test_row_count_and_schema(tmp_path):
    path = tmp_path / "odd.parquet"
    gen.write(25_001, path, SEED, chunk_rows=10_000)
    assert pl.scan_parquet(path).select(pl.len()).collect().item() == 25_001
    assert pl.read_parquet_schema(path) == {
        "customer_id": pl.Int64, "order_id": pl.Int64, "order_date": pl.Date, "amount": pl.Float64}
    assert not path.with_suffix(".parquet.tmp").exists()


def test_each_block_is_date_sorted(chunked):
    for b in blocks_of(chunked, gen.block_rows(ROWS, CHUNK)):
        assert b["order_date"].is_sorted()
        assert b["order_date"].min() >= gen.START and b["order_date"].max() <= gen.END


@pytest.mark.parametrize("chunk_rows", [None, 20_000, 1_000_000])
def test_one_block_is_generate(tmp_path, chunk_rows):
    path = tmp_path / "one.parquet"
    df = gen.write(20_000, path, SEED, chunk_rows=chunk_rows)
    expected = gen.generate(20_000, SEED)
    assert_frame_equal(df, expected)
    assert_frame_equal(pl.read_parquet(path), expected)
    # Byte for byte what the one-piece writer has always written.
    ref = tmp_path / "ref.parquet"
    expected.write_parquet(ref, compression="zstd", statistics=True)
    assert path.read_bytes() == ref.read_bytes()


def test_cli_chunked(tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    assert gen.main(["--rows", "30k", "--chunk-rows", "10k", "--out", str(out), "--seed", str(SEED)]) == 0
    assert "3 blocks" in capsys.readouterr().err
    assert pl.read_parquet(out).height == 30_000
    assert not out.with_suffix(".parquet.tmp").exists()
