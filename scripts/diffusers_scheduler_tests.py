#!/usr/bin/env python
"""Run diffusers' own scheduler tests twice: on diffusers' classes, then with the fastdiff drop-ins swapped in.

    python scripts/diffusers_scheduler_tests.py /path/to/diffusers        # or DIFFUSERS_CHECKOUT=/path/to/diffusers

The checkout's `tests/` (diffusers' repository, best at the tag of the installed diffusers; the report names
both versions) is copied to a temporary folder, so the tests run against the installed diffusers (the
checkout's `src/`, which its conftest would put first on sys.path, is left out). The second run loads this
file as a pytest plugin (`-p diffusers_scheduler_tests`): before any test module imports, `diffusers.X`,
`diffusers.schedulers.X` and `X`'s own module attribute are set to `FastX` for every drop-in, so
`from diffusers import X` gives `FastX`. The report is a table of pass counts per file; the exit status is 1
when a test that passes on diffusers' classes does not pass on fastdiff's (or a run could not start).

diffusers' PyPI sdist ships `tests/testing_utils.py` only, not `tests/schedulers/`: a git checkout is needed.
Its test_compatibles imports every compatible scheduler, DPMSolverSDEScheduler's torchsde included.
`--json PATH` writes the per-file counts and the regressions (tests/test_diffusers_scheduler_suite.py reads them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

TEST_FILES = tuple(
    f"tests/schedulers/test_scheduler_{name}.py"
    for name in (
        "ddim",
        "ddpm",
        "euler",
        "euler_ancestral",
        "heun",
        "dpm_multi",
        "unipc",
        "pndm",
        "lms",
        "dpm_sde",
        "kdpm2_discrete",
        "kdpm2_ancestral",
        "lcm",
        "tcd",
        "deis",
        "dpm_single",
        "edm_euler",
        "edm_dpmsolver_multistep",
    )
)
PLUGIN = Path(__file__).stem


# ---- the plugin: the swap, done before test modules import ------------------------------------------


def swap_in_fast_schedulers() -> list[str]:
    """Point every name diffusers' tests import a supported scheduler by at its Fast* class. Returns the names."""
    import diffusers
    import diffusers.schedulers

    from fastdiff.integrations.diffusers import FAST_SCHEDULERS

    for parent, fast in FAST_SCHEDULERS.items():
        for module in (diffusers, diffusers.schedulers, sys.modules[parent.__module__]):
            setattr(module, parent.__name__, fast)
    return sorted(parent.__name__ for parent in FAST_SCHEDULERS)


def pytest_configure(config) -> None:
    names = swap_in_fast_schedulers()
    config.stash[_SWAPPED] = names


def pytest_report_header(config) -> str:
    return "fastdiff drop-ins swapped in for: " + ", ".join(config.stash[_SWAPPED])


try:  # (imported as a plugin by pytest; as a script, pytest may be absent until `run` needs it)
    import pytest

    _SWAPPED = pytest.StashKey[list]()
except ImportError:  # pragma: no cover
    pass


# ---- the runner ---------------------------------------------------------------------------------------


def _outcome(case: ET.Element) -> str:
    for tag in ("failure", "error", "skipped"):
        if case.find(tag) is not None:
            return {"failure": "failed"}.get(tag, tag)
    return "passed"


def run_suite(tests_root: Path, files: tuple[str, ...], *, swapped: bool, log: Path) -> dict[str, str]:
    """One pytest run over `files`; {test id: passed | failed | error | skipped}."""
    junit = log.with_suffix(".xml")
    cmd = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    # the copy's own root: test ids (junit class names) are then "tests.schedulers...", whatever folders lie above
    cmd += [f"--rootdir={tests_root}"]
    cmd += ["-W", "ignore::DeprecationWarning"]
    env = dict(os.environ)
    if swapped:
        cmd += ["-p", PLUGIN]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    with open(log, "w") as out:
        subprocess.run(cmd, cwd=tests_root, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if not junit.exists():
        raise RuntimeError(f"pytest did not run ({' '.join(cmd)}); its output: {log}")
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        results[f"{case.get('classname')}::{case.get('name')}"] = _outcome(case)
    return results


def _file_of(test_id: str) -> str:
    return test_id.split("::")[0].rsplit(".", 1)[0].replace(".", "/") + ".py"


def checkout_version(checkout: Path) -> str | None:
    """The diffusers version a checkout is at (src/diffusers/__init__.py or setup.py), if it says."""
    for path, pattern in (
        ("src/diffusers/__init__.py", r'__version__ = "([^"]+)"'),
        ("setup.py", r'version="([^"]+)"'),
    ):
        if (checkout / path).is_file():
            found = re.search(pattern, (checkout / path).read_text())
            if found:
                return found.group(1)
    return None


def compare(checkout: Path, files: tuple[str, ...] = TEST_FILES, keep: Path | None = None) -> dict:
    """Both runs over a copy of `checkout/tests`; per-file counts and the tests that pass only on diffusers."""
    missing = [f for f in files if not (checkout / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{checkout} is not a diffusers checkout with {', '.join(missing)}")
    work = Path(tempfile.mkdtemp(prefix="diffusers-tests-")) if keep is None else keep
    try:
        shutil.copytree(checkout / "tests", work / "tests", dirs_exist_ok=True)
        runs = {
            name: run_suite(work, files, swapped=name == "fastdiff", log=work / f"{name}.log")
            for name in ("diffusers", "fastdiff")
        }
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    per_file = {}
    for f in files:
        row = {}
        for name, results in runs.items():
            outcomes = [o for t, o in results.items() if _file_of(t) == f]
            row[name] = {"passed": outcomes.count("passed"), "total": len(outcomes)}
        per_file[f] = row
    regressions = sorted(
        t for t, o in runs["diffusers"].items() if o == "passed" and runs["fastdiff"].get(t) != "passed"
    )
    import diffusers

    return {
        "diffusers_version": diffusers.__version__,
        "checkout_version": checkout_version(checkout),
        "files": per_file,
        "regressions": regressions,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", nargs="?", default=os.environ.get("DIFFUSERS_CHECKOUT"), help="diffusers repo")
    parser.add_argument("--json", type=Path, help="write the counts and regressions here")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep the logs and junit files")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="these files only (pndm, lms, ...: test_scheduler_NAME)"
    )
    args = parser.parse_args(argv)
    if not args.checkout:
        parser.error("give a diffusers checkout (argument or DIFFUSERS_CHECKOUT)")
    files = TEST_FILES
    if args.only:
        files = tuple(f"tests/schedulers/test_scheduler_{name}.py" for name in args.only)
        unknown = sorted(set(files) - set(TEST_FILES))
        if unknown:
            parser.error(f"not a drop-in's test file: {', '.join(unknown)}")
    report = compare(Path(args.checkout), files, keep=args.keep)
    versions = f"diffusers {report['diffusers_version']}, tests of a checkout at {report['checkout_version']}"
    print(f"{versions}: passed / collected")
    print(f"{'file':<48} {'diffusers':>10} {'fastdiff':>10}")
    totals = {"diffusers": [0, 0], "fastdiff": [0, 0]}
    for f, row in report["files"].items():
        cells = []
        for name in ("diffusers", "fastdiff"):
            totals[name][0] += row[name]["passed"]
            totals[name][1] += row[name]["total"]
            cells.append(f"{row[name]['passed']}/{row[name]['total']}")
        print(f"{Path(f).name:<48} {cells[0]:>10} {cells[1]:>10}")
    cells = ["{}/{}".format(*totals[name]) for name in ("diffusers", "fastdiff")]
    print(f"{'total':<48} {cells[0]:>10} {cells[1]:>10}")
    for t in report["regressions"]:
        print(f"passes on diffusers only: {t}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["regressions"] else 0


if __name__ == "__main__":
    sys.exit(main())
