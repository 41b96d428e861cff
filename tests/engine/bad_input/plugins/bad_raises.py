"""A classifier whose expressions() raises."""

from engine import hookimpl

from bad_common import classifier


def _expressions(params, ctx):
    raise RuntimeError("model file churn.bin not found")


@hookimpl
def register_classifiers(register):
    register(classifier("boom", _expressions))
