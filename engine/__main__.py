"""``python -m engine`` runs the ``tierbook`` command."""

from .cli import run

run()
