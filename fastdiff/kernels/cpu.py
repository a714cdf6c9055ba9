"""The `cpp` backend: the C++ kernels of csrc/ (fastdiff._cpu, pybind11 + OpenMP) on CPU tensors.

Each tensor crosses to C++ as a *view spec* — (storage data pointer, storage bytes, dtype code,
storage offset, sizes, strides), offset and strides in elements — so no PyTorch headers are needed to
build the extension. `view_spec` checks what Python can (device, layout, dtype, strides); the extension
checks every spec again against the buffer size before touching memory. Kernels run with the GIL
released on `torch.get_num_threads()` OpenMP threads, and give bit-identical results for any thread
count (fixed blocks merged in a fixed order). Raw result layouts: `fastdiff.stats`.

>>> import torch, fastdiff as fd
>>> "cpp" in fd.available_backends()
True
>>> fd.tensor_stats(torch.arange(5.0), backend="cpp").std.item()
1.5811388300841898
"""

from __future__ import annotations

import math

import torch

from .. import _cpu
from ..stats import RAW_WORDS, split_raw_rows, write_raw_rows
from ..step import PackedStep
from . import torch_backend
from .launch import StepLaunch
from .memory import aligned_runs

# dtype codes of csrc/api.h (enum Dtype)
DTYPE_CODES = {
    torch.float32: 0,
    torch.float64: 1,
    torch.float16: 2,
    torch.bfloat16: 3,
    torch.uint8: 4,
    torch.int8: 5,
    torch.int16: 6,
    torch.int32: 7,
    torch.int64: 8,
    torch.bool: 9,
}

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def threads() -> int:
    """OpenMP threads per kernel: PyTorch's intra-op thread count."""
    return max(1, torch.get_num_threads())


def view_spec(t: torch.Tensor) -> tuple:
    """The view spec of a CPU tensor for fastdiff._cpu; TypeError/ValueError for what C++ cannot read.

    The caller keeps `t` alive for the duration of the call (the spec holds a raw pointer). Called once
    per tensor per kernel (hundreds of times per watched step): only the checks C++ cannot make are here
    (negative strides, which torch never makes, are refused by the extension). A contiguous tensor is
    described from its first element on (its own bytes are the buffer): fewer lookups than its storage.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor; got a {type(t).__name__}")
    if not t.is_cpu:
        raise ValueError(f"the C++ backend reads CPU tensors; got a tensor on {t.device}")
    if t.layout != torch.strided:
        raise TypeError(f"the C++ backend reads dense (strided) tensors; got layout {t.layout}")
    code = DTYPE_CODES.get(t.dtype)
    if code is None:
        raise TypeError(f"the C++ backend does not read {t.dtype}; accepted: {', '.join(map(str, DTYPE_CODES))}")
    if t.is_neg():  # real dtypes only past this point: no conjugate views
        raise ValueError("pass a resolved tensor (resolve_neg) to the C++ backend")
    if t.is_contiguous():
        return (t.data_ptr(), t.nbytes, code, 0, t.shape, t.stride())
    storage = t.untyped_storage()
    return (storage.data_ptr(), storage.nbytes(), code, t.storage_offset(), t.shape, t.stride())


def _readable(t: torch.Tensor) -> torch.Tensor:
    return t.resolve_neg() if t.is_neg() else t


def _native(t: torch.Tensor) -> bool:
    return t.dtype in DTYPE_CODES


# --------------------------------------------------------------------------------------------------
# stats


def _raw_rows(xs: list[torch.Tensor], rows: list[int], out: torch.Tensor | None = None) -> torch.Tensor:
    """Raw stats of rows[i] equal consecutive rows of each xs[i] as raw rows int64 [R, 9] (fastdiff.stats),
    written into `out` when given."""
    table = torch.empty(sum(rows), RAW_WORDS, dtype=torch.int64) if out is None else out
    counts, moments = split_raw_rows(table)
    _cpu.tensor_stats([view_spec(x) for x in xs], rows, view_spec(counts), view_spec(moments), threads())
    return table


def result_spec(t: torch.Tensor, rows: int, cols: int) -> tuple:
    """The view spec of a fresh contiguous result tensor as [rows, cols] (arithmetic: no view is made)."""
    return (t.data_ptr(), t.numel() * t.element_size(), DTYPE_CODES[t.dtype], 0, (rows, cols), (cols, 1))


def tensor_stats(x: torch.Tensor, per_sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not _native(x):  # e.g. uint16 or float8: the torch backend reads them as float64
        return torch_backend.tensor_stats(x, per_sample)
    x = _readable(x)
    rows = x.shape[0] if per_sample else 1
    counts = torch.empty((rows, 5) if per_sample else (5,), dtype=torch.int64)
    moments = torch.empty((rows, 4) if per_sample else (4,), dtype=torch.float64)
    _cpu.tensor_stats([view_spec(x)], [rows], result_spec(counts, rows, 5), result_spec(moments, rows, 4), threads())
    return counts, moments


def tensor_stats_into(x: torch.Tensor, per_sample: bool, out: torch.Tensor) -> None:
    """tensor_stats written straight into raw rows `out` (int64 [R, 9], e.g. the probe's record buffer)."""
    if not _native(x):
        write_raw_rows(out, *torch_backend.tensor_stats(x, per_sample))
        return
    x = _readable(x)
    _raw_rows([x], [x.shape[0]] if per_sample else [1], out)


def multi_tensor_stats(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if all(map(_native, xs)):
        return split_raw_rows(_raw_rows([_readable(x) for x in xs], [1] * len(xs)))
    native = [i for i, x in enumerate(xs) if _native(x)]
    counts = torch.empty(len(xs), 5, dtype=torch.int64)
    moments = torch.empty(len(xs), 4, dtype=torch.float64)
    if native:
        c, m = split_raw_rows(_raw_rows([_readable(xs[i]) for i in native], [1] * len(native)))
        counts[native], moments[native] = c, m
    for i, x in enumerate(xs):
        if not _native(x):
            counts[i], moments[i] = torch_backend.tensor_stats(x, False)
    return counts, moments


def update_stats(params: list[torch.Tensor], snapshot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stats of each parameter w (rows 0..P) and of its update w - s (rows P..2P), then s = w, in one
    pass over w and s (csrc/kernels.h, update_stats); snapshot: contiguous, of the parameters' dtype,
    holding each parameter's run at its `memory.aligned_runs` offset."""
    if not all(p.dtype in FLOAT_DTYPES for p in params):
        return torch_backend.update_stats(params, snapshot, stats=multi_tensor_stats)
    offsets, total = aligned_runs([p.numel() for p in params], snapshot.element_size())
    if snapshot.numel() != total:
        raise ValueError(f"the snapshot must hold {total} elements (memory.aligned_runs); got {snapshot.numel()}")
    table = torch.empty(2 * len(params), RAW_WORDS, dtype=torch.int64)
    counts, moments = split_raw_rows(table)
    readable = [_readable(p) for p in params]  # held until the call returns (a spec holds a raw pointer)
    specs = [view_spec(p) for p in readable]
    _cpu.update_stats(specs, view_spec(snapshot), offsets, view_spec(counts), view_spec(moments), threads())
    return counts, moments


def pair_stats(a: torch.Tensor, b: torch.Tensor, per_sample: bool) -> torch.Tensor:
    if not (_native(a) and _native(b)):
        return torch_backend.pair_stats(a, b, per_sample)
    a, b = _readable(a), _readable(b)
    rows = a.shape[0] if per_sample else 1
    out = torch.empty(rows, 6, dtype=torch.float64)
    _cpu.pair_stats(view_spec(a), view_spec(b), rows, view_spec(out), threads())
    return out if per_sample else out[0]


# --------------------------------------------------------------------------------------------------
# the generic step


def provably_non_overlapping(t: torch.Tensor) -> bool:
    """The extension's test for a writable output (csrc/module.cpp, check_writable): with the dims of
    size > 1 sorted by stride, each stride exceeds the largest offset the smaller ones reach."""
    extent = 0
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz > 1):
        if stride <= extent:
            return False
        extent += (size - 1) * stride
    return True


def _writable(t: torch.Tensor | None) -> torch.Tensor | None:
    """t itself, or a contiguous stand-in (copied back after the call) for a layout C++ refuses to write."""
    if t is None or t.is_contiguous() or provably_non_overlapping(t):
        return t
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def fused_step(L: StepLaunch):
    prev, x0 = _writable(L.prev_out), _writable(L.x0_out)
    # resolved copies of negative views are held here until the call returns (a spec holds a raw pointer)
    x, out, u, z = _readable(L.x), _readable(L.out), L.uncond, L.noise
    u, z = (None if u is None else _readable(u)), (None if z is None else _readable(z))
    history = [_readable(h) for h in L.history]
    words = _cpu.fused_step(
        view_spec(x),
        view_spec(out),
        None if u is None else view_spec(u),
        None if z is None else view_spec(z),
        [view_spec(h) for h in history],
        [] if L.coeffs is None else L.coeffs,
        None if L.table is None else view_spec(L.table),
        None if L.table_index is None else view_spec(L.table_index),
        L.guidance,
        L.clip_mode,
        -math.inf if L.clip_lo is None else float(L.clip_lo),
        math.inf if L.clip_hi is None else float(L.clip_hi),
        None if L.threshold_scale is None else view_spec(L.threshold_scale),
        view_spec(prev),
        None if x0 is None else view_spec(x0),
        L.want_stats,
        threads(),
    )
    if prev is not L.prev_out:
        L.prev_out.copy_(prev)
    if x0 is not L.x0_out:
        L.x0_out.copy_(x0)
    return PackedStep(words, L.want_stats)
