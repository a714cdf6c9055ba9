"""The `stats` suite of `fastdiff bench` (its code: fastdiff/bench/stats.py), kept runnable as a script.

python benchmarks/bench_stats.py [--sizes 24] [--dtype fp32] [--repeats 21] [--device cuda] [--no-compile]
# is: fastdiff bench --suite stats ...
"""

import sys

from fastdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--suite", "stats", *sys.argv[1:]]))
