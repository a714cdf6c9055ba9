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
            lines.append(f"| `{f.id}` | {STATUS_LABEL[f.status]} | {f.summary.replace('|', chr(92) + '|')} |")
        for f in self.findings:
            if f.status == "skip":
                continue
            lines += ["", f"## `{f.id}`: {STATUS_LABEL[f.status]}", "", f.summary, ""]
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
        return [f"  {STATUS_LABEL[f.status]:>4}  {f.id:<22} {f.summary}" for f in self.findings]


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
        ("samples_like_noise", ("sample", "real")),
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
            ax.plot(steps, mean, lw=1, label="mean")
            ax.fill_between(
                steps,
                [m - s for m, s in zip(mean, std)],
                [m + s for m, s in zip(mean, std)],
                alpha=0.3,
                label="mean ± std",
            )
            ax.plot(steps, [r.get("min") for r in recs], lw=0.5, color="gray")
            ax.plot(steps, [r.get("max") for r in recs], lw=0.5, color="gray", label="min / max")
            ax.set_title(f"{name} ({recs[0].role if recs else ''})", fontsize=9)
            ax.set_xlabel("step")
        axes[0][0].legend(fontsize=7)
        save(fig, key, f"stats_{key}")

    pairs = log.names(kind="pair")
    if pairs:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
        for name in pairs[:8]:
            recs = log.series(name, "pair")
            a1.plot([r.step for r in recs], [r.get("cos") for r in recs], lw=1, label=name)
            a2.plot([r.step for r in recs], [r.get("norm_ratio") for r in recs], lw=1, label=name)
        a1.set(title="cos(pred, target)", xlabel="step")
        a2.set(title="|pred| / |target|", xlabel="step")
        a2.set_yscale("log")
        a1.legend(fontsize=6)
        save(fig, "fm_alignment", "alignment")

    params = log.by_role("param")
    if params:
        fig, ax = plt.subplots(figsize=(6, 3))
        for name, recs in list(params.items())[:12]:
            l2 = [(r.step, r.get("l2")) for r in recs if r.get("l2")]
            if len(l2) > 1:
                base = l2[0][1]
                ax.plot([s for s, _ in l2], [abs(v / base - 1) + 1e-12 for _, v in l2], lw=0.8, label=name)
        ax.set_yscale("log")
        ax.set(title="|w| relative change since first record", xlabel="step")
        ax.legend(fontsize=5)
        save(fig, "params_frozen", "params")
    return made


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
