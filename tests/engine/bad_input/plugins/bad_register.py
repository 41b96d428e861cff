"""A plugin whose registration hook raises."""

from engine import hookimpl


@hookimpl
def register_classifiers(register):
    raise KeyError("settings.toml")
