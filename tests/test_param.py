"""param.py: prediction types as affine maps. Round trips are identities, and the maps agree with the
forward process x = alpha x0 + sigma eps for random (x0, eps, noise level): the property that makes an
eps/x0/v mix-up (report 002) impossible as long as training and sampling both go through this module.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastdiff import param

TYPES = param.PREDICTION_TYPES


@st.composite
def noise_levels(draw):
    """(alpha, sigma): a VP point (alpha^2 + sigma^2 = 1), a flow point (1 - s, s), or any positive pair."""
    kind = draw(st.sampled_from(["vp", "flow", "free"]))
    if kind == "vp":
        theta = draw(st.floats(0.01, math.pi / 2 - 0.01))
        return math.cos(theta), math.sin(theta)
    if kind == "flow":
        s = draw(st.floats(0.01, 0.99))
        return 1.0 - s, s
    return draw(st.floats(0.01, 10.0)), draw(st.floats(0.01, 10.0))


def _tensors(seed: int, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dtype=torch.float64, generator=g), torch.randn(n, dtype=torch.float64, generator=g)


@given(level=noise_levels(), p=st.sampled_from(TYPES), seed=st.integers(0, 2**31))
def test_maps_agree_with_forward_process(level, p, seed):
    """target(p, x0, eps) read back through to_x0_eps at the same noise level gives (x0, eps) again."""
    alpha, sigma = level
    x0, eps = _tensors(seed)
    x = alpha * x0 + sigma * eps
    out = param.target(p, x0, eps, alpha, sigma)
    m = param.to_x0_eps(p, alpha, sigma)
    torch.testing.assert_close(m.cx * x + m.co * out, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(m.ex * x + m.eo * out, eps, rtol=1e-9, atol=1e-9)
    a, b = param.target_coeffs(p, alpha, sigma)  # the coefficients and the function say the same
    torch.testing.assert_close(a * x0 + b * eps, out, rtol=1e-12, atol=1e-12)


@given(level=noise_levels(), p=st.sampled_from(TYPES), q=st.sampled_from(TYPES), seed=st.integers(0, 2**31))
def test_round_trips_are_identities(level, p, q, seed):
    alpha, sigma = level
    x, out = _tensors(seed)
    there = param.convert(out, x, p, q, alpha, sigma)
    back = param.convert(there, x, q, p, alpha, sigma)
    torch.testing.assert_close(back, out, rtol=1e-9, atol=1e-9)
    if p == q:
        torch.testing.assert_close(there, out, rtol=1e-12, atol=1e-12)


@given(level=noise_levels(), p=st.sampled_from(TYPES), q=st.sampled_from(TYPES), seed=st.integers(0, 2**31))
def test_convert_maps_targets_to_targets(level, p, q, seed):
    """Converting the p-target of (x0, eps) gives the q-target of the same (x0, eps)."""
    alpha, sigma = level
    x0, eps = _tensors(seed)
    x = alpha * x0 + sigma * eps
    got = param.convert(param.target(p, x0, eps, alpha, sigma), x, p, q, alpha, sigma)
    torch.testing.assert_close(got, param.target(q, x0, eps, alpha, sigma), rtol=1e-9, atol=1e-9)


@given(level=noise_levels(), p=st.sampled_from(TYPES))
def test_inverse_is_an_inverse(level, p):
    """[[alpha, sigma], [a, b]] times the returned inverse is the identity."""
    alpha, sigma = level
    a, b = param.target_coeffs(p, alpha, sigma)
    m = param.to_x0_eps(p, alpha, sigma)
    prod = torch.tensor([[alpha, sigma], [a, b]], dtype=torch.float64) @ torch.tensor(
        [[m.cx, m.co], [m.ex, m.eo]], dtype=torch.float64
    )
    torch.testing.assert_close(prod, torch.eye(2, dtype=torch.float64), rtol=1e-9, atol=1e-9)


def test_known_values():
    m = param.to_x0_eps("epsilon", 0.6, 0.8)  # x0 = (x - 0.8 eps) / 0.6
    assert m.cx == pytest.approx(1 / 0.6) and m.co == pytest.approx(-0.8 / 0.6) and (m.ex, m.eo) == (0.0, 1.0)
    m = param.to_x0_eps("v_prediction", 0.6, 0.8)  # x0 = alpha x - sigma v, eps = sigma x + alpha v
    assert (m.cx, m.co, m.ex, m.eo) == pytest.approx((0.6, -0.8, 0.8, 0.6))
    m = param.to_x0_eps("flow", 0.7, 0.3)  # x0 = x - s v, eps = x + (1 - s) v
    assert (m.cx, m.co, m.ex, m.eo) == pytest.approx((1.0, -0.3, 1.0, 0.7))


def test_aliases_and_errors():
    for alias, name in [("eps", "epsilon"), ("x0", "sample"), ("v", "v_prediction"), ("flow_prediction", "flow")]:
        assert param.canonical(alias) == name
    with pytest.raises(ValueError, match="prediction_type='score' is not supported; accepted: epsilon"):
        param.canonical("score")
    with pytest.raises(ValueError, match="not supported"):
        param.canonical(None)
    # the output carries no information about x0 where the determinant vanishes
    with pytest.raises(ValueError, match="cannot be converted at alpha=0.0, sigma=1.0"):
        param.to_x0_eps("epsilon", 0.0, 1.0)
    with pytest.raises(ValueError, match="cannot be converted"):
        param.to_x0_eps("sample", 1.0, 0.0)
