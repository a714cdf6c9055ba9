"""In-kernel Philox noise (fastdiff.step.PhiloxNoise) and table-driven loops on the Triton backend.

Statistics use 2^15-2^16 normals (enough for 5-sigma bounds of a few hundredths at interpreter speed):
mean, std, the normal CDF (Kolmogorov-Smirnov), no correlation between neighbouring elements, between
the four normals of one Philox counter, between steps (offsets) or between seeds.
"""

from __future__ import annotations

import math

import pytest
import torch

import fastdiff as fd
from fastdiff import kernels
from fastdiff.step import ClipRange, CoeffTable, DynamicThreshold, PhiloxNoise, StepCoeffs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not kernels.availability("triton", DEVICE)[0], reason=kernels.availability("triton", DEVICE)[1]
)
N = 1 << 16
NOISE_ONLY = StepCoeffs(cx=1.0, pn=1.0)  # x' = z: the step returns the noise it drew


def draw(shape, seed=0, offset=0):
    from fastdiff.kernels.triton import philox_normal

    return philox_normal(shape, seed, offset, device=DEVICE).cpu().double()


def step_noise(shape, noise: PhiloxNoise, dtype=torch.float32) -> torch.Tensor:
    x = torch.zeros(shape, dtype=dtype, device=DEVICE)
    return fd.fused_step(x, x, NOISE_ONLY, noise=noise, stats=False, backend="triton").prev_sample.cpu().double()


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_moments_and_distribution():
    z = draw((N,), seed=12345)
    bound = 5 / math.sqrt(N)
    assert abs(float(z.mean())) < bound
    assert abs(float(z.std()) - 1) < 5 * math.sqrt(0.5 / N)
    assert abs(float((z**3).mean())) < 5 * math.sqrt(15 / N)  # skewness 0
    assert abs(float((z**4).mean()) - 3) < 5 * math.sqrt(96 / N)  # kurtosis 3
    # Kolmogorov-Smirnov distance to the normal CDF; 1.95 / sqrt(n) is the 0.1% critical value
    s, _ = z.sort()
    cdf = 0.5 * (1 + torch.erf(s / math.sqrt(2)))
    i = torch.arange(1, N + 1, dtype=torch.float64)
    ks = max(float((i / N - cdf).max()), float((cdf - (i - 1) / N).max()))
    assert ks < 1.95 / math.sqrt(N)


def test_no_correlation_between_neighbours_lanes_steps_or_seeds():
    bound = 5 / math.sqrt(N)
    z = draw((N,), seed=3)
    for lag in (1, 2, 3, 4, 5, 8, 64):
        assert abs(corr(z[:-lag], z[lag:])) < bound, lag
    quad = z.view(-1, 4)  # the four normals of one counter (two Box-Muller pairs)
    for i in range(4):
        for j in range(i + 1, 4):
            assert abs(corr(quad[:, i], quad[:, j])) < 2 * bound
            assert (
                abs(corr(quad[:, i] ** 2, quad[:, j] ** 2)) < 2 * bound
            )  # a pair shares its radius: still independent
    # consecutive steps draw from consecutive offsets: fresh, uncorrelated noise
    noise = PhiloxNoise(seed=3)
    first, second = step_noise((N,), noise), step_noise((N,), noise)
    assert noise.offset == 2 * N
    assert abs(corr(first, second)) < bound
    assert torch.equal(first.float(), z.float())
    assert abs(corr(draw((N,), seed=4), z)) < bound


def test_same_seed_and_offset_same_noise_any_layout():
    shape = (3, 5, 67)
    a = step_noise(shape, PhiloxNoise(seed=9, offset=8))
    b = step_noise(shape, PhiloxNoise(seed=9, offset=8))
    assert torch.equal(a, b)
    want = draw(shape, seed=9, offset=8)
    torch.testing.assert_close(a, want, rtol=0, atol=0)
    # a transposed sample (strided kernel path) gets the same noise per logical element
    xt = torch.zeros(67, 5, 3, device=DEVICE).permute(2, 1, 0)
    r = fd.fused_step(xt, xt, NOISE_ONLY, noise=PhiloxNoise(seed=9, offset=8), stats=False, backend="triton")
    torch.testing.assert_close(r.prev_sample.cpu().double(), want, rtol=0, atol=0)


@pytest.mark.parametrize("offset", [1, 2, 3, 5])
def test_unaligned_offsets_continue_the_same_stream(offset):
    # offsets that are not multiples of 4 take the per-element path; the stream is the same
    n = 301
    assert torch.equal(draw((n,), seed=1, offset=offset), draw((n + offset,), seed=1, offset=0)[offset:])
    assert torch.equal(step_noise((n,), PhiloxNoise(1, offset)), draw((n,), seed=1, offset=offset))


def test_device_offset_advances_in_place():
    off = torch.zeros((), dtype=torch.int64, device=DEVICE)
    noise = PhiloxNoise(seed=5, offset=off)
    a = step_noise((2, 100), noise)
    assert noise.offset is off and int(off) == 200
    b = step_noise((2, 100), noise)
    assert torch.equal(a.flatten(), draw((200,), 5, 0)) and torch.equal(b.flatten(), draw((200,), 5, 200))


def test_low_precision_and_fp64_samples():
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        z = step_noise((4096,), PhiloxNoise(seed=2), dtype=dtype)
        want = draw((4096,), seed=2).to(dtype).double()
        torch.testing.assert_close(z, want, rtol=0, atol=0)


def test_noise_enters_every_line_like_a_tensor():
    # cn (x0), en (eps) and pn (x') all read the same z; compare with the same noise passed as a tensor
    g = torch.Generator().manual_seed(0)
    x, mo = (torch.randn(3, 50, generator=g).to(DEVICE) for _ in range(2))
    full = StepCoeffs(cx=0.9, co=0.2, cn=0.3, ex=0.5, eo=0.1, en=0.7, px=0.2, p0=0.6, pe=0.4, pn=0.25)
    no_x0_noise = StepCoeffs(cx=0.9, co=0.2, ex=0.5, eo=0.1, en=0.7, px=0.2, p0=0.6, pe=0.4, pn=0.25)
    z = draw((3, 50), seed=11, offset=4).float().to(DEVICE)
    cases = [
        (c, clip) for c in (full, no_x0_noise) for clip in (None, ClipRange(-0.8, 0.8), DynamicThreshold(0.9, 1.2))
    ]
    for c, clip in cases:
        a = fd.fused_step(x, mo, c, noise=PhiloxNoise(11, 4), clip=clip, return_x0=True, backend="triton")
        b = fd.fused_step(x, mo, c, noise=z, clip=clip, return_x0=True, backend="triton")
        torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(a.pred_x0, b.pred_x0, rtol=1e-6, atol=1e-6)


def test_backends_without_in_kernel_noise_say_so():
    x = torch.zeros(2, 3)
    with pytest.raises(NotImplementedError, match="'torch'.*triton"):
        fd.fused_step(x, x, NOISE_ONLY, noise=PhiloxNoise(0), backend="torch")
    with pytest.raises(ValueError, match="seed"):
        PhiloxNoise(seed=-1)
    with pytest.raises(ValueError, match="offset"):
        PhiloxNoise(seed=0, offset=torch.zeros(2, dtype=torch.int64))


def test_table_driven_loop_equals_scalar_loop():
    # the loop a CUDA graph would capture: coefficients from a device table at a device index, noise
    # offset on the device, both advanced in place; it must equal the loop with host scalars
    steps = [
        StepCoeffs.from_prediction("epsilon", a, math.sqrt(1 - a * a), p0=0.9, pe=0.3, pn=0.2)
        for a in (0.3, 0.5, 0.7, 0.9)
    ]
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 3, 40, generator=g).to(DEVICE)
    eps = [torch.randn(2, 3, 40, generator=g).to(DEVICE) for _ in steps]

    table = CoeffTable.from_coeffs(steps, device=DEVICE)
    noise_dev = PhiloxNoise(seed=21, offset=torch.zeros((), dtype=torch.int64, device=DEVICE))
    x_table = x0.clone()
    for e in eps:
        fd.fused_step(x_table, e, table, noise=noise_dev, clip=1.0, out=x_table, stats=False, backend="triton")
        table.advance()

    noise_host = PhiloxNoise(seed=21)
    x_host = x0.clone()
    for c, e in zip(steps, eps):
        fd.fused_step(x_host, e, c, noise=noise_host, clip=1.0, out=x_host, stats=False, backend="triton")
    assert torch.equal(x_table, x_host)
    assert int(table.index) == len(steps) and int(noise_dev.offset) == noise_host.offset == 4 * x0.numel()
