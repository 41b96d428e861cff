"""A classifier returning a column it did not declare."""

import polars as pl

from engine import hookimpl

from bad_common import classifier


def _expressions(params, ctx):
    return {"segment": pl.lit("good")}


@hookimpl
def register_classifiers(register):
    register(classifier("seg", _expressions))
