"""What do training diagnostics cost? A small diffusion training loop, probed four ways, interleaved.

The loop: UNet1D(channels=(64, 128, 256, 256)) (~4.2M parameters), eps-prediction DDPM on
fastdiff.data.spectra, AdamW. Variants, interleaved step by step in rotating order within each round:

    none       no probes
    probe      fastdiff.Recorder: ~20 tensors per step (x0, t, noise, alpha_t, sigma_t, x_t per sample,
               pred, target, pred_x0, pred~target pair, loss, 9 block outputs) + watch(every=1):
               param, grad and update stats of every parameter, flushed to JSONL once per round
    probe_logs the same Recorder without watch
    naive      the same fields with the `.item()` logging people write today (8 .item() per tensor:
               min, max, mean, std, isnan.sum, isinf.sum, abs.max, norm; per parameter too, with a
               per-parameter clone for the update), one JSON line per step
    histc      wandb.watch(log="all")-style: per parameter and gradient min/max .item(), torch.histc
               with 64 bins, .cpu(), every step

Reported: the median (over rounds) of the mean step time of each variant, the overhead over `none`
(median over rounds of the ratio to `none` in the same round), and naive's overhead divided by
probe's. Also the bytes the probe reads per step and the machine's
copy bandwidth measured in the same run, for scale.

    python benchmarks/bench_probe.py            # the full study: ~4 minutes on a 2-core CPU
    python benchmarks/bench_probe.py --quick    # a smoke run
    fastdiff bench --suite probe                # the same loop, fewer rounds, as rows of the bench tables
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch

import fastdiff as fd
from fastdiff import kernels
from fastdiff.data import spectra
from fastdiff.models.unet1d import UNet1D
from fastdiff.schedule import Schedule

from . import harness
from .config import BenchConfig

VARIANTS = ("none", "probe", "probe_logs", "naive", "histc")

NAIVE_FIELDS = ("min", "max", "mean", "std", "nan_count", "inf_count", "absmax", "l2")


# --------------------------------------------------------------------------------------------------
# loggers: the same calls, three implementations


class NaiveLogger:
    """What people write today: every field is a Python float right away (a host sync per value on a GPU)."""

    def __init__(self, path: str):
        self.file = open(path, "w")  # noqa: SIM115
        self.row: dict = {}
        self.prev: dict[str, torch.Tensor] = {}
        self.step_count = 0

    @staticmethod
    def fields(x: torch.Tensor) -> dict:
        x = x.detach().float()
        return {
            "min": x.min().item(),
            "max": x.max().item(),
            "mean": x.mean().item(),
            "std": x.std().item(),
            "nan_count": torch.isnan(x).sum().item(),
            "inf_count": torch.isinf(x).sum().item(),
            "absmax": x.abs().max().item(),
            "l2": x.norm().item(),
        }

    def log(self, name, x, per_sample=False):
        self.row[name] = self.fields(x)
        if per_sample:
            self.row[name + "/per_sample"] = [self.fields(r) for r in x]

    def log_pair(self, name, a, b):
        a, b = a.detach().float(), b.detach().float()
        self.row[name] = {
            "cos": torch.nn.functional.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)).item(),
            "norm_ratio": (a.norm() / b.norm()).item(),
            "mse": ((a - b) ** 2).mean().item(),
            "max_abs_diff": (a - b).abs().max().item(),
        }

    def log_scalar(self, name, value):
        self.row[name] = float(value)

    def watch_step(self, model):
        with torch.no_grad():
            for name, p in model.named_parameters():
                self.row["param/" + name] = self.fields(p)
                if p.grad is not None:
                    self.row["grad/" + name] = self.fields(p.grad)
                if name in self.prev:
                    d = p - self.prev[name]
                    self.row["update/" + name] = self.fields(d)
                    self.row["update_ratio/" + name] = (d.norm() / p.norm()).item()
                self.prev[name] = p.detach().clone()

    def step(self):
        self.file.write(json.dumps({"step": self.step_count, **self.row}) + "\n")
        self.file.flush()
        self.row = {}
        self.step_count += 1

    def close(self):
        self.file.close()


class HistcWatcher:
    """wandb.watch(log="all")'s per-tensor work: min/max to the host, histc(64), counts to the host."""

    def __init__(self):
        self.hists = []

    @staticmethod
    def hist(x: torch.Tensor):
        flat = x.detach().reshape(-1).float()
        tmin, tmax = flat.min().item(), flat.max().item()
        return torch.histc(flat, bins=64, min=tmin, max=tmax).cpu(), tmin, tmax

    def watch_step(self, model):
        self.hists = []
        for _, p in model.named_parameters():
            self.hists.append(self.hist(p))
            if p.grad is not None:
                self.hists.append(self.hist(p.grad))


# --------------------------------------------------------------------------------------------------
# the training loop


class Trainer:
    def __init__(self, model, data, schedule, batch, device, seed, logger=None, watcher=None):
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.data = data
        self.alpha = schedule.alpha.to(device, torch.float32)
        self.sigma = schedule.sigma.to(device, torch.float32)
        self.batch = batch
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.logger = logger
        self.watcher = watcher
        self.device = device
        if logger is not None:  # block outputs, the usual "activation" probes
            blocks = [*model.down, model.mid, *model.up]
            for i, block in enumerate(blocks):
                block.register_forward_hook(lambda m, inp, out, i=i: self.logger.log(f"block{i}", out))

    def step(self):
        device, log = self.device, self.logger
        idx = torch.randint(0, self.data.shape[0], (self.batch,), generator=self.gen, device=device)
        x0 = self.data[idx]
        t = torch.randint(0, self.alpha.numel(), (self.batch,), generator=self.gen, device=device)
        noise = torch.randn(x0.shape, generator=self.gen, device=device)
        a, s = self.alpha[t][:, None, None], self.sigma[t][:, None, None]
        x_t = a * x0 + s * noise
        pred = self.model(x_t, t)
        loss = torch.nn.functional.mse_loss(pred, noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if log is not None:
            pred_x0 = (x_t - s * pred.detach()) / a
            log.log("x0", x0)
            log.log("t", t)
            log.log("noise", noise)
            log.log("alpha_t", a)
            log.log("sigma_t", s)
            log.log("x_t", x_t, per_sample=True)
            log.log("pred", pred)
            log.log("target", noise)
            log.log("pred_x0", pred_x0)
            log.log_pair("pred~target", pred, noise)
            log.log_scalar("loss", loss.detach())
        if self.watcher is not None:
            self.watcher.watch_step(self.model)
        if log is not None:
            log.step()


# --------------------------------------------------------------------------------------------------


sync = harness.synchronize


def measure_overhead(
    *,
    device: str = "cpu",
    rounds: int = 21,
    steps: int = 3,
    batch: int = 32,
    length: int = 256,
    channels: tuple[int, ...] = (64, 128, 256, 256),
    backend: str = "auto",
    variants: tuple[str, ...] = VARIANTS,
    components: bool = True,
    warmup: int = 2,
    progress: Callable[[int], None] | None = None,
    verbose: bool = False,
) -> dict:
    """Train the same model under every variant in interleaved rounds; the result dict of `main`.
    progress(1) is called after each round."""
    device = torch.device(device)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; accepted: {', '.join(VARIANTS)}")
    torch.manual_seed(0)
    base = UNet1D(channels=channels).to(device)
    n_params = sum(p.numel() for p in base.parameters())
    data = spectra(512, length, seed=0).to(device)
    schedule = Schedule.make("linear")
    module = kernels.resolve(backend, device).__name__
    backend_used = next(name for name, path in kernels._MODULES.items() if path == module)
    tmp = tempfile.mkdtemp(prefix="bench_probe_")
    try:
        trainers, recorders = {}, {}
        for v in variants:
            model = copy.deepcopy(base)
            logger = watcher = None
            if v in ("probe", "probe_logs"):
                logger = recorders[v] = fd.Recorder(os.path.join(tmp, f"{v}.jsonl"), flush_every=steps, backend=backend)
                if v == "probe":
                    logger.watch(model, every=1)
            elif v == "naive":
                logger = watcher = NaiveLogger(os.path.join(tmp, "naive.jsonl"))
            elif v == "histc":
                watcher = HistcWatcher()
            trainers[v] = Trainer(model, data, schedule, batch, device, seed=1, logger=logger, watcher=watcher)

        for tr in trainers.values():  # warm-up (allocator, first-call costs, the first update snapshot)
            for _ in range(warmup):
                tr.step()
        sync(device)
        bandwidth = harness.measure_copy_bandwidth(1 << 24, device=device, repeats=5)["gbps"]

        per_round: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(rounds):
            order = list(variants[r % len(variants) :]) + list(variants[: r % len(variants)])
            elapsed = dict.fromkeys(variants, 0.0)
            for _ in range(steps):  # interleaved step by step: a slow spell of the machine hits every variant
                for v in order:
                    sync(device)
                    t0 = time.perf_counter()
                    trainers[v].step()
                    sync(device)
                    elapsed[v] += time.perf_counter() - t0
            for v in variants:
                per_round[v].append(elapsed[v] / steps)
            if verbose:
                print(f"round {r + 1}/{rounds}: " + ", ".join(f"{v} {per_round[v][-1] * 1e3:.1f} ms" for v in variants))
            if progress is not None:
                progress(1)

        parts = {}
        if components and {"probe", "naive"} <= set(variants):
            parts = probe_components(trainers, recorders, rounds, steps)
        for rec in recorders.values():
            rec.close()
        if "naive" in trainers:
            trainers["naive"].logger.close()
        log_lines = {v: sum(1 for _ in open(os.path.join(tmp, f"{v}.jsonl"))) for v in recorders}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {v: statistics.median(ts) for v, ts in per_round.items()}
    # overhead: the median over rounds of (variant / none in the same round) - 1 — paired within a round,
    # so a burst of load from other processes on a shared machine mostly cancels out
    if "none" in per_round:
        overhead = {v: statistics.median(a / b for a, b in zip(per_round[v], per_round["none"])) - 1 for v in variants}
    else:
        overhead = {v: math.nan for v in variants}
    probe_bytes = sum(p.numel() * p.element_size() for p in base.parameters()) * 3  # params, grads, updates
    return {
        "device": str(device),
        "device_name": harness.device_name(str(device)),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "stats_backend": backend_used,
        "model": f"UNet1D(channels={channels})",
        "parameters": n_params,
        "batch": batch,
        "length": length,
        "rounds": rounds,
        "steps_per_round": steps,
        "median_step_ms": {v: med[v] * 1e3 for v in variants},
        "overhead": overhead,
        "naive_over_probe_overhead": (
            overhead["naive"] / overhead["probe"]
            if {"naive", "probe"} <= set(variants) and overhead["probe"] > 0
            else None
        ),
        "components_ms": parts,
        "watch_bytes_read_per_step": probe_bytes,
        "copy_bandwidth_gbps": bandwidth,
        "probe_records_written": log_lines,
        "per_round_ms": {v: [t * 1e3 for t in ts] for v, ts in per_round.items()},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--steps", type=int, default=3, help="steps per variant per round (one probe flush per round)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--channels", default="64,128,256,256")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 steps, a small model")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.channels = 2, 2, "16,32"
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = measure_overhead(
            device=args.device,
            rounds=args.rounds,
            steps=args.steps,
            batch=args.batch,
            length=args.length,
            channels=tuple(int(c) for c in args.channels.split(",")),
            backend=args.backend,
            variants=tuple(args.variants.split(",")),
            verbose=True,
        )
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    result["command"] = " ".join([os.path.basename(sys.executable), *sys.argv])
    keys = ("median_step_ms", "overhead", "naive_over_probe_overhead", "components_ms")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    if not args.quick:
        write_results(result, args.out)
    return result


# --------------------------------------------------------------------------------------------------
# as a `fastdiff bench` suite

SUITE_SETTINGS = {
    # well under a minute on a quiet 2-core CPU: a smaller UNet1D (0.68M parameters) than the full study's
    False: {"channels": (32, 64, 128), "batch": 16, "length": 128, "rounds": 7, "steps": 2},
    True: {"channels": (16, 32), "batch": 8, "length": 64, "rounds": 2, "steps": 1, "warmup": 1},
}


def count_cases(cfg: BenchConfig) -> int:
    return SUITE_SETTINGS[cfg.quick]["rounds"]


def run(cfg: BenchConfig) -> list[dict]:
    """One row per variant: step time (median, p20/p80 over rounds) and `overhead` over `none`.

    `fastdiff_speedup` is the step time of the variant over that of `probe` (fastdiff's Recorder with
    watch); GB/s is not given (a training step is not a memory-bound pass)."""
    s = SUITE_SETTINGS[cfg.quick]
    result = measure_overhead(device=cfg.device, components=False, progress=cfg.progress, **s)
    rows = []
    for v, ms in result["per_round_ms"].items():
        rows.append(
            {
                "suite": "probe",
                "op": f"train step {result['model']} batch {s['batch']}x{s['length']}",
                "size": result["parameters"],
                "dtype": "float32",
                "device": cfg.device,
                "provider": v,
                **harness.summarize([t * 1e-3 for t in ms]),
                "repeats": s["rounds"],
                "bytes_moved": None,
                "gbps": None,
                "frac_copy_bw": None,
                "overhead": result["overhead"][v],
                "stats_backend": result["stats_backend"],
            }
        )
    harness.add_speedups(rows, "probe")
    return rows


class _paused:
    """Drop what a Recorder's hooks record meanwhile (we only want the tensors here)."""

    def __init__(self, rec):
        self.rec = rec

    def __enter__(self):
        self.parts = len(self.rec._parts)

    def __exit__(self, *exc):
        del self.rec._parts[self.parts :]


def probe_components(trainers: dict, recorders: dict, rounds: int, steps: int = 1) -> dict[str, float]:
    """The probes' own work per step, timed alone (medians of interleaved repeats): less exposed to the
    noise of a shared machine than the difference of two training-step times. The probe flushes once
    per `steps` steps, as in the training loop (flush_every=steps)."""
    probe, naive = trainers["probe"], trainers["naive"]
    rec, logger = recorders["probe"], naive.logger
    watch = rec._watches[0]
    model = probe.model
    x = probe.data[: probe.batch]
    feats = []  # the block outputs of one forward pass, as the training loop's hooks see them
    blocks = [*model.down, model.mid, *model.up]
    handles = [b.register_forward_hook(lambda m, i, out: feats.append(out.detach().clone())) for b in blocks]
    with torch.no_grad(), _paused(rec):
        model(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
    for h in handles:
        h.remove()

    def logs(log):
        for name in ("x0", "noise", "alpha_t", "sigma_t", "pred", "target", "pred_x0"):
            log.log(name, x)
        log.log("t", x.reshape(-1)[: probe.batch])
        log.log("x_t", x, per_sample=True)
        for i, f in enumerate(feats):
            log.log(f"block{i}", f)
        log.log_pair("pred~target", x, x)
        log.log_scalar("loss", x.sum())

    def probe_step():
        for _ in range(steps):
            logs(rec)
            watch.capture()
            rec._step += 1  # as step(), without its flush: flush is timed on its own below
            rec._since_flush = 0

    def naive_step():
        for _ in range(steps):
            logs(logger)
            logger.watch_step(model)
            logger.step()

    def histc_step():
        for _ in range(steps):
            histc.watch_step(model)

    histc = HistcWatcher()
    jobs = {"probe logs + watch": probe_step, "probe flush (per step)": None, "naive": naive_step}
    jobs["histc"] = histc_step
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(max(3, rounds)):
        for name, job in jobs.items():
            if job is None:  # flush the records of the probe steps just timed, per step
                n_steps = max(1, len({p.step for p in rec._parts}))
                t0 = time.perf_counter()
                rec.flush()
                times[name].append((time.perf_counter() - t0) / n_steps)
                continue
            sync(x.device)
            t0 = time.perf_counter()
            job()
            sync(x.device)
            times[name].append((time.perf_counter() - t0) / steps)
    out = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    out["probe total"] = out["probe logs + watch"] + out["probe flush (per step)"]
    return out


def write_results(result: dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    kind = "gpu" if result["device"].startswith("cuda") else "cpu"
    stem = os.path.join(out_dir, f"{kind}-{harness.slug(result['device_name'])}-probe-study")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    base = result["median_step_ms"].get("none")
    lines = [
        f"# Probe overhead in training — {result['device_name']} ({result['device']}, {result['threads']} threads)",
        "",
        f"{result['model']}, {result['parameters']:,} parameters, batch {result['batch']} x {result['length']}, "
        f'AdamW; stats backend `{result["stats_backend"]}` (backend="auto"); torch {result["torch"]}.',
        f"{result['rounds']} rounds of {result['steps_per_round']} steps per variant, the variants interleaved step "
        "by step (one probe flush per round, included); step: median over rounds of the mean step time; overhead: "
        "median over rounds of the ratio to `none` in the same round.",
        "",
        "| variant | step (ms) | overhead vs none |",
        "| --- | ---: | ---: |",
    ]
    for v, ms in result["median_step_ms"].items():
        ov = "—" if v == "none" or base is None else f"{result['overhead'][v] * 100:+.1f}%"
        lines.append(f"| {v} | {ms:.1f} | {ov} |")
    ratio = result["naive_over_probe_overhead"]
    lines += [
        "",
        f"naive `.item()` overhead / probe overhead: {ratio:.2f}x"
        if ratio
        else "naive `.item()` overhead / probe overhead: not defined (the probe's overhead is below this loop's "
        "noise; see the components below)",
        f"The probes' own work per step, timed alone (medians; one flush per {result['steps_per_round']} steps): "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in result["components_ms"].items())
        + (
            f" — naive / probe: {result['components_ms']['naive'] / result['components_ms']['probe total']:.1f}x"
            if result["components_ms"]
            else ""
        ),
        "",
        f"watch reads {result['watch_bytes_read_per_step'] / 1e6:.1f} MB per step (params, grads, updates); "
        f"copy bandwidth measured in the same run: {result['copy_bandwidth_gbps']:.1f} GB/s.",
        f"records written: {result['probe_records_written']}",
        "",
        f"Command: `{result['command']}`",
        "",
    ]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
