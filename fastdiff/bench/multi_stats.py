"""Benchmark: stats of every parameter of a real model at once (fd.multi_tensor_stats) against a per-tensor loop.

The model is fastdiff.models.unet1d.UNet1D(channels=(64, 128, 256, 256)) (~4.2M parameters in ~80 tensors of
very different sizes; `--quick`: channels=(16, 32)), its parameters cast to each dtype. Every provider
ends with the numbers on the host:
  fastdiff-<backend>        fd.multi_tensor_stats(params).to_dict(): all 11 fields of every tensor, one call
  fastdiff-<backend>-loop   fd.tensor_stats(p).to_dict() for each parameter (one host sync per tensor)
  naive-item-loop           the 8 naive `.item()` stats for each parameter (see `fastdiff.bench.stats`)
  foreach-norm              torch._foreach_norm(params) to the host: one read of everything, only the norms
                            (the floor a one-pass multi-tensor kernel is measured against)
GB/s counts one read of every parameter.

    fastdiff bench --suite multi_stats
"""

from __future__ import annotations

import torch

import fastdiff as fd
from fastdiff.models.unet1d import UNet1D

from . import harness
from .config import BenchConfig
from .stats import naive_stats

CHANNELS = (64, 128, 256, 256)
CHANNELS_QUICK = (16, 32)


def model_parameters(channels: tuple[int, ...], dtype: torch.dtype, device: str) -> list[torch.Tensor]:
    """The parameters of a freshly initialised UNet1D (seeded), detached, cast to dtype, on device."""
    torch.manual_seed(0)
    model = UNet1D(channels=channels)
    return [p.detach().to(device=device, dtype=dtype).contiguous() for p in model.parameters()]


def providers_for(params: list[torch.Tensor], backends: list[str]) -> dict:
    p = {}
    for b in backends:
        fn = lambda b=b: fd.multi_tensor_stats(params, backend=b).to_dict()  # noqa: E731
        p.update(harness.with_baseline_isa(f"fastdiff-{b}", fn) if b == "cpp" else {f"fastdiff-{b}": fn})
        p[f"fastdiff-{b}-loop"] = lambda b=b: [fd.tensor_stats(t, backend=b).to_dict() for t in params]
    p["naive-item-loop"] = lambda: [naive_stats(t) for t in params]
    p["foreach-norm"] = lambda: torch.stack(torch._foreach_norm(params)).tolist()
    return p


def check(params: list[torch.Tensor], backends: list[str]) -> None:
    """One call over the list agrees with the per-tensor stats (before any timing)."""
    for b in backends:
        many = fd.multi_tensor_stats(params, backend=b).to_dict()
        for i in (0, len(params) // 2, len(params) - 1):
            one = fd.tensor_stats(params[i], backend=b).to_dict()
            for field in ("count", "min", "max", "mean", "l2"):
                got, want = many[field][i], one[field]
                assert abs(got - want) <= 1e-6 * max(1.0, abs(want)), f"fastdiff-{b}: {field}[{i}] {got} vs {want}"


def count_cases(cfg: BenchConfig) -> int:
    return len(cfg.dtypes)


def run(cfg: BenchConfig) -> list[dict]:
    """Rows of every (dtype, provider); `size` is the model's parameter count; see `fastdiff.bench`."""
    device = cfg.device
    channels = CHANNELS_QUICK if cfg.quick else CHANNELS
    backends = ["cpp"] if torch.device(device).type == "cpu" else ["triton"]
    backends = [b for b in backends if fd.kernels.availability(b, device)[0]] or ["torch"]
    rows = []
    for dtype in cfg.dtypes:
        params = model_parameters(channels, dtype, device)
        check(params, backends)
        n = sum(t.numel() for t in params)
        case = {
            "suite": "multi_stats",
            "op": f"multi_tensor_stats UNet1D{channels}",
            "size": n,
            "tensors": len(params),
            "dtype": harness.dtype_name(dtype),
            "device": device,
        }
        rows += harness.run_case(
            providers_for(params, backends),
            bytes_moved=n * params[0].element_size(),
            case=case,
            repeats=cfg.repeats,
            device=device,
            copy_gbps=cfg.copy_gbps,
            reference=f"fastdiff-{backends[0]}",
        )
        cfg.done()
    return rows
