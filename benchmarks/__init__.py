"""Benchmarks (see harness.py); results per device in results/."""
