"""``python -m scratchnade ...``: the command line of :mod:`scratchnade.cli`."""
import sys

from .cli import main

sys.exit(main())
