"""A plugin whose registration hook calls sys.exit."""

import sys

from engine import hookimpl


@hookimpl
def register_classifiers(register):
    sys.exit("no licence")
