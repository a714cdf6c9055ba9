"""The drop-in diffusers schedulers equal their parents (API.md section 2), step by step over whole loops.

Hypothesis draws a config, a step count, a sample and a seed; the Fast* scheduler and diffusers' own run
the same loop (the same deterministic fake model, generators seeded alike) and every step's outputs
must agree within 1e-5 relative (float32), with the same dtypes and shapes.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from fastdiff.integrations import diffusers as fdd  # noqa: E402

RTOL = 1e-5
PTYPES = ("epsilon", "sample", "v_prediction")
BETAS = (
    dict(),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="squaredcos_cap_v2"),
)


def fake_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Deterministic, nonlinear in x and dependent on t: any mismatch of inputs shows in the output."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, *([1] * (x.dim() - 1)))
    return 0.3 * x + 0.2 * torch.sin(3.0 * x + t / 300.0) + 0.05 * torch.cos(t / 100.0)


def fake_flow_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -x + fake_model(x, t)


class Float64(torch.Tensor):
    """A float64 tensor that stays float64 inside diffusers' steps, for "the parent run in float64" (API.md section
    2): several steps "upcast" with sample.to(torch.float32), which in a float64 run is a downcast and makes the
    reference no better than float32 where a step cancels (the noise-prediction DPM-Solver after sigma_max:
    x_t = 157 x - 157 eps + ...). Results of operations on it are Float64 too; `exact()` gives a plain tensor."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.to and isinstance(args[0], cls):
            args = tuple(torch.float64 if isinstance(a, torch.dtype) and a.is_floating_point else a for a in args)
            if kwargs.get("dtype") is not None and kwargs["dtype"].is_floating_point:
                kwargs["dtype"] = torch.float64
        return super().__torch_function__(func, types, args, kwargs)


def float64(t: torch.Tensor) -> Float64:
    return t.detach().double().as_subclass(Float64)


def in_float64(sched):
    """A copy of a scheduler with its state tensors (sigmas, alphas_cumprod, ...) in float64: the parent run in
    float64 computes its coefficients in float64 too."""
    sched = copy.deepcopy(sched)
    for name, value in vars(sched).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(sched, name, value.double())
    return sched


def exact(t: torch.Tensor) -> torch.Tensor:
    """A plain float64 tensor of a float64 result."""
    return t.as_subclass(torch.Tensor).double()


def run_loop(sched, n, x_T, *, seed=0, step_kw=None, set_kw=None, model=fake_model, float64_run=False):
    """Outputs of every step (prev_sample and, where returned, pred_original_sample). `float64_run`: a copy of
    `sched` runs with its state, the sample and the model output in float64 (`in_float64`, `Float64`)."""
    sched.set_timesteps(n, **(set_kw or {}))
    if float64_run:
        sched, x_T, model_32 = in_float64(sched), float64(x_T), model
        model = lambda x, t: float64(model_32(x, t))  # noqa: E731
    gen = torch.Generator().manual_seed(seed)
    x = x_T * getattr(sched, "init_noise_sigma", 1.0)
    outs = []
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        out = model(x_in, t.expand(x.shape[0]))
        kw = dict(step_kw or {})
        if "generator" in sched.step.__code__.co_varnames:
            kw["generator"] = gen
        r = sched.step(out, t, x, **kw)
        outs.append(r)
        x = r.prev_sample
    return outs


def rel_err(got: torch.Tensor, want: torch.Tensor, scale: float = 0.0) -> float:
    """max |got - want| relative to max |want| (or to `scale` when larger)."""
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    scale = max(want.double().abs().max().item(), scale, 1e-30)
    return float((got.double() - want.double()).abs().max() / scale)


def assert_loops_equal(fast_outs, want_outs, inputs=None):
    """Every step's outputs within RTOL, relative to the larger of the output's and (given `inputs`) the step's
    input sample's magnitude: where a step's result is much smaller than its input (an Euler step from
    sigma = 4000 down to x0 ~ 1), float32 cancellation leaves any evaluation order, the parent's included,
    a few ulps of the input away from the exact value."""
    assert len(fast_outs) == len(want_outs)
    for i, (f, w) in enumerate(zip(fast_outs, want_outs)):
        assert set(f.keys()) == set(w.keys()), i
        scale = 0.0 if inputs is None else inputs[i].double().abs().max().item()
        for key in w.keys():
            err = rel_err(f[key], w[key], scale)
            assert err <= RTOL, f"step {i} {key}: relative error {err:.3g}"


def _step_kw(sched, step_kw, gen):
    kw = dict(step_kw or {})
    if "generator" in sched.step.__code__.co_varnames:
        kw["generator"] = gen
    return kw


def compare(parent_cls, config, n, x_T, seed, step_kw=None, set_kw=None, model=fake_model, hook=None):
    """Lockstep: at every step both schedulers get the same sample (the parent's trajectory) and the same model
    output; scale_model_input and every step output must agree. Their own state (step index, history, Heun's
    stage, generators seeded alike) evolves separately over the whole loop. Where the parent raises, so does it.
    `hook(i, x)`: the sample both get next, from the parent's result (a callback changing the latents)."""
    parent = parent_cls(**config)
    fast = fdd.fast_scheduler(parent)  # (a fresh scheduler with the parent's config)
    assert type(fast).__name__ == "Fast" + parent_cls.__name__ and isinstance(fast, parent_cls)
    try:
        parent.set_timesteps(n, **(set_kw or {}))
    except (IndexError, ValueError, ZeroDivisionError) as exc:
        with pytest.raises(type(exc)):
            fast.set_timesteps(n, **(set_kw or {}))
        return fast
    fast.set_timesteps(n, **(set_kw or {}))
    torch.testing.assert_close(fast.timesteps, parent.timesteps, rtol=0, atol=0, equal_nan=True)
    gen_p, gen_f = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    x = x_T * getattr(parent, "init_noise_sigma", 1.0)
    for i, (t, t_fast) in enumerate(zip(parent.timesteps, fast.timesteps)):
        x_in = parent.scale_model_input(x, t) if hasattr(parent, "scale_model_input") else x
        if hasattr(fast, "scale_model_input"):
            assert torch.equal(fast.scale_model_input(x, t_fast), x_in), i
        out = model(x_in, t.expand(x.shape[0]))
        before = (in_float64(parent), gen_p.get_state())
        try:
            want = parent.step(out, t, x, **_step_kw(parent, step_kw, gen_p))
        except (IndexError, ValueError, ZeroDivisionError) as exc:  # the parent's own failures (index past the end)
            with pytest.raises(type(exc)):
                fast.step(out, t_fast, x, **_step_kw(fast, step_kw, gen_f))
            return fast
        if torch.isfinite(x).all() and torch.isfinite(out).all() and not torch.isfinite(want.prev_sample).all():
            # the parent's own float32 coefficient arithmetic failed (e.g. Euler-ancestral's
            # sqrt(sigma_to^2 - sigma_up^2) of a rounding-negative number at sigma = 2e4, or a DPM-Solver step
            # dividing by h = 0): the fused step, with its coefficients in float64, stays finite or says why
            try:
                got = fast.step(out, t_fast, x, **_step_kw(fast, step_kw, gen_f))
            except ValueError as exc:
                assert "h = 0" in str(exc)
            else:
                assert torch.isfinite(got.prev_sample).all(), i
            return fast
        got = fast.step(out, t_fast, x, **_step_kw(fast, step_kw, gen_f))
        try:
            assert_loops_equal([got], [want], [x])
        except AssertionError:
            # extreme ladders (sigma from 2e4 to 6e-3) amplify float32 rounding by sigma_max / sigma_min: then
            # the fused step must be at least as close as the parent to the parent's own float64 evaluation
            ref, state = before
            gen64 = torch.Generator().set_state(state)
            e = exact(ref.step(float64(out), t, float64(x), **_step_kw(ref, step_kw, gen64)).prev_sample)
            err_fast = (got.prev_sample.double() - e).abs().max()
            err_parent = (want.prev_sample.double() - e).abs().max()
            assert err_fast <= err_parent, f"step {i}: {err_fast:.3g} from the float64 result, parent {err_parent:.3g}"
        assert fast.step_index == parent.step_index if hasattr(parent, "step_index") else True
        x = want.prev_sample if hook is None else hook(i, want.prev_sample)
    assert fast.last_step_stats is not None
    return fast


def compare_free_running(parent_cls, config, n, x_T, seed=0, set_kw=None, model=fake_model):
    """API.md section 2's precision rule over whole loops, each scheduler on its own trajectory: every step's
    prev_sample within max(RTOL, 2 x the parent's own float32 error) of the parent run in float64 (relative to
    the float64 result's magnitude). For solvers whose state feeds back on itself (the noise-prediction UniPC
    corrector chains x_c = (alpha_t / alpha_s) last + ..., alpha_t / alpha_s ~ 2), where a lockstep comparison
    (`compare`) would mix the parent's trajectory with the Fast scheduler's own state."""
    reference = run_loop(parent_cls(**config), n, x_T, seed=seed, set_kw=set_kw, model=model, float64_run=True)
    want = run_loop(parent_cls(**config), n, x_T, seed=seed, set_kw=set_kw, model=model)
    fast = fdd.fast_scheduler(parent_cls(**config))
    got = run_loop(fast, n, x_T, seed=seed, set_kw=set_kw, model=model)
    for i, (g, w, e) in enumerate(zip(got, want, reference)):
        e = exact(e.prev_sample)
        assert g.prev_sample.dtype == w.prev_sample.dtype and g.prev_sample.shape == w.prev_sample.shape, i
        if not torch.isfinite(e).all():  # (the parent's own failures: see compare)
            return fast
        err_parent = (w.prev_sample.double() - e).abs().max().item()
        err_fast = (g.prev_sample.double() - e).abs().max().item()
        bound = max(RTOL * e.abs().max().item(), 2.0 * err_parent)
        assert err_fast <= bound, f"step {i}: {err_fast:.3g} from the float64 result; parent {err_parent:.3g}"
    return fast


samples = st.builds(
    lambda shape, seed, scale: scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed)),
    st.sampled_from([(1, 2, 4), (2, 3, 4), (2, 3, 4, 4)]),  # the parent thresholds 3+ dims only
    st.integers(0, 2**31 - 1),
    st.sampled_from([0.5, 1.0, 2.0]),
)
seeds = st.integers(0, 2**31 - 1)


@st.composite
def threshold_options(draw):
    """diffusers' thresholding: s = clamp(quantile(|x0|, ratio), 1, max) (max < 1 gives s = max; ratio 0: min |x0|)."""
    return dict(
        dynamic_thresholding_ratio=draw(st.sampled_from([0.0, 0.9, 0.995])),
        sample_max_value=draw(st.sampled_from([0.5, 1.0, 1.5])),
    )


@st.composite
def clip_options(draw, thresholding=True):
    kind = draw(st.sampled_from(["none", "clip", "threshold"] if thresholding else ["none", "clip"]))
    if kind == "clip":
        return dict(clip_sample=True, clip_sample_range=draw(st.sampled_from([0.5, 1.0, 2.0, math.inf])))
    if kind == "threshold":
        return dict(clip_sample=False, thresholding=True, **draw(threshold_options()))
    return dict(clip_sample=False)


@st.composite
def vp_spacing(draw):
    spacing = draw(st.sampled_from(["leading", "trailing", "linspace"]))
    return dict(timestep_spacing=spacing, steps_offset=draw(st.sampled_from([0, 1])) if spacing == "leading" else 0)


# --------------------------------------------------------------------------------------------------
# whole loops against the parent


@given(data=st.data(), x_T=samples, seed=seeds)
def test_ddim(data, x_T, seed):
    p = data.draw(st.sampled_from(PTYPES))
    cfg = dict(prediction_type=p, set_alpha_to_one=data.draw(st.booleans()))
    cfg.update(data.draw(st.sampled_from(BETAS)), **data.draw(clip_options()), **data.draw(vp_spacing()))
    if p != "epsilon" and data.draw(st.booleans()):
        cfg["rescale_betas_zero_snr"] = True
    step_kw = dict(eta=data.draw(st.sampled_from([0.0, 0.3, 1.0])), use_clipped_model_output=data.draw(st.booleans()))
    compare(diffusers.DDIMScheduler, cfg, data.draw(st.integers(1, 12)), x_T, seed, step_kw)


@given(data=st.data(), x_T=samples, seed=seeds)
def test_ddpm(data, x_T, seed):
    cfg = dict(
        prediction_type=data.draw(st.sampled_from(PTYPES)),
        variance_type=data.draw(st.sampled_from(["fixed_small", "fixed_small_log", "fixed_large"])),
    )
    cfg.update(data.draw(st.sampled_from(BETAS)), **data.draw(clip_options()), **data.draw(vp_spacing()))
    compare(diffusers.DDPMScheduler, cfg, data.draw(st.integers(1, 12)), x_T, seed)


def test_ddpm_custom_timesteps():
    x_T = torch.randn(2, 3, 4)
    ts = [900, 700, 420, 100, 3, 0]
    want = run_loop(diffusers.DDPMScheduler(), None, x_T, seed=3, set_kw=dict(timesteps=ts))
    got = run_loop(fdd.FastDDPMScheduler(), None, x_T, seed=3, set_kw=dict(timesteps=ts))
    assert_loops_equal(got, want)


@st.composite
def ve_ladder(draw, flow=False):
    ladder = draw(st.sampled_from(["none", "karras", "exponential", "beta"]))
    return {f"use_{ladder}_sigmas": True} if ladder != "none" else {}


@given(data=st.data(), x_T=samples, seed=seeds)
def test_euler(data, x_T, seed):
    p = data.draw(st.sampled_from(PTYPES + ("original_sample",)))
    cfg = dict(prediction_type=p, final_sigmas_type=data.draw(st.sampled_from(["zero", "sigma_min"])))
    cfg.update(data.draw(st.sampled_from(BETAS)), **data.draw(ve_ladder()), **data.draw(vp_spacing()))
    if p == "v_prediction":
        cfg["timestep_type"] = data.draw(st.sampled_from(["discrete", "continuous"]))
        cfg["rescale_betas_zero_snr"] = data.draw(st.booleans())
    if not any(k.startswith("use_") for k in cfg):
        cfg["interpolation_type"] = data.draw(st.sampled_from(["linear", "log_linear"]))
    step_kw = {}
    if data.draw(st.booleans()):
        step_kw = dict(
            s_churn=data.draw(st.sampled_from([0.5, 2.0, 10.0])),
            s_tmin=data.draw(st.sampled_from([0.0, 0.5])),
            s_tmax=data.draw(st.sampled_from([math.inf, 5.0])),
            s_noise=data.draw(st.sampled_from([1.0, 1.003])),
        )
    compare(diffusers.EulerDiscreteScheduler, cfg, data.draw(st.integers(1, 12)), x_T, seed, step_kw)


@given(data=st.data(), x_T=samples, seed=seeds)
def test_euler_ancestral(data, x_T, seed):
    p = data.draw(st.sampled_from(["epsilon", "v_prediction"]))
    cfg = dict(prediction_type=p)
    cfg.update(data.draw(st.sampled_from(BETAS)), **data.draw(vp_spacing()))
    if p == "v_prediction":
        cfg["rescale_betas_zero_snr"] = data.draw(st.booleans())
    compare(diffusers.EulerAncestralDiscreteScheduler, cfg, data.draw(st.integers(1, 12)), x_T, seed)


@given(data=st.data(), x_T=samples, seed=seeds)
def test_heun(data, x_T, seed):
    cfg = dict(prediction_type=data.draw(st.sampled_from(PTYPES)))
    # (the cosine schedule's 2e4 -> 6e-3 ladder: test_heun_extreme_ladder_limitation)
    cfg.update(data.draw(st.sampled_from(BETAS[:2])), **data.draw(ve_ladder()), **data.draw(vp_spacing()))
    cfg.update(data.draw(clip_options(thresholding=False)))
    compare(diffusers.HeunDiscreteScheduler, cfg, data.draw(st.integers(1, 8)), x_T, seed)


@pytest.mark.xfail(strict=True, reason="known limitation: the generic step's eps = x / sigma - x0 / sigma")
def test_heun_extreme_ladder_limitation():
    """Heun's correction at sigma_next = 6e-3 after sigma = 2e4 (cosine schedule, 2 steps): d2 = (x - x0) / sigma
    is amplified by dt / sigma_next ~ 3e6. The generic step evaluates eps as x / sigma - x0 / sigma (two
    products) where the parent subtracts first (exact by Sterbenz), so here the fused result is about twice
    as far from the float64 evaluation as the parent's (both are ~10% off: float32 cannot do this ladder)."""
    cfg = dict(beta_schedule="squaredcos_cap_v2", timestep_spacing="linspace")
    compare(diffusers.HeunDiscreteScheduler, cfg, 2, 0.5 * torch.randn(1, 2, 4), 0)


@given(data=st.data(), x_T=samples, seed=seeds)
def test_flow_match_euler(data, x_T, seed):
    cfg = dict(stochastic_sampling=data.draw(st.booleans()), shift=data.draw(st.sampled_from([1.0, 3.0])))
    cfg["invert_sigmas"] = data.draw(st.booleans())
    set_kw = {}
    if data.draw(st.booleans()):
        cfg.update(use_dynamic_shifting=True, time_shift_type=data.draw(st.sampled_from(["exponential", "linear"])))
        set_kw["mu"] = data.draw(st.sampled_from([0.5, 1.15]))
    if data.draw(st.booleans()):
        cfg["shift_terminal"] = 0.05
    cfg.update(data.draw(ve_ladder()))
    compare(
        diffusers.FlowMatchEulerDiscreteScheduler,
        cfg,
        data.draw(st.integers(1, 12)),
        x_T,
        seed,
        set_kw=set_kw,
        model=fake_flow_model,
    )


def draw_multistep_sigmas(data, cfg: dict, ladders: tuple[str, ...], flow: bool = True):
    """The multistep schedulers' sigma configs, drawn into `cfg`: flow sigmas (one in five, if `flow`), or a VP
    beta schedule with a prediction type, a spacing, maybe a ladder of `ladders` and thresholding. Returns the
    fake model that fits.

    (The noise-prediction solvers divide by alpha, ~1e-6 where a flow ladder starts (sigma = 1 - 1e-6): there the
    float32 rounding of sigma itself sets the result, the parent's and any other evaluation's: no flow for them.)"""
    if flow and data.draw(st.integers(0, 4)) == 0:  # the flow path
        cfg.update(use_flow_sigmas=True, flow_shift=data.draw(st.sampled_from([1.0, 3.0])))
        cfg["prediction_type"] = data.draw(st.sampled_from(["flow_prediction", "sample", "epsilon"]))
        return fake_flow_model
    cfg.update(prediction_type=data.draw(st.sampled_from(PTYPES)), **data.draw(st.sampled_from(BETAS)))
    cfg.update(data.draw(vp_spacing()))
    ladder = data.draw(st.sampled_from(["none", *ladders]))
    if ladder != "none":
        cfg["use_lu_lambdas" if ladder == "lu_lambdas" else f"use_{ladder}_sigmas"] = True
    if data.draw(st.booleans()):
        cfg.update(thresholding=True, **data.draw(threshold_options()))
    return fake_model


@given(data=st.data(), x_T=samples, seed=seeds)
def test_dpmsolver(data, x_T, seed):
    algorithm = data.draw(st.sampled_from(["dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver"]))
    cfg = dict(
        # (the parent has no 3rd-order "sde-dpmsolver" update: test_dpmsolver_sde_third_order)
        solver_order=data.draw(st.sampled_from([1, 2] if algorithm == "sde-dpmsolver" else [1, 2, 3])),
        algorithm_type=algorithm,
        solver_type=data.draw(st.sampled_from(["midpoint", "heun"])),
        lower_order_final=data.draw(st.booleans()),
        euler_at_final=data.draw(st.booleans()),
        # (the noise-prediction solvers refuse a final sigma of 0)
        final_sigmas_type=data.draw(st.sampled_from(["zero", "sigma_min"] if "++" in algorithm else ["sigma_min"])),
    )
    model = draw_multistep_sigmas(data, cfg, ("karras", "exponential", "beta", "lu_lambdas"), flow="++" in algorithm)
    if model is fake_model:
        if cfg.get("beta_schedule") == "squaredcos_cap_v2" and data.draw(st.booleans()):
            cfg["lambda_min_clipped"] = -5.1
        if cfg["prediction_type"] == "v_prediction" and data.draw(st.booleans()):
            cfg["rescale_betas_zero_snr"] = True
    compare(diffusers.DPMSolverMultistepScheduler, cfg, data.draw(st.integers(1, 25)), x_T, seed, model=model)


# --------------------------------------------------------------------------------------------------
# the noise, the bookkeeping, mixed use


def test_variance_noise_and_generator():
    """DDIM with explicit variance_noise equals the parent; both arguments at once is the parent's error."""
    x_T, z = torch.randn(2, 4), torch.randn(2, 4)
    results = []
    for cls in (diffusers.DDIMScheduler, fdd.FastDDIMScheduler):
        s = cls()
        s.set_timesteps(5)
        results.append(s.step(fake_model(x_T, s.timesteps[0]), s.timesteps[0], x_T, eta=1.0, variance_noise=z))
        with pytest.raises(ValueError, match="Cannot pass both generator and variance_noise"):
            s.step(x_T, s.timesteps[1], x_T, eta=1.0, variance_noise=z, generator=torch.Generator())
    assert rel_err(results[1].prev_sample, results[0].prev_sample) <= RTOL


def test_dpmsolver_mixed_use():
    """Steps of the parent and of the Fast scheduler alternate on one instance: the history stays consistent."""
    x_T = torch.randn(2, 3, 4)
    cfg = dict(solver_order=3, algorithm_type="sde-dpmsolver++")
    want = run_loop(diffusers.DPMSolverMultistepScheduler(**cfg), 12, x_T, seed=5)
    fast = fdd.FastDPMSolverMultistepScheduler(**cfg)
    fast.set_timesteps(12)
    gen, x = torch.Generator().manual_seed(5), x_T
    for i, t in enumerate(fast.timesteps):
        step = fast.step if i % 3 else diffusers.DPMSolverMultistepScheduler.step.__get__(fast)
        x = step(fake_model(x, t.expand(2)), t, x, generator=gen).prev_sample
        assert rel_err(x, want[i].prev_sample) <= RTOL, i


def test_heun_mixed_use():
    """The parent's second Heun stage reads the first stage's (lazily computed) derivative."""
    x_T = torch.randn(2, 3, 4)
    want = run_loop(diffusers.HeunDiscreteScheduler(), 6, x_T)
    fast = fdd.FastHeunDiscreteScheduler()
    fast.set_timesteps(6)
    x = x_T * fast.init_noise_sigma
    for i, t in enumerate(fast.timesteps):
        step = fast.step if fast.state_in_first_order else diffusers.HeunDiscreteScheduler.step.__get__(fast)
        x = step(fake_model(fast.scale_model_input(x, t), t.expand(2)), t, x).prev_sample
        assert rel_err(x, want[i].prev_sample) <= RTOL, i


def test_begin_index_and_scale_model_input():
    """img2img-style: start part-way with set_begin_index; scale_model_input equals the parent's."""
    x_T = torch.randn(2, 3, 4)
    outs = []
    for cls in (diffusers.EulerDiscreteScheduler, fdd.FastEulerDiscreteScheduler):
        s = cls()
        s.set_timesteps(10)
        s.set_begin_index(4)
        x, row = x_T, []
        for t in s.timesteps[4:]:
            x_in = s.scale_model_input(x, t)
            x = s.step(fake_model(x_in, t.expand(2)), t, x).prev_sample
            row += [x_in, x]
        outs.append(row)
    for got, want in zip(outs[1], outs[0]):
        assert rel_err(got, want) <= RTOL


def test_timestep_located_without_reading_it():
    """A timestep that is an element of scheduler.timesteps (as pipelines pass it, also after slicing for
    img2img) is found from its storage offset: on CUDA this is what keeps step() free of host syncs."""
    s = fdd.FastEulerDiscreteScheduler()
    s.set_timesteps(10)
    for k, t in enumerate(s.timesteps[3:], start=3):
        assert s._schedule_lookup(t).item() == s.timesteps[k].item()
    assert s._schedule_lookup(s.timesteps[4].clone()) is None  # a copy: read (once) as the parent does
    assert s._schedule_lookup(torch.tensor([1.0, 2.0])[1:]) is None


def test_long_ddim_loop_as_accurate_as_parent():
    """1000 DDIM steps without clipping amplify float32 rounding (x0 = (x - sqrt(1 - abar) eps) / sqrt(abar) at
    abar ~ 4e-5): there the parent itself is ~4e-4 away from its float64 run, so no evaluation order stays
    within 1e-5 of it; the fused loop must be at least as close to the float64 run as the parent's."""
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    exact = run_loop(diffusers.DDIMScheduler(), 1000, x_T.double(), model=lambda x, t: fake_model(x, t).double())
    want = run_loop(diffusers.DDIMScheduler(), 1000, x_T)[-1].prev_sample.double()
    got = run_loop(fdd.FastDDIMScheduler(), 1000, x_T)[-1].prev_sample.double()
    exact = exact[-1].prev_sample
    assert (got - exact).abs().max() <= (want - exact).abs().max()


def test_step_stats():
    """last_step_stats: the clipped count and the stats of the returned tensors, from the same pass."""
    s = fdd.FastDDIMScheduler(clip_sample=True, clip_sample_range=0.5)
    s.set_timesteps(10)
    x = 3 * torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0))
    out = fake_model(x, s.timesteps[0])
    r = s.step(out, s.timesteps[0], x)
    stats = s.last_step_stats
    a = s.alphas_cumprod[int(s.timesteps[0])].double()
    x0 = (x.double() - (1 - a).sqrt() * out.double()) / a.sqrt()
    assert int(stats.clipped) == int((x0.abs() > 0.5).sum()) > 0
    assert stats.numel == x.numel()
    d = stats.to_dict()
    assert math.isclose(d["sample_mean"], r.prev_sample.double().mean().item(), rel_tol=1e-6, abs_tol=1e-9)
    assert d["x0_max"] == r.pred_original_sample.max().item() == 0.5
    assert stats.clipped.device == x.device


def test_fresh_outputs():
    """step() returns new tensors: the caller's sample and model output are untouched."""
    s = fdd.FastDDIMScheduler()
    s.set_timesteps(4)
    x, out = torch.randn(2, 4), torch.randn(2, 4)
    x_copy, out_copy = x.clone(), out.clone()
    r = s.step(out, s.timesteps[0], x)
    assert r.prev_sample.data_ptr() not in (x.data_ptr(), out.data_ptr())
    assert torch.equal(x, x_copy) and torch.equal(out, out_copy)


@pytest.mark.parametrize("backend", ["torch", "cpp", "triton"])
def test_backends(backend):
    from fastdiff import kernels

    ok, why = kernels.availability(backend, torch.device("cpu"))
    if not ok:
        pytest.skip(why)
    x_T = torch.randn(2, 3, 4)
    cfg = dict(solver_order=3, thresholding=True, algorithm_type="sde-dpmsolver++")
    want = run_loop(diffusers.DPMSolverMultistepScheduler(**cfg), 8, x_T, seed=2)
    fast = fdd.FastDPMSolverMultistepScheduler(**cfg)
    fast.fused_backend = backend
    assert_loops_equal(run_loop(fast, 8, x_T, seed=2), want)


# --------------------------------------------------------------------------------------------------
# low precision: at least as close to a float64 run of the parent as the parent itself


LOW_PRECISION_CASES = [
    (diffusers.DDIMScheduler, dict(clip_sample=True), dict(eta=0.5)),
    (diffusers.DDPMScheduler, dict(prediction_type="v_prediction"), {}),
    (diffusers.EulerDiscreteScheduler, {}, {}),
    (diffusers.EulerAncestralDiscreteScheduler, {}, {}),
    (diffusers.HeunDiscreteScheduler, dict(prediction_type="v_prediction"), {}),
    (diffusers.FlowMatchEulerDiscreteScheduler, dict(shift=3.0), {}),
    (diffusers.DPMSolverMultistepScheduler, dict(solver_order=3), {}),
    # UniPC order 3 in 16 bits: the parent itself fails (a dtype error in its own solve)
    (diffusers.UniPCMultistepScheduler, dict(solver_order=2), {}),
    (
        diffusers.UniPCMultistepScheduler,
        dict(solver_order=2, solver_type="bh1", prediction_type="v_prediction", final_sigmas_type="sigma_min"),
        {},
    ),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("parent_cls, cfg, step_kw", LOW_PRECISION_CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_low_precision(parent_cls, cfg, step_kw, dtype):
    """16-bit latents, lockstep over a loop: each step's result is at least as close to the parent's float64
    evaluation of that step (same state, same inputs) as the parent's own 16-bit result (one 16-bit ulp of
    slack for the final rounding)."""
    parent, fast = parent_cls(**cfg), fdd.fast_scheduler(parent_cls(**cfg))
    for s in (parent, fast):
        s.set_timesteps(6)
    gen_p, gen_f = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * getattr(parent, "init_noise_sigma", 1.0)
    x = x.to(dtype)
    for i, t in enumerate(parent.timesteps):
        x_in = parent.scale_model_input(x, t) if hasattr(parent, "scale_model_input") else x
        if hasattr(fast, "scale_model_input"):
            fast.scale_model_input(x, t)
        out = fake_model(x_in.float(), t.expand(2)).to(dtype)
        ref, gen64 = in_float64(parent), torch.Generator().set_state(gen_p.get_state())
        e = exact(ref.step(float64(out), t, float64(x), **_step_kw(ref, step_kw, gen64)).prev_sample)
        want = parent.step(out, t, x, **_step_kw(parent, step_kw, gen_p)).prev_sample
        got = fast.step(out, t, x, **_step_kw(fast, step_kw, gen_f)).prev_sample
        assert got.dtype == want.dtype, i
        err_parent = (want.double() - e).abs().max().item()
        err_fast = (got.double() - e).abs().max().item()
        ulp = torch.finfo(dtype).eps * e.abs().max().item()
        assert err_fast <= err_parent + ulp, f"step {i}: fast {err_fast:.3g} > parent {err_parent:.3g}"
        x = want


# --------------------------------------------------------------------------------------------------
# construction, conversion, bad input


def test_fast_scheduler_conversion_and_config():
    s = diffusers.DDIMScheduler(clip_sample=True, clip_sample_range=0.7, timestep_spacing="trailing")
    f = fdd.fast_scheduler(s)
    assert isinstance(f, fdd.FastDDIMScheduler)
    assert {k: v for k, v in f.config.items() if not k.startswith("_")} == {
        k: v for k, v in s.config.items() if not k.startswith("_")
    }
    assert isinstance(fdd.FastDDIMScheduler.from_config(s.config), fdd.FastDDIMScheduler)
    assert fdd.FastDDIMScheduler.from_config(s.config).config.clip_sample_range == 0.7
    assert isinstance(fdd.fast_scheduler(f), fdd.FastDDIMScheduler)
    with pytest.raises(TypeError, match="IPNDMScheduler.*supported: DDPMScheduler, DDIMScheduler"):
        fdd.fast_scheduler(diffusers.IPNDMScheduler())
    with pytest.raises(TypeError, match="supported"):
        fdd.fast_scheduler(object())


def test_save_and_load_config(tmp_path):
    f = fdd.FastEulerDiscreteScheduler(use_karras_sigmas=True, prediction_type="v_prediction")
    f.save_config(tmp_path)
    g = fdd.FastEulerDiscreteScheduler.from_pretrained(tmp_path)
    assert g.config.use_karras_sigmas and g.config.prediction_type == "v_prediction"
    assert isinstance(diffusers.EulerDiscreteScheduler.from_pretrained(tmp_path), diffusers.EulerDiscreteScheduler)


@pytest.mark.parametrize(
    "cls, kw, option",
    [
        (fdd.FastDDPMScheduler, dict(variance_type="learned"), "variance_type='learned'"),
        (fdd.FastDDPMScheduler, dict(variance_type="learned_range"), "variance_type='learned_range'"),
        (fdd.FastDDPMScheduler, dict(variance_type="fixed_large_log"), "variance_type='fixed_large_log'"),
        (fdd.FastDDIMScheduler, dict(clip_sample=True, clip_sample_range=-1.0), "clip_sample_range=-1.0"),
        (fdd.FastDDIMScheduler, dict(thresholding=True, sample_max_value=0.0), "sample_max_value=0.0"),
        (fdd.FastDPMSolverMultistepScheduler, dict(thresholding=True, dynamic_thresholding_ratio=1.5),
         "dynamic_thresholding_ratio=1.5"),
    ],
)  # fmt: skip
def test_unfusable_options_raise_at_construction(cls, kw, option):
    with pytest.raises(NotImplementedError, match=option.replace("(", r"\(")):
        cls(**kw)
    with pytest.raises(NotImplementedError, match="not supported"):
        fdd.fast_scheduler(cls._parent(**kw))


def _both(cls, **kw):
    return [cls(**kw), fdd.fast_scheduler(cls(**kw))]


def test_shape_mismatch_is_a_clear_error():
    for s in _both(diffusers.DDIMScheduler) + _both(diffusers.EulerDiscreteScheduler):
        s.set_timesteps(4)
    for s in _both(diffusers.DDIMScheduler)[1:] + _both(diffusers.EulerDiscreteScheduler)[1:]:
        s.set_timesteps(4)
        t = s.timesteps[0]
        with pytest.raises(ValueError, match=r"model_output has shape \(2, 5\) but sample has shape \(2, 4\)"):
            s.step(torch.randn(2, 5), t, torch.randn(2, 4))
        # a broadcastable shape, which the parent would silently broadcast, is refused too
        with pytest.raises(ValueError, match=r"model_output has shape \(1, 4\)"):
            s.step(torch.randn(1, 4), t, torch.randn(2, 4))
    parent, fast = _both(diffusers.DDPMScheduler, variance_type="fixed_small")
    with pytest.raises(ValueError, match="model_output has shape"):
        fast.step(torch.randn(2, 6, 4), 10, torch.randn(2, 3, 4))


def test_same_timestep_errors_as_parent():
    x = torch.randn(2, 4)
    for parent, fast in [_both(diffusers.DDIMScheduler), _both(diffusers.DDPMScheduler)]:
        for s in (parent, fast):
            s.set_timesteps(10)
            with pytest.raises(IndexError):
                s.step(x, 1000, x)
    parent, fast = _both(diffusers.DDIMScheduler)
    for s in (parent, fast):
        with pytest.raises(ValueError, match="Number of inference steps is 'None'"):
            s.step(x, 10, x)
    for cls in (diffusers.EulerDiscreteScheduler, diffusers.FlowMatchEulerDiscreteScheduler):
        for s in _both(cls):
            s.set_timesteps(10)
            with pytest.raises(ValueError, match="Passing integer indices"):
                s.step(x, 3, x)
            with pytest.raises(IndexError):  # a timestep that is not in the schedule
                s.step(x, torch.tensor(0.123456), x)


@pytest.mark.parametrize(
    "parent_cls, cfg",
    [
        (diffusers.DDIMScheduler, dict(clip_sample=True)),
        (diffusers.DDIMScheduler, dict(thresholding=True)),
        (diffusers.DDPMScheduler, {}),
        (diffusers.EulerDiscreteScheduler, {}),
        (diffusers.HeunDiscreteScheduler, {}),
        (diffusers.FlowMatchEulerDiscreteScheduler, {}),
        (diffusers.DPMSolverMultistepScheduler, dict(solver_order=2)),
    ],
)
def test_nonfinite_propagates_as_in_parent(parent_cls, cfg):
    x_T = torch.randn(2, 3, 4)
    x_T[0, 1, 2] = math.nan
    x_T[1, 0, 0] = math.inf

    def model(x, t):
        out = fake_model(torch.nan_to_num(x), t)
        out[0, 2, 3] = math.nan
        return out

    want = run_loop(parent_cls(**cfg), 4, x_T, seed=0, model=model)
    got = run_loop(fdd.fast_scheduler(parent_cls(**cfg)), 4, x_T, seed=0, model=model)
    for i, (f, w) in enumerate(zip(got, want)):
        for key in w.keys():
            a, b = f[key], w[key]
            assert torch.equal(a.isnan(), b.isnan()), (i, key)
            assert torch.equal(a.isinf(), b.isinf()), (i, key)
            fin = b.isfinite()
            if fin.any():
                assert rel_err(a[fin], b[fin]) <= RTOL, (i, key)


# --------------------------------------------------------------------------------------------------
# a real pipeline


def test_ddim_pipeline_same_images():
    """DDIMPipeline with a tiny random UNet: the Fast scheduler gives the parent's images."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()
    sched = diffusers.DDIMScheduler(clip_sample=True)
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)

    def images(eta):
        return pipe(
            batch_size=2, num_inference_steps=5, eta=eta, generator=torch.Generator().manual_seed(3), output_type="np"
        ).images

    want = [images(0.0), images(1.0)]
    pipe.scheduler = fdd.fast_scheduler(pipe.scheduler)
    assert isinstance(pipe.scheduler, fdd.FastDDIMScheduler)
    got = [images(0.0), images(1.0)]
    for g, w in zip(got, want):
        assert g.shape == w.shape == (2, 8, 8, 3)
        assert abs(g - w).max() <= 1e-5
    assert pipe.scheduler.last_step_stats is not None


# --------------------------------------------------------------------------------------------------
# GPU: no host syncs in step()


@pytest.mark.gpu
@pytest.mark.parametrize(
    "parent_cls, cfg",
    [
        (diffusers.DDIMScheduler, dict(clip_sample=True)),
        (diffusers.DDPMScheduler, dict(clip_sample=True)),
        (diffusers.EulerDiscreteScheduler, {}),
        (diffusers.EulerAncestralDiscreteScheduler, {}),
        (diffusers.HeunDiscreteScheduler, {}),
        (diffusers.FlowMatchEulerDiscreteScheduler, dict(stochastic_sampling=True)),
        (diffusers.DPMSolverMultistepScheduler, dict(solver_order=3, algorithm_type="sde-dpmsolver++")),
        (diffusers.DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver", final_sigmas_type="sigma_min")),
        (diffusers.UniPCMultistepScheduler, dict(solver_order=4, thresholding=True)),
        (diffusers.UniPCMultistepScheduler, dict(predict_x0=False, prediction_type="v_prediction")),
        (diffusers.FlowMatchEulerDiscreteScheduler, dict(invert_sigmas=True)),
    ],
)
def test_no_host_sync_on_cuda(parent_cls, cfg):
    device = torch.device("cuda")
    s = fdd.fast_scheduler(parent_cls(**cfg))
    s.set_timesteps(6, device=device)
    x = torch.randn(2, 4, 16, 16, device=device)
    x = x * s.init_noise_sigma if hasattr(s, "init_noise_sigma") else x
    gen = torch.Generator(device=device).manual_seed(0)
    outs = []
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in s.timesteps:
            x_in = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
            out = 0.3 * x_in + 0.1  # a model without syncs
            kw = {"generator": gen} if "generator" in s.step.__code__.co_varnames else {}
            x = s.step(out, t, x, **kw).prev_sample
            outs.append(x)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(outs) == len(s.timesteps) and torch.isfinite(outs[-1]).all()
    assert s.last_step_stats.clipped.device.type == "cuda"
