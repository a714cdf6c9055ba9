"""The doctor: judge a probe log against the failures of the five reports, and active checks on models.

>>> from fastdiff.doctor import diagnose     # diagnose("run.jsonl", out="report.md", json_path="report.json")

What each finding means and what to do about it: docs/findings.md.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoints import checkpoint_diff
from .flow import ShootResult, TeacherResult, alignment_finding, alignment_per_t, shoot, teacher_euler
from .infer import Placement, infer_roles
from .loading import LoadError, load_file
from .log import LogError, RunLog, read_log
from .report import Report, histogram_plot, plot_log
from .rules import RULES, Finding, evaluate
from .samples import compare_samples
from .targets import which_target


def diagnose(
    log: str | Path | RunLog,
    *,
    out: str | Path | None = None,
    json_path: str | Path | None = None,
    data_range: tuple[float, float] | None = None,
    roles: dict[str, str] | None = None,
    num_train_timesteps: int | None = None,
    plots: bool = True,
) -> Report:
    """Evaluate every rule on a log; write the Markdown report (with plots beside it) and the JSON twin.

    `roles` places tensors logged without a role ({"imgs": "x0"}); the others are worked out from their names
    and statistics (`fastdiff.doctor.infer`), and what cannot be placed is named in the report's notes.
    `num_train_timesteps` lets `timestep_distribution` check that t covers the whole schedule.
    """
    run = log if isinstance(log, RunLog) else read_log(log)
    placement = infer_roles(run, roles)
    run.role_notes, run.unplaced = placement.notes(), placement.unplaced
    findings = evaluate(run, data_range=data_range, num_train_timesteps=num_train_timesteps)
    report = Report(findings=findings, log=run)
    if out is not None and plots:
        out_path = Path(out)
        report.plots = plot_log(run, out_path.parent, prefix=out_path.stem + "_")
    report.write(out, json_path)
    return report


__all__ = [
    "RULES",
    "Finding",
    "LoadError",
    "LogError",
    "Placement",
    "Report",
    "ShootResult",
    "TeacherResult",
    "RunLog",
    "alignment_finding",
    "alignment_per_t",
    "checkpoint_diff",
    "compare_samples",
    "diagnose",
    "evaluate",
    "histogram_plot",
    "infer_roles",
    "load_file",
    "plot_log",
    "read_log",
    "shoot",
    "teacher_euler",
    "which_target",
]
