"""The `multi_stats` suite of `fastdiff bench` (its code: fastdiff/bench/multi_stats.py), as a script.

python benchmarks/bench_multi_stats.py [--dtype fp32,bf16] [--quick]
# is: fastdiff bench --suite multi_stats ...
"""

import sys

from fastdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--suite", "multi_stats", *sys.argv[1:]]))
