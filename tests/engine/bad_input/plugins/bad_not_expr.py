"""A classifier returning a Python list instead of a Polars expression."""

from engine import hookimpl

from bad_common import classifier


def _expressions(params, ctx):
    return {"listy": ["good", "bad"]}


@hookimpl
def register_classifiers(register):
    register(classifier("listy", _expressions))
