"""One GPU run, correctness first — under 5 minutes on one H100:

    python benchmarks/gpu_check.py                  # everything; writes benchmarks/results/<gpu>*.{md,json}
    python benchmarks/gpu_check.py --no-bench       # correctness only
    python benchmarks/gpu_check.py --smoke          # a sample of the checks at tiny sizes, on the CPU interpreter

1. compile: every distinct kernel the public API launches (fastdiff.kernels.triton_gate's list of calls) is
   compiled on all host cores into Triton's cache before anything runs, so no check waits for a compiler;
2. every kernel variant against the float64 oracle: each of those public calls (all dtypes and layouts; the
   step with every clip, CFG, noise kind, history count, coefficient table, x0 output) on CUDA tensors —
   stats within 1e-6 with exact counts, the step within the low-precision rule (error <= 2x PyTorch's own
   same-dtype error), plus large tensors, NaN/Inf, data far from zero and bit-identical reruns;
3. loops on CUDA: a 50-step `sample()` with stats under `torch.cuda.set_sync_debug_mode("error")` (no host sync),
   a diffusers DDIM pipeline with FastDDIMScheduler against DDIMScheduler, a Recorder training loop;
4. benchmarks: `fastdiff bench --device cuda` (CUDA events, L2 flushed, copy bandwidth measured in the same run)
   -> benchmarks/results/<gpu>.{md,json,csv,png}; the checks -> benchmarks/results/<gpu>-check.{md,json}.

Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


class Report:
    def __init__(self):
        self.checks: list[dict] = []
        self.phases: dict[str, float] = {}

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        if not ok:
            print(f"  [FAIL] {name}  {detail}", flush=True)
        return ok

    @property
    def failures(self) -> int:
        return sum(not c["ok"] for c in self.checks)


# --------------------------------------------------------------------------------------------------
# 1. compile everything first, in parallel


def precompile(rep: Report, arch: int, quick: bool, jobs: int) -> None:
    """Compile every distinct kernel of the public calls into Triton's cache (TRITON_CACHE_DIR, shared with this
    process) in a subprocess: the gate's workers fork, which a process holding a CUDA context must not do."""
    import subprocess
    import tempfile

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "gate.json")
        cmd = [sys.executable, "-m", "fastdiff.kernels.triton_gate", "--arch", str(arch), "--jobs", str(jobs)]
        cmd += ["--json", str(out)] + (["--quick"] if quick else [])
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        rows = json.loads(out.read_text())["rows"] if out.exists() else []
    bad = [line for line in r.stderr.splitlines() if "FAIL" in line]
    rep.check(f"{len(rows)} kernels compile for sm_{arch}: no error, no spill, occupancy", r.returncode == 0,
              "; ".join(bad[:5]) or r.stderr[-500:])  # fmt: skip
    rep.phases["compile"] = time.time() - t0


# --------------------------------------------------------------------------------------------------
# 2. every public call against the float64 oracle


def stats_close(got: dict, want: dict, rtol: float = 1e-6) -> str:
    """'' when the stats agree (counts and min/max exact, mean/std within rtol), else what differs."""
    for k in ("count", "nan_count", "posinf_count", "neginf_count", "zero_count"):
        if got[k] != want[k]:
            return f"{k} {got[k]} != {want[k]}"
    for k in ("min", "max"):
        if not (got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k]))):
            return f"{k} {got[k]!r} != {want[k]!r}"
    std = want["std"]
    scale = max(abs(want["mean"]), std) if not math.isnan(std) else abs(want["mean"])
    if not abs(got["mean"] - want["mean"]) <= rtol * scale:
        return f"mean {got['mean']!r} vs {want['mean']!r}"
    if not math.isnan(std) and not abs(got["std"] - std) <= rtol * std:
        return f"std {got['std']!r} vs {std!r}"
    return ""


def pair_close(got: dict, want: dict, rtol: float = 1e-9) -> str:
    for k, w in want.items():
        g = got[k]
        if not (g == w or (math.isnan(g) and math.isnan(w)) or abs(g - w) <= rtol * abs(w)):
            return f"{k} {g!r} vs {w!r}"
    return ""


def within_2x_rule(got, oracle, same_dtype, magnitude) -> str:
    """The low-precision rule: |got - oracle| <= 2 |PyTorch same-dtype - oracle| + 4 u magnitude, elementwise
    in the worst case; NaN/Inf positions and infinities equal."""
    import torch

    f64 = torch.float64
    g, o, t = got.to(f64), oracle.to(f64), same_dtype.to(f64)
    if not torch.equal(torch.isnan(g), torch.isnan(o)):
        return "NaN positions differ"
    fin = torch.isfinite(o)
    inf = ~fin & ~torch.isnan(o)
    if not torch.equal(g[inf], o[inf]):
        return "Inf values differ"
    if not fin.any():
        return ""
    u = torch.finfo(got.dtype).eps / 2
    err = (g - o).abs()[fin]
    err_t = float((t - o).abs()[fin & torch.isfinite(t)].max()) if (fin & torch.isfinite(t)).any() else 0.0
    excess = float((err - 2 * err_t - 4 * u * magnitude.to(f64)[fin]).max())
    return "" if excess <= 0 else f"max err {float(err.max()):.2e} vs 2x torch {2 * err_t:.2e}"


def check_call(call) -> str:
    """Run one public call on `triton` and judge it against the float64 oracle; '' when it passes."""
    import torch

    import fastdiff as fd
    from fastdiff import ops, reference
    from fastdiff.step import CoeffTable, DynamicThreshold, PhiloxNoise

    name = call.fn.__name__
    if name == "tensor_stats":
        (x,), per_sample = call.args, call.kwargs.get("dim") == 0
        got = call().to_dict()
        if not per_sample:
            return stats_close(got, reference.tensor_stats(x))
        for i in range(x.shape[0]):
            msg = stats_close({k: v[i] for k, v in got.items()}, reference.tensor_stats(x[i]))
            if msg:
                return f"row {i}: {msg}"
        return ""
    if name == "pair_stats":
        (a, b), per_sample = call.args, call.kwargs.get("dim") == 0
        got = call().to_dict()
        if not per_sample:
            return pair_close(got, reference.pair_stats(a, b))
        for i in range(a.shape[0]):
            msg = pair_close({k: v[i] for k, v in got.items()}, reference.pair_stats(a[i], b[i]))
            if msg:
                return f"row {i}: {msg}"
        return ""
    if name == "multi_tensor_stats":
        got = call().to_dict()
        for i, x in enumerate(call.args[0]):
            msg = stats_close({k: v[i] for k, v in got.items()}, reference.tensor_stats(x))
            if msg:
                return f"tensor {i}: {msg}"
        return ""
    if name == "_philox":  # the stream: the same numbers from a tensor offset and an int offset; N(0, 1)
        z = call()
        if not torch.isfinite(z).all():
            return "non-finite noise"
        return "" if abs(float(z.double().mean())) < 0.2 and abs(float(z.double().std()) - 1) < 0.2 else "not N(0,1)"
    # fused_step: the same step on the torch backend gives PyTorch's same-dtype rounding
    x, o, coeffs = call.args
    kw = dict(call.kwargs)
    noise = kw.get("noise")
    if isinstance(noise, PhiloxNoise):
        offset = int(noise.offset)
        got = call()
        noise_t = fd.kernels.resolve("triton", x.device).philox_normal(
            x.shape, noise.seed, offset, dtype=x.dtype, device=x.device
        )
        noise.offset = offset
        kw["noise"] = noise_t
    else:
        got = call()
    same = fd.fused_step(x, o, coeffs, **kw, backend="torch")
    c = coeffs if not isinstance(coeffs, CoeffTable) else None
    if c is None:  # the table's row at its index, as StepCoeffs, for the oracle
        from fastdiff.step import COEFF_FIELDS, StepCoeffs

        row = dict(zip(COEFF_FIELDS, coeffs.table[int(coeffs.index)].tolist()))
        ph = tuple(row[f"ph{k}"] for k in range(coeffs.num_history))
        c = StepCoeffs(**{k: v for k, v in row.items() if not k.startswith("ph")}, ph=ph)
    ref_kw = {k: kw.get(k) for k in ("uncond", "history", "noise") if k in kw}
    ref_kw["guidance_scale"] = kw.get("guidance_scale", 1.0)
    scale = None
    clip = kw.get("clip")
    if isinstance(clip, DynamicThreshold):
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        oo = (
            o.to(ct)
            if "uncond" not in kw
            else kw["uncond"].to(ct) + kw["guidance_scale"] * (o.to(ct) - kw["uncond"].to(ct))
        )
        v = c.vector()
        x0_pre = v[0] * x.to(ct) + v[1] * oo + (v[2] * ref_kw["noise"].to(ct) if ref_kw.get("noise") is not None else 0)
        scale = ops.threshold_scale(x0_pre, clip.ratio, clip.max_value)
    from fastdiff.step import normalize_clip

    want = reference.generic_step(x, o, c, clip=normalize_clip(clip), threshold_scale=scale, **ref_kw)
    mag = reference.step_magnitude(x, o, c, **ref_kw)
    msg = within_2x_rule(got.prev_sample, want[0], same.prev_sample, mag[0])
    if msg:
        return "prev_sample: " + msg
    if got.pred_x0 is not None:
        msg = within_2x_rule(got.pred_x0, want[1], same.pred_x0, mag[1])
        if msg:
            return "pred_x0: " + msg
    if got.stats is not None:
        msg = stats_close(got.stats.to_dict(), reference.tensor_stats(got.prev_sample))
        if msg:
            return "stats: " + msg
    return ""


def check_calls(rep: Report, device, quick: bool, every: int = 1) -> None:
    from fastdiff.kernels import triton_gate

    t0 = time.time()
    calls = list(triton_gate.public_calls(quick, device=device))[::every]
    failed = []
    for call in calls:
        try:
            msg = check_call(call)
        except Exception as exc:  # noqa: BLE001 - a crash is a failed check, with its message
            msg = f"{type(exc).__name__}: {exc}"
        if msg:
            failed.append(f"{call.label}: {msg}")
    rep.check(f"{len(calls)} public calls against the float64 oracle", not failed, "; ".join(failed[:5]))
    rep.phases["variants"] = time.time() - t0


def check_hard_inputs(rep: Report, device, sizes, dtypes) -> None:
    """Large tensors, NaN/Inf, far-from-zero data, determinism."""
    import torch

    import fastdiff as fd
    from fastdiff import reference

    g = torch.Generator(device=device).manual_seed(0)
    for n in sizes:
        for dt in dtypes:
            x = (torch.randn(n, generator=g, device=device) * 3 + 5).to(dt)
            x[:: max(1, n // 7)] = math.nan
            x[1 :: max(1, n // 5)] = math.inf
            x[2 :: max(1, n // 3)] = 0
            s = fd.tensor_stats(x, backend="triton")
            rep.check(f"tensor_stats {dt} n={n} NaN/Inf", not stats_close(s.to_dict(), reference.tensor_stats(x)))
            again = fd.tensor_stats(x, backend="triton")
            rep.check(f"tensor_stats {dt} n={n} bit-identical twice", torch.equal(s.moments, again.moments))
        far = (1e6 + torch.randn(n, generator=g, device=device, dtype=torch.float64)).float()
        msg = stats_close(fd.tensor_stats(far, backend="triton").to_dict(), reference.tensor_stats(far))
        rep.check(f"tensor_stats 1e6 + N(0, 1) fp32 n={n}", not msg, msg)


# --------------------------------------------------------------------------------------------------
# 3. loops


def check_sample_loop(rep: Report, device) -> None:
    """50 steps of sample() with stats and clipping, no host sync until the stats are read."""
    import torch

    from fastdiff.samplers import make_sampler, sample
    from fastdiff.schedule import Schedule

    sched = Schedule.make("scaled_linear", 1000, beta_start=0.00085, beta_end=0.012)
    sampler = make_sampler("dpmpp_2m", 50, sched)
    x_T = torch.randn(2, 4, 64, 64, device=device)

    def model(x, t):
        return 0.5 * x

    sample(model, sampler, x_T, progress=False)  # compile and warm up outside the sync check
    torch.cuda.synchronize()
    try:
        torch.cuda.set_sync_debug_mode("error")
        r = sample(model, sampler, x_T, clip=1.0, progress=False)
        ok, msg = True, ""
    except RuntimeError as exc:
        ok, msg = False, str(exc).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    rep.check("50-step sample() with stats: no host sync inside the loop", ok, msg)
    if ok:
        torch.cuda.synchronize()
        eager = sample(model, sampler, x_T, clip=1.0, progress=False, backend="torch")
        diff = float((r.sample - eager.sample).abs().max())
        rep.check("50-step sample(): triton == torch backend", diff <= 1e-4, f"max diff {diff:.2e}")


def check_pipeline(rep: Report, device) -> None:
    """A diffusers DDIM pipeline (tiny random UNet2DModel) with the fused scheduler against diffusers' own."""
    try:
        import torch
        from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

        from fastdiff.integrations.diffusers import FastDDIMScheduler
    except ImportError as exc:
        rep.check("diffusers DDIM pipeline", True, f"skipped: {exc}")
        return
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    ).to(device)  # fmt: skip
    images = {}
    for name, cls in (("diffusers", DDIMScheduler), ("fastdiff", FastDDIMScheduler)):
        pipe = DDIMPipeline(unet=unet, scheduler=cls(num_train_timesteps=1000, clip_sample=True)).to(device)
        pipe.set_progress_bar_config(disable=True)
        gen = torch.Generator(device=device).manual_seed(1)
        images[name] = pipe(batch_size=2, generator=gen, num_inference_steps=20, output_type="np").images
    diff = float(abs(images["fastdiff"] - images["diffusers"]).max())
    rep.check("diffusers DDIMPipeline: FastDDIMScheduler == DDIMScheduler", diff <= 1e-3, f"max diff {diff:.2e}")


def check_training_loop(rep: Report, device) -> None:
    """A Recorder on a small U-Net's training loop: no host sync until flush, records equal the torch backend's."""
    import tempfile

    import torch

    import fastdiff as fd
    from fastdiff.models.unet1d import UNet1D

    torch.manual_seed(0)
    net = UNet1D(channels=(16, 32)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x0 = torch.randn(16, 1, 64, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "run.jsonl")
        with fd.Recorder(path, flush_every=1000) as rec:
            rec.watch(net, params=True, grads=True, every=2)
            ok, msg = True, ""
            for step in range(10):
                if step == 2:
                    torch.cuda.synchronize()
                    torch.cuda.set_sync_debug_mode("error")
                try:
                    t = torch.randint(0, 1000, (16,), device=device)
                    noise = torch.randn_like(x0)
                    a = torch.cos(t.float() / 1000 * math.pi / 2).view(-1, 1, 1)
                    x_t = a * x0 + (1 - a * a).sqrt() * noise
                    pred = net(x_t, t)
                    loss = torch.nn.functional.mse_loss(pred, noise)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    rec.log("x0", x0)
                    rec.log("x_t", x_t)
                    rec.log("pred", pred)
                    rec.log_pair("pred~noise", pred, noise)
                    rec.log_scalar("loss", loss)
                    rec.step()
                except RuntimeError as exc:
                    ok, msg = False, str(exc).splitlines()[0]
                    break
            torch.cuda.set_sync_debug_mode(0)
        lines = path.read_text().splitlines()
    rep.check("Recorder training loop on CUDA: no host sync before flush", ok, msg)
    rep.check("Recorder training loop on CUDA: records written", len(lines) > 40, f"{len(lines)} records")


# --------------------------------------------------------------------------------------------------
# 4. benchmarks


def run_bench(rep: Report, device_name: str, sizes: str, no_compile: bool) -> None:
    from fastdiff.bench.cli import main as bench_main

    t0 = time.time()
    argv = ["--device", "cuda", "--sizes", sizes, "--dtype", "fp32,bf16", "--repeats", "15", "--no-progress"]
    argv += ["--out", str(RESULTS)] + (["--no-compile"] if no_compile else [])
    code = bench_main(argv)
    rep.check("fastdiff bench --device cuda", code in (0, None), f"exit {code}")
    rep.phases["bench"] = time.time() - t0


# --------------------------------------------------------------------------------------------------


def write(rep: Report, name: str, meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    slug = name.lower().replace(" ", "-").replace("/", "-")
    (RESULTS / f"{slug}-check.json").write_text(json.dumps({**meta, "checks": rep.checks}, indent=1) + "\n")
    lines = [f"# GPU check on {name}", "", f"`{meta['command']}` — {meta['date']}, torch {meta['torch']}, "
             f"triton {meta['triton']}. Phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in rep.phases.items()), "",
             "| check | result | detail |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {c['check']} | {'ok' if c['ok'] else 'FAIL'} | {c['detail']} |" for c in rep.checks]
    (RESULTS / f"{slug}-check.md").write_text("\n".join(lines) + "\n")
    print(f"report: {RESULTS / (slug + '-check.md')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-bench", action="store_true", help="correctness only")
    ap.add_argument("--quick", action="store_true", help="contiguous layouts only (the gate's --quick)")
    ap.add_argument("--bench-sizes", default="16k,64k,20,24,26", help="fastdiff bench --sizes")
    ap.add_argument("--bench-compile", action="store_true", help="include torch.compile contenders (slow)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    ap.add_argument("--smoke", action="store_true", help="a sample of the checks, tiny, on the CPU interpreter")
    args = ap.parse_args(argv)

    import torch

    t_start = time.time()
    rep = Report()
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        check_calls(rep, "cpu", quick=True, every=211)
        print(f"smoke: {len(rep.checks) - rep.failures}/{len(rep.checks)} checks passed")
        return 1 if rep.failures else 0
    if not torch.cuda.is_available():
        print("no CUDA GPU here; `--smoke` runs a sample of the checks on the CPU interpreter")
        return 1
    os.environ.setdefault("TRITON_CACHE_DIR", str(Path.home() / ".triton" / "cache"))  # one cache for both
    major, minor = torch.cuda.get_device_capability()
    precompile(rep, 10 * major + minor, args.quick, args.jobs)
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    print(f"fastdiff gpu_check on {name}", flush=True)
    check_calls(rep, device, args.quick)
    check_hard_inputs(rep, device, [1 << 20, (1 << 26) + 3], [torch.float32, torch.bfloat16])
    check_sample_loop(rep, device)
    check_pipeline(rep, device)
    check_training_loop(rep, device)
    if not args.no_bench:
        run_bench(rep, name, args.bench_sizes, not args.bench_compile)
    rep.phases["total"] = time.time() - t_start
    import triton

    meta = {
        "device": name,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
        "phases_s": rep.phases,
    }
    write(rep, name, meta)
    print(f"{len(rep.checks) - rep.failures}/{len(rep.checks)} checks passed in {rep.phases['total']:.0f} s")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
