"""The coefficient functions against diffusers' step() maths in float64: the groundwork of the drop-in schedulers.

Each test sets up a diffusers scheduler, converts its float state (sigmas, alphas_cumprod, ...) to float64, and
builds the generic steps from that scheduler's own arrays with this package's coefficient functions (what a
drop-in `Fast*` scheduler does). Then at every step both sides get the same float64 sample and model output,
fresh ones each step (any inputs are valid; fresh ones make a stale state show), and the same noise (diffusers'
draws are recorded); the fused step (float64 oracle) must equal `scheduler.step()` within 1e-10 relative.
diffusers' EDMEulerScheduler.step casts the sample to float32 itself, so it is compared at float32 precision.
"""

from __future__ import annotations

import sys

import pytest
import torch

from fastdiff import DynamicThreshold, reference
from fastdiff.samplers import (
    deis_plan,
    dpm2_plan,
    dpmpp_sde_plan,
    edm_dpmpp_plan,
    edm_euler_coeffs,
    lcm,
    lcm_coeffs,
    lms_plan,
    pndm,
    singlestep_plan,
    tcd,
    unipc_plan,
    ve_to_vp,
)
from fastdiff.schedule import Schedule
from fastdiff.step import normalize_clip

diffusers = pytest.importorskip("diffusers")

RTOL = 1e-10
SHAPE = (2, 3, 4)


def float64_state(sched) -> None:
    """The scheduler's float tensors (its state and tables) in float64, so that its step runs in float64."""
    for name, value in vars(sched).items():
        if name != "timesteps" and isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(sched, name, value.double())


class NoiseRecorder:
    """Records the noise a scheduler draws in step() (randn_tensor of its module, or its noise sampler)."""

    def __init__(self, sched, monkeypatch):
        self.drawn: list[torch.Tensor] = []
        module = sys.modules[type(sched).__module__]
        if hasattr(module, "randn_tensor"):
            real = module.randn_tensor

            def record(*args, **kwargs):
                z = real(*args, **kwargs)
                self.drawn.append(z)
                return z

            monkeypatch.setattr(module, "randn_tensor", record)
        gen = torch.Generator().manual_seed(99)
        if hasattr(sched, "noise_sampler"):  # DPMSolverSDEScheduler: a noise sampler instead of randn_tensor

            def sampler(sigma, sigma_next):
                z = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
                self.drawn.append(z)
                return z

            sched.noise_sampler = sampler

    def take(self) -> torch.Tensor | None:
        z = self.drawn[-1] if self.drawn else None
        self.drawn.clear()
        return z


def compare(sched, steps, monkeypatch, *, step_kw=None, clip=None, rtol=RTOL, chain=False, nan_last=False) -> float:
    """Step diffusers and the planned fused steps side by side; returns the worst relative difference.

    chain: each step starts from the previous step's result (for plans that rely on it, see `test_unipc`)."""
    float64_state(sched)
    clip = normalize_clip(clip)
    noise = NoiseRecorder(sched, monkeypatch)
    timesteps = list(sched.timesteps)
    assert len(timesteps) == len(steps)
    g = torch.Generator().manual_seed(0)
    kept, worst, want = {}, 0.0, None
    for i, (t, st) in enumerate(zip(timesteps, steps)):
        x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
        out = torch.randn(SHAPE, generator=g, dtype=torch.float64)
        if chain and i > 0:
            x = want
        kw = dict(step_kw or {})
        if "generator" not in kw:
            kw["generator"] = torch.Generator().manual_seed(i)
        kw = {k: v for k, v in kw.items() if k in _step_params(sched)}
        if hasattr(sched, "scale_model_input"):
            sched.scale_model_input(x, t)  # as a pipeline does (some schedulers note the call)
        want = sched.step(out, t, x, **kw).prev_sample.double()
        z = noise.take()
        history = tuple(kept[ref] for ref in st.history)
        got, x0, _ = reference.generic_step(
            x, out, st.coeffs, history=history, noise=z if st.coeffs.uses_noise else None, clip=clip
        )
        kept.update({("x", i): x, ("x0", i): x0, ("z", i): z})
        if nan_last and i == len(steps) - 1:  # diffusers' own NaN (see the caller); ours is the finite limit
            assert torch.isnan(want).all() and torch.isfinite(got).all()
            continue
        err = float((got - want).abs().max() / want.abs().max())
        assert err <= rtol, f"step {i} (t={float(t)}): relative difference {err:.3g}"
        worst = max(worst, err)
    return worst


def _step_params(sched) -> set[str]:
    import inspect

    return set(inspect.signature(sched.step).parameters)


def _floats(t) -> list[float]:
    return [float(v) for v in t]


# --------------------------------------------------------------------------------------------------
# VP schedulers whose native plan is built from the same schedule: PNDM, LCM, TCD


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(
    "kw",
    [
        dict(skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False),  # Stable Diffusion 1.x
        dict(skip_prk_steps=False),
        dict(skip_prk_steps=True, timestep_spacing="trailing"),
        dict(skip_prk_steps=False, timestep_spacing="linspace", set_alpha_to_one=True),
    ],
)
def test_pndm(monkeypatch, prediction_type, kw):
    d = diffusers.PNDMScheduler(prediction_type=prediction_type, **kw)
    d.set_timesteps(15)
    smp = pndm(
        Schedule.from_alphas_cumprod(d.alphas_cumprod), 15, prediction_type=prediction_type, v_combined=True, **kw
    )
    assert smp.model_times == [int(t) for t in d.timesteps]
    compare(d, smp.steps, monkeypatch)


def _lcm_steps(d, prediction_type: str) -> list:
    """LCM steps from the scheduler's timesteps and its own boundary scalings: diffusers computes c_skip, c_out
    from an int64 timestep times a float, i.e. in float32 (c_out = 1 - 1.25e-9 at t = 999 rounds to 1); the
    drop-in passes them on, the native `lcm` computes them in float64."""
    ts = [int(t) for t in d.timesteps]
    ac = d.alphas_cumprod.double()
    steps = []
    for i, t in enumerate(ts):
        last = i == len(ts) - 1
        c_skip, c_out = (float(v) for v in d.get_scalings_for_boundary_condition_discrete(torch.tensor(t)))
        prev = float(ac[ts[i + 1]]) if not last else float(ac[t])
        steps.append(_plain(lcm_coeffs(float(ac[t]), prev, c_skip, c_out, prediction_type, last=last)))
    return steps


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("config, clip", [({}, None), (dict(clip_sample=True, clip_sample_range=0.8), 0.8)])
@pytest.mark.parametrize("n", [1, 4, 8])
def test_lcm(monkeypatch, prediction_type, config, clip, n):
    d = diffusers.LCMScheduler(prediction_type=prediction_type, **config)
    d.set_timesteps(n)
    native = lcm(Schedule.from_alphas_cumprod(d.alphas_cumprod), n, prediction_type=prediction_type)
    assert native.model_times == [int(t) for t in d.timesteps]
    compare(d, _lcm_steps(d, prediction_type), monkeypatch, clip=clip)


def test_lcm_thresholding(monkeypatch):
    d = diffusers.LCMScheduler(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5)
    d.set_timesteps(4)
    compare(d, _lcm_steps(d, "epsilon"), monkeypatch, clip=DynamicThreshold(0.9, 1.5))


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.7])
def test_tcd(monkeypatch, prediction_type, gamma):
    d = diffusers.TCDScheduler(prediction_type=prediction_type)
    d.set_timesteps(6)
    smp = tcd(Schedule.from_alphas_cumprod(d.alphas_cumprod), 6, prediction_type=prediction_type, gamma=gamma)
    assert smp.model_times == [int(t) for t in d.timesteps]
    compare(d, smp.steps, monkeypatch, step_kw=dict(eta=gamma))


# --------------------------------------------------------------------------------------------------
# schedulers on VE sigma ladders: steps built from the scheduler's own sigmas


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("order", [4, 2])
@pytest.mark.parametrize("karras", [False, True])
def test_lms(monkeypatch, prediction_type, order, karras):
    d = diffusers.LMSDiscreteScheduler(prediction_type=prediction_type, use_karras_sigmas=karras)
    d.set_timesteps(12)
    sig = _floats(d.sigmas)
    steps = lms_plan(sig, _floats(d.timesteps), order, prediction_type)
    compare(d, steps, monkeypatch, step_kw=dict(order=order))


def _interleaved_ladder(d) -> list[float]:
    """The distinct levels s0 .. s_{n-1}, 0 of a two-stage scheduler's interleaved sigmas: DPMSolverSDE keeps
    [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0], KDPM2 (ancestral) [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0, 0, 0]."""
    sig = _floats(d.sigmas)
    return sig[::2] if sig[-3:] == [0.0, 0.0, 0.0] else sig[::2] + [sig[-1]]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("karras", [False, True])
def test_kdpm2(monkeypatch, prediction_type, karras):
    d = diffusers.KDPM2DiscreteScheduler(prediction_type=prediction_type, use_karras_sigmas=karras)
    d.set_timesteps(8)
    # the scheduler's own float32 midpoints: step i's is sigmas_interpol[2 i + 1]
    mids = _floats(d.sigmas_interpol)[1::2]
    steps, _ = dpm2_plan(_interleaved_ladder(d), prediction_type, midpoints=mids)
    compare(d, steps, monkeypatch)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("karras", [False, True])
def test_kdpm2_ancestral(monkeypatch, prediction_type, karras):
    d = diffusers.KDPM2AncestralDiscreteScheduler(prediction_type=prediction_type, use_karras_sigmas=karras)
    d.set_timesteps(8)
    # the scheduler's own float32 levels: step i's at index 0 (i = 0) or 2 i - 1 of the interleaved arrays
    at = [0] + [2 * i - 1 for i in range(1, len(d.sigmas) // 2)]
    mids, downs, ups = ([_floats(a)[k] for k in at] for a in (d.sigmas_interpol, d.sigmas_down, d.sigmas_up))
    ladder = _interleaved_ladder(d)
    steps, _ = dpm2_plan(
        ladder, prediction_type, ancestral=True, midpoints=mids, ancestral_levels=list(zip(downs, ups))
    )
    compare(d, steps, monkeypatch)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("karras", [False, True])
def test_dpm_sde(monkeypatch, prediction_type, karras):
    d = diffusers.DPMSolverSDEScheduler(prediction_type=prediction_type, use_karras_sigmas=karras)
    d.set_timesteps(8)
    steps, _ = dpmpp_sde_plan(_interleaved_ladder(d), prediction_type)
    compare(d, steps, monkeypatch, step_kw=dict(s_noise=1.0))


# --------------------------------------------------------------------------------------------------
# multistep / singlestep solvers on the VP path


def _vp(d):
    return lambda sigma: tuple(float(v) for v in d._sigma_to_alpha_sigma_t(torch.tensor(sigma, dtype=torch.float64)))


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        dict(prediction_type="v_prediction", lower_order_final=False),
        dict(use_karras_sigmas=True, prediction_type="sample"),
        dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5),
    ],
)
def test_deis(monkeypatch, order, kw):
    d = diffusers.DEISMultistepScheduler(solver_order=order, **kw)
    d.set_timesteps(10)
    steps = deis_plan(
        _floats(d.sigmas), _floats(d.timesteps), kw.get("prediction_type", "epsilon"), solver_order=order,
        lower_order_final=kw.get("lower_order_final", True), alpha_sigma=_vp(d),
    )  # fmt: skip
    clip = DynamicThreshold(0.9, 1.5) if kw.get("thresholding") else None
    compare(d, steps, monkeypatch, clip=clip)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("algorithm", ["dpmsolver++", "sde-dpmsolver++"])
@pytest.mark.parametrize("kw", [{}, dict(prediction_type="v_prediction", use_karras_sigmas=True)])
def test_dpm_singlestep(monkeypatch, order, solver_type, algorithm, kw):
    d = diffusers.DPMSolverSinglestepScheduler(
        solver_order=order, solver_type=solver_type, algorithm_type=algorithm, **kw
    )
    d.set_timesteps(11)
    steps = singlestep_plan(
        _floats(d.sigmas), _floats(d.timesteps), kw.get("prediction_type", "epsilon"), list(d.order_list),
        solver_type=solver_type, sde=algorithm == "sde-dpmsolver++", alpha_sigma=_vp(d),
    )  # fmt: skip
    compare(d, steps, monkeypatch)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        dict(prediction_type="v_prediction", lower_order_final=False, final_sigmas_type="sigma_min"),
        dict(use_karras_sigmas=True, prediction_type="sample", disable_corrector=[0, 3]),
        dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5),
    ],
)
def test_unipc(monkeypatch, order, solver_type, kw):
    d = diffusers.UniPCMultistepScheduler(solver_order=order, solver_type=solver_type, **kw)
    d.set_timesteps(10)
    steps = unipc_plan(
        _floats(d.sigmas), _floats(d.timesteps), _vp(d), kw.get("prediction_type", "epsilon"), solver_order=order,
        solver_type=solver_type, lower_order_final=kw.get("lower_order_final", True),
        disable_corrector=kw.get("disable_corrector", ()),
    )  # fmt: skip
    clip = DynamicThreshold(0.9, 1.5) if kw.get("thresholding") else None
    # the plan folds UniC into the step and recovers the corrector's `last_sample` from x and the kept x0s,
    # which holds when x is the previous step's result (the native loop); a drop-in keeps last_sample instead
    # diffusers' "bh1" step into sigma = 0 computes -inf * 0 (B(h) = -h with h = inf) and returns NaN; the
    # coefficients take the limit x = x0 there, as "bh2" does
    nan_last = solver_type == "bh1" and d.config.final_sigmas_type == "zero"
    compare(d, steps, monkeypatch, clip=clip, chain=True, nan_last=nan_last)


# --------------------------------------------------------------------------------------------------
# EDM


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("kw", [{}, dict(sigma_schedule="exponential", final_sigmas_type="sigma_min")])
@pytest.mark.parametrize("churn", [{}, dict(s_churn=2.0, s_tmin=0.5, s_tmax=30.0, s_noise=1.003)])
def test_edm_euler(monkeypatch, prediction_type, kw, churn):
    from fastdiff.samplers import churn_gamma

    d = diffusers.EDMEulerScheduler(prediction_type=prediction_type, **kw)
    d.set_timesteps(10)
    sig = _floats(d.sigmas)
    steps = []
    for i in range(len(sig) - 1):
        gamma = churn_gamma(sig[i], churn.get("s_churn", 0.0), len(sig) - 1, churn.get("s_tmin", 0.0),
                            churn.get("s_tmax", float("inf")))  # fmt: skip
        c = edm_euler_coeffs(sig[i], sig[i + 1], prediction_type, d.config.sigma_data, gamma, churn.get("s_noise", 1.0))
        steps.append(_plain(c))
    # EDMEulerScheduler.step computes in float32 (sample.to(torch.float32)): compared at that precision
    compare(d, steps, monkeypatch, step_kw=churn, rtol=2e-6)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize(
    "kw",
    [{}, dict(prediction_type="v_prediction", sigma_schedule="exponential"), dict(algorithm_type="sde-dpmsolver++")],
)
def test_edm_dpmsolver_multistep(monkeypatch, order, solver_type, kw):
    if kw.get("algorithm_type") == "sde-dpmsolver++" and order == 3:
        pytest.skip("diffusers' EDM 3rd-order update has no sde-dpmsolver++ form")
    d = diffusers.EDMDPMSolverMultistepScheduler(solver_order=order, solver_type=solver_type, **kw)
    d.set_timesteps(10)
    from fastdiff.samplers import solver_orders

    sig = _floats(d.sigmas)
    orders = solver_orders(len(sig) - 1, order, final_is_zero=sig[-1] == 0.0)
    steps = edm_dpmpp_plan(
        sig, kw.get("prediction_type", "epsilon"), orders, sde=kw.get("algorithm_type") == "sde-dpmsolver++",
        solver_type=solver_type, sigma_data=d.config.sigma_data,
    )  # fmt: skip
    compare(d, steps, monkeypatch)


def _plain(c):
    from fastdiff.samplers import PlannedStep

    return PlannedStep(c, 0.0)


def test_vp_helper_is_the_package_map():
    """The schedulers' own (alpha, sigma) of a VE sigma is `ve_to_vp`'s (the native samplers use the latter)."""
    d = diffusers.UniPCMultistepScheduler()
    for s in (0.03, 1.0, 14.6):
        a, b = _vp(d)(s)
        want = ve_to_vp(s)
        assert abs(a - want[0]) <= 1e-15 and abs(b - want[1]) <= 1e-15
