"""The Triton kernels as a GPU would get them: Triton's own compiler and ptxas, no GPU needed.

The interpreter (TRITON_INTERPRET=1, which runs every other Triton test here) accepts code the compiler
refuses and says nothing about registers; fastdiff.kernels.triton_gate compiles what the public API
launches for sm_80 / sm_89 / sm_90 and fails on compile errors, spills and occupancy below the budget.
Each check runs the gate in a subprocess without TRITON_INTERPRET (the kernels must be real JIT functions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastdiff import kernels

pytest.importorskip("triton")


def gate(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "fastdiff.kernels.triton_gate", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_triton_backend_loads_where_triton_is_installed():
    # a kernel module that fails to import would otherwise skip every Triton test as "not available"
    module, why = kernels._import_status("triton")
    assert module is not None, why


def test_every_sampler_and_scheduler_runs_one_step_kernel():
    """Coefficients never change the compiled kernel: every native sampler and drop-in scheduler, each
    with its own coefficients (zeros, history terms, noise), launch one step specialisation in float32."""
    r = gate("--signatures", "samplers", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    variants = json.loads(r.stdout)
    steps = [v for v in variants if v["kernel"] == "step_kernel"]
    callers = {c for v in steps for c in v["calls"]}
    assert any(c.startswith("sample(") for c in callers) and any(c.startswith("Fast") for c in callers)
    assert len(steps) == 1, [v["variant"] for v in steps]


def test_public_api_kernels_are_few_and_keyed_by_features_only():
    """Every public call (all dtypes, layouts, clips, CFG, noise kinds, history counts, tables) maps to a
    small set of specialisations: one per (dtypes, stats, philox, layout kind, tile), none per value."""
    r = gate("--signatures", "api", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    variants = json.loads(r.stdout)
    steps = [v for v in variants if v["kernel"] == "step_kernel"]
    # contiguous calls: 6 dtype sets x stats on/off x Philox on/off x (vector tile | rows not aligned)
    assert len(steps) <= 6 * 2 * 2 * 2, len(steps)
    for v in steps:
        assert "16B" not in v["variant"]  # pointer alignment is stated by the launcher, not specialised on


def _compile(tmp_path, *args, timeout):
    out = tmp_path / "gate.json"
    r = gate(*args, "--json", str(out), "--jobs", str(os.cpu_count() or 1), timeout=timeout)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    return r, rows


def test_step_and_stats_kernels_compile_for_hopper_without_spills(tmp_path):
    """The variants a diffusers loop and a training probe use most, on sm_90: compiled, no spill, two or
    more resident programs, and no FMA contraction in the step's arithmetic."""
    r, rows = _compile(tmp_path, "--arch", "90", "--quick", "--only", "step_kernel", "--limit", "4", timeout=1500)
    assert rows, r.stderr[-3000:]
    assert r.returncode == 0, r.stderr[-3000:]
    for row in rows:
        assert row["spill_stores"] == row["spill_loads"] == 0, row
        assert row["resident_programs"] >= 2, row
        if "PHILOX=False" in row["variant"]:  # Box-Muller's libdevice log/sin/cos keep their own fma
            assert row["fma"] == 0, row


def test_the_heaviest_step_variants_compile_without_spills(tmp_path):
    """The step variants with the most live values: in-kernel Philox noise and both stats sets, half-precision
    storage (conversions), rows not aligned for vector loads (the scalar tile), on sm_90 and sm_80. They spilled
    (up to 732 B per thread) until misaligned rows took the scalar tile."""
    variant = ("PHILOX=True", "STATS=True", "LAYOUT=1", "o_ptr:bf16")
    args = ("--arch", "90", "80", "--quick", "--only", "step_kernel", "--variant", *variant, "--limit", "1")
    r, rows = _compile(tmp_path, *args, timeout=1500)
    assert len(rows) == 2, r.stderr[-3000:]
    assert r.returncode == 0, _failures(r)
    for row in rows:
        assert row["spill_stores"] == row["spill_loads"] == 0, row


def _failures(r: subprocess.CompletedProcess) -> str:
    """The gate's FAIL lines (all of them: the first ones are what a tail of stderr cuts off) and its summary."""
    lines = r.stderr.splitlines()
    return "\n".join([line[:400] for line in lines if "FAIL" in line] + lines[-3:])


@pytest.mark.slow
def test_every_kernel_variant_compiles_for_a100_l40_and_h100(tmp_path):
    """The full gate: every layout too, for sm_80, sm_89 and sm_90 (what benchmarks/results/triton-compile.md
    reports)."""
    r, rows = _compile(tmp_path, "--arch", "80", "89", "90", timeout=5400)
    assert r.returncode == 0, _failures(r)
    assert {row["arch"] for row in rows} == {80, 89, 90}
    kernels_seen = {row["kernel"] for row in rows}
    assert {"step_kernel", "tensor_stats_kernel", "rows_stats_kernel", "pair_stats_kernel", "pair_rows_kernel",
            "merge_kernel", "pair_merge_kernel", "_fill_kernel"} <= kernels_seen  # fmt: skip
