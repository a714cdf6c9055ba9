"""`fastdiff bench`: parse and validate everything first, then run the suites with a progress bar and write the files.

fastdiff bench --quick                                   # a couple of minutes on a 2-core CPU
fastdiff bench --suite stats,step --sizes 24 --dtype fp32
fastdiff bench --readme                                  # re-render README-table.md from the results folder
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time

import torch

from . import harness, report
from .config import BenchConfig
from .suites import SUITES

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp64": torch.float64,
    "float64": torch.float64,
}
DEFAULT_SIZES = {"cpu": "20,22,24", "cuda": "24,26,28"}
QUICK_SIZES = {"cpu": "20", "cuda": "24"}
MAX_SIZE = 1 << 31
DEFAULT_OUT = os.path.join("benchmarks", "results")


def add_arguments(p: argparse.ArgumentParser) -> None:
    suites = ", ".join(SUITES)
    p.add_argument("--quick", action="store_true", help="small sizes, float32, few repeats (< 2 minutes on 2 cores)")
    p.add_argument("--suite", default=None, help=f"comma-separated suites (default: all available): {suites}")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N); default cpu")
    p.add_argument(
        "--dtype",
        "--dtypes",
        dest="dtype",
        default=None,
        help=f"comma-separated dtypes (default fp32,bf16; --quick: fp32); accepted: {', '.join(DTYPES)}",
    )
    p.add_argument(
        "--sizes",
        default=None,
        help="comma-separated element counts of the step/stats suites: 4096, 16M, 2^24, or a power-of-two "
        "exponent below 64 (24 = 2^24). Default: CPU 20,22,24; CUDA 24,26,28; --quick: 20 / 24",
    )
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats per case (default 15; --quick 5)")
    p.add_argument("--no-compile", action="store_true", help="leave out torch.compile (its compile takes ~20 s a case)")
    p.add_argument(
        "--out",
        default=None,
        help=f"results folder (default: {DEFAULT_OUT} in a source checkout, else ./fastdiff-bench)",
    )
    p.add_argument("--no-files", action="store_true", help="print the tables only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--readme", action="store_true", help="only render README-table.md from the JSON in --out")


# --------------------------------------------------------------------------------------------------
# validation: every error here happens before anything runs


def parse_sizes(text: str) -> tuple[int, ...]:
    """'4096,16M,2^24,20' -> element counts (a bare number below 64 is a power-of-two exponent)."""
    sizes = []
    for part in text.split(","):
        token = part.strip()
        m = re.fullmatch(r"(?:(\d+)\s*([kKmMgG]?)|2\^(\d+))", token)
        if m is None:
            raise SystemExit(
                f"--sizes: cannot read {token!r} (in {text!r}); accepted: element counts (4096), with K/M/G "
                "(16M = 2^24), 2^k, or an exponent below 64 (24 = 2^24), comma-separated"
            )
        if m.group(3) is not None:
            n = 1 << int(m.group(3))
        else:
            n = int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
            if not m.group(2) and n < 64:
                n = 1 << n
        if not 1 <= n <= MAX_SIZE:
            raise SystemExit(f"--sizes: {token!r} is {n:,} elements; accepted: 1 to {MAX_SIZE:,} (2^31) elements")
        sizes.append(n)
    return tuple(dict.fromkeys(sizes))


def parse_dtypes(text: str) -> tuple[torch.dtype, ...]:
    out = []
    for part in text.split(","):
        name = part.strip().lower().removeprefix("torch.")
        if name not in DTYPES:
            raise SystemExit(f"--dtype: unknown dtype {part.strip()!r}; accepted: {', '.join(DTYPES)}")
        out.append(DTYPES[name])
    return tuple(dict.fromkeys(out))


def check_device(text: str) -> str:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise SystemExit(f"--device: cannot read {text!r}; accepted: cpu, cuda, cuda:N") from None
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda":
        raise SystemExit(f"--device: {text!r} is not supported; accepted: cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__} " + (
            "built with CUDA " + torch.version.cuda if torch.version.cuda else "CPU-only build"
        )
        raise SystemExit(f"--device {text}: no CUDA GPU is visible here ({build}); use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise SystemExit(f"--device {text}: there are {torch.cuda.device_count()} CUDA devices (cuda:0..)")
    return str(device)


def select_suites(text: str | None) -> tuple[list[str], dict[str, str]]:
    """(suites to run, {suite: why it is left out}); an unknown or unavailable suite asked by name is an error."""
    if text is None:
        chosen, explicit = list(SUITES), False
    else:
        chosen = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
        explicit = True
        unknown = [s for s in chosen if s not in SUITES]
        if unknown or not chosen:
            raise SystemExit(f"--suite: unknown suite(s) {unknown or [text]}; accepted: {', '.join(SUITES)}")
    run, skipped = [], {}
    for name in chosen:
        ok, why = SUITES[name].availability()
        if ok:
            run.append(name)
        elif explicit:
            raise SystemExit(f"--suite {name}: not available here: {why}")
        else:
            skipped[name] = why
    return run, skipped


def default_out() -> str:
    return DEFAULT_OUT if os.path.isdir(DEFAULT_OUT) else "fastdiff-bench"


def check_out_dir(path: str) -> str:
    """Create the folder and prove it is writable (a file written and removed), else SystemExit."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".fastdiff-bench-", delete=True):
            pass
    except OSError as exc:
        raise SystemExit(f"--out {path}: the results folder is not writable ({exc.strerror or exc})") from None
    return path


def validate(args: argparse.Namespace) -> tuple[BenchConfig, list[str], dict[str, str], str | None]:
    """(config, suites to run, suites left out with why, output folder or None)."""
    device = check_device(args.device)
    kind = torch.device(device).type
    sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)[kind])
    dtypes = parse_dtypes(args.dtype or ("fp32" if args.quick else "fp32,bf16"))
    repeats = args.repeats if args.repeats is not None else (5 if args.quick else 15)
    if repeats < 1:
        raise SystemExit(f"--repeats: {repeats} given; accepted: 1 or more")
    suites, skipped = select_suites(args.suite)
    out = None if args.no_files else check_out_dir(args.out or default_out())
    cfg = BenchConfig(
        device=device, sizes=sizes, dtypes=dtypes, repeats=repeats, quick=args.quick, compile=not args.no_compile
    )
    return cfg, suites, skipped, out


# --------------------------------------------------------------------------------------------------
# running


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["fastdiff", *args])


def run_bench(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """Validate, measure the copy bandwidth, run the suites; the result document (see `fastdiff.bench`)."""
    cfg, suites, skipped, out = validate(args)
    t_start = time.perf_counter()
    env = harness.environment(cfg.device)
    env["command"] = command_line(argv)
    copy_numel = (1 << 24) if cfg.quick else max(1 << 26, max(cfg.sizes))
    copy = harness.measure_copy_bandwidth(copy_numel, device=cfg.device, repeats=cfg.repeats)
    cfg.copy_gbps = copy["gbps"]

    from tqdm.auto import tqdm

    totals = {name: SUITES[name].count_cases(cfg) for name in suites}
    bar = tqdm(
        total=sum(totals.values()), desc="fastdiff bench", unit="case", disable=args.no_progress, file=sys.stderr
    )
    cfg.progress = bar.update
    rows, status = [], {}
    try:
        for name in suites:
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            rows += SUITES[name].run(cfg)
            status[name] = {"status": "ok", "reason": None, "seconds": round(time.perf_counter() - t0, 1)}
    finally:
        bar.close()
    status.update({name: {"status": "not available", "reason": why, "seconds": 0.0} for name, why in skipped.items()})
    env["load_average_end"] = harness.load_average()
    result = {
        "schema": "fastdiff-bench/1",
        "command": env["command"],
        "environment": env,
        "settings": {
            "device": cfg.device,
            "suites": suites,
            "all_suites": args.suite is None,
            "sizes": list(cfg.sizes),
            "dtypes": [harness.dtype_name(d) for d in cfg.dtypes],
            "repeats": cfg.repeats,
            "quick": cfg.quick,
            "compile": cfg.compile,
        },
        "copy_bandwidth": copy,
        "suites": status,
        "headlines": report.headlines(rows),
        "rows": rows,
        "elapsed_s": round(time.perf_counter() - t_start, 1),
    }
    print(report.terminal_report(result))
    if out is not None:
        paths = report.write_all(result, report.output_stem(out, result))
        if args.suite is None and not cfg.quick:  # a full run: the README table follows the results
            from .readme import write_readme_table

            paths.append(write_readme_table(out))
        result["files"] = paths
        print("\nwrote " + ", ".join(paths), file=sys.stderr)
    return result


def main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    if args.readme:
        from .readme import write_readme_table

        out = args.out or default_out()
        path = write_readme_table(out)
        print(f"wrote {path}", file=sys.stderr)
        return 0
    run_bench(args, argv)
    return 0
