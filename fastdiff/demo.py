"""`fastdiff demo`: the whole story on a laptop CPU in about a minute.

1. The schedule and the forward process: `check_schedule`, and one-pass stats of x_t = alpha x0 + sigma eps
   at a few t against what the schedule predicts (mean alpha E[x0], variance alpha^2 Var[x0] + sigma^2).
2. Train a tiny 1-D U-Net (eps-prediction) on synthetic stellar spectra (report 002's setting) with a probe
   `Recorder` attached: x0, t, noise, x_t, pred, target, loss, pred~target and the watched parameters,
   every step, without a host sync.
3. Sample it with DDIM, Euler and DPM-Solver++(2M), every step one fused step with x0 clipping to the
   data range (report 001; the clipped share goes into the log), and compare generated vs real: moments,
   quantiles, the Wasserstein-1 distance of the value distributions, a histogram in the terminal, and a
   PNG when matplotlib is there.
4. The bug of report 002, reproduced: the same eps-model sampled as if it predicted x0 gives N(0, sigma^2)-like
   noise, not spectra.
5. The doctor on the run's log (no failure: it was a healthy run), and its active checks catching the
   step-4 bug before anyone samples: which target the model predicts, and generated-vs-real samples.
   The report (Markdown + JSON + plots) lands in the folder named at the end.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time

import torch

from . import ops
from .data import spectra
from .doctor import compare_samples, diagnose, which_target
from .models import UNet1D
from .probe import Recorder
from .samplers import ddim, dpmpp, euler, sample
from .schedule import Schedule, check_schedule
from .train import train_denoiser

DEFAULT_OUT = "fastdiff-demo"  # in the current folder: yours, not a /tmp path shared with other users


def wasserstein1(a: torch.Tensor, b: torch.Tensor, quantiles: int = 512) -> float:
    """W1 distance between the value distributions of two tensors (mean |quantile difference|)."""
    q = torch.linspace(0.0, 1.0, quantiles, dtype=torch.float64)
    qa = torch.quantile(a.detach().reshape(-1).double()[: 1 << 24], q)
    qb = torch.quantile(b.detach().reshape(-1).double()[: 1 << 24], q)
    return float((qa - qb).abs().mean())


def moments(x: torch.Tensor) -> dict:
    """mean, std (one-pass fused stats), skewness and the 5/50/95% quantiles of all values."""
    s = ops.tensor_stats(x).to_dict()
    v = x.detach().reshape(-1).double()
    z = (v - s["mean"]) / s["std"]
    q = torch.quantile(v, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()
    return {"mean": s["mean"], "std": s["std"], "skew": float((z**3).mean()), "q05": q[0], "q50": q[1], "q95": q[2]}


def text_histogram(real: torch.Tensor, gen: torch.Tensor, label: str, bins: int = 16, width: int = 28) -> str:
    """Two histograms side by side on the same bins over [-1.2, 1.2] (fractions of values per bin).

    Values outside the range are not piled into the edge bins (that draws spikes that are not in the data):
    they are counted on their own rows, below and above."""
    lo, hi = -1.2, 1.2
    edges = torch.linspace(lo, hi, bins + 1)

    def frac(x):
        v = x.detach().reshape(-1).float()
        inside = v[(v >= lo) & (v < hi)]
        below, above = float((v < lo).sum()) / v.numel(), float((v >= hi).sum()) / v.numel()
        return torch.histc(inside, bins=bins, min=lo, max=hi) / v.numel(), below, above

    (fr, r_lo, r_hi), (fg, g_lo, g_hi) = frac(real), frac(gen)
    top = float(max(fr.max(), fg.max(), 1e-12))

    def bar(f: float) -> str:
        return "#" * round(width * f / top)

    def outside(edge: str, r: float, g: float) -> str:
        return f"  {edge:>13}  {f'{r:.0%} of values':<{width}}  {f'{g:.0%} of values':<{width}}"

    lines = [f"  {'value':>12}  {'real':<{width}}  {label:<{width}}"]
    if r_lo or g_lo:
        lines.append(outside(f"< {lo:+.2f}", r_lo, g_lo))
    for i in range(bins):
        r, g = bar(float(fr[i])), bar(float(fg[i]))
        lines.append(f"  [{float(edges[i]):+.2f},{float(edges[i + 1]):+.2f})  {r:<{width}}  {g:<{width}}")
    if r_hi or g_hi:
        lines.append(outside(f">= {hi:+.2f}", r_hi, g_hi))
    return "\n".join(lines)


def _png(path: str, real: torch.Tensor, generated: dict, wrong: torch.Tensor) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    bins = torch.linspace(-1.5, 1.5, 61).tolist()
    axes[0].hist(real.reshape(-1).tolist(), bins=bins, density=True, alpha=0.5, label="real", color="k")
    for name, x in generated.items():
        axes[0].hist(x.reshape(-1).tolist(), bins=bins, density=True, histtype="step", label=name)
    flat = wrong.reshape(-1)
    outside = float((flat.abs() > 1.5).double().mean())  # drawn as they are, not clamped into edge spikes
    weights = torch.full_like(flat, 1.0 / (flat.numel() * (bins[1] - bins[0]))).tolist()  # density of all values
    axes[0].hist(flat.tolist(), bins=bins, weights=weights, histtype="step", ls="--",
                 label=f"eps read as x0 (report 002; {outside:.0%} of its values beyond ±1.5, not shown)")  # fmt: skip
    axes[0].set_title("value distribution: real vs generated")
    axes[0].legend(fontsize=8)
    first = next(iter(generated.values()))
    for k in range(3):
        axes[1].plot(real[k, 0].tolist(), color="k", alpha=0.6, lw=1, label="real" if k == 0 else None)
        axes[1].plot(first[k, 0].tolist(), color="C0", alpha=0.8, lw=1, label=next(iter(generated)) if k == 0 else None)
    axes[1].set_title("example spectra")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _target_table(target) -> str:
    """Markdown: relative error of the model output against each prediction type's target, per noise level."""
    head = "| t | alpha | sigma | " + " | ".join(target.candidates) + " | closest |"
    rows = [head, "|" + " --- |" * (len(target.candidates) + 4)]
    for lv in target.levels:
        errs = " | ".join(f"{lv.rel_error[c]:.3g}" for c in target.candidates)
        rows.append(f"| {lv.t:.0f} | {lv.alpha:.3f} | {lv.sigma:.3f} | {errs} | {lv.best} |")
    return "\n".join(rows) + f"\n\nOverall the model predicts **{target.predicted}**."


def run_demo(out: str | None = None, quick: bool = False, seed: int = 0, print_fn=print) -> dict:
    """Run the demo (module docstring); returns the numbers it printed. `quick` trains/samples less (tests)."""
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    length, n_data = 64, 2048
    # training stops at the step or time budget, whichever comes first (the CPU may be shared); quick mode
    # (the tests) counts steps only, so its numbers do not depend on the machine's load
    train_steps, train_seconds, n_samples, num_steps = (150, None, 96, 10) if quick else (1000, 45.0, 384, 30)
    schedule = Schedule.make("linear", 1000)
    data = spectra(n_data, length=length, seed=seed)
    result: dict = {}

    print_fn("== 1. schedule and forward process ==")
    report = check_schedule(schedule)
    print_fn(str(report))
    result["schedule_ok"] = report.ok
    x0 = data[:512]
    m0, v0 = float(x0.double().mean()), float(x0.double().var())
    print_fn(f"  x0: spectra [N, 1, {length}] in [-1, 1]: mean {m0:.3f}, std {math.sqrt(v0):.3f}")
    print_fn(f"  {'t':>5} {'alpha':>7} {'sigma':>7} | {'mean x_t':>9} {'expected':>9} | {'std x_t':>8} {'expected':>9}")
    forward = []
    g = torch.Generator().manual_seed(seed)
    for t in (0, 100, 250, 500, 750, 999):
        a, s = schedule.alpha_sigma(t)
        x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=g), torch.full((x0.shape[0],), t))
        st = ops.tensor_stats(x_t).to_dict()
        want_mean, want_std = a * m0, math.sqrt(a * a * v0 + s * s)
        forward.append({"t": t, "mean": st["mean"], "std": st["std"], "want_mean": want_mean, "want_std": want_std})
        print_fn(
            f"  {t:>5} {a:>7.4f} {s:>7.4f} | {st['mean']:>9.4f} {want_mean:>9.4f} | {st['std']:>8.4f} {want_std:>9.4f}"
        )
    result["forward"] = forward

    budget = f"<= {train_steps} steps" + (f" / {train_seconds:.0f}s" if train_seconds else "")
    print_fn(f"\n== 2. train a tiny 1-D U-Net (epsilon prediction, {budget}, CPU) ==")
    torch.manual_seed(seed)
    net = UNet1D(channels=(16, 32), t_dim=32)
    n_params = sum(p.numel() for p in net.parameters())
    out = os.path.abspath(out or DEFAULT_OUT)
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "run.jsonl")
    rec = Recorder(log_path, flush_every=100)
    watch = rec.watch(net, params=True, grads=True, every=10)

    every = max(1, train_steps // 10)
    train_start = time.perf_counter()

    def probe(i: int, tensors: dict) -> None:  # the training loop's hook: device-side stats, no sync
        for name in ("x0", "t", "noise", "x_t", "pred", "target"):
            rec.log(name, tensors[name])
        rec.log_pair("pred~target", tensors["pred"], tensors["target"])
        rec.log_scalar("loss", tensors["loss"].detach())
        rec.step()
        if (i + 1) % every == 0:  # progress: one host read of the loss every tenth of the run
            elapsed = time.perf_counter() - train_start
            print_fn(f"  step {i + 1:>5}/{train_steps}  loss {float(tensors['loss'].detach()):.4f}  ({elapsed:.0f}s)")

    tr = train_denoiser(net, data, schedule, prediction_type="epsilon", steps=train_steps, batch_size=64, lr=3e-3,
                        seed=seed, max_seconds=train_seconds, on_step=probe)  # fmt: skip
    watch.remove()  # sampling below does not train: the weights stay as they are
    sm = tr.smoothed(50)
    print_fn(f"  {n_params} parameters, {tr.steps} steps in {tr.seconds:.1f}s: loss {sm[0]:.3f} -> {sm[-1]:.4f}")
    print_fn(f"  probe log: {log_path} (9 records per step, parameters and gradients every 10 steps)")
    result["loss_first"], result["loss_last"], result["train_seconds"] = sm[0], sm[-1], tr.seconds

    print_fn(f"\n== 3. sample through the fused step ({num_steps} steps, x0 clipped to [-1, 1]) ==")
    real = data[-n_samples:]
    noise = torch.randn(n_samples, 1, length, generator=torch.Generator().manual_seed(seed + 1))
    samplers = {
        "ddim": ddim(schedule, num_steps),
        "euler": euler(schedule, num_steps),
        "dpmpp_2m": dpmpp(schedule, max(num_steps * 2 // 3, 2)),
    }
    mr = moments(real)
    cols = "".join(f" {c:>7}" for c in ("mean", "std", "skew", "q05", "q50", "q95"))
    print_fn(f"  {'':<12}{cols} {'W1(real)':>9} {'clipped':>8}")
    row = "  {:<12} {mean:>7.3f} {std:>7.3f} {skew:>7.3f} {q05:>7.3f} {q50:>7.3f} {q95:>7.3f}"
    print_fn(row.format("real", **mr))
    generated, result["samplers"] = {}, {}

    def log_clipping(name: str):  # the per-step clipped share, for the doctor's clip_saturation finding
        def callback(info: dict) -> None:
            rec.log_scalar(f"sample/{name}/clip_fraction", info["result"].clipped / info["x"].numel())
            rec.step()

        return callback

    for name, smp in samplers.items():
        t0 = time.perf_counter()
        r = sample(net, smp, noise, clip=1.0, progress=False, callback=log_clipping(name))
        seconds = time.perf_counter() - t0
        x = r.sample
        stats = r.step_stats()  # one host sync for all per-step stats
        clipped = sum(s["clipped"] for s in stats) / (len(stats) * x.numel())
        m = moments(x)
        w1 = wasserstein1(x, real)
        generated[name] = x
        result["samplers"][name] = {**m, "w1": w1, "clipped_frac": clipped, "seconds": seconds, "steps": len(smp)}
        print_fn(row.format(name, **m) + f" {w1:>9.4f} {100 * clipped:>7.2f}%")

    wrong = sample(net, ddim(schedule, num_steps, prediction_type="sample"), noise, progress=False).sample
    mw = moments(wrong)
    w1w = wasserstein1(wrong, real)
    outside = float((wrong.abs() > 1.0).double().mean())
    result["wrong"] = {**mw, "w1": w1w, "outside_frac": outside}
    print_fn(row.format("eps as x0", **mw) + f" {w1w:>9.4f}")

    best = min(result["samplers"], key=lambda k: result["samplers"][k]["w1"])
    print_fn("\n" + text_histogram(real, generated[best], best))
    print_fn("\n== 4. report 002 reproduced: the eps-model sampled as if it predicted x0 ==")
    print_fn(text_histogram(real, wrong, "eps read as x0"))
    print_fn(
        f"  noise, not spectra: mean {mw['mean']:+.2f} (real {mr['mean']:+.2f}), std {mw['std']:.2f} "
        f"(real {mr['std']:.2f}), {100 * outside:.0f}% of values outside the data range [-1, 1];\n"
        f"  W1 to the real values {w1w:.3f} against {result['samplers'][best]['w1']:.3f} with the right "
        "parameterization. The loss was fine all along: only the sampler read the output wrongly."
    )

    print_fn("\n== 5. the doctor: the run's log, then the active checks ==")
    rec.log("samples", generated[best], role="sample")
    rec.log("real", real, role="real")
    rec.close()
    report = diagnose(log_path, plots=False)
    for line in report.summary_lines():
        print_fn(line)
    result["doctor_failed"] = [f.id for f in report.failed]
    verdict = "no failure: a healthy run" if not report.failed else f"failures: {result['doctor_failed']}"
    print_fn(f"  -> {verdict}. A log cannot show how a sampler will read the model's output; active checks can:")
    target = which_target(net, data[:256], schedule=schedule)
    print_fn("  " + "  ".join(f"t={lv.t:.0f}: {lv.best}" for lv in target.levels))
    checks = [target.finding("sample"), target.finding("epsilon"), compare_samples(wrong, real)[1]]
    checks.append(compare_samples(generated[best], real)[1])
    for label, f in zip(("sampler as x0", "sampler as eps", "eps-as-x0 samples", f"{best} samples"), checks):
        f.label = label  # the report and its JSON keep it: two prediction_type findings are told apart
        print_fn(f"  {label:<18} {f.status.upper():>4}  {f.summary}")
    result["target"] = target.predicted
    result["checks"] = {f"{f.id}:{i}": f.status for i, f in enumerate(checks)}
    report.findings += checks
    report.extra_sections.append(("Which target does the model predict?", _target_table(target)))
    md, js = os.path.join(out, "report.md"), os.path.join(out, "report.json")
    from .doctor import plot_log

    report.plots = plot_log(report.log, out, prefix="report_")
    report.write(md, js)
    result["report"] = md

    png = _png(os.path.join(out, "demo.png"), real, generated, wrong)
    result["png"] = png
    print_fn(f"\n  figure: {png}" if png else "\n  (matplotlib not installed: no figure; pip install 'fastdiff[plot]')")
    cli = command_line()
    print_fn(f"  doctor report: {md} (+ report.json, plots)")
    result["seconds"] = time.perf_counter() - t_start
    print_fn(f"  demo done in {result['seconds']:.1f}s; everything is in {out}")
    print_fn("\nNext, on your own runs (docs/findings.md says what each finding means):")
    print_fn(f"  {cli} doctor {log_path}        # the doctor on this run's log again")
    print_fn(f"  {cli} doctor --help")
    print_fn(f"  {cli} bench --quick")
    if cli != "fastdiff":
        print_fn(
            f"  ('fastdiff' alone works after: source {os.path.join(os.path.dirname(sys.executable), 'activate')})"
        )
    return result


def command_line() -> str:
    """How to call the `fastdiff` command from here: `fastdiff` when the shell finds this one, else its path
    (the venv that `make demo` made is not on PATH until activated)."""
    here = os.path.join(os.path.dirname(sys.executable), "fastdiff")
    found = shutil.which("fastdiff")
    if found and os.path.realpath(found) == os.path.realpath(here):
        return "fastdiff"
    if os.path.exists(here):
        return os.path.relpath(here) if not os.path.relpath(here).startswith("..") else here
    return f"{sys.executable} -m fastdiff"
