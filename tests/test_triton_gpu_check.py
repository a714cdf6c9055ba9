"""benchmarks/gpu_check.py stays runnable: its correctness half, at tiny sizes, on the Triton interpreter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fastdiff import kernels

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(not kernels.availability("triton")[0], reason=kernels.availability("triton")[1])
def test_gpu_check_smoke(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "smoke:" in out
