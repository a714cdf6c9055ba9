"""Benchmark scripts: thin wrappers of `fastdiff bench` (fastdiff/bench); committed results in results/."""
