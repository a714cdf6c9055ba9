"""`python -m fastdiff ...` is the `fastdiff` command (fastdiff/cli.py)."""

import sys

from .cli import main

sys.exit(main())
