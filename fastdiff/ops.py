"""The public kernels' entry points: validate, pick a backend, launch (API.md section 1 and the generic step).

>>> import torch, fastdiff as fd
>>> s = fd.tensor_stats(torch.tensor([1.0, 2.0, float("nan"), 4.0]), backend="torch")
>>> s.to_dict()["mean"], s.to_dict()["nan_count"]
(2.3333333333333335, 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import kernels
from .kernels import memory
from .kernels.launch import StepLaunch
from .stats import PairStats, TensorStats
from .step import (
    MAX_HISTORY,
    ClipRange,
    CoeffTable,
    DynamicThreshold,
    PackedStep,
    PhiloxNoise,
    StepCoeffs,
    StepResult,
    normalize_clip,
)

STEP_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def available_backends() -> list[str]:
    """Backends usable on this machine, e.g. ["torch", "cpp"] or ["torch", "triton"]."""
    return kernels.available_backends()


# --------------------------------------------------------------------------------------------------
# validation


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)} on {x.device}"
    return f"a {type(x).__name__}"


def check_stats_input(x, name: str = "x") -> torch.Tensor:
    """Any real dtype (float, integer, bool), any strided layout, CPU or CUDA; else TypeError/ValueError."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {_describe(x)}")
    if x.is_complex():
        raise TypeError(
            f"{name} is {_describe(x)}: complex tensors are not supported; "
            "accepted: real float, integer or bool tensors"
        )
    if x.layout != torch.strided or x.is_nested:
        raise TypeError(
            f"{name} has layout {x.layout}: only dense (strided) tensors are accepted; call .to_dense() first"
        )
    if x.is_quantized:
        raise TypeError(
            f"{name} is a quantized tensor; accepted: real float, integer or bool tensors (dequantize first)"
        )
    if x.is_meta:
        raise ValueError(f"{name} is a meta tensor: it has no data to compute stats of")
    return x.detach()


def _check_dim(dim, x: torch.Tensor) -> bool:
    if dim is None:
        return False
    if isinstance(dim, bool) or not isinstance(dim, int) or dim != 0:
        raise ValueError(f"dim={dim!r} is not supported; accepted: None (whole tensor) or 0 (per sample)")
    if x.dim() == 0:
        raise ValueError("dim=0 needs a tensor with at least one dimension; got a 0-d tensor")
    return True


def _check_same(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, *, dtype: bool = False) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} has shape {tuple(b.shape)} but {name_a} has shape {tuple(a.shape)}; they must match"
        )
    if a.device != b.device:
        raise ValueError(f"{name_b} is on {b.device} but {name_a} is on {a.device}; they must be on the same device")
    if dtype and a.dtype != b.dtype:
        raise ValueError(f"{name_b} has dtype {b.dtype} but {name_a} has dtype {a.dtype}; they must match")


# --------------------------------------------------------------------------------------------------
# stats


def tensor_stats(x: torch.Tensor, *, dim: int | None = None, backend: str = "auto") -> TensorStats:
    """One-pass statistics of `x` on its own device; no host sync until values are read.

    Fields: count, nan_count, posinf_count, neginf_count, zero_count (int64) and min, max, mean, std
    (unbiased), absmax, l2 (float64) over the finite elements. `dim=0`: one row per index of dim 0.

    >>> import torch, fastdiff as fd
    >>> fd.tensor_stats(torch.arange(5.0), backend="torch").std.item()
    1.5811388300841898
    """
    x = check_stats_input(x)
    per_sample = _check_dim(dim, x)
    impl = kernels.resolve(backend, x.device)
    return TensorStats(*impl.tensor_stats(x, per_sample))


def pair_stats(a: torch.Tensor, b: torch.Tensor, *, dim: int | None = None, backend: str = "auto") -> PairStats:
    """cos, norm_ratio (|a| / |b|), mse and max_abs_diff of two tensors of the same shape (float64).

    The dtypes may differ (a bf16 prediction against a float32 target); NaN propagates.

    >>> import torch, fastdiff as fd
    >>> p = fd.pair_stats(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0]), backend="torch")
    >>> p.cos.item(), p.norm_ratio.item()
    (1.0, 0.5)
    """
    a = check_stats_input(a, "a")
    b = check_stats_input(b, "b")
    _check_same("a", a, "b", b)
    per_sample = _check_dim(dim, a)
    impl = kernels.resolve(backend, a.device)
    return PairStats(impl.pair_stats(a, b, per_sample))


def multi_tensor_stats(tensors: Sequence[torch.Tensor], *, backend: str = "auto") -> TensorStats:
    """Stats of many tensors at once (e.g. all parameters of a model): fields of shape [len(tensors)].

    All tensors must be on one device; dtypes and shapes may differ.
    """
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"tensors must be a list or tuple of tensors; got {_describe(tensors)}")
    xs = [check_stats_input(t, f"tensors[{i}]") for i, t in enumerate(tensors)]
    if not xs:
        raise ValueError("multi_tensor_stats needs at least one tensor; got an empty list")
    devices = {t.device for t in xs}
    if len(devices) > 1:
        raise ValueError(f"all tensors must be on one device; got {sorted(map(str, devices))}")
    impl = kernels.resolve(backend, xs[0].device)
    return TensorStats(*impl.multi_tensor_stats(xs))


# --------------------------------------------------------------------------------------------------
# the generic step


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory ranges of a and b intersect (a conservative test on storage spans)."""
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr() or a.numel() == 0 or b.numel() == 0:
        return False

    def span(t):
        lo = hi = t.storage_offset()
        for size, stride in zip(t.shape, t.stride()):
            ext = (size - 1) * stride
            lo, hi = (lo + ext, hi) if ext < 0 else (lo, hi + ext)
        return lo * t.element_size(), (hi + 1) * t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype


def _has_internal_overlap(t: torch.Tensor) -> bool:
    """Some element is reachable by two indices (stride-0 or self-overlapping views)."""
    if t.is_contiguous():
        return False
    if any(stride == 0 and size > 1 for size, stride in zip(t.shape, t.stride())):
        return True
    return t.numel() > 1 and torch._debug_has_internal_overlap(t) == 1


def _check_output(name: str, buf: torch.Tensor, x: torch.Tensor, inputs: dict[str, torch.Tensor]) -> None:
    if not isinstance(buf, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {_describe(buf)}")
    _check_same("x", x, name, buf, dtype=True)
    if _has_internal_overlap(buf):
        raise ValueError(f"{name} has overlapping elements (e.g. an expanded view); it cannot be written")
    for other_name, other in inputs.items():
        if other is not None and other is not buf and _overlaps(buf, other) and not _same_view(buf, other):
            raise ValueError(
                f"{name} partially overlaps {other_name}; an output may alias an input only as the very same view"
            )


def _input(x: torch.Tensor, name: str, t) -> torch.Tensor:
    """A step input other than x: a dense float tensor of x's shape on x's device (its own dtype kept)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {_describe(t)}")
    if t.dtype not in STEP_DTYPES or t.layout != torch.strided:
        raise TypeError(f"{name} is {_describe(t)}; accepted: dense float16, bfloat16, float32 or float64")
    if t.shape != x.shape or t.device != x.device:
        _check_same("x", x, name, t)
    return t.detach() if t.requires_grad else t


def threshold_scale(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Imagen's per-sample s_b = clamp(quantile(|x0_b|, ratio), 1, max_value) as float32 [B], on device.

    As diffusers: the quantile runs in float32 (float64 for float64 input). torch.quantile takes at most
    2^24 elements per row; beyond that the same linear interpolation is done with two kthvalue calls.
    """
    ct = torch.float64 if x0.dtype == torch.float64 else torch.float32
    flat = x0.reshape(x0.shape[0], -1).to(ct).abs()
    if flat.shape[1] <= (1 << 24):
        s = torch.quantile(flat, ratio, dim=1)
    else:
        pos = ratio * (flat.shape[1] - 1)
        lo_k, hi_k = math.floor(pos), math.ceil(pos)
        lo = flat.kthvalue(lo_k + 1, dim=1).values
        hi = flat.kthvalue(hi_k + 1, dim=1).values
        s = lo + (hi - lo) * (pos - lo_k)
        s = torch.where(flat.isnan().any(dim=1), torch.full_like(s, math.nan), s)
    return s.clamp(min=1.0, max=max_value).to(torch.float32)


def fused_step(
    x: torch.Tensor,
    model_output: torch.Tensor,
    coeffs: StepCoeffs | CoeffTable,
    *,
    uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    clip=None,
    history: Sequence[torch.Tensor] = (),
    noise: torch.Tensor | PhiloxNoise | None = None,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
    x0_out: torch.Tensor | None = None,
    return_x0: bool = False,
    stats: bool = True,
    backend: str = "auto",
) -> StepResult:
    """One generic sampler step (step.py): x0 from the model output, clip, x' — in one pass over memory.

    Args:
        x: the current sample x_t (float16/bfloat16/float32/float64, any layout).
        model_output: the network's output (conditional one under CFG), same shape as x.
        coeffs: a `StepCoeffs` (host scalars) or a `CoeffTable` (device-side, for CUDA graphs).
        uncond, guidance_scale: classifier-free guidance o = uncond + w (model_output - uncond).
        clip: None, c (for [-c, c]), (lo, hi), `ClipRange` or `DynamicThreshold`.
        history: earlier x0 / derivatives / samples for multistep and Heun updates (<= MAX_HISTORY = 4).
        noise, generator: z for stochastic samplers; drawn as torch.randn(x.shape, generator=...) when needed
            and not given. `noise=PhiloxNoise(seed, offset)` draws z inside the kernel instead (backends
            that support it: triton) and advances its offset by x.numel().
        out, x0_out: buffers for x' and x0 (so a loop allocates nothing); `out` may be `x` itself.
        return_x0: allocate and return x0 (implied by x0_out).
        stats: accumulate TensorStats of x' and x0 in the same pass.

    Inputs may have another float dtype than x (a float32 sample with a bfloat16 model output): each is
    read in its own dtype, with no conversion pass. Computation is in float32 (float64 for float64 x);
    outputs have x's dtype.

    >>> import torch, fastdiff as fd
    >>> from fastdiff.step import StepCoeffs
    >>> c = StepCoeffs.from_prediction("epsilon", alpha=0.6, sigma=0.8, p0=0.8, pe=0.6)
    >>> r = fd.fused_step(torch.ones(4), torch.zeros(4), c, clip=1.0, backend="torch")
    >>> r.prev_sample.tolist(), int(r.clipped)
    ([0.800000011920929, 0.800000011920929, 0.800000011920929, 0.800000011920929], 4)
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {_describe(x)}")
    if x.dtype not in STEP_DTYPES:
        raise TypeError(f"x has dtype {x.dtype}; accepted: float16, bfloat16, float32, float64")
    if x.layout != torch.strided or x.is_meta:
        raise TypeError(f"x must be a dense tensor with data; got {_describe(x)} with layout {x.layout}")
    if x.requires_grad:
        x = x.detach()
    model_output = _input(x, "model_output", model_output)
    if uncond is not None:
        uncond = _input(x, "uncond", uncond)
        if not math.isfinite(float(guidance_scale)):
            raise ValueError(f"guidance_scale must be finite; got {guidance_scale!r}")

    # coefficients
    if isinstance(coeffs, StepCoeffs):
        vector, table, index = coeffs.vector(), None, None
        n_hist, uses_noise = len(coeffs.ph), coeffs.uses_noise
    elif isinstance(coeffs, CoeffTable):
        vector, table, index = None, coeffs.table, coeffs.index
        n_hist, uses_noise = coeffs.num_history, coeffs.uses_noise
        if table.device != x.device or index.device != x.device:
            raise ValueError(
                f"the coefficient table is on {table.device} (index on {index.device}) but x is on {x.device}"
            )
        if table.dtype != torch.float64 or table.dim() != 2 or index.dtype != torch.int64 or index.dim() != 0:
            raise ValueError("CoeffTable needs a float64 [steps, fields] table and an int64 0-d index")
    else:
        raise TypeError(f"coeffs must be a StepCoeffs or CoeffTable; got {_describe(coeffs)}")

    history = tuple(history)
    if len(history) != n_hist:
        raise ValueError(f"the coefficients have {n_hist} history terms but {len(history)} history tensors were given")
    if n_hist > MAX_HISTORY:
        raise ValueError(f"at most {MAX_HISTORY} history tensors are supported; got {n_hist}")
    history = tuple(_input(x, f"history[{k}]", h) for k, h in enumerate(history)) if n_hist else ()

    philox = None
    if isinstance(noise, PhiloxNoise):
        philox, noise = (noise if uses_noise else None), None
        if philox is not None and isinstance(philox.offset, torch.Tensor) and philox.offset.device != x.device:
            raise ValueError(f"the PhiloxNoise offset is on {philox.offset.device} but x is on {x.device}")
    if noise is not None:
        noise = _input(x, "noise", noise)
    elif uses_noise and philox is None:
        noise_device = generator.device if generator is not None else x.device
        noise = torch.randn(x.shape, generator=generator, device=noise_device, dtype=x.dtype).to(x.device)

    impl = kernels.resolve(backend, x.device)
    if philox is not None and not getattr(impl, "supports_philox", False):
        raise NotImplementedError(
            f"backend {kernels.backend_name(impl)!r} cannot generate noise inside the step (noise=PhiloxNoise); "
            "backends that can: 'triton' (CUDA, or CPU with TRITON_INTERPRET=1). Or pass noise as a tensor."
        )

    clip = normalize_clip(clip)
    clip_lo = clip_hi = scale = None
    if isinstance(clip, ClipRange):
        clip_lo, clip_hi = clip.lo, clip.hi
    elif isinstance(clip, DynamicThreshold):
        if x.dim() == 0 or x.numel() == 0:
            raise ValueError(
                f"dynamic thresholding needs a batch dimension with samples; got x of shape {tuple(x.shape)}"
            )
        # The per-sample quantile needs x0 before the fused pass (a sort cannot be fused into it).
        if philox is not None and (vector is None or vector[2] != 0):  # ... and the noise, when x0 reads it
            noise = impl.philox_normal(x.shape, philox.seed, philox.offset, dtype=x.dtype, device=x.device)
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        c = vector if vector is not None else table[index].to(ct).unbind()  # device scalars: no sync
        o = model_output.to(ct)
        if uncond is not None:
            o = uncond.to(ct) + guidance_scale * (o - uncond.to(ct))
        x0_pre = c[0] * x.to(ct) + c[1] * o
        if noise is not None:
            x0_pre = x0_pre + c[2] * noise.to(ct)
        scale = threshold_scale(x0_pre, clip.ratio, clip.max_value)

    if out is not None or x0_out is not None:
        inputs = {"x": x, "model_output": model_output, "uncond": uncond, "noise": noise}
        inputs.update({f"history[{k}]": h for k, h in enumerate(history)})
    if out is None:
        out = memory.empty_like(x)  # huge pages for large CPU outputs: fewer first-touch faults
    else:
        _check_output("out", out, x, inputs)
    if x0_out is not None:
        _check_output("x0_out", x0_out, x, {**inputs, "out": out})
    elif return_x0:
        x0_out = memory.empty_like(x)

    # StepLaunch(x, out, uncond, guidance, noise, history, coeffs, table, table_index, clip_lo, clip_hi,
    #            threshold_scale, prev_out, x0_out, want_stats, philox): positional, on the hot path
    launch = StepLaunch(
        x, model_output, uncond, float(guidance_scale), noise, history, vector, table, index, clip_lo, clip_hi,
        scale, out, x0_out, bool(stats), philox if noise is None else None,
    )  # fmt: skip
    result = impl.fused_step(launch)  # (clipped, raw) or a PackedStep (the C++ backend)
    if philox is not None:
        philox.advance(x.numel())
    if type(result) is PackedStep:
        return StepResult(out, x0_out, None, packed=result)
    return StepResult(out, x0_out, result[0], raw=result[1])
