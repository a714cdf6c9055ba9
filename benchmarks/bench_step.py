"""The `step` suite of `fastdiff bench` (its code: fastdiff/bench/step.py), kept runnable as a script.

python benchmarks/bench_step.py [--sizes 24] [--dtype fp32] [--repeats 21] [--device cuda] [--no-compile]
# is: fastdiff bench --suite step ...
"""

import sys

from fastdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--suite", "step", *sys.argv[1:]]))
