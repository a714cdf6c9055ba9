"""A small benchmark harness: interleaved repeats, medians with p20/p80, GB/s and the copy bandwidth.

Contenders of one case (a size and dtype) are timed *interleaved*: each repeat runs every provider
once, starting from a different one each time, so machine noise (other processes on a shared box,
frequency changes) falls on all of them alike and the ratios stay meaningful. A sample is one call, or
a few calls when one is too short for the timer. GB/s counts what the op must move (each input read
once, each output written once), and is also given as a fraction of the copy bandwidth
(`out.copy_(x)` of a large buffer) measured in the same run.

Everything returns plain data (lists of dicts); printing and files are separate, so a command line
(`fastdiff bench`) can reuse `run_case` / `measure_copy_bandwidth` and render the rows its own way.

>>> import torch
>>> rows = run_case({"sum": lambda x=torch.ones(1000): x.sum()}, bytes_moved=4000, repeats=3,
...                 case={"op": "demo", "size": 1000, "dtype": "float32"})
>>> rows[0]["provider"], rows[0]["median_ms"] > 0
('sum', True)
"""

from __future__ import annotations

import argparse
import json
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
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _time_calls(fn: Callable[[], object], number: int, device) -> float:
    """Seconds per call of fn, over `number` back-to-back calls."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    synchronize(device)
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
    # calls per sample so that one sample lasts at least min_sample_s (timer resolution, call overhead)
    number = {}
    for name in names:
        t = _time_calls(providers[name], 1, device)
        number[name] = max(1, min(1000, int(min_sample_s / max(t, 1e-9)) + 1)) if t < min_sample_s else 1
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            samples[name].append(_time_calls(providers[name], number[name], device))
    return samples, first


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
) -> list[dict]:
    """Rows (one per provider) of one case: timings, GB/s, fraction of copy bandwidth, speedups.

    `reference` names the provider whose speedup over every other is reported (e.g. "fastdiff-cpp"):
    row["speedup_of_reference"] = median(row) / median(reference). `first_call_fields` maps a provider
    to the row field its first-call time is reported under (e.g. {"torch.compile": "compile_s"}).
    """
    samples, first = measure(providers, repeats=repeats, device=device)
    rows = []
    for name, secs in samples.items():
        row = {**case, "provider": name, **summarize(secs), "repeats": repeats}
        row["gbps"] = bytes_moved / (row["median_ms"] * 1e-3) / 1e9
        row["frac_copy_bw"] = row["gbps"] / copy_gbps if copy_gbps else None
        if first_call_fields and name in first_call_fields:
            row[first_call_fields[name]] = first[name]
        rows.append(row)
    if reference is not None and reference in samples:
        ref = next(r for r in rows if r["provider"] == reference)["median_ms"]
        for row in rows:
            row["speedup_of_reference"] = row["median_ms"] / ref
    return rows


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


# --------------------------------------------------------------------------------------------------
# the machine and the result files


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
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment(device: str) -> dict:
    """What the numbers depend on, recorded next to them."""
    env = {
        "device": device_name(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_start": load_average(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        from fastdiff import _cpu

        env["fastdiff_cpu_isa"] = _cpu.isa()
    except ImportError:
        env["fastdiff_cpu_isa"] = None
    return env


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[tuple[str, str, int]]) -> str:
    """A Markdown table of rows; columns are (field, header, decimals)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(f), d) for f, _, d in columns) + " |")
    return "\n".join(lines)


def results_path(device: str) -> str:
    """benchmarks/results/<cpu|gpu>-<device slug>.md: one file per device, every benchmark in it."""
    kind = "cpu" if torch.device(device).type == "cpu" else "gpu"
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{kind}-{slug(device_name(device))}.md")


def update_results(path_md: str, name: str, title: str, env: dict, sections: list[tuple[str, str]], data: dict) -> str:
    """Store one benchmark's results under `name` in the device's JSON file (keeping the other
    benchmarks there), and rewrite the Markdown report from it. Returns the JSON path."""
    env = {**env, "load_average_end": load_average()}
    path_json = os.path.splitext(path_md)[0] + ".json"
    os.makedirs(os.path.dirname(path_md) or ".", exist_ok=True)
    everything = {}
    if os.path.exists(path_json):
        with open(path_json) as f:
            everything = json.load(f).get("benchmarks", {})
    everything[name] = {"title": title, "environment": env, "sections": sections, **data}
    lines = [
        f"# fastdiff benchmarks: {env['device']}",
        "",
        "Written by benchmarks/harness.py; JSON twin beside this file.",
    ]
    for bench in everything.values():
        e = bench["environment"]
        lines += ["", f"## {bench['title']}", "", f"Command: `{e['command']}`", ""]
        lines += [f"- {k}: {v}" for k, v in e.items() if k != "command"]
        for heading, text in bench["sections"]:
            lines += ["", f"### {heading}", "", text]
    with open(path_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(path_json, "w") as f:
        json.dump({"benchmarks": everything}, f, indent=1)
    return path_json


def parse_sizes(text: str) -> list[int]:
    """'20,22,24' (powers of two) or '1048576,...' (element counts)."""
    out = []
    for part in text.split(","):
        v = int(part)
        out.append(1 << v if v < 64 else v)
    return out


DTYPE_NAMES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp64": torch.float64,
    "float64": torch.float64,
}


def parse_dtypes(text: str) -> list[torch.dtype]:
    try:
        return [DTYPE_NAMES[t.strip()] for t in text.split(",")]
    except KeyError as exc:
        raise SystemExit(f"unknown dtype {exc}; accepted: {', '.join(DTYPE_NAMES)}") from None


# --------------------------------------------------------------------------------------------------
# the shared command line of the bench_*.py scripts

COLUMNS = [
    ("provider", "provider", 0),
    ("median_ms", "median ms", 3),
    ("p20_ms", "p20", 3),
    ("p80_ms", "p80", 3),
    ("gbps", "GB/s", 1),
    ("frac_copy_bw", "of copy BW", 2),
    ("speedup_of_reference", "fastdiff speedup", 1),
    ("compile_s", "compile s", 1),
]


def report(rows: list[dict]) -> list[tuple[str, str]]:
    """One Markdown table per (size, dtype)."""
    sections = []
    for size, dtype in dict.fromkeys((r["size"], r["dtype"]) for r in rows):
        part = [r for r in rows if (r["size"], r["dtype"]) == (size, dtype)]
        sections.append((f"{dtype}, {size:,} elements (2^{size.bit_length() - 1})", markdown_table(part, COLUMNS)))
    return sections


def main(argv, *, name: str, title: str, run: Callable[..., list[dict]], doc: str) -> None:
    """Parse the common flags, measure the copy bandwidth and run `run` in one go, print the tables and
    store them in the device's results file."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="powers of two or element counts (CPU: 20,22,24; CUDA: 24,26,28)")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-compile", action="store_true", help="leave out torch.compile (it takes a while)")
    ap.add_argument("--out", default=None, help="Markdown report (default: benchmarks/results/<cpu|gpu>-<device>.md)")
    args = ap.parse_args(argv)
    sizes = parse_sizes(args.sizes or ("20,22,24" if args.device == "cpu" else "24,26,28"))
    env = environment(args.device)
    copy = measure_copy_bandwidth(max(1 << 26, max(sizes)), device=args.device)
    rows = run(sizes, parse_dtypes(args.dtypes), args.device, args.repeats, not args.no_compile, copy["gbps"])
    sections = [("copy bandwidth", f"`out.copy_(x)`, {copy['numel']:,} float32: {copy['gbps']:.1f} GB/s")]
    sections += report(rows)
    for heading, text in sections:
        print(f"\n## {heading}\n{text}")
    out = args.out or results_path(args.device)
    update_results(out, name, title, env, sections, {"copy_bandwidth": copy, "rows": rows})
    print(f"\nwrote {out}", file=sys.stderr)
