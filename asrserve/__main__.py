"""``python -m asrserve``: the same command line as ``asrserve``."""

import sys

from asrserve.cli import main

sys.exit(main())
