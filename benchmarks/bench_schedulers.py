"""The `schedulers` suite of `fastdiff bench` (its code: fastdiff/bench/schedulers.py), kept runnable as a script.

python benchmarks/bench_schedulers.py [--sizes 24] [--dtype fp32] [--repeats 9] [--device cuda]
# is: fastdiff bench --suite schedulers ...
"""

import sys

from fastdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--suite", "schedulers", *sys.argv[1:]]))
