"""A classifier whose expressions() returns None."""

from engine import hookimpl

from bad_common import classifier


def _expressions(params, ctx):
    return None


@hookimpl
def register_classifiers(register):
    register(classifier("nothing", _expressions))
