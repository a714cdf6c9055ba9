"""diffusers' own scheduler tests pass as often with the Fast* classes swapped in as with diffusers' classes.

Runs scripts/diffusers_scheduler_tests.py over the checkout named by DIFFUSERS_CHECKOUT (a git checkout of
huggingface/diffusers, best at the installed version's tag); skipped without one: diffusers' PyPI sdist
ships no tests/schedulers. (Its test_compatibles needs torchsde, in the test extra.)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "diffusers_scheduler_tests.py"
CHECKOUT = os.environ.get("DIFFUSERS_CHECKOUT")


@pytest.mark.slow
@pytest.mark.skipif(
    not CHECKOUT or not (Path(CHECKOUT) / "tests" / "schedulers").is_dir(),
    reason="set DIFFUSERS_CHECKOUT to a diffusers git checkout (the PyPI sdist has no tests/schedulers)",
)
def test_diffusers_scheduler_suite_with_fast_classes():
    spec = importlib.util.spec_from_file_location("diffusers_scheduler_tests", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    report = script.compare(Path(CHECKOUT))
    assert not report["regressions"], "pass on diffusers' classes only: " + ", ".join(report["regressions"])
    for name, row in report["files"].items():
        assert row["fastdiff"] == row["diffusers"], name
        assert row["diffusers"]["total"] > 0, name
