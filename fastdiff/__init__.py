"""fastdiff: fused diffusion / flow-matching sampler steps and one-pass tensor statistics.

>>> import torch, fastdiff as fd
>>> fd.tensor_stats(torch.randn(1000), backend="torch").count.item()
1000
"""

from .ops import available_backends, fused_step, multi_tensor_stats, pair_stats, tensor_stats
from .probe import Recorder
from .schedule import Schedule, check_schedule
from .stats import PairStats, TensorStats
from .step import ClipRange, CoeffTable, DynamicThreshold, PhiloxNoise, StepCoeffs, StepResult

__version__ = "0.1.0"

__all__ = [
    "ClipRange",
    "CoeffTable",
    "DynamicThreshold",
    "PairStats",
    "PhiloxNoise",
    "Recorder",
    "Schedule",
    "StepCoeffs",
    "StepResult",
    "TensorStats",
    "available_backends",
    "check_schedule",
    "fused_step",
    "multi_tensor_stats",
    "pair_stats",
    "tensor_stats",
]
