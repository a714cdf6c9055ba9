"""The benchmark harness lives in the package: fastdiff/bench/harness.py (this name is kept for scripts here)."""

from fastdiff.bench.harness import *  # noqa: F403
from fastdiff.bench.harness import __doc__ as _doc  # noqa: F401
