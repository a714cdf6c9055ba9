"""Compile gate of the Triton kernels: every variant the public API can launch, compiled for real GPUs — no GPU needed.

    python -m fastdiff.kernels.triton_gate                  # sm_80, sm_89, sm_90; fails on error / spills / occupancy
    python -m fastdiff.kernels.triton_gate --arch 90 --quick        # one arch, contiguous layouts only
    python -m fastdiff.kernels.triton_gate --out benchmarks/results # also writes triton-compile.{md,json}

The interpreter (TRITON_INTERPRET=1, how CI runs the kernels against the float64 oracle) accepts code that
Triton's compiler refuses, and says nothing about registers. So this gate:

1. calls the public API — `tensor_stats` (every dtype; whole, per-sample long and short rows; contiguous,
   strided, misaligned and broadcast views), `pair_stats`, `multi_tensor_stats`, `fused_step` (x / model-output
   dtypes, stats, x0 output, every clip, CFG, noise tensor and Philox, each history count, coefficient
   table, layouts) and `philox_normal` — with the backend's `launch` recording instead of running;
2. keys each recorded launch by Triton's own specialisation (the binder the JIT runs at launch: argument
   types, alignment attributes, constexprs, options), so the distinct keys are exactly the kernels a GPU
   would compile;
3. compiles each with `triton.compile(..., target=GPUTarget("cuda", arch, 32))` and runs the `ptxas -v`
   shipped in the triton wheel on its PTX: registers, spill bytes, shared memory, resident programs per SM,
   compile time, and the number of `fma` instructions in the PTX (the FMA policy: none are contracted).

It fails (exit status 1) on any compile error, spills over `SPILL_BUDGET_BYTES`, or fewer than `MIN_RESIDENT`
programs per SM for the main step and stats kernels. `--signatures` prints the specialisation keys only (no compiling).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ARCHS = {80: "sm_80 (A100)", 89: "sm_89 (L4, L40S, RTX 4090)", 90: "sm_90 (H100, H200)"}
# per-SM limits: registers, warps, programs (CTAs), shared memory bytes
SM_LIMITS = {
    80: (65536, 64, 32, 167936),
    89: (65536, 48, 24, 101376),
    90: (65536, 64, 32, 232448),
}
MIN_RESIDENT = {"step_kernel": 2, "tensor_stats_kernel": 2, "pair_stats_kernel": 2}
# Spill budget per thread. What the gate exists to refuse is live state that does not fit (the 268 B - 3.1 KB
# spills and one program per SM of issue 15). ptxas itself, at 64-128 registers, parks up to four 32-bit values
# in local memory (4-16 B, L1-resident) in a few sm_80 / sm_89 variants while keeping its occupancy; those are
# reported in the table but are not failures. Every such variant sits exactly on an occupancy step (64, 72, 80,
# 96, 128 registers of 4 warps: 8, 7, 6, 5, 4 programs per SM), and raising the cap removes the spill by crossing
# it (an explicit `.maxnreg 160` on the sm_89 step variant: 144 registers, no spill, 3 programs instead of 4).
# For these memory-bound kernels the programs in flight are worth more than 4-16 B of L1 traffic, so no `maxnreg`
# is forced: which way is faster is a GPU measurement (bench `--device cuda`), not something to fix blind.
SPILL_BUDGET_BYTES = 16


def _prepare_env() -> None:
    """The kernels must be real JIT functions (not interpreted) and compiles uncached (honest times)."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        os.execve(sys.executable, [sys.executable, "-m", "fastdiff.kernels.triton_gate", *sys.argv[1:]], env)
    os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="fastdiff-triton-gate-"))


# --------------------------------------------------------------------------------------------------
# what the public API launches


@dataclass
class Launch:
    label: str  # the public call that produced it (the first one)
    kernel: object
    args: tuple
    kwargs: dict
    key: str = ""
    variant: str = ""  # readable: dtypes of the pointer arguments and the constexprs
    calls: list[str] = field(default_factory=list)


@dataclass
class Call:
    """One public API call: fn(*args, **kwargs, backend=...). The gate records what it launches on `triton`;
    benchmarks/gpu_check.py runs the same calls on a GPU and checks them against the float64 oracle."""

    label: str
    fn: Callable
    args: tuple
    kwargs: dict = field(default_factory=dict)

    def __call__(self, backend: str = "triton"):
        return self.fn(*self.args, **self.kwargs, backend=backend)


def _record(calls: Iterator[Call]) -> list[Launch]:
    """Run each public call with launches recorded; returns every launch (kernels compiled for GPUs only).

    The kernels are imported first, as JIT functions; then TRITON_INTERPRET=1 lets the backend accept the
    CPU tensors the calls are made of (nothing runs: `launch` records).
    """
    from .triton import stats as triton_stats

    out = []
    interpret = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        for call in calls:
            triton_stats.recording = rec = []
            try:
                call()
            finally:
                triton_stats.recording = None
            out.extend(_launches(call.label, rec))
    finally:
        if interpret is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = interpret
    return out


def _launches(label: str, rec: list) -> list[Launch]:
    out = []
    for kernel, _grid, args, kwargs in rec:
        if "EMULATE_RTNE" in kwargs:  # set for CPU tensors only; a GPU launch never does
            kwargs = {**kwargs, "EMULATE_RTNE": False}
        out.append(Launch(label, kernel, args, kwargs))
    return out


def _views(make, shape) -> Iterator[tuple[str, object]]:
    """Layouts of a tensor of `shape` made by make(shape): contiguous, strided, misaligned (offset by one)."""
    import torch

    yield "contiguous", make(shape)
    t = make(shape[::-1])
    yield "strided", t.permute(*range(t.dim() - 1, -1, -1))
    n = 1
    for s in shape:
        n *= s
    flat = make((n + 1,))
    if flat.element_size() < 16:
        yield "misaligned", torch.as_strided(flat, shape, torch.empty(shape).stride(), 1)


def _philox(shape, seed, offset, *, dtype, backend):
    from .triton import philox_normal

    return philox_normal(shape, seed, offset, dtype=dtype, device=offset.device if hasattr(offset, "device") else None)


def public_calls(quick: bool = False, device="cpu") -> Iterator[Call]:
    """Every kernel configuration the public API can launch, as calls on tensors of `device` (random data);
    `quick`: contiguous layouts only."""
    import torch

    import fastdiff as fd
    from fastdiff.step import MAX_HISTORY, CoeffTable, DynamicThreshold, PhiloxNoise, StepCoeffs

    gen = torch.Generator().manual_seed(0)

    def maker(dtype):
        def make(shape):
            if dtype == torch.bool:
                return (torch.rand(shape, generator=gen) > 0.5).to(device)
            if not dtype.is_floating_point:
                return torch.randint(0, 100, shape, generator=gen).to(dtype).to(device)
            return torch.randn(shape, generator=gen).to(dtype).to(device)

        return make

    floats = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16, "fp16": torch.float16}
    ints = {"int8": torch.int8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64}
    ints.update({"uint8": torch.uint8, "bool": torch.bool})
    # shapes: whole tensor; per-sample rows long (aligned / unaligned row stride) and short (packed rows kernel)
    shapes = {"whole": (4, 3, 40, 40), "long rows": (4, 3, 41, 41), "short rows": (64, 3, 5, 5)}

    def layouts(make, shape):
        views = _views(make, shape)
        return [next(views)] if quick else list(views)

    for name, dtype in {**floats, **ints}.items():
        make = maker(dtype)
        for shape_name, shape in shapes.items():
            for layout, x in layouts(make, shape):
                label = f"tensor_stats({name} {shape_name} {layout})"
                yield Call(label, fd.tensor_stats, (x,))
                yield Call(label + " dim=0", fd.tensor_stats, (x,), {"dim": 0})
        yield Call(f"tensor_stats({name} expanded)", fd.tensor_stats, (make((1, 3, 1, 40)).expand(4, 3, 40, 40),))
    for pair in [("fp32", "fp32"), ("bf16", "fp32"), ("fp16", "fp16"), ("bf16", "bf16"), ("fp64", "fp64")]:
        ma, mb = maker(floats[pair[0]]), maker(floats[pair[1]])
        for shape_name, shape in shapes.items():
            for (layout, a), (_, b) in zip(layouts(ma, shape), layouts(mb, shape)):
                label = f"pair_stats({pair[0]}, {pair[1]} {shape_name} {layout})"
                yield Call(label, fd.pair_stats, (a, b))
                yield Call(label + " dim=0", fd.pair_stats, (a, b), {"dim": 0})
    params = [maker(d)(s) for d in floats.values() for s in [(7, 5), (300,)]]
    params.append(torch.as_strided(maker(torch.float32)((301,)), (300,), (1,), 1))  # misaligned
    params += [maker(d)((9,)) for d in ints.values()]
    yield Call("multi_tensor_stats(parameters of every dtype)", fd.multi_tensor_stats, (params,))
    for name, dtype in floats.items():
        for off in (3, torch.tensor(5, device=device)):
            yield Call(f"philox_normal({name})", _philox, ((5, 77), 1, off), {"dtype": dtype})

    # the fused step
    dtype_sets = [("fp32", "fp32"), ("fp32", "bf16"), ("fp32", "fp16"), ("fp64", "fp64"), ("bf16", "bf16")]
    dtype_sets.append(("fp16", "fp16"))
    clips = {"no clip": None, "clip": 1.0, "dynamic threshold": DynamicThreshold(0.9, 1.5)}
    for xd, od in dtype_sets:
        mx, mo = maker(floats[xd]), maker(floats[od])
        for layout, x in layouts(mx, (2, 3, 33, 33)):
            o, u = mo(x.shape), mo(x.shape)
            for n_hist in range(MAX_HISTORY + 1):
                hist = tuple(mx(x.shape) for _ in range(n_hist))
                for noise_kind in ("no noise", "noise tensor", "philox"):
                    uses_noise = noise_kind != "no noise"
                    c = StepCoeffs.from_prediction(
                        "epsilon", 0.6, 0.8, px=0.1, p0=0.7, pe=0.5, pn=0.2 if uses_noise else 0.0,
                        ph=(0.1, -0.2, 0.05, 0.3)[:n_hist],
                    )  # fmt: skip
                    table = CoeffTable.from_coeffs([c, c], device=device)
                    for coeffs in (c, table):
                        for clip_name, clip in clips.items():
                            for cfg in (False, True):
                                for stats in (True, False):
                                    for want_x0 in (False, True):
                                        label = (
                                            f"fused_step(x {xd}, out {od}, {layout}, {n_hist} history, {noise_kind}, "
                                            f"{'table' if coeffs is table else 'coeffs'}, {clip_name}, "
                                            f"cfg={cfg}, stats={stats}, x0={want_x0})"
                                        )
                                        kw = {"history": hist, "clip": clip, "stats": stats, "return_x0": want_x0}
                                        if cfg:
                                            kw.update(uncond=u, guidance_scale=3.0)
                                        if noise_kind == "philox":
                                            kw["noise"] = PhiloxNoise(7, 16)
                                        elif noise_kind == "noise tensor":
                                            kw["noise"] = mx(x.shape)
                                        yield Call(label, fd.fused_step, (x, o, coeffs), kw)


def sampler_calls() -> Iterator[Call]:
    """A short loop of every native sampler and every drop-in diffusers scheduler, float32: the coefficients
    of real sampling (zeros, ones, history on and off, noise) in the step's arguments."""
    import torch

    from fastdiff.samplers import make_sampler, sample
    from fastdiff.samplers.registry import SAMPLERS
    from fastdiff.schedule import Schedule

    def model(x, t):
        return 0.1 * x

    sched = Schedule.make("scaled_linear", 1000, beta_start=0.00085, beta_end=0.012)

    def native(sampler, *, backend):
        return sample(model, sampler, torch.randn(2, 4, 16, 16), progress=False, backend=backend)

    for name in SAMPLERS:
        yield Call(f"sample({name})", native, (make_sampler(name, 8, sched),))
    try:
        from fastdiff.integrations import diffusers as dropin
    except ImportError:  # diffusers not installed
        return

    def loop(cls, *, backend):
        s = cls()
        s.fused_backend = backend
        s.set_timesteps(8)
        x = torch.randn(2, 4, 16, 16) * getattr(s, "init_noise_sigma", 1.0)
        for t in s.timesteps:
            x_in = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
            x = s.step(0.1 * x_in, t, x).prev_sample

    for name in sorted(n for n in dir(dropin) if n.startswith("Fast") and n.endswith("Scheduler")):
        yield Call(f"{name} loop", loop, (getattr(dropin, name),))


def _jit_kwargs(launch: Launch) -> dict:
    """The launch's keyword arguments with the options JITFunction.run adds before binding (so that a kernel
    compiled here has the cache key of the one a GPU launch would compile: gpu_check precompiles with this)."""
    from triton import knobs

    return {
        **launch.kwargs,
        "debug": launch.kwargs.get("debug", launch.kernel.debug) or knobs.runtime.debug,
        "instrumentation_mode": knobs.compilation.instrumentation_mode,
        "fpsan_homomorphic_casts": knobs.compilation.fpsan_homomorphic_casts,
    }


def specialization_key(launch: Launch, arch: int = 90) -> tuple[str, str]:
    """(key, readable variant) of a launch: what Triton's JIT would compile it as on GPUTarget(cuda, arch)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    _bound, spec, options = binder(*launch.args, **_jit_kwargs(launch))
    key = f"{kernel.fn.__name__}|{spec}|{sorted(options.items())}"
    parts = []
    for p, s in zip(kernel.params, spec):
        if s[0] == "constexpr":
            v = launch.kwargs.get(p.name)
            parts.append(f"{p.name}={getattr(v, 'name', v)}")
        elif s[0].startswith("*"):  # pointers: element type (and "16B" where Triton specialises on alignment)
            parts.append(f"{p.name}:{s[0][1:]}{' 16B' if s[1] == 'D' else ''}")
    parts.append(f"warps={launch.kwargs.get('num_warps', 4)}")
    return key, " ".join(parts)


def distinct(launches: list[Launch]) -> list[Launch]:
    """One launch per specialisation key, in first-seen order, with the public calls that produce it."""
    by_key: dict[str, Launch] = {}
    for launch in launches:
        launch.key, launch.variant = specialization_key(launch)
        first = by_key.setdefault(launch.key, launch)
        first.calls.append(launch.label)
    return list(by_key.values())


# --------------------------------------------------------------------------------------------------
# compiling


_VARIANTS: list[Launch] = []  # set before the worker pool forks


def _ptxas(ptx: str, arch: int, fp_fusion: bool) -> dict:
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "k.ptx")
        src.write_text(ptx)
        cmd = [get_ptxas(arch).path, "-v", "--regAllocOptLevel=2"]
        cmd += [] if fp_fusion else ["--fmad=false"]
        cmd += [f"--gpu-name={sm_arch_from_capability(arch)}", str(src), "-o", str(Path(tmp, "k.cubin"))]
        log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return {
        "registers": int(regs.group(1)) if regs else 0,
        "spill_stores": int(spill.group(1)) if spill else 0,
        "spill_loads": int(spill.group(2)) if spill else 0,
    }


def resident_programs(arch: int, registers: int, num_warps: int, shared: int) -> int:
    """Programs (CTAs) of this kernel that fit on one SM at once (registers are allocated 256 per warp)."""
    regs_sm, warps_sm, ctas_sm, smem_sm = SM_LIMITS[arch]
    per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = (regs_sm // per_warp) // num_warps
    by_smem = smem_sm // shared if shared else ctas_sm
    return max(0, min(by_regs, warps_sm // num_warps, ctas_sm, by_smem))


def compile_variant(index: int, arch: int) -> dict:
    """Compile variant `index` of _VARIANTS for `arch`; the row of the report (error text on failure)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    launch = _VARIANTS[index]
    kernel = launch.kernel
    row = {"kernel": kernel.fn.__name__, "variant": launch.variant, "arch": arch, "example": launch.calls[0]}
    row["public_calls"] = len(launch.calls)
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = _jit_kwargs(launch)
    bound, spec, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, spec, options)
    t0 = time.perf_counter()
    try:
        compiled = triton.compile(
            ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__
        )
    except Exception as exc:  # noqa: BLE001 - any compiler error is the gate's finding
        return {**row, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    row["compile_s"] = round(time.perf_counter() - t0, 3)
    ptx = compiled.asm["ptx"]
    row.update(_ptxas(ptx, arch, options.enable_fp_fusion))
    row["shared"] = int(compiled.metadata.shared)
    row["num_warps"] = int(compiled.metadata.num_warps)
    row["resident_programs"] = resident_programs(arch, row["registers"], row["num_warps"], row["shared"])
    row["fma"] = len(re.findall(r"\bfma\.rn\.f(32|64)\b", ptx))
    row["fp_fusion"] = bool(options.enable_fp_fusion)
    return row


def problems(row: dict) -> list[str]:
    """What the gate refuses in one compiled variant."""
    if "error" in row:
        return [f"compile error: {row['error'].splitlines()[0]}"]
    out = []
    if max(row["spill_stores"], row["spill_loads"]) > SPILL_BUDGET_BYTES:
        out.append(
            f"spills {row['spill_stores']} B stores / {row['spill_loads']} B loads (budget {SPILL_BUDGET_BYTES} B)"
        )
    need = MIN_RESIDENT.get(row["kernel"], 1)
    if row["resident_programs"] < need:
        out.append(f"{row['resident_programs']} resident programs per SM (< {need}) at {row['registers']} registers")
    if row["fp_fusion"]:
        out.append("compiled with FMA contraction (fastdiff's policy: enable_fp_fusion=False)")
    return out


def run(archs: list[int], quick: bool, jobs: int, only: str | None = None, limit: int | None = None,
        variant: tuple[str, ...] = (), progress: bool = True):  # fmt: skip
    """Record, dedupe and compile (kernels whose name contains `only` and whose variant text contains every
    string of `variant`, the first `limit`); returns (rows, summary)."""
    global _VARIANTS
    t0 = time.perf_counter()
    launches = _record(public_calls(quick))
    _VARIANTS = [
        v
        for v in distinct(launches)
        if (only is None or only in v.kernel.fn.__name__) and all(part in v.variant for part in variant)
    ][:limit]
    record_s = time.perf_counter() - t0
    tasks = [(i, a) for a in archs for i in range(len(_VARIANTS))]
    if progress:
        print(
            f"[gate] {len(launches)} launches from the public API -> {len(_VARIANTS)} distinct kernels; "
            f"compiling {len(tasks)} for {', '.join(f'sm_{a}' for a in archs)} with {jobs} jobs",
            file=sys.stderr,
            flush=True,
        )
    rows = []
    t1 = time.perf_counter()
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork")) as pool:
        futures = [pool.submit(compile_variant, i, a) for i, a in tasks]
        for n, f in enumerate(futures, 1):
            rows.append(f.result())
            if progress and (n % 25 == 0 or n == len(futures)):
                print(f"[gate] {n}/{len(futures)} compiled", file=sys.stderr, flush=True)
    summary = {
        "launches": len(launches),
        "distinct_kernels": len(_VARIANTS),
        "compiles": len(rows),
        "record_s": round(record_s, 1),
        "compile_wall_s": round(time.perf_counter() - t1, 1),
        "archs": archs,
        "quick": quick,
    }
    return rows, summary


def write_report(rows: list[dict], summary: dict, out_dir: Path) -> None:
    import triton

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        **summary,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": "python -m fastdiff.kernels.triton_gate " + " ".join(sys.argv[1:]),
    }
    (out_dir / "triton-compile.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# Triton kernels compiled for GPUs (no GPU needed)",
        "",
        f"`{meta['command']}` — Triton {meta['triton']}, {meta['date']}. Every kernel configuration the public API "
        f"can launch ({summary['launches']} launches) maps to {summary['distinct_kernels']} distinct specialisations; "
        f"each is compiled with `triton.compile(..., GPUTarget('cuda', arch, 32))` and checked with the wheel's "
        "`ptxas -v`. Resident programs: per SM, from registers, warps and shared memory. `fma`: fused "
        "multiply-adds in the PTX (the policy compiles with contraction off; the Philox noise's `log`/`sin`/`cos` "
        "from libdevice keep their own explicit ones).",
        "",
    ]
    for arch in summary["archs"]:
        sel = [r for r in rows if r["arch"] == arch]
        lines += [f"## {ARCHS.get(arch, f'sm_{arch}')}", ""]
        lines += ["| kernel | variant | registers | spills (B) | shared (B) | resident programs | fma | compile s |"]
        lines += ["|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(sel, key=lambda r: (r["kernel"], -r.get("registers", 999))):
            if "error" in r:
                lines.append(f"| {r['kernel']} | {r['variant']} | error | | | | | |")
                continue
            lines.append(
                f"| {r['kernel']} | {r['variant']} | {r['registers']} | {r['spill_stores'] + r['spill_loads']} | "
                f"{r['shared']} | {r['resident_programs']} | {r['fma']} | {r['compile_s']:.2f} |"
            )
        lines.append("")
    (out_dir / "triton-compile.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastdiff.kernels.triton_gate", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=sorted(ARCHS), help="compute capabilities (80 89 90)")
    parser.add_argument("--quick", action="store_true", help="contiguous layouts only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, help="folder for triton-compile.md / .json")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--only", help="compile only kernels whose name contains this")
    parser.add_argument("--limit", type=int, help="compile only the first N distinct kernels")
    parser.add_argument(
        "--variant", nargs="+", default=(), help="compile only variants whose description contains all of these"
    )
    parser.add_argument(
        "--signatures",
        choices=["api", "samplers"],
        help="print the distinct kernels of the "
        "public API calls (quick) or of every sampler's loop as JSON, without compiling",
    )
    args = parser.parse_args(argv)
    if args.signatures:
        calls = public_calls(quick=True) if args.signatures == "api" else sampler_calls()
        variants = distinct(_record(calls))
        rows = [{"kernel": v.kernel.fn.__name__, "variant": v.variant, "calls": v.calls} for v in variants]
        print(json.dumps(rows))
        return 0
    rows, summary = run(args.arch, args.quick, args.jobs, args.only, args.limit, args.variant)
    if args.out:
        write_report(rows, summary, args.out)
    if args.json:
        args.json.write_text(json.dumps({"meta": summary, "rows": rows}))
    bad = [(r, p) for r in rows for p in problems(r)]
    worst = {}
    for r in rows:
        if "error" not in r:
            k = (r["kernel"], r["arch"])
            worst[k] = max(worst.get(k, 0), r["registers"])
    for (kernel, arch), regs in sorted(worst.items()):
        print(f"[gate] sm_{arch} {kernel}: at most {regs} registers", file=sys.stderr)
    for r, p in bad:
        print(f"[gate] FAIL sm_{r['arch']} {r['kernel']} [{r['variant']}] ({r['example']}): {p}", file=sys.stderr)
    print(
        f"[gate] {summary['compiles']} compiles of {summary['distinct_kernels']} kernels in "
        f"{summary['compile_wall_s']} s: {'FAIL' if bad else 'ok'}",
        file=sys.stderr,
    )
    return 1 if bad else 0


if __name__ == "__main__":
    _prepare_env()
    sys.exit(main())
