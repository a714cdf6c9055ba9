"""One GPU run, correctness first: every Triton kernel against the float64 oracle at realistic sizes, then speed.

    python benchmarks/gpu_check.py                      # sizes 2^20..2^26, fp32/bf16/fp16, then timings
    python benchmarks/gpu_check.py --sizes 20 24 --no-timing
    python benchmarks/gpu_check.py --sweep              # also time a few tile shapes (config.py) per kernel
    python benchmarks/gpu_check.py --big                # also a real > 2^31-element tensor (int64 addressing)

(a) Correctness: tensor_stats (whole, per-sample, NaN/Inf, 1e6 + N(0, 1)), pair_stats, multi_tensor_stats over
~300 tensors of a ~100M-parameter model (with its launch count from the CUDA profiler), the fused step
(DDIM + clip, CFG, dynamic thresholding, 3 history terms, noise tensor, Philox noise, coefficient table,
out=x) for each dtype, against fastdiff.reference evaluated in float64 on the device, with the
low-precision rule: error <= 2x PyTorch's own same-dtype error + 4 u sum|terms|. Determinism: two runs
give bit-identical stats.
(b) Timing (triton.testing.do_bench medians): GB/s of each kernel (bytes the op must move) and its fraction
of the copy bandwidth measured in the same run; baselines: naive `.item()` stats, eager step maths.
A compact report goes to stdout and a JSON twin to benchmarks/results/gpu_check_<device>.json.
Exit status 1 if any correctness check fails. `--smoke` runs (a) at tiny sizes anywhere (CPU interpreter).
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

import torch

import fastdiff as fd
from fastdiff import reference
from fastdiff.step import ClipRange, CoeffTable, DynamicThreshold, PhiloxNoise, StepCoeffs

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
F64 = torch.float64


class Report:
    def __init__(self):
        self.checks: list[dict] = []
        self.timings: list[dict] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"  [{'ok' if ok else 'FAIL'}] {name}{'  ' + detail if detail else ''}", flush=True)
        return ok

    @property
    def failures(self) -> int:
        return sum(not c["ok"] for c in self.checks)


# --------------------------------------------------------------------------------------------------
# float64 oracle on the device (fastdiff.reference's formulas, without the move to the CPU)


def oracle_stats(x: torch.Tensor) -> dict:
    """The float64 oracle's stats (fastdiff.reference, on the host)."""
    return reference.tensor_stats(x)


def stats_close(got: dict, want: dict, rtol: float = 1e-6) -> tuple[bool, str]:
    for k in ("count", "nan_count", "posinf_count", "neginf_count", "zero_count"):
        if got[k] != want[k]:
            return False, f"{k} {got[k]} != {want[k]}"
    for k in ("min", "max"):
        if not (got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k]))):
            return False, f"{k} {got[k]!r} != {want[k]!r}"
    scale = max(abs(want["mean"]), want["std"]) if not math.isnan(want["std"]) else abs(want["mean"])
    if abs(got["mean"] - want["mean"]) > rtol * scale:
        return False, f"mean {got['mean']!r} vs {want['mean']!r}"
    if not math.isnan(want["std"]) and abs(got["std"] - want["std"]) > rtol * want["std"]:
        return False, f"std {got['std']!r} vs {want['std']!r} (rel {abs(got['std'] / want['std'] - 1):.2e})"
    return True, f"std rel err {abs(got['std'] / want['std'] - 1):.1e}" if want["std"] else ""


def within_2x_rule(got, oracle, same_dtype, magnitude) -> tuple[bool, str]:
    g, o, t = got.to(F64), oracle.to(F64), same_dtype.to(F64)
    if not torch.equal(torch.isnan(g), torch.isnan(o)):
        return False, "NaN positions differ"
    fin = torch.isfinite(o)
    if not torch.equal(g[~fin & ~torch.isnan(o)], o[~fin & ~torch.isnan(o)]):
        return False, "Inf values differ"
    u = torch.finfo(got.dtype).eps / 2
    err = (g - o).abs()[fin]
    err_t = float((t - o).abs()[fin & torch.isfinite(t)].max()) if fin.any() else 0.0
    excess = err - 2 * err_t - 4 * u * magnitude.to(F64)[fin]
    worst = float(excess.max()) if excess.numel() else 0.0
    return worst <= 0, f"max err {float(err.max()) if err.numel() else 0:.2e} vs 2x torch {2 * err_t:.2e}"


# --------------------------------------------------------------------------------------------------
# (a) correctness


def check_stats(rep: Report, device, sizes, dtypes):
    print("tensor_stats / pair_stats", flush=True)
    g = torch.Generator(device=device).manual_seed(0)
    for n in sizes:
        for name in dtypes:
            dt = DTYPES[name]
            x = (torch.randn(n, generator=g, device=device, dtype=torch.float32) * 3 + 5).to(dt)
            x[:: max(1, n // 7)] = math.nan
            x[1 :: max(1, n // 5)] = math.inf
            x[2 :: max(1, n // 3)] = 0
            s = fd.tensor_stats(x, backend="triton")
            ok, msg = stats_close(s.to_dict(), oracle_stats(x))
            rep.check(f"tensor_stats {name} n=2^{int(math.log2(n))}", ok, msg)
            again = fd.tensor_stats(x, backend="triton")
            rep.check(
                f"tensor_stats {name} n=2^{int(math.log2(n))} bit-identical twice",
                torch.equal(s.moments, again.moments) and torch.equal(s.counts, again.counts),
            )
            rows = x.view(8, -1) if n % 8 == 0 else x[: n - n % 8].view(8, -1)
            per = fd.tensor_stats(rows, dim=0, backend="triton").to_dict()
            bad = []
            for i in (0, 3, 7):
                ok_i, msg_i = stats_close({k: v[i] for k, v in per.items()}, oracle_stats(rows[i]))
                if not ok_i:
                    bad.append(f"row {i}: {msg_i}")
            rep.check(f"tensor_stats dim=0 {name} [8, {rows.shape[1]}]", not bad, "; ".join(bad))
            xt = rows.t()  # strided
            ok, msg = stats_close(fd.tensor_stats(xt[:, ::3], backend="triton").to_dict(), oracle_stats(xt[:, ::3]))
            rep.check(f"tensor_stats strided {name}", ok, msg)
        far = (1e6 + torch.randn(n, generator=g, device=device, dtype=F64)).float()
        ok, msg = stats_close(fd.tensor_stats(far, backend="triton").to_dict(), oracle_stats(far))
        rep.check(f"tensor_stats 1e6 + N(0,1) fp32 n=2^{int(math.log2(n))} (1e-6 rel)", ok, msg)
        a = torch.randn(n, generator=g, device=device)
        b = (a + 0.1 * torch.randn(n, generator=g, device=device)).bfloat16()
        got = fd.pair_stats(a, b, backend="triton").to_dict()
        want = {
            k: float(v)
            for k, v in zip(
                ("cos", "norm_ratio", "mse", "max_abs_diff"),
                _pair_oracle(a, b),
            )
        }
        bad = [k for k in want if abs(got[k] - want[k]) > 1e-9 * abs(want[k])]
        rep.check(f"pair_stats fp32~bf16 n=2^{int(math.log2(n))}", not bad, f"off: {bad}" if bad else "")


def _pair_oracle(a, b):
    a, b = a.to(F64).reshape(-1), b.to(F64).reshape(-1)
    d = a - b
    return (a * b).sum() / (a.norm() * b.norm()), a.norm() / b.norm(), (d * d).mean(), d.abs().max()


def model_parameters(device, target: int, dtype=torch.float32) -> list[torch.Tensor]:
    """~300 tensors shaped like a transformer's parameters, `target` elements in all."""
    d = 640 if target >= 10_000_000 else 64  # 100M elements: 20 layers of 16 tensors
    per_layer = 12 * d * d + 13 * d
    layers = max(1, target // per_layer)
    shapes = [(4000, d)] if target > per_layer * 2 else []
    for _ in range(layers):
        shapes += [(3 * d, d), (3 * d,), (d, d), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)] + [(d,)] * 4
        shapes += [(d, d // 4), (d // 4,), (d // 4, d), (d,)]
    return [torch.randn(s, device=device, dtype=dtype) * 0.02 for s in shapes]


def count_kernels(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA and "Memcpy" not in e.name)


def check_multi(rep: Report, device, params_target: int):
    print("multi_tensor_stats", flush=True)
    params = model_parameters(device, params_target)
    total = sum(p.numel() for p in params)
    m = fd.multi_tensor_stats(params, backend="triton").to_dict()
    bad = []
    for i in list(range(0, len(params), max(1, len(params) // 25))) + [len(params) - 1]:
        ok, msg = stats_close({k: v[i] for k, v in m.items()}, oracle_stats(params[i]))
        if not ok:
            bad.append(f"tensor {i}: {msg}")
    rep.check(f"multi_tensor_stats {len(params)} tensors, {total / 1e6:.0f}M elements", not bad, "; ".join(bad[:3]))
    if device.type == "cuda":
        fd.multi_tensor_stats(params, backend="triton")  # table cached
        k = count_kernels(lambda: fd.multi_tensor_stats(params, backend="triton"))
        rep.check(f"multi_tensor_stats kernel launches = {k} (<= 3)", k <= 3)
    return params


def check_step(rep: Report, device, sizes, dtypes):
    print("fused_step", flush=True)
    g = torch.Generator(device=device).manual_seed(1)
    a_t, s_t, a_p, s_p = 0.3, math.sqrt(1 - 0.09), 0.6, 0.8
    ddim = StepCoeffs.from_prediction("epsilon", a_t, s_t, p0=a_p, pe=s_p)
    rich = StepCoeffs.from_prediction(
        "v_prediction", 0.5, math.sqrt(0.75), px=0.1, p0=0.7, pe=0.4, pn=0.3, ph=(0.2, -0.1, 0.05)
    )
    for n in sizes:
        shape = (8, n // 8)
        for name in dtypes:
            dt = DTYPES[name]

            def t(shape=shape, dt=dt):
                return torch.randn(shape, generator=g, device=device).to(dt)

            x, eps = t() * 1.4, t()
            r = fd.fused_step(x, eps, ddim, clip=1.0, return_x0=True, backend="triton")
            want = reference.generic_step(x, eps, ddim, clip=ClipRange(-1, 1))
            same = reference.generic_step(x, eps, ddim, clip=ClipRange(-1, 1), compute_dtype=dt)
            mag = reference.step_magnitude(x, eps, ddim)
            ok, msg = within_2x_rule(r.prev_sample, want[0], same[0], mag[0])
            ok2, _ = within_2x_rule(r.pred_x0, want[1], same[1], mag[1])
            tol = 0 if dt == F64 else max(2, n // 10_000)
            ok3 = abs(int(r.clipped) - want[2]) <= tol
            s_ok, s_msg = stats_close(r.stats.to_dict(), oracle_stats(r.prev_sample))
            rep.check(f"step DDIM+clip {name} n=2^{int(math.log2(n))}", ok and ok2 and ok3 and s_ok, msg + " " + s_msg)

            u, h = t(), (t(), t(), t())
            z = t()
            kw = dict(uncond=u, guidance_scale=5.0, history=h, noise=z)
            thr = DynamicThreshold(0.95, 2.0)
            r = fd.fused_step(x, eps, rich, clip=thr, return_x0=True, backend="triton", **kw)
            ref = fd.fused_step(x, eps, rich, clip=thr, return_x0=True, backend="torch", **kw)
            same_scale_ok, msg = within_2x_rule(
                r.prev_sample,
                reference.generic_step(x, eps, rich, clip=thr, threshold_scale=_scale(x, eps, u, z, rich, thr), **kw)[
                    0
                ],
                ref.prev_sample,
                reference.step_magnitude(x, eps, rich, **kw)[0],
            )
            rep.check(f"step CFG+dynamic+3 history+noise {name} n=2^{int(math.log2(n))}", same_scale_ok, msg)

            table = CoeffTable.from_coeffs([ddim, rich], device=device)
            a = fd.fused_step(x, eps, rich, history=h, noise=z, backend="triton")
            table.advance()
            b = fd.fused_step(x, eps, table, history=h, noise=z, backend="triton")
            rep.check(f"step CoeffTable == scalars {name}", torch.equal(a.prev_sample, b.prev_sample))

            xa = x.clone()
            c = fd.fused_step(xa, eps, ddim, clip=1.0, out=xa, backend="triton")
            d = fd.fused_step(x, eps, ddim, clip=1.0, backend="triton")
            rep.check(
                f"step out=x {name}",
                torch.equal(c.prev_sample, d.prev_sample) and c.prev_sample.data_ptr() == xa.data_ptr(),
            )

        zs = fd.fused_step(
            torch.zeros(shape, device=device), torch.zeros(shape, device=device), StepCoeffs(cx=1.0, pn=1.0),
            noise=PhiloxNoise(seed=n), stats=True, backend="triton",
        )  # fmt: skip
        st = zs.stats.to_dict()
        k = shape[0] * shape[1]
        ok = abs(st["mean"]) < 6 / math.sqrt(k) and abs(st["std"] - 1) < 6 * math.sqrt(0.5 / k)
        flat = zs.prev_sample.reshape(-1).double()
        lag1 = float(((flat[1:] - flat.mean()) * (flat[:-1] - flat.mean())).mean() / flat.var())
        rep.check(
            f"Philox noise n=2^{int(math.log2(n))}",
            ok and abs(lag1) < 6 / math.sqrt(k),
            f"mean {st['mean']:.2e} std {st['std']:.5f} lag1 {lag1:.1e}",
        )


def _scale(x, eps, u, z, c, thr):
    from fastdiff import ops

    ct = F64 if x.dtype == F64 else torch.float32
    o = u.to(ct) + 5.0 * (eps.to(ct) - u.to(ct))
    v = c.vector()
    return ops.threshold_scale(v[0] * x.to(ct) + v[1] * o + v[2] * z.to(ct), thr.ratio, thr.max_value)


def check_big(rep: Report, device):
    print("> 2^31 elements (real memory)", flush=True)
    n = (1 << 31) + 4099
    x = torch.zeros(n, dtype=torch.uint8, device=device)
    x[: 1 << 20] = 1
    x[-3:] = 7
    d = fd.tensor_stats(x, backend="triton").to_dict()
    want_mean = ((1 << 20) + 21) / n
    rep.check(
        "tensor_stats uint8 2^31+4099",
        d["count"] == n
        and d["zero_count"] == n - 3 - (1 << 20)
        and d["max"] == 7
        and abs(d["mean"] / want_mean - 1) < 1e-9,
    )
    del x
    y = torch.full((n,), 2.0, dtype=torch.float16, device=device)
    y[-1] = -3.0
    r = fd.fused_step(y, y, StepCoeffs(cx=1.0, px=1.0), clip=(-2.5, 2.5), out=y, backend="triton")
    rep.check(
        "fused_step fp16 2^31+4099 in place", int(r.clipped) == 1 and float(y[-1]) == -2.5 and float(y[-2]) == 2.0
    )


# --------------------------------------------------------------------------------------------------
# (b) timing


def bench(fn) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median") * 1e-3


def naive_stats(x):
    return [
        x.min().item(), x.max().item(), x.float().mean().item(), x.float().std().item(),
        torch.isnan(x).sum().item(), torch.isinf(x).sum().item(), x.abs().max().item(), x.float().norm().item(),
    ]  # fmt: skip


def _copy(x):
    y = torch.empty_like(x)
    return lambda: y.copy_(x)


def _timed_ops(x):
    """(name, fn, bytes the op must move, baseline fn or None, baseline name) for a sample x."""
    n, es, dt = x.numel(), x.element_size(), x.dtype
    eps, out = torch.randn_like(x), torch.empty_like(x)
    c = StepCoeffs.from_prediction("epsilon", 0.3, math.sqrt(0.91), p0=0.6, pe=0.8)
    churn = StepCoeffs(cx=1.0, px=0.9, pn=0.1)

    def eager_ddim():  # the same maths in eager PyTorch
        x0 = ((x.float() - 0.9539392 * eps.float()) / 0.3).clamp(-1, 1)
        e = (x.float() - 0.3 * x0) / 0.9539392
        return (0.6 * x0 + 0.8 * e).to(dt)

    def step(coeffs=c, **kw):
        return lambda: fd.fused_step(x, eps, coeffs, out=out, backend="triton", **kw)

    return [
        ("tensor_stats", lambda: fd.tensor_stats(x, backend="triton"), n * es, lambda: naive_stats(x), "naive"),
        ("fused_step DDIM+clip", step(clip=1.0, stats=False), 3 * n * es, eager_ddim, "eager"),
        ("fused_step DDIM+clip+stats", step(clip=1.0), 3 * n * es, None, ""),
        ("fused_step Philox", step(coeffs=churn, noise=PhiloxNoise(0), stats=False), 2 * n * es, None, ""),
        ("pair_stats", lambda: fd.pair_stats(x, eps, backend="triton"), 2 * n * es, None, ""),
    ]


def timings(rep: Report, device, sizes, dtypes, params):
    print("\ntimings (medians; GB/s = bytes the op must move; % of the copy bandwidth measured here)", flush=True)
    hdr = f"{'op':<28}{'dtype':<6}{'n':>6}{'ms':>10}{'GB/s':>9}{'%copy':>7}  baseline x"
    print(hdr)
    for n in sizes:
        for name in dtypes:
            dt = DTYPES[name]
            x = torch.randn(n, device=device).to(dt)
            copy_bw = 2 * n * x.element_size() / bench(_copy(x))
            for op, fn, nbytes, base, base_name in _timed_ops(x):
                t = bench(fn)
                bw = nbytes / t
                ratio = bench(base) / t if base is not None else None
                speedup = f"{ratio:6.1f} ({base_name})" if ratio is not None else ""
                log2n = int(math.log2(n))
                print(
                    f"{op:<28}{name:<6}{log2n:>6}{t * 1e3:>10.4f}{bw / 1e9:>9.0f}{100 * bw / copy_bw:>6.0f}%  {speedup}"
                )
                rep.timings.append(
                    {"op": op, "dtype": name, "n": n, "seconds": t, "gbps": bw / 1e9, "copy_gbps": copy_bw / 1e9}
                    | ({f"speedup_vs_{base_name}": ratio} if ratio is not None else {})
                )
    if params is not None:
        total = sum(p.numel() * p.element_size() for p in params)
        t = bench(lambda: fd.multi_tensor_stats(params, backend="triton"))
        print(f"{'multi_tensor_stats':<28}{'fp32':<6}{len(params):>6}{t * 1e3:>10.4f}{total / t / 1e9:>9.0f}")
        rep.timings.append({"op": "multi_tensor_stats", "tensors": len(params), "seconds": t, "gbps": total / t / 1e9})


def sweep(device, n: int):
    """GB/s of tensor_stats and the step for a few tile shapes (edit config.py with the winner)."""
    from fastdiff.kernels.triton import config

    print(f"\ntile sweep at n=2^{int(math.log2(n))} (fp32 / bf16)")
    for dt in (torch.float32, torch.bfloat16):
        x = torch.randn(n, device=device).to(dt)
        es = x.element_size()
        for sub in (2, 4, 8, 16):
            for vec in (2, 4, 8):
                for warps in (4, 8):
                    tile = config.Tile(sub=sub, vec=vec, num_warps=warps)
                    config._override = {"stats": tile, "step": tile}
                    try:
                        ts = bench(_timed_ops(x)[0][1])
                        tp = bench(_timed_ops(x)[2][1])
                    except Exception as exc:  # noqa: BLE001 - report and go on
                        print(f"  {dt} sub={sub} vec={vec} warps={warps}: {type(exc).__name__}")
                        continue
                    stats_bw, step_bw = n * es / ts / 1e9, 3 * n * es / tp / 1e9
                    print(
                        f"  {str(dt):<15} sub={sub:<3}vec={vec:<3}warps={warps:<3} stats {stats_bw:7.0f} GB/s", end=""
                    )
                    print(f"   step+stats {step_bw:7.0f} GB/s")
    config._override = {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 22, 24, 26], help="log2 of the element counts")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16", "fp16"], choices=list(DTYPES))
    ap.add_argument("--params", type=float, default=100e6, help="elements of the multi-tensor model")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--big", action="store_true", help="a real > 2^31-element tensor (needs ~5 GB)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, correctness only (runs on the CPU interpreter)")
    ap.add_argument("--out", default=None, help="JSON report path")
    args = ap.parse_args(argv)

    if args.smoke:
        args.sizes, args.params, args.no_timing = [12], 3e5, True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if "triton" not in fd.available_backends():
        print("the triton backend is not available here:", fd.available_backends())
        return 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-interpreter-{platform.machine()}"
    print(f"fastdiff gpu_check on {name}; torch {torch.__version__}")
    rep = Report()
    sizes = [1 << s for s in args.sizes]
    t0 = time.time()
    check_stats(rep, device, sizes, args.dtypes)
    params = check_multi(rep, device, int(args.params))
    check_step(rep, device, sizes, args.dtypes)
    if args.big and device.type == "cuda":
        check_big(rep, device)
    print(f"\ncorrectness: {len(rep.checks) - rep.failures}/{len(rep.checks)} passed in {time.time() - t0:.0f} s")
    if args.smoke:  # the timed callables run once, so a GPU session does not find them broken
        for _, fn, _, base, _ in _timed_ops(torch.randn(1 << 10, device=device)):
            fn()
            if base is not None:
                base()
    if not args.no_timing and device.type == "cuda":
        timings(rep, device, sizes, args.dtypes, params)
        if args.sweep:
            sweep(device, sizes[-1])
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"gpu_check_{name.replace(' ', '_')}.json"
    if not args.smoke:
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"device": name, "torch": torch.__version__, "argv": sys.argv, "checks": rep.checks}
        out.write_text(json.dumps(record | {"timings": rep.timings}, indent=1))
        print(f"report: {out}")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
