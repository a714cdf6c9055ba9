"""The C++ kernels alone (fastdiff._cpu) against their yardsticks, at latent sizes and up.

Calls `_cpu.tensor_stats` / `_cpu.fused_step` with view specs built once, so what is timed is the kernel
call: pybind argument conversion, checks, the OpenMP region and the data work, not the Python wrappers
(fastdiff/kernels/cpu.py). Yardsticks in the same interleaved run: `x.sum()` (one read pass) for the
stats, `torch.add(x, e, out=o)` for the step (the DDIM step with clipping, x0 stored, stats of both).
Float32, contiguous, the latent shape [1, 4, n / 4]; torch runs on the same thread count.

Run from the repository root, with the extension built in place
(`python setup.py build_ext --inplace`):

    python benchmarks/bench_cpu_kernels.py                     # 16k .. 16M, torch's thread count
    python benchmarks/bench_cpu_kernels.py --sizes 14,16 --repeats 41
    python benchmarks/bench_cpu_kernels.py --threads 1,2       # both counts: where a team starts to pay
    python benchmarks/bench_cpu_kernels.py --min --sample-ms 0.5 --repeats 101   # a busy machine

Medians of interleaved samples (each sample a loop of calls lasting ~2 ms): on a shared machine the
ratios, measured side by side, are far more stable than the absolute times. Compare kernel variants by
instruction counts (valgrind --tool=callgrind) rather than by wall-clock time on a busy machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from fastdiff import _cpu
from fastdiff.kernels import cpu
from fastdiff.step import StepCoeffs


def per_call(fn, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def interleaved(
    providers: dict, repeats: int, min_sample_s: float = 2e-3, estimator=statistics.median
) -> dict[str, float]:
    """Seconds per call of each provider (median of the samples, or `estimator`), samples interleaved in
    rotating order."""
    names = list(providers)
    for fn in providers.values():
        fn()
    number = {n: max(1, min(20000, int(min_sample_s / max(per_call(providers[n], 3), 1e-9)))) for n in names}
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for i in range(len(names)):
            n = names[(r + i) % len(names)]
            samples[n].append(per_call(providers[n], number[n]))
    return {n: estimator(s) for n, s in samples.items()}


def providers(n: int, threads: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, n // 4, generator=g)
    e = torch.randn(1, 4, n // 4, generator=g)
    o, prev, x0 = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    counts, moments = torch.empty(1, 5, dtype=torch.int64), torch.empty(1, 4, dtype=torch.float64)
    stats_args = ([cpu.view_spec(x)], [1], cpu.view_spec(counts), cpu.view_spec(moments), threads)
    a_t, a_prev = 0.3, 0.6
    c = StepCoeffs.from_prediction("epsilon", math.sqrt(a_t), math.sqrt(1 - a_t), p0=math.sqrt(a_prev),
                                   pe=math.sqrt(1 - a_prev))  # fmt: skip
    clipped = torch.zeros(1, 1, dtype=torch.int64)
    sc, sm = torch.empty(2, 5, dtype=torch.int64), torch.empty(2, 4, dtype=torch.float64)
    step_args = (
        cpu.view_spec(x), cpu.view_spec(e), None, None, [], [float(v) for v in c.vector()], None, None, 1.0,
        1, -1.0, 1.0, None, cpu.view_spec(prev), cpu.view_spec(x0), True, cpu.view_spec(clipped),
        cpu.view_spec(sc), cpu.view_spec(sm), threads,
    )  # fmt: skip
    keep = (x, e, o, prev, x0, counts, moments, clipped, sc, sm)
    return {
        "read": lambda: (keep, x.sum()),
        "stats": lambda: _cpu.tensor_stats(*stats_args),
        "add": lambda: torch.add(x, e, out=o),
        "step": lambda: _cpu.fused_step(*step_args),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="14,16,18,20,22,24", help="log2 element counts")
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--threads", default=str(torch.get_num_threads()), help="comma-separated thread counts")
    ap.add_argument("--min", action="store_true", help="best sample instead of the median (a busy machine)")
    ap.add_argument("--sample-ms", type=float, default=2.0, help="length of one sample (a loop of calls)")
    args = ap.parse_args()
    est = min if args.min else statistics.median
    print(f"isa={_cpu.isa()}  float32, {'best' if args.min else 'median'} of {args.repeats} interleaved samples")
    print(f"{'n':>10} {'thr':>3} {'read us':>9} {'stats us':>9} {'stats/read':>10} {'add us':>9} {'step us':>9} "
          f"{'step/add':>9}")  # fmt: skip
    for k in (int(s) for s in args.sizes.split(",")):
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            m = interleaved(providers(1 << k, threads), args.repeats, args.sample_ms * 1e-3, est)
            us = {n: v * 1e6 for n, v in m.items()}
            print(f"{1 << k:>10} {threads:>3} {us['read']:9.1f} {us['stats']:9.1f} {us['stats'] / us['read']:10.2f} "
                  f"{us['add']:9.1f} {us['step']:9.1f} {us['step'] / us['add']:9.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
