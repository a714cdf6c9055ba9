"""The `fastdiff` command line: `fastdiff demo [--out DIR] [--quick]`, `fastdiff doctor RUN.jsonl ...`,
`fastdiff bench [--quick] ...` (`python -m fastdiff ...` works the same).

Subcommands register in `COMMANDS` (name -> (add_arguments, run)); later ones (doctor, bench) add themselves there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="folder for the log, report and figure (default: ./fastdiff-demo)")
    p.add_argument("--quick", action="store_true", help="train and sample less (a few seconds; for tests)")
    p.add_argument("--seed", type=int, default=0)


def _demo_run(args: argparse.Namespace) -> int:
    import torch

    from .demo import run_demo

    # the demo's tensors are small: one thread is fastest (and robust on a shared CPU)
    torch.set_num_threads(1)
    run_demo(out=args.out, quick=args.quick, seed=args.seed)
    return 0


def _doctor_args(p: argparse.ArgumentParser) -> None:
    from .doctor.command import add_arguments

    add_arguments(p)


def _doctor_run(args: argparse.Namespace) -> int:
    from .doctor.command import run

    return run(args)


def _bench_args(p: argparse.ArgumentParser) -> None:
    from .bench.cli import add_arguments

    add_arguments(p)


def _bench_run(args: argparse.Namespace) -> int:
    from .bench.cli import main as bench_main

    return bench_main(args, args.argv)


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "demo": ("train a tiny denoiser on synthetic spectra and sample it through the fused step", _demo_args, _demo_run),
    "doctor": (
        "judge a probe log (or checkpoints, or samples) against the failures of the five reports",
        _doctor_args,
        _doctor_run,
    ),  # fmt: skip
    "bench": ("benchmark the fused kernels against the usual ways on this machine", _bench_args, _bench_run),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastdiff", description="fused diffusion sampler steps and diagnostics")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for commands that record it
    if args.command is None:
        parser.print_help()
        return 2
    return COMMANDS[args.command][2](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
