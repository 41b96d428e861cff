"""A classifier requiring a feature nobody provides."""

import polars as pl

from engine import hookimpl

from bad_common import classifier


def _expressions(params, ctx):
    return {"loyal": pl.when(pl.col("loyalty_points") > 100).then(pl.lit("good")).otherwise(pl.lit("bad"))}


@hookimpl
def register_classifiers(register):
    register(classifier("loyal", _expressions, requires=("loyalty_points",)))
