"""The drop-in schedulers of the PNDM, LMS, DPM-2 (ancestral), DPM++ SDE, LCM, TCD, DEIS, singlestep DPM-Solver and EDM
families equal their diffusers parents (API.md section 2), step by step over whole loops.

Hypothesis draws a config, a step count, a sample and a seed; `test_dropin.compare` runs the Fast* scheduler and
diffusers' own in lockstep (the parent's trajectory, the same model output, generators and noise sampler seeds
alike) and every returned tensor must agree within 1e-5 relative, or be at least as close as the parent's to the
parent's float64 evaluation of that step. Then the state as the parents keep it: latents changed between stages and
steps, a parent's step mixed in, the parents' own state edits (diffusers' tests preset `ets` / `model_outputs`),
statistics, and the parents' own refusals.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from test_dropin import (  # noqa: E402
    BETAS,
    PTYPES,
    RTOL,
    assert_loops_equal,
    clip_options,
    compare,
    draw_multistep_sigmas,
    fake_model,
    rel_err,
    run_loop,
    samples,
    seeds,
    threshold_options,
    ve_ladder,
    vp_spacing,
)

from fastdiff.integrations import diffusers as fdd  # noqa: E402

VP_NOISE_TYPES = ("epsilon", "v_prediction")  # the KDPM2 / DPM++ SDE / PNDM parents' (they refuse "sample")


def nudge(i: int, x: torch.Tensor) -> torch.Tensor:
    """A callback_on_step_end that changes the latents after every step or stage (as a user's edit)."""
    return 0.97 * x + 0.02 * (i % 2)


# --------------------------------------------------------------------------------------------------
# whole loops against the parent (lockstep)


@given(data=st.data(), x_T=samples, seed=seeds)
def test_pndm(data, x_T, seed):
    cfg = dict(
        prediction_type=data.draw(st.sampled_from(VP_NOISE_TYPES)),
        skip_prk_steps=data.draw(st.booleans()),
        set_alpha_to_one=data.draw(st.booleans()),
    )
    cfg.update(data.draw(st.sampled_from(BETAS)), **data.draw(vp_spacing()))
    compare(diffusers.PNDMScheduler, cfg, data.draw(st.integers(1, 12)), x_T, seed)


@settings(max_examples=15)  # (the parent integrates its coefficients numerically, step by step)
@given(data=st.data(), x_T=samples, seed=seeds)
def test_lms(data, x_T, seed):
    cfg = dict(prediction_type=data.draw(st.sampled_from(PTYPES)))
    cfg.update(data.draw(st.sampled_from(BETAS)), **data.draw(ve_ladder()), **data.draw(vp_spacing()))
    order = data.draw(st.sampled_from([1, 2, 4, 6]))  # 6: five history terms, one past the fused step's four
    compare(diffusers.LMSDiscreteScheduler, cfg, data.draw(st.integers(1, 12)), x_T, seed, dict(order=order))


@pytest.mark.parametrize("parent_cls", [diffusers.KDPM2DiscreteScheduler, diffusers.KDPM2AncestralDiscreteScheduler])
@settings(max_examples=10)
@given(data=st.data(), x_T=samples, seed=seeds)
def test_kdpm2(parent_cls, data, x_T, seed):
    cfg = dict(prediction_type=data.draw(st.sampled_from(VP_NOISE_TYPES)))
    # (their constructors take ~0.8 s at 1000 training steps, the default: that one is in the state tests below,
    # the pipeline tests and diffusers' own)
    cfg["num_train_timesteps"] = data.draw(st.sampled_from([250, 100]))
    # (the cosine schedule's 2e4 -> 6e-3 ladder amplifies float32 rounding beyond any evaluation's reach: Heun's)
    cfg.update(data.draw(st.sampled_from(BETAS[:2])), **data.draw(ve_ladder()), **data.draw(vp_spacing()))
    compare(parent_cls, cfg, data.draw(st.integers(1, 8)), x_T, seed)


@settings(max_examples=10)  # (the Brownian tree's queries are the slow part)
@given(data=st.data(), x_T=samples, seed=seeds)
def test_dpm_sde(data, x_T, seed):
    cfg = dict(prediction_type=data.draw(st.sampled_from(VP_NOISE_TYPES)), noise_sampler_seed=seed)
    cfg.update(data.draw(st.sampled_from(BETAS[:2])), **data.draw(ve_ladder()), **data.draw(vp_spacing()))
    step_kw = dict(s_noise=data.draw(st.sampled_from([1.0, 1.003])))
    compare(diffusers.DPMSolverSDEScheduler, cfg, data.draw(st.integers(1, 8)), x_T, seed, step_kw)


@given(data=st.data(), x_T=samples, seed=seeds)
def test_lcm(data, x_T, seed):
    cfg = dict(
        prediction_type=data.draw(st.sampled_from(PTYPES)),
        original_inference_steps=data.draw(st.sampled_from([50, 20])),
        timestep_scaling=data.draw(st.sampled_from([10.0, 1.0])),
        set_alpha_to_one=data.draw(st.booleans()),
    )
    cfg.update(data.draw(st.sampled_from(BETAS)), **data.draw(clip_options()))
    if cfg["prediction_type"] != "epsilon" and data.draw(st.booleans()):
        cfg["rescale_betas_zero_snr"] = True
    compare(diffusers.LCMScheduler, cfg, data.draw(st.integers(1, 8)), x_T, seed)


@given(data=st.data(), x_T=samples, seed=seeds)
def test_tcd(data, x_T, seed):
    cfg = dict(prediction_type=data.draw(st.sampled_from(PTYPES)))
    cfg.update(data.draw(st.sampled_from(BETAS)), **data.draw(clip_options()))  # (clip options its step ignores)
    if cfg["prediction_type"] != "epsilon" and data.draw(st.booleans()):
        cfg["rescale_betas_zero_snr"] = True
    step_kw = dict(eta=data.draw(st.sampled_from([0.0, 0.3, 1.0])))
    compare(diffusers.TCDScheduler, cfg, data.draw(st.integers(1, 8)), x_T, seed, step_kw)


@given(data=st.data(), x_T=samples, seed=seeds)
def test_deis(data, x_T, seed):
    cfg = dict(solver_order=data.draw(st.sampled_from([1, 2, 3])), lower_order_final=data.draw(st.booleans()))
    model = draw_multistep_sigmas(data, cfg, ("karras", "exponential", "beta"))
    compare(diffusers.DEISMultistepScheduler, cfg, data.draw(st.integers(1, 20)), x_T, seed, model=model)


@given(data=st.data(), x_T=samples, seed=seeds)
def test_dpm_singlestep(data, x_T, seed):
    algorithm = data.draw(st.sampled_from(["dpmsolver++", "sde-dpmsolver++", "dpmsolver"]))
    cfg = dict(
        algorithm_type=algorithm,
        solver_order=data.draw(st.sampled_from([1, 2, 3])),
        solver_type=data.draw(st.sampled_from(["midpoint", "heun"])),
        lower_order_final=data.draw(st.booleans()),
        # (the noise-prediction solver refuses a final sigma of 0)
        final_sigmas_type=data.draw(st.sampled_from(["zero", "sigma_min"] if "++" in algorithm else ["sigma_min"])),
    )
    model = draw_multistep_sigmas(data, cfg, ("karras", "exponential", "beta"), flow="++" in algorithm)
    cfg.pop("timestep_spacing", None), cfg.pop("steps_offset", None)  # (its timesteps are linspace only)
    if algorithm == "dpmsolver":
        cfg.pop("thresholding", None)  # (the parent's own thresholding of eps fails: it indexes alpha_t[None])
    compare(diffusers.DPMSolverSinglestepScheduler, cfg, data.draw(st.integers(1, 20)), x_T, seed, model=model)


@given(data=st.data(), x_T=samples, seed=seeds)
def test_edm_euler(data, x_T, seed):
    cfg = dict(
        prediction_type=data.draw(st.sampled_from(VP_NOISE_TYPES)),
        sigma_schedule=data.draw(st.sampled_from(["karras", "exponential"])),
        final_sigmas_type=data.draw(st.sampled_from(["zero", "sigma_min"])),
        sigma_data=data.draw(st.sampled_from([0.5, 1.0])),
        rho=data.draw(st.sampled_from([7.0, 3.0])),
    )
    step_kw = {}
    if data.draw(st.booleans()):
        step_kw = dict(
            s_churn=data.draw(st.sampled_from([0.5, 10.0])),
            s_tmin=data.draw(st.sampled_from([0.0, 0.5])),
            s_tmax=data.draw(st.sampled_from([math.inf, 5.0])),
            s_noise=data.draw(st.sampled_from([1.0, 1.003])),
        )
    compare(diffusers.EDMEulerScheduler, cfg, data.draw(st.integers(1, 12)), x_T, seed, step_kw)


@given(data=st.data(), x_T=samples, seed=seeds)
def test_edm_dpmsolver(data, x_T, seed):
    algorithm = data.draw(st.sampled_from(["dpmsolver++", "sde-dpmsolver++"]))
    cfg = dict(
        algorithm_type=algorithm,
        # (the parent has no 3rd-order "sde-dpmsolver++" update: test_edm_dpmsolver_sde_third_order)
        solver_order=data.draw(st.sampled_from([1, 2, 3] if algorithm == "dpmsolver++" else [1, 2])),
        solver_type=data.draw(st.sampled_from(["midpoint", "heun"])),
        lower_order_final=data.draw(st.booleans()),
        euler_at_final=data.draw(st.booleans()),
        final_sigmas_type=data.draw(st.sampled_from(["zero", "sigma_min"])),
        sigma_schedule=data.draw(st.sampled_from(["karras", "exponential"])),
        prediction_type=data.draw(st.sampled_from(VP_NOISE_TYPES)),
    )
    if data.draw(st.booleans()):
        cfg.update(thresholding=True, **data.draw(threshold_options()))
    compare(diffusers.EDMDPMSolverMultistepScheduler, cfg, data.draw(st.integers(1, 20)), x_T, seed)


# --------------------------------------------------------------------------------------------------
# state as the parents keep it


@pytest.mark.parametrize(
    "parent_cls, cfg",
    [
        (diffusers.KDPM2DiscreteScheduler, dict(prediction_type="v_prediction")),
        (diffusers.KDPM2AncestralDiscreteScheduler, {}),
        (diffusers.DPMSolverSDEScheduler, dict(noise_sampler_seed=4, use_karras_sigmas=True)),
        (diffusers.PNDMScheduler, {}),  # (between the stages of its Runge-Kutta steps)
        (diffusers.LMSDiscreteScheduler, {}),
        (diffusers.DPMSolverSinglestepScheduler, dict(solver_order=3)),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_latents_changed_between_stages(parent_cls, cfg):
    """A callback changes the latents after every call (between the two stages of KDPM2 and DPM++ SDE, between
    PRK's stages, within a singlestep group): stage 2 reads the sample it is given and the parent's kept one."""
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    compare(parent_cls, cfg, 8, x_T, 3, hook=nudge)


@pytest.mark.parametrize(
    "parent_cls, cfg",
    [
        (diffusers.KDPM2DiscreteScheduler, {}),
        (diffusers.DPMSolverSDEScheduler, dict(noise_sampler_seed=2)),
        (diffusers.PNDMScheduler, {}),
        (diffusers.DEISMultistepScheduler, dict(solver_order=3)),
        (diffusers.DPMSolverSinglestepScheduler, dict(solver_order=3)),
        (diffusers.EDMDPMSolverMultistepScheduler, dict(solver_order=3)),
        (diffusers.LMSDiscreteScheduler, {}),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_mixed_use(parent_cls, cfg):
    """Steps of the parent and of the Fast scheduler alternate on one instance: the state each leaves (kept sample,
    history, PRK's running sum, derivatives) is what the other reads."""
    x_T = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(5))
    want = run_loop(parent_cls(**cfg), 12, x_T, seed=5)
    fast = fdd.fast_scheduler(parent_cls(**cfg))
    fast.set_timesteps(12)
    gen, x = torch.Generator().manual_seed(5), x_T * fast.init_noise_sigma
    for i, t in enumerate(fast.timesteps):
        step = fast.step if i % 3 else parent_cls.step.__get__(fast)
        out = fake_model(fast.scale_model_input(x, t), t.expand(2))
        kw = {"generator": gen} if "generator" in fast.step.__code__.co_varnames else {}
        x = step(out, t, x, **kw).prev_sample
        assert rel_err(x, want[i].prev_sample) <= RTOL, i


def test_pndm_running_sum_reads_as_the_parents():
    """PRK's running sum `cur_model_output` is kept as its terms and reads as the parent's tensor at every stage;
    assigning it (as the parent's own step does) replaces them."""
    x_T = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(6))
    parent, fast = diffusers.PNDMScheduler(), fdd.FastPNDMScheduler()
    for s in (parent, fast):
        s.set_timesteps(10)
    x = x_T
    for t in parent.timesteps[:8]:
        out = fake_model(x, t.expand(2))
        x_next = parent.step(out, t, x).prev_sample
        fast.step(out, t, x)
        got, want = fast.cur_model_output, parent.cur_model_output
        assert (got == 0) if isinstance(want, int) else rel_err(got, want) <= RTOL
        x = x_next
    fast.cur_model_output = torch.ones(2, 3, 4)
    assert torch.equal(fast.cur_model_output, torch.ones(2, 3, 4))


def test_lms_order_changed_and_begin_index():
    """LMS's `order` may change from call to call, and an img2img start (set_begin_index) has fewer derivatives than
    the order asks: the parent zips its coefficients with the derivatives it has (the shorter wins)."""
    x_T = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(7))
    outs = []
    for cls in (diffusers.LMSDiscreteScheduler, fdd.FastLMSDiscreteScheduler):
        s = cls()
        s.set_timesteps(12)
        s.set_begin_index(5)
        x, row = x_T * 3.0, []
        for k, t in enumerate(s.timesteps[5:]):
            out = fake_model(s.scale_model_input(x, t), t.expand(2))
            r = s.step(out, t, x, order=(4, 2, 3, 5, 1, 4, 4)[k])
            x = r.prev_sample
            row.append(r)
        outs.append(row)
    assert_loops_equal(outs[1], outs[0])


def test_preset_history_as_diffusers_tests_do():
    """diffusers' own tests set `ets` / `model_outputs` by hand before stepping (and step PNDM's stages directly)."""
    sample = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(8))
    residual = 0.1 * sample
    past = [residual + 0.2, residual + 0.15, residual + 0.1, residual + 0.05]
    for cls in (diffusers.PNDMScheduler, diffusers.DEISMultistepScheduler, diffusers.DPMSolverSinglestepScheduler):
        results = []
        for s in (cls(), fdd.fast_scheduler(cls())):
            s.set_timesteps(25)
            if cls is diffusers.PNDMScheduler:
                s.ets = past[:]
                results.append(
                    [s.step_prk(residual, 0, sample).prev_sample, s.step_plms(residual, 1, sample).prev_sample]
                )
            else:
                s.model_outputs = past[: s.config.solver_order]
                x = sample
                for t in s.timesteps[:3]:
                    x = s.step(residual, t, x).prev_sample
                results.append([x])
        for got, want in zip(results[1], results[0]):
            assert rel_err(got, want) <= RTOL, cls.__name__


def test_dpm_sde_noise_is_the_parents():
    """The Brownian-tree noise sampler is the parent's, made at the first step from `noise_sampler_seed`: the same
    seed gives the same samples; an explicit noise sampler set on the scheduler is used as it is."""
    x_T = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(9))
    cfg = dict(noise_sampler_seed=11, use_karras_sigmas=True)
    want = run_loop(diffusers.DPMSolverSDEScheduler(**cfg), 6, x_T)
    fast = fdd.FastDPMSolverSDEScheduler(**cfg)
    assert_loops_equal(run_loop(fast, 6, x_T), want)
    assert isinstance(fast.noise_sampler, diffusers.schedulers.scheduling_dpmsolver_sde.BrownianTreeNoiseSampler)
    zero = lambda sigma, sigma_next: torch.zeros(2, 3, 4)  # noqa: E731
    runs = []
    for cls in (diffusers.DPMSolverSDEScheduler, fdd.FastDPMSolverSDEScheduler):
        s = cls()
        s.set_timesteps(6)
        s.noise_sampler = zero
        x = x_T * s.init_noise_sigma
        for t in s.timesteps:
            x = s.step(fake_model(s.scale_model_input(x, t), t.expand(2)), t, x).prev_sample
        runs.append(x)
    assert rel_err(runs[1], runs[0]) <= RTOL


def test_edm_euler_given_x0():
    """EDMEulerScheduler.step(pred_original_sample=...) steps with that x0 instead of the model's (churn too)."""
    x_T = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(10))
    x0 = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(11))
    outs = []
    for cls in (diffusers.EDMEulerScheduler, fdd.FastEDMEulerScheduler):
        s = cls()
        s.set_timesteps(6)
        x, gen, row = x_T * s.init_noise_sigma, torch.Generator().manual_seed(1), []
        for t in s.timesteps:
            x_in = s.scale_model_input(x, t)
            r = s.step(fake_model(x_in, t.expand(2)), t, x, s_churn=1.0, generator=gen, pred_original_sample=x0)
            x = r.prev_sample
            row.append(r)
        outs.append(row)
    assert_loops_equal(outs[1], outs[0])


def test_edm_dpmsolver_sde_third_order():
    """The parent has no 3rd-order "sde-dpmsolver++" update (its step fails with UnboundLocalError); the Fast
    scheduler says so with a ValueError at that step, and runs orders 1-2 before it."""
    cfg = dict(solver_order=3, algorithm_type="sde-dpmsolver++")
    x_T = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(12))
    with pytest.raises(UnboundLocalError):
        run_loop(diffusers.EDMDPMSolverMultistepScheduler(**cfg), 10, x_T)
    with pytest.raises(ValueError, match="no 3rd-order update"):
        run_loop(fdd.FastEDMDPMSolverMultistepScheduler(**cfg), 10, x_T)


@pytest.mark.parametrize(
    "parent_cls", [diffusers.KDPM2DiscreteScheduler, diffusers.KDPM2AncestralDiscreteScheduler,
                   diffusers.DPMSolverSDEScheduler], ids=lambda c: c.__name__,
)  # fmt: skip
def test_sample_prediction_is_the_parents_refusal(parent_cls):
    for cls in (parent_cls, fdd.FAST_SCHEDULERS[parent_cls]):
        s = cls(prediction_type="sample", num_train_timesteps=100)
        s.set_timesteps(4)
        with pytest.raises(NotImplementedError, match="prediction_type not implemented yet: sample"):
            s.step(torch.zeros(1, 4), s.timesteps[0], torch.zeros(1, 4))


# --------------------------------------------------------------------------------------------------
# statistics: every step's, from its fused calls


def test_step_stats_x0_is_the_returned_x0():
    """`last_step_stats.x0` are the statistics of the x0 the step returns or uses: LMS's pred_original_sample (made
    by its own fused call), LCM's clipped x0 with its clip count, DEIS's thresholded x0."""
    x = 3 * torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(13))
    s = fdd.FastLMSDiscreteScheduler()
    s.set_timesteps(10)
    t = s.timesteps[3]
    s.scale_model_input(x, t)
    r = s.step(fake_model(x, t.expand(2)), t, x)
    d = s.last_step_stats.to_dict()
    assert d["x0_mean"] == pytest.approx(r.pred_original_sample.double().mean().item(), rel=1e-6, abs=1e-9)
    assert d["sample_max"] == pytest.approx(r.prev_sample.max().item(), rel=1e-6)

    s = fdd.FastLCMScheduler(clip_sample=True, clip_sample_range=0.5)
    s.set_timesteps(4)
    t = s.timesteps[0]
    out = fake_model(x, t.expand(2))
    s.step(out, t, x, generator=torch.Generator().manual_seed(0))
    a = s.alphas_cumprod[int(t)].double()
    x0 = (x.double() - (1 - a).sqrt() * out.double()) / a.sqrt()
    assert int(s.last_step_stats.clipped) == int((x0.abs() > 0.5).sum()) > 0
    assert s.last_step_stats.to_dict()["x0_max"] == 0.5

    s = fdd.FastDEISMultistepScheduler(thresholding=True, sample_max_value=1.0, dynamic_thresholding_ratio=0.5)
    s.set_timesteps(5)
    xt = x.reshape(2, 3, 2, 4)
    s.step(fake_model(xt, s.timesteps[0].expand(2)), s.timesteps[0], xt)
    assert int(s.last_step_stats.clipped) > 0 and s.last_step_stats.to_dict()["x0_max"] <= 1.0


# --------------------------------------------------------------------------------------------------
# conversion


@pytest.mark.parametrize("parent_cls", list(fdd.FAST_SCHEDULERS)[8:], ids=lambda c: c.__name__)
def test_fast_scheduler_converts_subclasses(parent_cls):
    """A subclass that adds no methods converts to its parent's Fast* class, with the same config."""
    renamed = type("Renamed" + parent_cls.__name__, (parent_cls,), {})()
    fast = fdd.fast_scheduler(renamed)
    assert type(fast) is fdd.FAST_SCHEDULERS[parent_cls] and isinstance(fast, parent_cls)
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(fast.config) == public(renamed.config)
