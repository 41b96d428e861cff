"""A classifier whose report charts raise (its classes are fine)."""

import polars as pl
from engine import hookimpl

from bad_common import classifier


def _expressions(params, ctx):
    return {"chart": pl.when(pl.col("monetary") > 6).then(pl.lit("good")).otherwise(pl.lit("bad"))}


def _report(classifier, table, params):
    raise ValueError("no colour for class 'bad'")


@hookimpl
def register_classifiers(register):
    import dataclasses

    register(dataclasses.replace(classifier("chart", _expressions), report=_report))
