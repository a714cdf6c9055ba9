"""The doctor's report: Markdown for people, JSON for programs (API.md section 4), plots when matplotlib is there."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .log import RunLog
from .rules import Finding, _clean

STATUS_LABEL = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@dataclass
class Report:
    findings: list[Finding]
    log: RunLog | None = None
    extra_sections: list[tuple[str, str]] = field(default_factory=list)  # (title, markdown) from active checks
    plots: dict[str, str] = field(default_factory=dict)  # finding id or section -> relative PNG path

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    def status(self, finding_id: str) -> str:
        return next(f.status for f in self.findings if f.id == finding_id)

    def to_json(self) -> dict:
        out = {"findings": [f.to_json() for f in self.findings]}
        if self.log is not None:
            lo, hi = self.log.steps
            out["log"] = {
                "path": self.log.path,
                "records": len(self.log.records),
                "steps": [lo, hi],
                "notes": self.log.notes(),
            }
        return out

    def to_markdown(self) -> str:
        lines = ["# fastdiff doctor report", ""]
        if self.log is not None:
            lo, hi = self.log.steps
            lines.append(f"Log `{self.log.path}`: {len(self.log.records)} records, steps {lo}..{hi}.")
            lines += [f"- note: {n}" for n in self.log.notes()]
            lines.append("")
        counts = {s: sum(f.status == s for f in self.findings) for s in ("fail", "warn", "ok", "skip")}
        lines.append(", ".join(f"{n} {STATUS_LABEL[s]}" for s, n in counts.items() if n) + ".")
        lines += ["", "| finding | status | summary |", "| --- | --- | --- |"]
        for f in self.findings:
            name = f"`{f.id}`" + (f" ({f.label})" if f.label else "")
            lines.append(f"| {name} | {STATUS_LABEL[f.status]} | {f.summary.replace('|', chr(92) + '|')} |")
        for f in self.findings:
            if f.status == "skip":
                continue
            label = f" ({f.label})" if f.label else ""
            lines += ["", f"## `{f.id}`{label}: {STATUS_LABEL[f.status]}", "", f.summary, ""]
            lines += [f"What it checks and what to do: fastdiff's docs/findings.md, section `{f.id}`.", ""]
            if f.id in self.plots:
                lines += [f"![{f.id}]({self.plots[f.id]})", ""]
            if f.evidence:
                lines += [
                    "<details><summary>evidence</summary>",
                    "",
                    "```json",
                    json.dumps(_clean(f.evidence), indent=1)[:4000],
                    "```",
                    "</details>",
                ]
        for title, body in self.extra_sections:
            lines += ["", f"## {title}", "", body]
            if title in self.plots:
                lines += ["", f"![{title}]({self.plots[title]})"]
        return "\n".join(lines) + "\n"

    def write(self, markdown_path: str | Path | None = None, json_path: str | Path | None = None) -> None:
        if markdown_path is not None:
            Path(markdown_path).write_text(self.to_markdown(), encoding="utf-8")
        if json_path is not None:
            Path(json_path).write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8")

    def summary_lines(self) -> list[str]:
        """One line per finding, for the terminal."""
        return [f"  {STATUS_LABEL[f.status]:>4}  {f.title:<22} {f.summary}" for f in self.findings]


# --- plots ----------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_log(log: RunLog, out_dir: str | Path, prefix: str = "") -> dict[str, str]:
    """Loss curve, stats over steps per role, pair alignment and parameter norms; {finding id: file name}."""
    plt = _pyplot()
    if plt is None:
        return {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def save(fig, key: str, name: str):
        path = out_dir / f"{prefix}{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made[key] = path.name

    loss = [
        (r.step, r.get("value")) for r in log.records if r.kind == "scalar" and (r.role == "loss" or r.name == "loss")
    ]
    loss = sorted((s, v) for s, v in loss if v is not None and v > 0)
    if loss:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot([s for s, _ in loss], [v for _, v in loss], lw=0.8)
        ax.set_yscale("log")
        ax.set(xlabel="step", ylabel="loss", title="loss")
        save(fig, "loss_trend", "loss")

    role_plots = [
        ("data_normalization", ("x0",)),
        ("timestep_distribution", ("t",)),
        ("forward_process", ("noise", "x_t")),
        ("prediction_range", ("pred", "target", "pred_x0")),
    ]
    for key, roles in role_plots:
        groups = log.by_role(*roles)
        if not groups:
            continue
        names = list(groups)[:6]
        fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
        for ax, name in zip(axes[0], names):
            recs = [r for r in groups[name] if r.get("mean") is not None]
            steps = [r.step for r in recs]
            mean = [r.get("mean") for r in recs]
            std = [r.get("std") or 0.0 for r in recs]
            few = "o" if len(recs) < 3 else None  # a series of one or two points is invisible as a line
            ax.plot(steps, mean, lw=1, marker=few, label="mean")
            ax.fill_between(
                steps,
                [m - s for m, s in zip(mean, std)],
                [m + s for m, s in zip(mean, std)],
                alpha=0.3,
                label="mean ± std",
            )
            ax.plot(steps, [r.get("min") for r in recs], lw=0.5, color="gray", marker=few)
            ax.plot(steps, [r.get("max") for r in recs], lw=0.5, color="gray", marker=few, label="min / max")
            ax.set_title(f"{name} ({recs[0].role if recs else ''})", fontsize=9)
            ax.set_xlabel("step")
        axes[0][0].legend(fontsize=7)
        save(fig, key, f"stats_{key}")

    _samples_plot(plt, log, save)

    pairs = log.names(kind="pair")
    if pairs:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
        for name in pairs[:8]:
            recs = log.series(name, "pair")
            few = "o" if len(recs) < 3 else None
            a1.plot([r.step for r in recs], [r.get("cos") for r in recs], lw=1, marker=few, label=name)
            a2.plot([r.step for r in recs], [r.get("norm_ratio") for r in recs], lw=1, marker=few, label=name)
        a1.set(title="cos(pred, target)", xlabel="step")
        a2.set(title="|pred| / |target|", xlabel="step")
        a2.set_yscale("log")
        a1.legend(fontsize=6)
        save(fig, "fm_alignment", "alignment")

    _params_plot(plt, log, save)
    return made


def _samples_plot(plt, log: RunLog, save) -> bool:
    """Generated vs real values as boxes (range, mean ± std) — what samples_like_noise compares; a log holds
    each once, so a curve over steps would be empty axes. N(0, s^2) of the samples' own std for reference."""
    samples = log.by_role("sample")
    real = log.by_role("real")
    if not real:
        steps = log.training_steps()
        real = {n: [r for r in recs if not steps or r.step in steps] for n, recs in log.by_role("x0").items()}
        real = {n: recs for n, recs in real.items() if recs}
    if not samples or not real:
        return False
    from .rules import aggregate

    rows = []
    for name, recs in samples.items():
        last = max(r.step for r in recs)
        rows.append((f"{name}\n(generated)", aggregate([r for r in recs if r.step == last]), "C1"))
    for name, recs in real.items():
        rows.append((f"{name}\n(real)", aggregate(recs), "C0"))
    rows = [r for r in rows if r[1].mean is not None and r[1].std is not None][:6]
    if not rows:
        return False
    gen_std = rows[0][1].std
    rows.append((f"N(0, {gen_std:.3g}²)\n(reference)", None, "gray"))
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 1.5, 3.2))
    for i, (_label, a, color) in enumerate(rows):
        if a is None:  # +- 1 and 3 std of the normal with the samples' std
            ax.vlines(i, -3 * gen_std, 3 * gen_std, color=color, lw=1)
            ax.vlines(i, -gen_std, gen_std, color=color, lw=10, alpha=0.5)
            ax.plot(i, 0, "o", color="k", ms=4)
            continue
        ax.vlines(i, a.min, a.max, color=color, lw=1, label="range" if i == 0 else None)
        ax.vlines(
            i, a.mean - a.std, a.mean + a.std, color=color, lw=10, alpha=0.5, label="mean ± std" if i == 0 else None
        )
        ax.plot(i, a.mean, "o", color="k", ms=4, label="mean" if i == 0 else None)
    ax.set_xticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.set(title="generated vs real values (what samples_like_noise compares)", ylabel="value")
    ax.legend(fontsize=7)
    save(fig, "samples_like_noise", "samples")
    return True


def _params_plot(plt, log: RunLog, save) -> None:
    """‖Δw‖/‖w‖ per watched step — the evidence params_frozen judges — as the median and 10..90% band over the
    parameters, with the ones that stopped moving drawn one by one (a legend of a few names, not seventy)."""
    ratios: dict[str, list[tuple[int, float]]] = {}
    for r in log.records:
        if r.kind == "scalar" and r.name.startswith("update_ratio/") and r.get("value") is not None:
            ratios.setdefault(r.name[len("update_ratio/") :], []).append((r.step, r.get("value")))
    if not ratios:
        return
    import numpy as np

    steps = sorted({s for series in ratios.values() for s, _ in series})
    at = {s: i for i, s in enumerate(steps)}
    table = np.full((len(ratios), len(steps)), np.nan)
    for k, series in enumerate(ratios.values()):
        for s, v in series:
            table[k, at[s]] = v
    floor = 1e-12  # zero updates drawn at the floor of the log axis
    shown = np.where(np.isfinite(table), np.maximum(table, floor), np.nan)
    stalled = [name for name, series in ratios.items() if len(series) >= 2 and all(v <= floor for _, v in series[-2:])]
    moving = [k for k, name in enumerate(ratios) if name not in stalled]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if moving:
        with np.errstate(all="ignore"):
            lo, med, hi = (np.nanpercentile(shown[moving], q, axis=0) for q in (10, 50, 90))
        ax.fill_between(steps, lo, hi, alpha=0.25, label=f"10..90% of the {len(moving)} moving parameters")
        ax.plot(steps, med, lw=1.2, label="their median")
    for name in stalled[:5]:
        series = ratios[name]
        ax.plot([s for s, _ in series], [max(v, floor) for _, v in series], lw=0.8, ls="--", label=f"{name} (stopped)")
    if len(stalled) > 5:
        ax.plot([], [], " ", label=f"... {len(stalled) - 5} more stopped")
    ax.set_yscale("log")
    ax.set(title="‖Δw‖ / ‖w‖ per watched step (params_frozen)", xlabel="step", ylabel="no change = 1e-12")
    ax.legend(fontsize=6)
    save(fig, "params_frozen", "params")


def histogram_plot(real, generated, out_path: str | Path, title: str = "generated vs real", bins: int = 80) -> bool:
    """Overlaid value histograms of two tensors (real first); False when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return False
    r = real.detach().float().flatten().cpu()
    g = generated.detach().float().flatten().cpu()
    r, g = r[r.isfinite()], g[g.isfinite()]
    lo = float(min(r.min(), g.min())) if r.numel() and g.numel() else -1.0
    hi = float(max(r.max(), g.max())) if r.numel() and g.numel() else 1.0
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo == hi:
        lo, hi = lo - 1, hi + 1
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(r.numpy(), bins=bins, range=(lo, hi), density=True, alpha=0.5, label="real")
    ax.hist(g.numpy(), bins=bins, range=(lo, hi), density=True, alpha=0.5, label="generated")
    ax.set(title=title, xlabel="value")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return True
