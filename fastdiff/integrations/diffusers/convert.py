"""`fast_scheduler`: a diffusers scheduler to its Fast* twin, with the same config."""

from __future__ import annotations

from .base import FusedScheduler
from .consistency import FastLCMScheduler, FastTCDScheduler
from .ddim import FastDDIMScheduler
from .ddpm import FastDDPMScheduler
from .deis import FastDEISMultistepScheduler
from .dpmsolver import FastDPMSolverMultistepScheduler
from .dpmsolver_sde import FastDPMSolverSDEScheduler
from .edm import FastEDMDPMSolverMultistepScheduler, FastEDMEulerScheduler
from .euler import FastEulerAncestralDiscreteScheduler, FastEulerDiscreteScheduler
from .flow import FastFlowMatchEulerDiscreteScheduler
from .heun import FastHeunDiscreteScheduler
from .kdpm2 import FastKDPM2AncestralDiscreteScheduler, FastKDPM2DiscreteScheduler
from .lms import FastLMSDiscreteScheduler
from .pndm import FastPNDMScheduler
from .singlestep import FastDPMSolverSinglestepScheduler
from .unipc import FastUniPCMultistepScheduler

FAST_SCHEDULERS: dict[type, type] = {
    cls._parent: cls
    for cls in (
        FastDDPMScheduler,
        FastDDIMScheduler,
        FastEulerDiscreteScheduler,
        FastEulerAncestralDiscreteScheduler,
        FastHeunDiscreteScheduler,
        FastFlowMatchEulerDiscreteScheduler,
        FastDPMSolverMultistepScheduler,
        FastUniPCMultistepScheduler,
        FastPNDMScheduler,
        FastLMSDiscreteScheduler,
        FastKDPM2DiscreteScheduler,
        FastKDPM2AncestralDiscreteScheduler,
        FastDPMSolverSDEScheduler,
        FastLCMScheduler,
        FastTCDScheduler,
        FastDEISMultistepScheduler,
        FastDPMSolverSinglestepScheduler,
        FastEDMEulerScheduler,
        FastEDMDPMSolverMultistepScheduler,
    )
}


def fast_scheduler(scheduler) -> FusedScheduler:
    """The Fast* scheduler with the same config as `scheduler` (a diffusers scheduler instance).

    A subclass of a supported class converts to its supported ancestor's Fast* class, unless it defines
    methods of its own (the fused step would silently replace them). A Fast* scheduler is returned as a fresh
    one of its own class, with the same `fused_backend`. Unknown classes raise TypeError naming the supported
    ones; a config option the fused step cannot honour raises NotImplementedError.

    >>> from diffusers import EulerDiscreteScheduler
    >>> type(fast_scheduler(EulerDiscreteScheduler())).__name__
    'FastEulerDiscreteScheduler'
    """
    cls = type(scheduler)
    if isinstance(scheduler, FusedScheduler):
        fast = cls
    else:
        parent = next((c for c in cls.__mro__ if c in FAST_SCHEDULERS), None)
        if parent is None:
            supported = ", ".join(p.__name__ for p in FAST_SCHEDULERS)
            raise TypeError(f"fast_scheduler got a {cls.__module__}.{cls.__name__}; supported: {supported}")
        own = sorted(
            name
            for c in cls.__mro__[: cls.__mro__.index(parent)]
            for name, value in vars(c).items()
            if callable(value) and not (name.startswith("__") and name.endswith("__"))
        )
        if own:
            raise TypeError(
                f"fast_scheduler got a {cls.__name__}, a subclass of {parent.__name__} that defines "
                f"{', '.join(own)}: the fused {parent.__name__} would replace them; convert a {parent.__name__}"
            )
        fast = FAST_SCHEDULERS[parent]
    converted = fast.from_config(scheduler.config)
    if "fused_backend" in vars(scheduler):
        converted.fused_backend = scheduler.fused_backend
    return converted
