"""A classifier declaring an integer score column but returning text."""

import polars as pl

from engine import hookimpl

from bad_common import classifier


def _expressions(params, ctx):
    return {"score": pl.lit("high")}


@hookimpl
def register_classifiers(register):
    register(classifier("score", _expressions, dtype=pl.Int64))
