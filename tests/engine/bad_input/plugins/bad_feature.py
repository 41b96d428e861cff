"""A plugin feature aggregating a transaction column that does not exist."""

import polars as pl

from engine import Feature, hookimpl


@hookimpl
def register_features(register):
    register(Feature("points", "loyalty points earned", agg=pl.col("loyalty_points").sum()))
