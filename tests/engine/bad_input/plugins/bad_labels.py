"""A classifier returning a label outside its declared set (good, bad)."""

import polars as pl

from engine import hookimpl

from bad_common import classifier


def _expressions(params, ctx):
    return {"tier": pl.when(pl.col("monetary") > 10).then(pl.lit("good")).otherwise(pl.lit("platinum"))}


@hookimpl
def register_classifiers(register):
    register(classifier("tier", _expressions))
