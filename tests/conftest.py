"""Shared pytest set-up: hypothesis profiles, markers, one torch thread per xdist worker."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Triton kernels run on CPU tensors through the interpreter in CI (the Makefile sets this too).
os.environ.setdefault("TRITON_INTERPRET", "1")

# `make test` / CI: derandomized, so a run is reproducible; `HYPOTHESIS_PROFILE=thorough` explores fresh
# random examples (run it before landing kernel changes).
settings.register_profile(
    "default",
    deadline=None,
    max_examples=30,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=300, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
