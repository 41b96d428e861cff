"""A classifier that leaves some customers without a label (null): allowed, counted as (none)."""

import polars as pl

from engine import hookimpl

from bad_common import classifier


def _expressions(params, ctx):
    return {"maybe": pl.when(pl.col("monetary") > 10).then(pl.lit("good"))}


@hookimpl
def register_classifiers(register):
    register(classifier("maybe", _expressions))
