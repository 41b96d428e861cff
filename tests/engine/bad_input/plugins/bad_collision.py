"""A plugin registering a classifier called ``abc``, which the built-in plugin already has."""

import polars as pl

from engine import hookimpl

from bad_common import classifier


@hookimpl
def register_classifiers(register):
    register(classifier("abc", lambda params, ctx: {"abc": pl.lit("good")}))
