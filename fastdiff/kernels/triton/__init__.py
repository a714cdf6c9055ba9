"""The `triton` backend: the backend interface (fastdiff/kernels/__init__.py) on Triton kernels.

Runs on CUDA tensors, and on CPU tensors under the Triton interpreter (`TRITON_INTERPRET=1`, how CI
checks every kernel against the oracle). Files: layout.py (how a kernel walks any strided view),
tiles.py (super-tile addressing), moments.py (per-lane one-pass moments and Chan merges), stats.py
(tensor / pair / multi-tensor stats and the merge kernels), step.py (the fused step), philox.py
(in-kernel noise), config.py (tile shapes and grid sizes).

>>> import os, torch, fastdiff as fd
>>> if os.environ.get("TRITON_INTERPRET") == "1":
...     print(fd.tensor_stats(torch.arange(5.0), backend="triton").std.item())
... else:
...     print(1.5811388300841898)
1.5811388300841898
"""

from __future__ import annotations

import contextlib

import torch

from .. import torch_backend, triton_interpret
from ..launch import StepLaunch
from . import stats as _stats
from . import step as _step
from .philox import philox_normal

__all__ = ["fused_step", "multi_tensor_stats", "pair_stats", "philox_normal", "tensor_stats", "supports_philox"]

# fused_step can draw noise in the kernel from fastdiff.step.PhiloxNoise
supports_philox = True


def _check(*tensors: torch.Tensor) -> torch.device:
    """Clear errors before any launch: device the kernels can run on, one device, element-aligned data."""
    device = tensors[0].device
    for t in tensors:
        if t.device != device:
            raise ValueError(f"tensors on different devices ({device} and {t.device}); the Triton backend needs one")
        if not (t.device.type == "cuda" or (t.device.type == "cpu" and triton_interpret())):
            raise RuntimeError(
                f"the Triton backend runs on CUDA tensors (or CPU tensors with TRITON_INTERPRET=1); got {t.device}"
            )
        if t.numel() and t.data_ptr() % t.element_size():
            raise ValueError(
                f"a {t.dtype} tensor at address {t.data_ptr():#x} is not aligned to its element size "
                f"({t.element_size()} bytes); Triton loads need element-aligned data: pass a .clone()"
            )
    return device


def _guard(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def tensor_stats(x: torch.Tensor, per_sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    with _guard(_check(x)):
        return _stats.tensor_stats(x, per_sample)


def pair_stats(a: torch.Tensor, b: torch.Tensor, per_sample: bool) -> torch.Tensor:
    with _guard(_check(a, b)):
        return _stats.pair_stats(a, b, per_sample)


def multi_tensor_stats(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with _guard(_check(*xs)):
        return _stats.multi_tensor_stats(xs)


def update_stats(params: list[torch.Tensor], snapshot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not params:
        return torch_backend.update_stats(params, snapshot)
    with _guard(_check(*params, snapshot)):
        return torch_backend.update_stats(params, snapshot, stats=_stats.multi_tensor_stats)


def fused_step(launch: StepLaunch):
    tensors = [launch.x, launch.out, launch.prev_out]
    tensors += [t for t in (launch.uncond, launch.noise, launch.x0_out, launch.threshold_scale) if t is not None]
    tensors += list(launch.history)
    if launch.table is not None:
        tensors += [launch.table, launch.table_index]
    philox = getattr(launch, "philox", None)
    if philox is not None and isinstance(philox.offset, torch.Tensor):
        tensors.append(philox.offset)
    with _guard(_check(*tensors)):
        return _step.fused_step(launch, philox)
