"""The backends under test on this machine: every contract test runs once per backend."""

import pytest

from fastdiff import kernels


def backend_params(device: str = "cpu"):
    """pytest params for each backend, skipped (with the reason) where it cannot run on `device`."""
    params = []
    for name in kernels.BACKENDS:
        ok, why = kernels.availability(name, device)
        params.append(pytest.param(name, id=name, marks=() if ok else pytest.mark.skip(reason=why)))
    return params


# Triton on the CPU runs in the interpreter: keep hypothesis example counts and sizes small there.
# The active hypothesis profile scales every count (HYPOTHESIS_PROFILE=thorough: 10x).
def examples_for(backend: str, default: int = 30) -> int:
    from hypothesis import settings

    scale = max(1, settings.default.max_examples // 30)
    return (8 if backend == "triton" else default) * scale
