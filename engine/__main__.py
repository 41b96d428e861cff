"""``python -m engine`` runs the ``tierbook`` command."""

import sys

from .cli import main

sys.exit(main())
