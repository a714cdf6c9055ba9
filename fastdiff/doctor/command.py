"""`fastdiff doctor`: the doctor on the command line (API.md sections 4-5).

    fastdiff doctor RUN.jsonl [--out report.md] [--json report.json] [--data-range LO HI] [--role NAME=ROLE ...]
                              [--num-train-timesteps T] [--no-plots]
    fastdiff doctor checkpoints A.pt B.pt [--json diff.json] [--trust-pickle]
    fastdiff doctor samples GENERATED REAL [--paired] [--out hist.png] [--json samples.json] [--trust-pickle]

Exit status: 0 when no finding fails, 1 when one does (so a CI job can gate on it), 2 for bad input
(a missing or unreadable file, a log with no valid record): a one-line message, never a traceback.
Checkpoints and sample files: torch.save files (.pt, .pth, .ckpt, .bin), .safetensors, or NumPy .npy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .rules import Finding

ACTIVE = ("checkpoints", "samples")
USAGE = """fastdiff doctor RUN.jsonl [--out report.md] [--json report.json] [options]
       fastdiff doctor checkpoints A.pt B.pt [--json diff.json] [--trust-pickle]
       fastdiff doctor samples GENERATED REAL [--paired] [--out hist.png] [--json samples.json]"""
DESCRIPTION = """Judge one probe log (written by fastdiff.Recorder) against the failures of the five reports, or run an
active check: 'checkpoints A B' (which weights changed between two checkpoints) or 'samples GENERATED REAL'
(are the samples the data's distribution, or N(0, s^2) noise?). Exit status: 0 no failure, 1 a finding
failed, 2 bad input. What each finding means: docs/findings.md."""
EPILOG = """examples:
  fastdiff doctor run.jsonl --out report.md --json report.json
  fastdiff doctor run.jsonl --role imgs=x0 --role tt=t        # tensors logged without a role
  fastdiff doctor checkpoints step80k.pt step100k.pt
  fastdiff doctor samples generated.pt real.pt --out hist.png"""


def make_parser_kwargs() -> dict:
    return {
        "usage": USAGE,
        "description": DESCRIPTION,
        "epilog": EPILOG,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def _role(text: str) -> tuple[str, str]:
    from ..probe.roles import ROLES

    name, sep, role = text.rpartition("=")
    if not sep or not name or role not in ROLES:
        raise argparse.ArgumentTypeError(f"expected NAME=ROLE with ROLE one of {', '.join(ROLES)}; got {text!r}")
    return name, role


def add_arguments(p: argparse.ArgumentParser) -> None:
    for key, value in make_parser_kwargs().items():
        setattr(p, key, value)
    p.add_argument(
        "target",
        nargs="+",
        metavar="RUN.jsonl",
        help="the probe log; or 'checkpoints A B', or 'samples GENERATED REAL'",
    )
    p.add_argument("--out", default=None, help="Markdown report (log) or histogram PNG (samples)")
    p.add_argument("--json", dest="json_path", default=None, help="JSON twin of the report")
    p.add_argument("--data-range", nargs=2, type=float, metavar=("LO", "HI"), help="the data's stated range")
    p.add_argument(
        "--role",
        action="append",
        type=_role,
        default=[],
        metavar="NAME=ROLE",
        help="what a tensor logged without a role is (repeatable), e.g. --role imgs=x0",
    )
    p.add_argument(
        "--num-train-timesteps", type=int, default=None, metavar="T", help="the schedule's length (checks t covers it)"
    )
    p.add_argument("--no-plots", action="store_true", help="write the report without plots")
    p.add_argument("--paired", action="store_true", help="samples: GENERATED[i] pairs with REAL[i] (MSE / PSNR)")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="checkpoints / samples: load pickled objects (a whole module, custom classes); runs code from the file",
    )


def _fail(msg: str) -> int:
    print(f"fastdiff doctor: error: {msg}", file=sys.stderr)
    return 2


def _print_findings(findings: list[Finding]) -> None:
    from .report import STATUS_LABEL

    for f in findings:
        print(f"  {STATUS_LABEL[f.status]:>4}  {f.title:<22} {f.summary}")


def _write_json(path: str | None, payload: dict) -> None:
    if path is not None:
        Path(path).write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        print(f"  json: {path}")


def _check_writable(*paths: str | None) -> str | None:
    for p in paths:
        if p is not None and not Path(p).resolve().parent.is_dir():
            return f"cannot write {p}: the folder {Path(p).resolve().parent} does not exist"
    return None


def load_tensor(path: str, *, trust_pickle: bool = False):
    """A tensor from a .pt (torch.save of a tensor, or of a dict holding one under 'sample(s)'), .safetensors or
    .npy file."""
    import torch

    from .loading import load_file

    p = Path(path)
    obj = load_file(p, trust_pickle=trust_pickle)
    if isinstance(obj, dict):
        obj = next((obj[k] for k in ("samples", "sample", "x", "images") if k in obj), obj)
        if isinstance(obj, dict) and len(obj) == 1:
            obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{p} holds a {type(obj).__name__}; accepted: a tensor, or a dict with a 'samples' tensor")
    return obj


def _run_log(args) -> int:
    from . import LogError, diagnose

    if len(args.target) != 1:
        return _fail(
            f"give one log file; got {len(args.target)} arguments {args.target} "
            "(or: checkpoints A B, samples GENERATED REAL)"
        )
    why = _check_writable(args.out, args.json_path)
    if why:
        return _fail(why)
    try:
        report = diagnose(
            args.target[0],
            out=args.out,
            json_path=args.json_path,
            data_range=tuple(args.data_range) if args.data_range else None,
            roles=dict(args.role),
            num_train_timesteps=args.num_train_timesteps,
            plots=not args.no_plots,
        )
    except (LogError, ValueError) as exc:
        return _fail(str(exc))
    log = report.log
    lo, hi = log.steps
    print(f"fastdiff doctor: {log.path}: {len(log.records)} records, steps {lo}..{hi}")
    for note in log.notes():
        print(f"  note: {note}")
    _print_findings(report.findings)
    if args.out:
        print(f"  report: {args.out}" + (f" ({len(report.plots)} plots beside it)" if report.plots else ""))
    if args.json_path:
        print(f"  json: {args.json_path}")
    return 1 if report.failed else 0


def _run_checkpoints(args) -> int:
    from .checkpoints import checkpoint_diff
    from .loading import LoadError

    if len(args.target) != 3:
        return _fail(f"usage: fastdiff doctor checkpoints A.pt B.pt; got {args.target[1:]}")
    why = _check_writable(args.json_path)
    if why:
        return _fail(why)
    a, b = args.target[1:]
    for p in (a, b):
        if not Path(p).is_file():
            return _fail(f"no such checkpoint: {p}")
    try:
        changes, finding = checkpoint_diff(a, b, trust_pickle=args.trust_pickle)
    except LoadError as exc:
        return _fail(str(exc))
    except (TypeError, ValueError, RuntimeError) as exc:
        return _fail(f"cannot compare {a} and {b}: {exc}")
    print(f"fastdiff doctor checkpoints: {a} -> {b}: {len(changes)} parameters")
    _print_findings([finding])
    _write_json(args.json_path, {"findings": [finding.to_json()]})
    return 1 if finding.status == "fail" else 0


def _run_samples(args) -> int:
    from .report import histogram_plot
    from .samples import compare_samples

    if len(args.target) != 3:
        return _fail(f"usage: fastdiff doctor samples GENERATED REAL; got {args.target[1:]}")
    why = _check_writable(args.out, args.json_path)
    if why:
        return _fail(why)
    try:
        gen, real = (load_tensor(p, trust_pickle=args.trust_pickle) for p in args.target[1:])
        _, finding = compare_samples(gen, real, paired=args.paired)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        return _fail(str(exc))
    print(f"fastdiff doctor samples: {args.target[1]} ({tuple(gen.shape)}) vs {args.target[2]} ({tuple(real.shape)})")
    _print_findings([finding])
    if args.out and histogram_plot(real, gen, args.out):
        print(f"  histogram: {args.out}")
    _write_json(args.json_path, {"findings": [finding.to_json()]})
    return 1 if finding.status == "fail" else 0


def run(args: argparse.Namespace) -> int:
    kind = args.target[0]
    if kind == "checkpoints":
        return _run_checkpoints(args)
    if kind == "samples":
        return _run_samples(args)
    return _run_log(args)
