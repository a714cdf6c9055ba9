"""What a native sampler is: a precomputed plan of generic steps, one model call each.

A sampler is host maths only. Building one (`ddim(schedule, 50)`, `make_sampler("euler", ...)`) computes,
in float64, every step's `StepCoeffs` plus what the loop must feed the model and keep for later steps:

    x_in  = input_scale * x                          (Euler family: x / sqrt(1 + sigma^2), diffusers' scale_model_input)
    out   = model(x_in, t)                           (t = `model_time`, see "Model-call convention" below)
    x'    = fused_step(x, out, coeffs, history=[earlier tensors named by `history`])

so every step is exactly one `fastdiff.fused_step` call, and a whole loop can also become a device-side
`CoeffTable` (CUDA graphs). A step's history names earlier steps' tensors by step index: ("x0", j) is the
x0 (clipped) that step j computed, ("x", j) the sample step j started from, ("z", j) the noise step j drew
(for noise correlated across steps, e.g. the two stages of DPM++ SDE); the loop keeps exactly the tensors
that later steps name and frees each after its last use.

Model-call convention (documented once, here):

    VP samplers (ddpm, ddim, pndm, deis, unipc, dpmpp,  model(x, t): t the integer training timestep (int64)
      lcm, tcd, dpm_singlestep on a VP schedule)
    Euler family (euler, euler_ancestral, heun, lms,    model(x / sqrt(1 + sigma^2), t): t the fractional training
      dpm_2, dpm_2_ancestral, dpmpp_2s_ancestral,       timestep of the VE noise level sigma (float32), as diffusers
      dpmpp_sde)
    EDM (edm_euler, edm_dpmpp)                          model(x / sqrt(sigma^2 + sigma_data^2), t): t = log(sigma) / 4
    flow (flow_euler, dpmpp on flow sigmas)             model(x, t): t = sigma * num_train_timesteps (float32),
                                                        sigma in [0, 1] the flow time (diffusers' FlowMatch convention)

`t` is passed as a fresh tensor of shape [batch] on the sample's device (the model may edit it in place).

`sample()` takes x_T ~ N(0, I), the variance-preserving / flow sample at the start, and starts the loop
from `x_T * init_noise_sigma` (the Euler family works on the VE sample x / alpha = x sqrt(1 + sigma^2)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from .. import param
from ..step import CoeffTable, StepCoeffs

# ("x0", j): the x0 step j computed; ("x", j): the sample step j started from; ("z", j): the noise step j drew
HISTORY_KINDS = ("x0", "x", "z")

PATHS = ("vp", "ve", "flow")
VP_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
FLOW_PREDICTION_TYPES = ("flow", "sample", "epsilon")


@dataclass(frozen=True)
class PlannedStep:
    """One model call and the generic step that consumes its output.

    history: the earlier tensors passed as `history` to the fused step, in `coeffs.ph` order, each named
        (kind, j) with kind "x0" (the x0 step j computed, after clipping), "x" (the sample step j started
        from) or "z" (the noise step j drew), j the index of an earlier step of the same plan.
    sigma / sigma_next: the sampler's noise levels (VE sigma for diffusion samplers, flow time for flow).
    x0_from: None when the step's x0 line computes x0. A few multistep methods keep another readout s of the
        model output as their history (PNDM: the model output itself; LMS: the ODE derivative (x - x0) / sigma);
        their x0 line computes s instead, and x0 = a x + b s with (a, b) = x0_from. Such steps take no clipping.
    noise_at: (sigma, sigma_next) at which a k-diffusion noise sampler is asked for this step's noise
        (`kdiffusion`'s functions; the native loop draws from its generator).
    """

    coeffs: StepCoeffs
    model_time: float
    input_scale: float = 1.0
    history: tuple[tuple[str, int], ...] = ()
    sigma: float = math.nan
    sigma_next: float = math.nan
    x0_from: tuple[float, float] | None = None
    noise_at: tuple[float, float] | None = None

    def __post_init__(self):
        if len(self.history) != len(self.coeffs.ph):
            raise ValueError(f"{len(self.history)} history names for {len(self.coeffs.ph)} history coefficients")
        for ref in self.history:
            if not (isinstance(ref, tuple) and len(ref) == 2 and ref[0] in HISTORY_KINDS and isinstance(ref[1], int)):
                raise ValueError(f"history entries are (kind, step index) with kind in {HISTORY_KINDS}; got {ref!r}")


def check_history(steps) -> None:
    """Every history entry names an earlier step of the plan."""
    for i, st in enumerate(steps):
        for kind, j in st.history:
            if not 0 <= j < i:
                raise ValueError(f"step {i} names ({kind!r}, {j}) as history; only earlier steps 0 .. {i - 1} can be")


@dataclass(frozen=True)
class Sampler:
    """A native sampler: its name, options, and the plan of the whole loop (see module docstring).

    `path` is what the loop's x is: "vp" (alpha x0 + sigma eps with alpha^2 + sigma^2 = 1), "ve"
    (x0 + sigma eps: the Euler family) or "flow" ((1 - s) x0 + s eps). The steps' `sigma` is always the
    VE noise level sigma / alpha, except on the flow path where it is the flow time s.

    >>> from fastdiff.schedule import Schedule
    >>> from fastdiff.samplers import ddim
    >>> s = ddim(Schedule.make("linear"), 10)
    >>> len(s.steps), s.steps[0].model_time, s.time_dtype
    (10, 900, torch.int64)
    """

    name: str
    prediction_type: str
    steps: tuple[PlannedStep, ...]
    init_noise_sigma: float = 1.0
    time_dtype: torch.dtype = torch.float32
    options: dict = field(default_factory=dict)
    path: str = "vp"

    def __post_init__(self):
        if not self.steps:
            raise ValueError(f"sampler {self.name!r} has no steps")
        if self.path not in PATHS:
            raise ValueError(f"path={self.path!r} is not one of {', '.join(PATHS)}")
        check_history(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def model_times(self) -> list[float]:
        return [s.model_time for s in self.steps]

    @property
    def sigmas(self) -> list[float]:
        """The noise levels visited, with the final one: len(steps) + 1 values."""
        return [s.sigma for s in self.steps] + [self.steps[-1].sigma_next]

    def coeff_table(self, device=None) -> CoeffTable:
        """The whole loop's coefficients as a device table (history padded with zero coefficients)."""
        return CoeffTable.from_coeffs([s.coeffs for s in self.steps], device=device)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Sampler({self.name!r}, steps={len(self.steps)}, prediction_type={self.prediction_type!r}, {opts})"


# --------------------------------------------------------------------------------------------------
# shared helpers of the coefficient functions


def check_prediction_type(prediction_type: str, accepted: tuple[str, ...], sampler: str) -> str:
    """The canonical prediction type, or a ValueError saying which ones this sampler takes and why."""
    p = param.canonical(prediction_type)
    if p not in accepted:
        path = "the flow path x = (1 - s) x0 + s eps" if "flow" in accepted else "a variance-preserving schedule"
        raise ValueError(
            f"sampler {sampler!r} cannot take prediction_type={prediction_type!r}: it samples {path}; "
            f"accepted: {', '.join(accepted)}"
        )
    return p


def ve_to_vp(sigma: float) -> tuple[float, float]:
    """(alpha, sigma_vp) of the VP process at VE noise level sigma: alpha = 1 / sqrt(1 + sigma^2)."""
    alpha = 1.0 / math.sqrt(1.0 + sigma * sigma)
    return alpha, sigma * alpha


def read_ve(prediction_type: str, sigma: float) -> param.X0EpsMap:
    """The model output read as (x0, eps) for a VE sample x = x0 + sigma eps.

    The network saw x_vp = alpha x (diffusers' `scale_model_input`) and was trained on the VP process, so
    its output is converted by `param.to_x0_eps` at (alpha, sigma_vp); the x terms absorb the scale alpha.
    """
    alpha, sigma_vp = ve_to_vp(sigma)
    m = param.to_x0_eps(prediction_type, alpha, sigma_vp)
    return param.X0EpsMap(cx=m.cx * alpha, co=m.co, ex=m.ex * alpha, eo=m.eo)


def with_output_map(c: StepCoeffs, m: param.X0EpsMap) -> StepCoeffs:
    """The step `c`, written for a model whose output is x0 ("sample"), for a model whose x0 is m.cx x + m.co out.

    Only the x0 and eps lines read the output o, so substituting o -> m.cx x + m.co o gives
    cx += co m.cx, co *= m.co, ex += eo m.cx, eo *= m.co (e.g. EDM's preconditioning, `param.edm_precondition`).
    """
    return replace(c, cx=c.cx + c.co * m.cx, co=c.co * m.co, ex=c.ex + c.eo * m.cx, eo=c.eo * m.co)


def change_variables(c: StepCoeffs, in_scale: float, out_scale: float) -> StepCoeffs:
    """The same step on rescaled samples: coefficients for x = in_scale * x_new, returning out_scale * x'.

    E.g. a VP step used on VE samples (x_vp = alpha x_ve, x'_ve = x'_vp / alpha'): in_scale = alpha,
    out_scale = 1 / alpha'. History terms are left unscaled by the input side, so this is for steps whose
    history holds x0 predictions (which are the same in every scaling), or none.
    """
    return replace(
        c,
        cx=c.cx * in_scale,
        ex=c.ex * in_scale,
        px=c.px * in_scale * out_scale,
        p0=c.p0 * out_scale,
        pe=c.pe * out_scale,
        pn=c.pn * out_scale,
        ph=tuple(v * out_scale for v in c.ph),
    )


def check_steps(num_inference_steps, num_train_timesteps: int | None = None) -> int:
    """A step count >= 1 (and <= the training timesteps when given), else a ValueError naming it."""
    n = num_inference_steps
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1; got {n!r}")
    if num_train_timesteps is not None and n > num_train_timesteps:
        raise ValueError(
            f"num_inference_steps={n} is larger than the schedule's {num_train_timesteps} training timesteps; "
            f"accepted: 1 .. {num_train_timesteps}"
        )
    return n
