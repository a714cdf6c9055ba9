"""A small benchmark harness: interleaved repeats, medians with p20/p80, GB/s and the copy bandwidth.

Contenders of one case (a size and dtype) are timed *interleaved*: each repeat runs every provider
once, starting from a different one each time, so machine noise (other processes on a shared box,
frequency changes) falls on all of them alike and the ratios stay meaningful. A sample is one call, or
a few calls when one is too short for the timer; on a GPU, one call timed with CUDA events after an L2
flush (median over the repeats, as `triton.testing.do_bench`). GB/s counts what the op must move (each input read
once, each output written once), and is also given as a fraction of the copy bandwidth
(`out.copy_(x)` of a large buffer) measured in the same run.

Everything returns plain data (lists of dicts); printing and files are separate (`fastdiff.bench.report`).

>>> import torch
>>> rows = run_case({"sum": lambda x=torch.ones(1000): x.sum()}, bytes_moved=4000, repeats=3,
...                 case={"op": "demo", "size": 1000, "dtype": "float32"})
>>> rows[0]["provider"], rows[0]["median_ms"] > 0
('sum', True)
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable

import torch

# --------------------------------------------------------------------------------------------------
# timing


def synchronize(device: torch.device | str | None) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize(device)


def _is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


_L2_FLUSH: dict = {}


def _flush_l2(device) -> None:
    """Evict the GPU's L2 cache (as triton.testing.do_bench does): write a buffer larger than it."""
    buf = _L2_FLUSH.get(str(device))
    if buf is None:
        buf = _L2_FLUSH[str(device)] = torch.empty(256 << 20, dtype=torch.int8, device=device)
    buf.zero_()


def _time_calls(fn: Callable[[], object], number: int, device) -> float:
    """Seconds per call of fn, over `number` back-to-back calls.

    On a CUDA device: one call between two CUDA events, after flushing the L2 cache (the data a sampler
    step reads were evicted by the model call before it), so GPU time is measured, not host time.
    """
    if _is_cuda(device):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        _flush_l2(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (as numpy's default)."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def measure(
    providers: dict[str, Callable[[], object]],
    *,
    repeats: int = 15,
    min_sample_s: float = 2e-3,
    device=None,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Interleaved timing of every provider: ({name: [seconds per call] * repeats}, {name: first call s}).

    The first call of each provider is timed separately (it includes compilation for torch.compile,
    and page faults of fresh allocations) and then left out of the samples.
    """
    names = list(providers)
    first = {name: _time_calls(providers[name], 1, device) for name in names}
    # calls per sample so that one sample lasts at least min_sample_s (timer resolution, call overhead);
    # CUDA events time single calls precisely
    number = {}
    for name in names:
        t = _time_calls(providers[name], 1, device)
        short = t < min_sample_s and not _is_cuda(device)
        number[name] = max(1, min(1000, int(min_sample_s / max(t, 1e-9)) + 1)) if short else 1
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            samples[name].append(_time_calls(providers[name], number[name], device))
    return samples, first


def first_calls(providers: dict[str, Callable[[], object]], device=None) -> tuple[dict, dict[str, float]]:
    """Call every provider once: ({name: its result}, {name: seconds of that first call}). The first call
    of a torch.compile'd function compiles it: time it here when the results are checked before timing."""
    results, seconds = {}, {}
    for name, fn in providers.items():
        synchronize(device)
        t0 = time.perf_counter()
        results[name] = fn()
        synchronize(device)
        seconds[name] = time.perf_counter() - t0
    return results, seconds


def summarize(seconds: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(seconds) * 1e3,
        "p20_ms": quantile(seconds, 0.2) * 1e3,
        "p80_ms": quantile(seconds, 0.8) * 1e3,
    }


def measure_copy_bandwidth(
    numel: int = 1 << 26, dtype: torch.dtype = torch.float32, device="cpu", repeats: int = 15
) -> dict[str, float]:
    """GB/s of `out.copy_(x)` on a buffer larger than the caches (bytes read + bytes written)."""
    x = torch.randn(numel, dtype=torch.float32, device=device).to(dtype)
    out = torch.empty_like(x)
    samples, _ = measure({"copy": lambda: out.copy_(x)}, repeats=repeats, device=device)
    med = statistics.median(samples["copy"])
    moved = 2 * x.numel() * x.element_size()
    return {
        "numel": numel,
        "dtype": str(dtype).removeprefix("torch."),
        "median_ms": med * 1e3,
        "gbps": moved / med / 1e9,
    }


def run_case(
    providers: dict[str, Callable[[], object]],
    *,
    bytes_moved: int,
    case: dict,
    repeats: int = 15,
    device=None,
    copy_gbps: float | None = None,
    reference: str | None = None,
    first_call_fields: dict[str, str] | None = None,
    bytes_moved_by: dict[str, int] | None = None,
    first_call_s: dict[str, float] | None = None,
) -> list[dict]:
    """Rows (one per provider) of one case: timings, GB/s, fraction of copy bandwidth, speedups.

    `reference` names the fastdiff provider whose speedup over every other is reported:
    row["fastdiff_speedup"] = median(row) / median(reference), i.e. how many times faster fastdiff is
    than this provider (< 1: fastdiff is slower). `first_call_fields` maps a provider to the row field
    its first-call time (seconds) is reported under (e.g. {"torch.compile": "compile_s"}).
    `bytes_moved_by` overrides `bytes_moved` for providers that do a different amount of work (a yardstick).
    `first_call_s` gives first-call times measured earlier (`first_calls`), which take precedence.
    """
    samples, first = measure(providers, repeats=repeats, device=device)
    rows = []
    for name, secs in samples.items():
        moved = (bytes_moved_by or {}).get(name, bytes_moved)
        row = {**case, "provider": name, **summarize(secs), "repeats": repeats, "bytes_moved": moved}
        row["gbps"] = moved / (row["median_ms"] * 1e-3) / 1e9
        row["frac_copy_bw"] = row["gbps"] / copy_gbps if copy_gbps else None
        if first_call_fields and name in first_call_fields:
            row[first_call_fields[name]] = (first_call_s or {}).get(name, first[name])
        rows.append(row)
    add_speedups(rows, reference)
    return rows


def add_speedups(rows: list[dict], reference: str | None) -> None:
    """row["reference"] and row["fastdiff_speedup"] = median(row) / median(reference row), in place."""
    ref = next((r for r in rows if r["provider"] == reference), None)
    for row in rows:
        row["reference"] = reference if ref is not None else None
        row["fastdiff_speedup"] = row["median_ms"] / ref["median_ms"] if ref is not None else None


def with_baseline_isa(name: str, fn: Callable[[], object]) -> dict[str, Callable[[], object]]:
    """{name: fn}, plus `name[base-isa]` running fastdiff's C++ kernels built for the baseline instruction
    set when the AVX2 build is in use: shows what the run-time AVX2 dispatch is worth."""
    try:
        from fastdiff import _cpu
    except ImportError:
        return {name: fn}
    if _cpu.isa() != "avx2":
        return {name: fn}

    def base():
        _cpu.set_isa("base")
        try:
            return fn()
        finally:
            _cpu.set_isa("avx2")

    return {name: fn, f"{name}[base-isa]": base}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------------------------------
# the machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def package_version(name: str) -> str | None:
    """The version of an importable package, None when it is not installed (or fails to import)."""
    try:
        return getattr(importlib.import_module(name), "__version__", "unknown")
    except Exception:  # noqa: BLE001 - a broken optional package is reported as missing
        return None


def environment(device: str) -> dict:
    """What the numbers depend on, recorded next to them."""
    is_cuda = torch.device(device).type == "cuda"
    env = {
        "device": device_name(device),
        "device_type": torch.device(device).type,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if is_cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if is_cuda else None,
        "triton": package_version("triton"),
        "diffusers": package_version("diffusers"),
        "numpy": package_version("numpy"),
        "fastdiff": package_version("fastdiff"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": load_average(),
        "command": " ".join([os.path.basename(sys.argv[0]) or "python", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        from fastdiff import _cpu

        env["fastdiff_cpu_isa"] = _cpu.isa()
    except ImportError:
        env["fastdiff_cpu_isa"] = None
    return env


# --------------------------------------------------------------------------------------------------
# tables


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[tuple[str, str, int]]) -> str:
    """A Markdown table of rows; columns are (field, header, decimals)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(f), d) for f, _, d in columns) + " |")
    return "\n".join(lines)
