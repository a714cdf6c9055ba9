"""FastUniPCMultistepScheduler equals diffusers' UniPCMultistepScheduler step by step over whole loops.

Lockstep loops (`tests/test_dropin.py`'s `compare`): both schedulers get the parent's trajectory and the same
model output; every step's prev_sample must agree within 1e-5 relative (float32).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from test_dropin import (  # noqa: E402
    assert_loops_equal,
    compare,
    compare_free_running,
    draw_multistep_sigmas,
    run_loop,
    samples,
    seeds,
)

from fastdiff.integrations import diffusers as fdd  # noqa: E402
from fastdiff.samplers.unipc import unipc_coeffs  # noqa: E402


@given(data=st.data(), x_T=samples, seed=seeds)
def test_unipc(data, x_T, seed):
    cfg = dict(
        solver_order=data.draw(st.sampled_from([1, 2, 3, 4])),
        solver_type=data.draw(st.sampled_from(["bh1", "bh2"])),
        lower_order_final=data.draw(st.booleans()),
        final_sigmas_type=data.draw(st.sampled_from(["zero", "sigma_min"])),
        predict_x0=data.draw(st.booleans()),
    )
    if data.draw(st.booleans()):
        cfg["disable_corrector"] = data.draw(st.lists(st.integers(0, 6), max_size=3, unique=True))
    model = draw_multistep_sigmas(data, cfg, ("karras", "exponential", "beta"), flow=cfg["predict_x0"])
    n = data.draw(st.integers(1, 20))
    try:  # the parent's own failures: a ladder shorter than the steps asked, a singular solve at sigma = 0, a flow
        # prediction in the noise-prediction form
        want = run_loop(diffusers.UniPCMultistepScheduler(**cfg), n, x_T, model=model)
    except (AssertionError, IndexError, RuntimeError, ValueError):
        with pytest.raises((AssertionError, IndexError, ValueError)):
            run_loop(fdd.FastUniPCMultistepScheduler(**cfg), n, x_T, model=model)
        return
    if not all(torch.isfinite(w.prev_sample).all() for w in want):  # the parent's D1 / r_k at h = 0 or inf
        try:
            got = run_loop(fdd.FastUniPCMultistepScheduler(**cfg), n, x_T, model=model)
        except ValueError as exc:
            assert "h = " in str(exc)
        else:
            assert all(torch.isfinite(g.prev_sample).all() for g in got)
        return
    check = compare if cfg["predict_x0"] else compare_free_running  # (see compare_free_running)
    check(diffusers.UniPCMultistepScheduler, cfg, n, x_T, seed, model=model)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
def test_unipc_20_steps(order, solver_type):
    """A whole 20-step loop, each order, both B(h): the defaults of a Stable Diffusion pipeline."""
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(order))
    cfg = dict(
        solver_order=order,
        solver_type=solver_type,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        timestep_spacing="trailing",
    )
    fast = compare(diffusers.UniPCMultistepScheduler, cfg, 20, x_T, 0)
    assert fast.this_order == 1 and fast.lower_order_nums == order


def test_unipc_coeffs_first_order_is_ddim():
    """UniP-1 is the exponential-integrator (DDIM) step x_t = (sigma_t / sigma_s) x + alpha_t (1 - e^{-h}) x0."""
    import math

    a_s, s_s, a_t, s_t = 0.6, 0.8, 0.8, 0.6
    ls, lt = math.log(a_s / s_s), math.log(a_t / s_t)
    c = unipc_coeffs(ls, lt, (), alpha_t=a_t, sigma_t=s_t, sigma_s0=s_s)
    assert c.px == pytest.approx(s_t / s_s) and c.w0 == pytest.approx(a_t - s_t / s_s * a_s)
    assert unipc_coeffs(ls, ls, (), alpha_t=a_t, sigma_t=s_t, sigma_s0=s_t) == (1.0, 0.0, (), 0.0)  # h = 0: no step
    with pytest.raises(ValueError, match="h = inf"):  # a second-order step to sigma = 0 diverges
        unipc_coeffs(ls, math.inf, (ls - 1.0,), alpha_t=1.0, sigma_t=0.0, sigma_s0=s_s)


@pytest.mark.parametrize(
    "cfg",
    [
        dict(predict_x0=False),
        dict(predict_x0=False, prediction_type="v_prediction", solver_type="bh1"),
        dict(solver_order=4),
        dict(solver_order=5, lower_order_final=False, final_sigmas_type="sigma_min"),
        dict(prediction_type="flow_prediction"),  # on the VP sigmas, as the parent reads it
        dict(thresholding=True, dynamic_thresholding_ratio=0.0),
        dict(thresholding=True, sample_max_value=0.5),
    ],
    ids=lambda cfg: ",".join(f"{k}={v}" for k, v in cfg.items()),
)
def test_unipc_options(cfg):
    """Options the fused UniPC once refused, each over a whole lockstep loop: the noise-prediction form, orders
    beyond the fused step's three history tensors (their extra terms added by another fused call), ..."""
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    check = compare_free_running if cfg.get("predict_x0") is False else compare
    fast = check(diffusers.UniPCMultistepScheduler, cfg, 12, x_T, 0)
    assert fast.lower_order_nums == fast.config.solver_order


@pytest.mark.parametrize("fast_solver_p", [False, True])
def test_unipc_solver_p(fast_solver_p):
    """`solver_p`: the predictor is another scheduler's step (solver_p + UniC), fused or not, as the parent's."""
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    want = run_loop(diffusers.UniPCMultistepScheduler(solver_p=diffusers.DPMSolverMultistepScheduler()), 10, x_T)
    solver_p = (fdd.FastDPMSolverMultistepScheduler if fast_solver_p else diffusers.DPMSolverMultistepScheduler)()
    fast = fdd.FastUniPCMultistepScheduler(solver_p=solver_p)
    assert_loops_equal(run_loop(fast, 10, x_T), want)
    assert fast.last_step_stats.step_index == 9


def test_unipc_shape_mismatch_is_a_clear_error():
    s = fdd.FastUniPCMultistepScheduler()
    s.set_timesteps(4)
    with pytest.raises(ValueError, match=r"model_output has shape \(2, 5\) but sample has shape \(2, 4\)"):
        s.step(torch.randn(2, 5), s.timesteps[0], torch.randn(2, 4))
    with pytest.raises(ValueError, match="set_timesteps"):
        fdd.FastUniPCMultistepScheduler().step(torch.randn(2, 4), 10, torch.randn(2, 4))


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize(
    "extra",
    [
        dict(prediction_type="v_prediction", use_karras_sigmas=True, thresholding=True),
        dict(prediction_type="sample", final_sigmas_type="sigma_min", lower_order_final=False),
        dict(prediction_type="epsilon", timestep_spacing="leading", disable_corrector=[0, 5]),
    ],
)
def test_unipc_free_running_loop(order, extra):
    """Each scheduler follows its own trajectory for 20 steps: the outputs stay within 1e-5 of the parent's."""
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    cfg = dict(solver_order=order, **extra)
    want = run_loop(diffusers.UniPCMultistepScheduler(**cfg), 20, x_T)
    fast = fdd.fast_scheduler(diffusers.UniPCMultistepScheduler(**cfg))
    got = run_loop(fast, 20, x_T)
    assert_loops_equal(got, want)
    assert fast.last_step_stats is not None and fast.last_step_stats.step_index == 19
