"""`python -m decaffe ...` runs the decaffe command line."""

import sys

from .cli import main

sys.exit(main())
