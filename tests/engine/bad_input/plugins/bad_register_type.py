"""A plugin registering something that is not a Classifier."""

from engine import hookimpl


@hookimpl
def register_classifiers(register):
    register({"name": "dict-classifier"})
