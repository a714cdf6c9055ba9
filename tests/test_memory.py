"""Fresh output buffers (fastdiff.kernels.memory): a huge-page hint never changes layout or values."""

from __future__ import annotations

import pytest
import torch

import fastdiff as fd
from fastdiff.kernels import memory
from fastdiff.step import StepCoeffs


@pytest.mark.parametrize("shape", [(3,), (1 << 21,), (2, 1 << 20), (513, 4099)])
@pytest.mark.parametrize("transpose", [False, True])
def test_empty_like_has_torch_layout(shape, transpose):
    x = torch.randn(shape)
    x = x.t() if transpose and x.dim() == 2 else x
    got, want = memory.empty_like(x), torch.empty_like(x)
    assert (got.shape, got.stride(), got.dtype, got.device) == (want.shape, want.stride(), want.dtype, want.device)
    got.copy_(x)  # every byte of the buffer is ours to write
    assert torch.equal(got, x)


@pytest.mark.parametrize("backend", [b for b in ("torch", "cpp") if b in fd.available_backends()])
def test_large_fresh_outputs_give_the_same_step(backend):
    # 2^21 float32 elements (8 MB): above the huge-page threshold, so the advised path is the one taken
    g = torch.Generator().manual_seed(0)
    x, o = torch.randn(2, 1 << 20, generator=g), torch.randn(2, 1 << 20, generator=g)
    c = StepCoeffs.from_prediction("epsilon", alpha=0.6, sigma=0.8, p0=0.9, pe=0.43)
    fresh = fd.fused_step(x, o, c, clip=1.0, return_x0=True, backend=backend)
    into = fd.fused_step(x, o, c, clip=1.0, out=torch.empty_like(x), x0_out=torch.empty_like(x), backend=backend)
    assert torch.equal(fresh.prev_sample, into.prev_sample) and torch.equal(fresh.pred_x0, into.pred_x0)
    assert int(fresh.clipped) == int(into.clipped) > 0
