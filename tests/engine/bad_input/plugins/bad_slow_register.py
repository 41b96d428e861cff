"""A plugin whose registration hook hangs (it would sleep 60 s)."""

import time

from engine import hookimpl


@hookimpl
def register_classifiers(register):
    time.sleep(60)
