"""The drop-in contract beyond one step's maths (API.md section 2): signatures pipelines inspect, saving as the
parent, state as the parent keeps it (latents changed between Heun's stages), repeated sigmas, the config checked
whenever it may have changed, compatibles and conversion, and the options the fused step once refused.

Whole pipelines: tests/test_dropin_pipelines.py. Lockstep and free-running comparisons: tests/test_dropin.py.
"""

from __future__ import annotations

import copy
import inspect
import json
import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusers.pipelines.flux.pipeline_flux import retrieve_timesteps  # noqa: E402
from test_dropin import (  # noqa: E402
    RTOL,
    assert_loops_equal,
    compare,
    compare_free_running,
    fake_flow_model,
    fake_model,
    rel_err,
    run_loop,
)

from fastdiff import ops  # noqa: E402
from fastdiff.integrations import diffusers as fdd  # noqa: E402

FAST_CLASSES = list(fdd.FAST_SCHEDULERS.values())
ids = [cls.__name__ for cls in FAST_CLASSES]


# --------------------------------------------------------------------------------------------------
# 1. signatures: pipelines read them (retrieve_timesteps: set_timesteps' `timesteps` / `sigmas`)


def parameters(fn) -> list[tuple]:
    """What callers see of a signature: names, kinds and defaults (annotations may be strings or objects)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("fast_cls", FAST_CLASSES, ids=ids)
def test_signatures_are_the_parents(fast_cls):
    parent, fast = fast_cls._parent, fast_cls()
    for name in ("__init__", "set_timesteps", "step", "scale_model_input", "add_noise", "scale_noise"):
        if not hasattr(parent, name):
            continue
        assert parameters(getattr(fast_cls, name)) == parameters(getattr(parent, name)), name
        if name != "__init__":
            assert parameters(getattr(fast, name)) == parameters(getattr(parent(), name)), name


@pytest.mark.parametrize(
    "parent_cls, kw",
    [
        (diffusers.FlowMatchEulerDiscreteScheduler, dict(sigmas=[1.0, 0.75, 0.5, 0.25])),  # as FluxPipeline
        (diffusers.FlowMatchEulerDiscreteScheduler, dict(timesteps=[1000.0, 600.0, 300.0])),
        (diffusers.EulerDiscreteScheduler, dict(sigmas=[14.6, 4.0, 1.0, 0.1])),
        (diffusers.EulerDiscreteScheduler, dict(timesteps=[999, 600, 300, 50])),
        (diffusers.DDPMScheduler, dict(timesteps=[900, 500, 100, 0])),
        (diffusers.HeunDiscreteScheduler, dict(timesteps=[999, 500, 100])),
        (diffusers.DPMSolverMultistepScheduler, dict(timesteps=[999, 600, 300, 100])),
    ],
    ids=lambda v: getattr(v, "__name__", ",".join(v) if isinstance(v, dict) else ""),
)
def test_retrieve_timesteps_custom_schedules(parent_cls, kw):
    """diffusers' retrieve_timesteps (every pipeline's) accepts the custom schedules the parent accepts, and the
    schedule is the parent's."""
    parent, fast = parent_cls(), fdd.fast_scheduler(parent_cls())
    want, n_want = retrieve_timesteps(parent, None, "cpu", **copy.deepcopy(kw))
    got, n_got = retrieve_timesteps(fast, None, "cpu", **copy.deepcopy(kw))
    assert n_got == n_want and torch.equal(got, want)
    assert torch.equal(fast.sigmas, parent.sigmas) if hasattr(parent, "sigmas") else True


# --------------------------------------------------------------------------------------------------
# 2. saved as the parent (pipelines: tests/test_dropin_pipelines.py)


SAVED_OPTIONS = {  # a non-default option to save, where the parent has no steps_offset
    diffusers.FlowMatchEulerDiscreteScheduler: dict(shift=3.0),
    diffusers.DPMSolverSinglestepScheduler: dict(solver_order=3),
    diffusers.EDMEulerScheduler: dict(rho=5.0),
    diffusers.EDMDPMSolverMultistepScheduler: dict(rho=5.0),
    # (unseeded, its Brownian tree differs from run to run)
    diffusers.DPMSolverSDEScheduler: dict(steps_offset=1, noise_sampler_seed=0),
}


@pytest.mark.parametrize("fast_cls", FAST_CLASSES, ids=ids)
def test_saved_config_loads_as_parent_and_back(fast_cls, tmp_path):
    parent_cls = fast_cls._parent
    kw = SAVED_OPTIONS.get(parent_cls, dict(steps_offset=1))
    fast = fast_cls(**kw)
    fast.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert saved["_class_name"] == parent_cls.__name__
    plain = parent_cls.from_pretrained(tmp_path)
    back = fast_cls.from_pretrained(tmp_path)
    assert type(plain) is parent_cls and type(back) is fast_cls
    for loaded in (plain, back, fdd.fast_scheduler(plain)):
        assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
            k: v for k, v in fast.config.items() if not k.startswith("_")
        }
    model = fake_flow_model if parent_cls is diffusers.FlowMatchEulerDiscreteScheduler else fake_model
    x_T = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    assert_loops_equal(run_loop(back, 6, x_T, model=model), run_loop(fast_cls(**kw), 6, x_T, model=model))
    assert_loops_equal(run_loop(back, 6, x_T, model=model), run_loop(plain, 6, x_T, model=model))


# --------------------------------------------------------------------------------------------------
# 3. state as the parent keeps it: Heun's second stage reads the sample it is given


def _heun_loop(sched, x_T, cfg_hook, model=fake_model, dtype=torch.float32):
    sched.set_timesteps(8)
    x = (x_T * sched.init_noise_sigma).to(dtype)
    outs = []
    for i, t in enumerate(sched.timesteps):
        out = model(sched.scale_model_input(x, t), t.expand(x.shape[0])).to(dtype)
        x = cfg_hook(i, sched.step(out, t, x).prev_sample)  # a callback_on_step_end: after every stage
        outs.append(x)
    return outs


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("hook", ["scale", "inpaint_blend", "pipeline_scaled_input"])
def test_heun_latents_changed_between_stages(prediction_type, hook):
    """A callback or an inpainting blend changes the latents between Heun's stages; diffusers' own Heun tests
    even pass the scaled model input as the sample. The Fast scheduler gives the parent's result: within
    max(RTOL, 2 x the parent's float32 error) of the parent run in float64."""
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    keep = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    mask = (torch.arange(16).reshape(4, 4) % 3 == 0).to(torch.float32)

    def changed(i, x):
        if hook == "scale":
            return x * 0.9 + 0.05
        if hook == "inpaint_blend":
            return (1 - mask) * keep.to(x.dtype) * (i + 1) + mask * x
        return x

    cfg = dict(prediction_type=prediction_type)
    runs = []
    for sched, dtype in [(diffusers.HeunDiscreteScheduler(**cfg), torch.float64),
                         (diffusers.HeunDiscreteScheduler(**cfg), torch.float32),
                         (fdd.FastHeunDiscreteScheduler(**cfg), torch.float32)]:  # fmt: skip
        if hook == "pipeline_scaled_input":  # as diffusers' test_full_loop_*: sample = scale_model_input(sample)
            sched.set_timesteps(8)
            x, outs = (x_T * sched.init_noise_sigma).to(dtype), []
            for t in sched.timesteps:
                x = sched.scale_model_input(x, t)
                x = sched.step(fake_model(x, t.expand(2)).to(dtype), t, x).prev_sample
                outs.append(x)
            runs.append(outs)
        else:
            runs.append(_heun_loop(sched, x_T, changed, dtype=dtype))
    exact, want, got = runs
    for i, (e, w, g) in enumerate(zip(exact, want, got)):
        err_parent = (w.double() - e).abs().max().item()
        err_fast = (g.double() - e).abs().max().item()
        assert err_fast <= max(RTOL * e.abs().max().item(), 2 * err_parent), (i, err_fast, err_parent)


def test_heun_first_stage_fast_second_stage_parent():
    """The parent's second stage reads the first stage's (lazy) derivative; the latents changed in between."""
    x_T = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3))
    outs = []
    for sched in (diffusers.HeunDiscreteScheduler(), fdd.FastHeunDiscreteScheduler()):
        sched.set_timesteps(5)
        x = x_T * sched.init_noise_sigma
        for t in sched.timesteps:
            out = fake_model(sched.scale_model_input(x, t), t.expand(2))
            step = type(sched).step if sched.state_in_first_order else diffusers.HeunDiscreteScheduler.step
            x = 0.95 * step(sched, out, t, x).prev_sample
        outs.append(x)
    assert rel_err(outs[1], outs[0]) <= RTOL


# --------------------------------------------------------------------------------------------------
# 4. a repeated sigma is a zero-length step


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("algorithm_type", ["dpmsolver++", "sde-dpmsolver++", "dpmsolver"])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_dpmsolver_karras_sigma_min(order, prediction_type, algorithm_type, solver_type):
    """ "DPM++ 2M Karras" with final_sigmas_type="sigma_min" at 20+ steps ends with a step from sigma_min to
    sigma_min (h = 0). It is the zero-length step x' = x (the parent's 2M midpoint gives that too; its other
    updates divide 0 by 0 there and return NaN); every earlier step is the parent's."""
    cfg = dict(
        solver_order=order,
        solver_type=solver_type,
        algorithm_type=algorithm_type,
        prediction_type=prediction_type,
        use_karras_sigmas=True,
        final_sigmas_type="sigma_min",
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
    )
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    want = run_loop(diffusers.DPMSolverMultistepScheduler(**cfg), 22, x_T, seed=1)
    fast = fdd.FastDPMSolverMultistepScheduler(**cfg)
    got = run_loop(fast, 22, x_T, seed=1)
    assert fast.sigmas[-1] == fast.sigmas[-2]
    assert_loops_equal(got[:-1], want[:-1])
    assert torch.equal(got[-1].prev_sample, got[-2].prev_sample)
    if torch.isfinite(want[-1].prev_sample).all():
        assert rel_err(got[-1].prev_sample, want[-1].prev_sample) <= RTOL


# --------------------------------------------------------------------------------------------------
# 5. diffusers' whole thresholding range


@pytest.mark.parametrize(
    "parent_cls",
    [diffusers.DDIMScheduler, diffusers.DDPMScheduler, diffusers.DPMSolverMultistepScheduler,
     diffusers.UniPCMultistepScheduler],
    ids=lambda c: c.__name__,
)  # fmt: skip
@pytest.mark.parametrize("threshold", [dict(sample_max_value=0.5), dict(dynamic_thresholding_ratio=0.0)])
def test_threshold_range(parent_cls, threshold):
    """sample_max_value < 1 (torch.clamp(s, 1, max) gives max) and ratio 0, as diffusers' own tests use them."""
    x_T = 2 * torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    compare(parent_cls, dict(thresholding=True, **threshold), 8, x_T, 0)


# --------------------------------------------------------------------------------------------------
# 6. statistics of every fused call of a step


def test_unipc_threshold_stats_count_the_conversion():
    """A UniPC step with a corrector is two fused calls (conversion + corrector, then predictor): the clip count
    is the conversion's, the sample stats the predictor's."""
    cfg = dict(thresholding=True, sample_max_value=1.0, dynamic_thresholding_ratio=0.5, solver_order=2)
    s = fdd.FastUniPCMultistepScheduler(**cfg)
    s.set_timesteps(6)
    x = 3 * torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(6))
    for i, t in enumerate(s.timesteps):
        out = fake_model(x, t.expand(2))
        alpha, sigma, _ = s._alpha_sigma_lambda(i)
        x0 = (x.double() - sigma * out.double()) / alpha  # the epsilon model's x0 before thresholding
        scale = ops.threshold_scale(x0.float(), 0.5, 1.0).double().reshape(2, 1, 1, 1)
        prev = s.step(out, t, x).prev_sample
        stats = s.last_step_stats
        assert int(stats.clipped) == int((x0.abs() > scale).sum()) > 0, i
        assert stats.to_dict()["sample_max"] == pytest.approx(prev.max().item(), rel=1e-6), i
        x = prev


# --------------------------------------------------------------------------------------------------
# 7. the config is checked whenever it may have changed


def test_config_changed_after_construction_is_checked():
    s = fdd.FastDPMSolverMultistepScheduler()
    s.register_to_config(thresholding=True, sample_max_value=0.0)
    with pytest.raises(NotImplementedError, match="sample_max_value=0.0"):
        s.set_timesteps(10)
    s = fdd.FastDDPMScheduler()
    s.set_timesteps(10)
    s.register_to_config(variance_type="learned_range")
    with pytest.raises(NotImplementedError, match="variance_type='learned_range'"):
        s.step(torch.zeros(1, 4), s.timesteps[0], torch.zeros(1, 4))


def test_config_changed_after_construction_runs_the_changed_maths():
    """dpmsolver++ -> dpmsolver by register_to_config: the Fast scheduler follows the config, as the parent."""
    x_T = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(7))
    cfg = dict(algorithm_type="dpmsolver", final_sigmas_type="sigma_min")
    parent, fast = diffusers.DPMSolverMultistepScheduler(), fdd.FastDPMSolverMultistepScheduler()
    for s in (parent, fast):
        s.register_to_config(**cfg)
    assert_loops_equal(run_loop(fast, 10, x_T), run_loop(parent, 10, x_T))
    assert_loops_equal(run_loop(fast, 10, x_T), run_loop(diffusers.DPMSolverMultistepScheduler(**cfg), 10, x_T))


@pytest.mark.parametrize(
    "parent_cls, step_kws",
    [
        (diffusers.DDIMScheduler, [dict(eta=0.0), dict(eta=0.7), dict(eta=0.7, use_clipped_model_output=True)]),
        (diffusers.EulerDiscreteScheduler, [dict(), dict(s_churn=8.0), dict(s_churn=8.0, s_noise=0.5)]),
        (diffusers.DPMSolverMultistepScheduler, [dict(), dict(), dict()]),
        (diffusers.EDMEulerScheduler, [dict(), dict(s_churn=8.0), dict(s_churn=8.0, s_noise=0.5)]),
        (diffusers.TCDScheduler, [dict(eta=0.3), dict(eta=0.0), dict(eta=0.8)]),
        (diffusers.LCMScheduler, [dict(), dict(), dict()]),
        (diffusers.DDPMScheduler, [dict(), dict(), dict()]),
        (diffusers.DEISMultistepScheduler, [dict(), dict(), dict()]),
        (diffusers.EDMDPMSolverMultistepScheduler, [dict(), dict(), dict()]),
        (diffusers.HeunDiscreteScheduler, [dict(), dict(), dict()]),  # a change may fall between the stages
        (diffusers.KDPM2DiscreteScheduler, [dict(), dict(), dict()]),
        (diffusers.KDPM2AncestralDiscreteScheduler, [dict(), dict(), dict()]),
        (diffusers.PNDMScheduler, [dict(), dict(), dict()]),
        (diffusers.LMSDiscreteScheduler, [dict(), dict(order=2), dict(order=3)]),
    ],
)
def test_planned_coefficients_follow_arguments_and_config_changes(parent_cls, step_kws):
    """A step's coefficients are planned once per schedule and config (base._planned): step arguments changed
    between steps, a config changed between steps (register_to_config), and a second loop over the same schedule
    (the plan is kept) with the arguments in the other order (the same step index, other arguments) give the
    changed maths, as the parent's step."""
    g = torch.Generator().manual_seed(3)
    x, out = torch.randn(2, 4, 8, generator=g), torch.randn(2, 4, 8, generator=g)
    parent, fast = parent_cls(), fdd.fast_scheduler(parent_cls())
    first = [(kw, None) for kw in step_kws]
    second = [(kw, None) for kw in reversed(step_kws)] + [(step_kws[0], dict(prediction_type="v_prediction"))]
    for steps in (first, second):
        for s in (parent, fast):
            s.set_timesteps(10)
        for k, (kw, change) in enumerate(steps):
            if change:
                for s in (parent, fast):
                    s.register_to_config(**change)
            t = parent.timesteps[k if hasattr(parent, "_step_index") else 0]  # DDIM: the same step, other arguments
            results = []
            for s in (parent, fast):
                s.scale_model_input(x, t)
                extra = (
                    {"generator": torch.Generator().manual_seed(k)}
                    if "generator" in inspect.signature(s.step).parameters
                    else {}
                )
                results.append(s.step(out, t, x, **kw, **extra).prev_sample)
            assert rel_err(results[1], results[0]) < RTOL, (k, kw, change)
            x = results[0]


@pytest.mark.parametrize(
    "parent_cls",
    [
        diffusers.HeunDiscreteScheduler,
        diffusers.KDPM2DiscreteScheduler,
        diffusers.KDPM2AncestralDiscreteScheduler,
        diffusers.PNDMScheduler,
        diffusers.LMSDiscreteScheduler,
    ],
)
def test_planned_coefficients_follow_the_schedule(parent_cls):
    """The plan is kept while set_timesteps makes the same schedule (NaNs included: KDPM2's `sigmas_interpol` and
    `sigmas_up` hold some), and dropped for another number of steps: loops of 6, 9 and 6 steps on the same
    schedulers give the parent's results."""
    x_T = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(5))
    parent, fast = parent_cls(), fdd.fast_scheduler(parent_cls())
    for n in (6, 9, 6):
        assert_loops_equal(run_loop(fast, n, x_T), run_loop(parent, n, x_T))
    plan = fast._fast_plan
    assert plan is not None and len(plan) > 1
    fast.set_timesteps(6)
    assert fast._fast_plan is plan
    fast.set_timesteps(7)
    assert fast._fast_plan is None


# --------------------------------------------------------------------------------------------------
# 8. compatibles and conversion


@pytest.mark.parametrize("fast_cls", FAST_CLASSES, ids=ids)
def test_compatibles(fast_cls):
    compatibles = fast_cls().compatibles
    assert fast_cls._parent in compatibles and fast_cls in compatibles
    assert set(fast_cls._parent().compatibles) <= set(compatibles)


def test_fast_scheduler_conversions():
    class Renamed(diffusers.EulerDiscreteScheduler):  # a subclass with no behaviour of its own
        pass

    class OwnStep(diffusers.DDIMScheduler):
        def step(self, *args, **kwargs):
            return super().step(*args, **kwargs)

    assert type(fdd.fast_scheduler(Renamed(use_karras_sigmas=True))) is fdd.FastEulerDiscreteScheduler
    assert fdd.fast_scheduler(Renamed(use_karras_sigmas=True)).config.use_karras_sigmas
    with pytest.raises(TypeError, match="OwnStep, a subclass of DDIMScheduler that defines step"):
        fdd.fast_scheduler(OwnStep())
    fast = fdd.FastDDIMScheduler(clip_sample=False)
    fast.fused_backend = "torch"
    again = fdd.fast_scheduler(fast)
    assert again is not fast and again.fused_backend == "torch" and not again.config.clip_sample
    assert fdd.fast_scheduler(fdd.FastDDIMScheduler()).fused_backend == "auto"


# --------------------------------------------------------------------------------------------------
# 9. the options once refused, against the parent


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("algorithm_type", ["dpmsolver", "sde-dpmsolver"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_dpmsolver_noise_prediction(order, solver_type, algorithm_type, prediction_type):
    """The noise-prediction DPM-Solver and its SDE form (deprecated in diffusers, still run by it), 20 steps
    lockstep; the SDE form has no 3rd-order update in the parent (it fails there), nor here."""
    cfg = dict(
        solver_order=order,
        solver_type=solver_type,
        algorithm_type=algorithm_type,
        prediction_type=prediction_type,
        final_sigmas_type="sigma_min",
        lower_order_final=False,
    )
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(8))
    if algorithm_type == "sde-dpmsolver" and order == 3:
        with pytest.raises(UnboundLocalError):  # the parent's own failure (x_t never assigned)
            run_loop(diffusers.DPMSolverMultistepScheduler(**cfg), 20, x_T)
        with pytest.raises(ValueError, match="no 3rd-order update"):
            run_loop(fdd.FastDPMSolverMultistepScheduler(**cfg), 20, x_T)
        return
    compare(diffusers.DPMSolverMultistepScheduler, cfg, 20, x_T, 2)


@pytest.mark.parametrize("stochastic", [False, True])
def test_flow_match_invert_sigmas(stochastic):
    """invert_sigmas (Mochi): flow times rising from 0 to 1."""
    x_T = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(9))
    cfg = dict(invert_sigmas=True, stochastic_sampling=stochastic, shift=3.0)
    compare(diffusers.FlowMatchEulerDiscreteScheduler, cfg, 10, x_T, 3, model=fake_flow_model)


@pytest.mark.parametrize(
    "parent_cls", [diffusers.DDIMScheduler, diffusers.DDPMScheduler, diffusers.HeunDiscreteScheduler],
    ids=lambda c: c.__name__,
)  # fmt: skip
def test_clip_sample_range_inf(parent_cls):
    """clip_sample with an infinite range clips nothing (NaN stays NaN, as torch.clamp(-inf, inf))."""
    x_T = 4 * torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(10))
    fast = compare(parent_cls, dict(clip_sample=True, clip_sample_range=math.inf), 6, x_T, 4)
    assert int(fast.last_step_stats.clipped) == 0


def test_unipc_noise_prediction_free_running():
    """predict_x0=False over 25 steps on its own trajectory, within the precision rule (compare_free_running)."""
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(11))
    cfg = dict(predict_x0=False, solver_order=3, final_sigmas_type="sigma_min")
    compare_free_running(diffusers.UniPCMultistepScheduler, cfg, 25, x_T)


def test_euler_ancestral_sample_prediction_is_the_parents_refusal():
    for sched in (diffusers.EulerAncestralDiscreteScheduler, fdd.FastEulerAncestralDiscreteScheduler):
        s = sched(prediction_type="sample")
        s.set_timesteps(4)
        with pytest.raises(NotImplementedError, match="prediction_type not implemented yet: sample"):
            s.step(torch.zeros(1, 4), s.timesteps[0], torch.zeros(1, 4))
