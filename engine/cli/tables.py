"""Plain-text tables for the terminal."""

from __future__ import annotations

import polars as pl

from ..terminal import safe_lines


def format_summary(summary: pl.DataFrame) -> str:
    """Class sizes and revenue shares, one block per class column."""
    blocks = []
    for (classifier, column), part in summary.group_by(["classifier", "column"], maintain_order=True):
        title = column if column == classifier else f"{classifier}: {column}"
        width = max([len(str(x)) for x in part["label"]] + [5])
        lines = [title, f"  {'class':<{width}}  {'customers':>9}  {'share':>6}  {'revenue':>15}  {'rev share':>9}"]
        for row in part.iter_rows(named=True):
            share = "" if row["revenue_share"] is None else f"{row['revenue_share']:9.1%}"
            lines.append(
                f"  {row['label']:<{width}}  {row['customers']:>9,}  {row['customer_share']:6.1%}  "
                f"{row['revenue']:>15,.2f}  {share:>9}"
            )
        blocks.append(safe_lines(lines))  # a label's own line break or ESC stays escaped
    return "\n\n".join(blocks)
