"""Small models that demos, tests and benchmarks train themselves."""

from .unet1d import UNet1D

__all__ = ["UNet1D"]
