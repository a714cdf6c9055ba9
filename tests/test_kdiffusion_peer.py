"""The k-style functions against k-diffusion 0.1.1 itself, in float64, with the same noise stream.

k-diffusion's `sampling.py` is imported by file path (its package __init__ pulls in torchvision, PIL and
more); the one helper it takes from `k_diffusion.utils` (append_dims) is supplied by a stub package. Each
function runs on an analytic denoiser (Gaussian data) and a random network, with
    - the default noise: the global RNG (torch.randn_like) or, for the SDE solvers, a Brownian tree seeded
      from it, under the same torch.manual_seed, and
    - k-diffusion's own BrownianTreeNoiseSampler passed as noise_sampler= (a fresh one, same seed, each side),
and must equal k-diffusion's result within 1e-10 relative (measured: <= 1e-15).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from pathlib import Path

import pytest
import torch

from fastdiff.samplers import kdiffusion as kd
from fastdiff.samplers.noise import BrownianTreeNoiseSampler
from fastdiff.schedule import karras_sigmas

pytest.importorskip("torchsde")
pytest.importorskip("scipy")
pytest.importorskip("torchdiffeq")
if importlib.util.find_spec("k_diffusion") is None:
    pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion==0.1.1)", allow_module_level=True)

RTOL = 1e-10
MEAN, STD = 0.5, 0.3


def _load_sampling():
    """k_diffusion/sampling.py as a module of a stub package whose `utils` holds append_dims only."""
    root = Path(importlib.util.find_spec("k_diffusion").submodule_search_locations[0])
    pkg = types.ModuleType("_kdiffusion_peer")
    pkg.__path__ = []
    utils = types.ModuleType("_kdiffusion_peer.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules.setdefault("_kdiffusion_peer", pkg)
    sys.modules.setdefault("_kdiffusion_peer.utils", utils)
    spec = importlib.util.spec_from_file_location("_kdiffusion_peer.sampling", root / "sampling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


K = _load_sampling()


def gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x] for x0 ~ N(MEAN, STD^2) and x = x0 + sigma eps."""
    s = sigma.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return MEAN + STD * STD / (STD * STD + s * s) * (x - MEAN)


def _network():
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(9, 32), torch.nn.SiLU(), torch.nn.Linear(32, 8)).double()

    def denoiser(x, sigma):
        return net(torch.cat([x, sigma.reshape(-1, 1).to(x.dtype).log()], 1))

    return denoiser


DENOISERS = {"gaussian": gaussian, "network": _network()}

CASES = [
    ("sample_euler", {}),
    ("sample_euler", {"s_churn": 3.0}),
    ("sample_euler", {"s_churn": 3.0, "s_tmin": 0.5, "s_tmax": 5.0, "s_noise": 1.01}),
    ("sample_heun", {}),
    ("sample_heun", {"s_churn": 3.0}),
    ("sample_dpm_2", {}),
    ("sample_dpm_2", {"s_churn": 3.0, "s_tmin": 0.5, "s_tmax": 5.0}),
    ("sample_euler_ancestral", {}),
    ("sample_euler_ancestral", {"eta": 0.5}),
    ("sample_dpm_2_ancestral", {}),
    ("sample_dpm_2_ancestral", {"eta": 0.7, "s_noise": 1.1}),
    ("sample_lms", {}),
    ("sample_lms", {"order": 2}),
    ("sample_dpmpp_2s_ancestral", {}),
    ("sample_dpmpp_2s_ancestral", {"eta": 0.5}),
    ("sample_dpmpp_sde", {}),
    ("sample_dpmpp_sde", {"r": 0.3, "eta": 0.6}),
    ("sample_dpmpp_2m", {}),
    ("sample_dpmpp_2m_sde", {}),
    ("sample_dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.5}),
    ("sample_dpmpp_3m_sde", {}),
    ("sample_dpmpp_3m_sde", {"eta": 0.0}),
]


def _setup():
    sigmas = torch.cat([karras_sigmas(0.03, 14.6, 12), torch.zeros(1, dtype=torch.float64)])
    x = 14.6 * torch.randn(4, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return sigmas, x


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.dtype == want.dtype == torch.float64 and torch.isfinite(want).all()
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("denoiser", DENOISERS)
@pytest.mark.parametrize("name, kw", CASES)
def test_equals_k_diffusion_default_noise(name, kw, denoiser):
    """Same global seed, no noise sampler: the same i.i.d. draws (or the same seeded Brownian tree)."""
    sigmas, x = _setup()
    torch.manual_seed(11)
    want = getattr(K, name)(DENOISERS[denoiser], x.clone(), sigmas, disable=True, **kw)
    torch.manual_seed(11)
    got = getattr(kd, name)(DENOISERS[denoiser], x.clone(), sigmas, disable=True, **kw)
    assert _rel(got, want) <= RTOL


NOISY = [(n, kw) for n, kw in CASES if "noise_sampler" in inspect.signature(getattr(K, n)).parameters]


@pytest.mark.parametrize("denoiser", DENOISERS)
@pytest.mark.parametrize("name, kw", NOISY)
def test_equals_k_diffusion_brownian_noise_sampler(name, kw, denoiser):
    """k-diffusion's own BrownianTreeNoiseSampler, passed to both: the noise is asked for at the same levels."""
    sigmas, x = _setup()
    want = getattr(K, name)(
        DENOISERS[denoiser], x.clone(), sigmas, disable=True,
        noise_sampler=K.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=5), **kw,
    )  # fmt: skip
    got = getattr(kd, name)(
        DENOISERS[denoiser], x.clone(), sigmas, disable=True,
        noise_sampler=K.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=5), **kw,
    )  # fmt: skip
    assert _rel(got, want) <= RTOL


def test_every_k_diffusion_sampler_of_a_ladder_is_covered():
    """Every k-diffusion sampler that runs on a sigma ladder has a k-style function of the same signature."""
    ladder = [n for n in dir(K) if n.startswith("sample_") and "sigmas" in inspect.signature(getattr(K, n)).parameters]
    assert set(ladder) == {n for n, _ in CASES} | {"sample_dpmpp_2m"}
    for name in ladder:
        ours = list(inspect.signature(getattr(kd, name)).parameters)
        theirs = list(inspect.signature(getattr(K, name)).parameters)
        assert ours[: len(theirs)] == theirs, name  # k-diffusion's positional order, our extras after


@pytest.mark.parametrize("seed", [5, [1, 2, 3, 4]])
def test_brownian_tree_noise_sampler_equals_k_diffusion(seed):
    x = torch.zeros(4, 8, dtype=torch.float64)
    lo, hi = torch.tensor(0.03, dtype=torch.float64), torch.tensor(14.6, dtype=torch.float64)
    ours, theirs = BrownianTreeNoiseSampler(x, lo, hi, seed=seed), K.BrownianTreeNoiseSampler(x, lo, hi, seed=seed)
    for a, b in [(14.6, 10.0), (10.0, 3.0), (3.0, 0.5), (14.6, 0.03), (0.5, 3.0)]:
        a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
        torch.testing.assert_close(ours(a, b), theirs(a, b), rtol=0, atol=0)
