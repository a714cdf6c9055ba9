"""Benchmark: one-pass tensor stats (fastdiff.tensor_stats) against the ways users compute them.

Every provider ends with the numbers on the host, as a user reading them would:
  fastdiff-<backend>  fd.tensor_stats(x, backend=...).to_dict()   (all 11 fields)
  naive-item          min, max, mean, std, isnan.sum, isinf.sum, abs.max, norm, each .item()
  aminmax+var_mean    torch.aminmax(x) and torch.var_mean(x): fewer fields, two passes
  torch.compile       the stacked naive stats compiled (compile time reported)
  read-pass           x.sum(): one read of x, the floor any one-pass kernel is measured against
GB/s counts one read of x.


    fastdiff bench --suite stats                          # CPU: 2^20, 2^22, 2^24 elements; fp32, bf16
    fastdiff bench --suite stats --sizes 24 --dtype fp32 --repeats 21
    fastdiff bench --suite stats --device cuda --sizes 24,26,28   # fastdiff-triton
"""

from __future__ import annotations

import torch

import fastdiff as fd

from . import harness
from .config import BenchConfig

TITLE = "tensor stats: fastdiff against the usual ways"


def naive_stats(x: torch.Tensor) -> list[float]:
    return [
        x.min().item(),
        x.max().item(),
        x.mean().item(),
        x.std().item(),
        torch.isnan(x).sum().item(),
        torch.isinf(x).sum().item(),
        x.abs().max().item(),
        x.norm().item(),
    ]


def aminmax_var_mean(x: torch.Tensor) -> list[float]:
    mn, mx = torch.aminmax(x)
    var, mean = torch.var_mean(x)
    return torch.stack([mn.float(), mx.float(), var.float(), mean.float()]).tolist()


def stacked_stats(x: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    return torch.stack(
        [
            xf.min(),
            xf.max(),
            xf.mean(),
            xf.std(),
            torch.isnan(xf).sum().float(),
            torch.isinf(xf).sum().float(),
            xf.abs().max(),
            xf.norm(),
        ]
    )


def providers_for(x: torch.Tensor, backends: list[str], compiled) -> dict:
    p = {}
    for b in backends:
        fn = lambda b=b: fd.tensor_stats(x, backend=b).to_dict()  # noqa: E731
        p.update(harness.with_baseline_isa(f"fastdiff-{b}", fn) if b == "cpp" else {f"fastdiff-{b}": fn})
    p["naive-item"] = lambda: naive_stats(x)
    p["aminmax+var_mean"] = lambda: aminmax_var_mean(x)
    if compiled is not None:
        p["torch.compile"] = lambda: compiled(x).tolist()
    p["read-pass"] = lambda: x.sum().item()
    return p


def check(x: torch.Tensor, backends: list[str]) -> None:
    """fastdiff's numbers agree with the naive way on this input (before any timing)."""
    want = naive_stats(x)
    # the naive float32 reductions are the less accurate side; 1e-3 relative catches a wrong kernel. In
    # 16 bits the naive results are rounded to the dtype (bf16: 2^-8 relative), so allow two of its ulps.
    tol = max(1e-3, 2 * torch.finfo(x.dtype).eps) if x.dtype.is_floating_point else 1e-3
    for b in backends:
        d = fd.tensor_stats(x, backend=b).to_dict()
        got = [d["min"], d["max"], d["mean"], d["std"], d["nan_count"], d["posinf_count"] + d["neginf_count"],
               d["absmax"], d["l2"]]  # fmt: skip
        for g, w in zip(got, want):
            assert abs(g - w) <= tol * max(1.0, abs(w)), f"fastdiff-{b}: {got} vs naive {want}"


def count_cases(cfg: BenchConfig) -> int:
    return len(cfg.sizes) * len(cfg.dtypes)


def run(cfg: BenchConfig) -> list[dict]:
    """Rows of every (size, dtype, provider); see `fastdiff.bench` for the fields."""
    device = cfg.device
    backends = ["cpp"] if torch.device(device).type == "cpu" else ["triton"]
    backends = [b for b in backends if fd.kernels.availability(b, device)[0]] or ["torch"]
    reference = f"fastdiff-{backends[0]}"
    rows = []
    for dtype in cfg.dtypes:
        compiled = torch.compile(stacked_stats, dynamic=False) if cfg.compile else None
        for n in cfg.sizes:
            gen = torch.Generator(device=device).manual_seed(n)
            x = torch.randn(n, generator=gen, device=device).to(dtype)
            check(x, backends)
            case = {"suite": "stats", "op": "tensor_stats", "size": n, "dtype": harness.dtype_name(dtype)}
            rows += harness.run_case(
                providers_for(x, backends, compiled),
                bytes_moved=n * x.element_size(),
                case={**case, "device": device},
                repeats=cfg.repeats,
                device=device,
                copy_gbps=cfg.copy_gbps,
                reference=reference,
                first_call_fields={"torch.compile": "compile_s"},
            )
            del x
            cfg.done()
    return rows
