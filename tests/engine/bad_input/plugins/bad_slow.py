"""A classifier whose expressions() takes far too long (it would sleep 60 s)."""

import time

import polars as pl

from engine import hookimpl

from bad_common import classifier


def _expressions(params, ctx):
    time.sleep(60)
    return {"slow": pl.lit("good")}


@hookimpl
def register_classifiers(register):
    register(classifier("slow", _expressions))
