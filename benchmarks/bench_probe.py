"""The full probe-overhead study (its code: fastdiff/bench/probe.py; `fastdiff bench --suite probe` runs a shorter one).

python benchmarks/bench_probe.py            # ~4 minutes on a 2-core CPU
python benchmarks/bench_probe.py --quick    # a smoke run
"""

from fastdiff.bench.probe import main

if __name__ == "__main__":
    main()
