"""The suites `fastdiff bench` knows, by name; each is imported only when it runs.

A suite module exposes `run(cfg: BenchConfig) -> list[dict]` (rows, see `fastdiff.bench`) and
`count_cases(cfg) -> int` (for the progress bar). A module written against the plain signature
`run(device, sizes, dtypes, repeats, quick) -> list[dict]` (harness rows) is registered with
`signature="plain"` and adapted here. Adding a suite is one `Suite(...)` entry in `SUITES`.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from dataclasses import dataclass

from .config import BenchConfig


@dataclass(frozen=True)
class Suite:
    """name: what `--suite` takes; modules: candidates, the first importable one runs; requires: modules
    that must import for the suite to make sense (checked before anything runs)."""

    name: str
    description: str
    modules: tuple[str, ...]
    requires: tuple[str, ...] = ()
    signature: str = "config"  # "config": run(cfg); "plain": run(device, sizes, dtypes, repeats, quick)

    def availability(self) -> tuple[bool, str]:
        """(True, "") when the suite can run here, else (False, why not)."""
        for mod in self.requires:
            try:
                importlib.import_module(mod)
            except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
                return False, f"needs {mod} ({type(exc).__name__}: {exc})"
        if self._module_name() is None:
            return False, f"none of its modules is importable: {', '.join(self.modules)}"
        return True, ""

    def _module_name(self) -> str | None:
        for mod in self.modules:
            try:
                if importlib.util.find_spec(mod) is not None:
                    return mod
            except ImportError:  # the parent package is missing
                continue
        return None

    def module(self):
        name = self._module_name()
        if name is None:
            raise RuntimeError(f"suite {self.name!r} is not available: {self.availability()[1]}")
        return importlib.import_module(name)

    def count_cases(self, cfg: BenchConfig) -> int:
        mod = self.module()
        if hasattr(mod, "count_cases"):
            return mod.count_cases(cfg)
        return len(cfg.sizes) * len(cfg.dtypes)

    def run(self, cfg: BenchConfig) -> list[dict]:
        mod = self.module()
        with warnings.catch_warnings():
            # the naive baselines take x.std() of 1-element tensors (a model's biases): NaN, as users get it
            warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom")
            if self.signature == "plain":
                rows = mod.run(cfg.device, list(cfg.sizes), list(cfg.dtypes), cfg.repeats, cfg.quick)
                cfg.done(self.count_cases(cfg))
            else:
                rows = mod.run(cfg)
        for row in rows:
            row.setdefault("suite", self.name)
            row.setdefault("device", cfg.device)
            if row.get("frac_copy_bw") is None and row.get("gbps") and cfg.copy_gbps:
                row["frac_copy_bw"] = row["gbps"] / cfg.copy_gbps
        return rows


SUITES: dict[str, Suite] = {
    s.name: s
    for s in [
        Suite(
            "step",
            "DDIM step with clipping and x0 output: fused vs diffusers step(), eager, torch.compile",
            ("fastdiff.bench.step",),
        ),
        Suite(
            "stats",
            "tensor stats vs naive .item(), aminmax+var_mean, torch.compile",
            ("fastdiff.bench.stats",),
        ),
        Suite(
            "multi_stats",
            "stats of all parameters of a UNet1D in one call vs a per-tensor loop",
            ("fastdiff.bench.multi_stats",),
        ),
        Suite(
            "probe",
            "training-loop overhead of Recorder+watch vs naive .item() logging vs histograms",
            ("fastdiff.bench.probe",),
        ),
        Suite(
            "latency",
            "the sizes people sample (SD 1.5, SDXL, Flux tokens, video): scheduler loops per step, fused_step "
            "host overhead, sample() per step, stats read on the host",
            ("fastdiff.bench.latency",),
        ),
        Suite(
            "schedulers",
            "drop-in diffusers schedulers (Fast*Scheduler.step) vs diffusers",
            ("fastdiff.bench.schedulers",),
            requires=("diffusers", "fastdiff.integrations.diffusers"),
            signature="plain",
        ),
    ]
}
