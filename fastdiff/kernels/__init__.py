"""Backend registry: which kernels exist on this machine and which one runs for a given tensor.

Each backend module implements the same five functions over already-validated inputs:

    tensor_stats(x, per_sample: bool) -> (counts int64 [..., 5], moments float64 [..., 4])
    pair_stats(a, b, per_sample: bool) -> float64 [..., 6]
    multi_tensor_stats(xs: list[Tensor]) -> (counts [len, 5], moments [len, 4])
    update_stats(params, snapshot) -> (counts [2P, 5], moments [2P, 4]): params, then params - s; then
        s = params (the probe's watch; s: the runs of one contiguous snapshot, at memory.aligned_runs offsets)
    fused_step(launch: StepLaunch) -> (clipped int64 0-d, raw | None): raw = (counts [2, 5], moments [2, 4]),
        the raw stats of x' (row 0) and x0 (row 1)

(raw layouts: `fastdiff.stats`; `StepLaunch`: `fastdiff.kernels.launch`). Optional: `supports_philox = True`
and `philox_normal(shape, seed, offset, dtype=, device=)` for a backend that draws `PhiloxNoise` in its kernel;
`tensor_stats_into(x, per_sample, out)`, which writes the raw rows (int64 [R, 9]) straight into `out` (the
probe's record buffer: no intermediate tensors on a path taken ~20 times per training step).
"""

from __future__ import annotations

import importlib
import os
import warnings
from functools import cache

import torch

BACKENDS = ("torch", "triton", "cpp")
_MODULES = {
    "torch": "fastdiff.kernels.torch_backend",
    "triton": "fastdiff.kernels.triton",
    "cpp": "fastdiff.kernels.cpu",
}


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@cache
def _import_status(name: str) -> tuple[object | None, str]:
    """(module, "") when the backend's code and dependencies load, else (None, why not)."""
    if name == "torch":
        return importlib.import_module(_MODULES["torch"]), ""
    if name == "cpp":
        try:
            importlib.import_module("fastdiff._cpu")
        except ImportError as exc:
            return (
                None,
                f"the C++ extension fastdiff._cpu is not built ({exc}); "
                "reinstall with a C++ compiler: pip install -e .",
            )
        return importlib.import_module(_MODULES["cpp"]), ""
    if name == "triton":
        try:
            importlib.import_module("triton")
        except ImportError:
            return None, "Triton is not installed: pip install 'fastdiff[triton]'"
        try:
            return importlib.import_module(_MODULES["triton"]), ""
        except ImportError as exc:
            return None, f"the Triton kernels failed to load: {exc}"
    raise ValueError(f"unknown backend {name!r}; accepted: 'auto', {', '.join(map(repr, BACKENDS))}")


def availability(name: str, device: torch.device | None = None) -> tuple[bool, str]:
    """Whether backend `name` can run on `device` (any device of this machine when None), and why not."""
    module, why = _import_status(name)
    if module is None:
        return False, why
    dev_type = None if device is None else torch.device(device).type
    if name == "triton":
        if dev_type is None:
            if torch.cuda.is_available() or triton_interpret():
                return True, ""
            return False, "no CUDA GPU (set TRITON_INTERPRET=1 to run the Triton kernels on the CPU interpreter)"
        if dev_type == "cuda":
            return (True, "") if torch.cuda.is_available() else (False, "no CUDA GPU")
        if dev_type == "cpu" and triton_interpret():
            return True, ""
        return False, (
            f"the Triton backend runs on CUDA tensors; got a {dev_type} tensor "
            "(set TRITON_INTERPRET=1 to run the Triton kernels on CPU tensors, slowly)"
        )
    if name == "cpp" and dev_type not in (None, "cpu"):
        return False, f"the C++ backend runs on CPU tensors; got a {dev_type} tensor"
    return True, ""


def backend_name(module) -> str:
    """The name ("torch", "triton", "cpp") of a backend module returned by `resolve`."""
    for name, mod in _MODULES.items():
        if module.__name__ == mod:
            return name
    return module.__name__


def available_backends() -> list[str]:
    """Backends that can run on some device of this machine, e.g. ["torch", "cpp"]."""
    return [b for b in BACKENDS if availability(b)[0]]


_warned: set[str] = set()


_resolved: dict = {}


def clear_caches() -> None:
    """Forget what was found about the backends (after the environment changed, e.g. in tests)."""
    _import_status.cache_clear()
    _resolved.clear()


def resolve(backend: str, device: torch.device):
    """The backend module to run for a tensor on `device`; RuntimeError saying why if unavailable.

    Answers are remembered per (backend, device): this runs once per kernel call (`clear_caches` forgets).
    """
    key = (backend, device)
    impl = _resolved.get(key)
    if impl is None:
        impl = _resolved[key] = _resolve(backend, device)
    return impl


def _resolve(backend: str, device: torch.device):
    if backend == "auto":
        device = torch.device(device)
        preferred = "triton" if device.type == "cuda" else "cpp" if device.type == "cpu" else "torch"
        ok, why = availability(preferred, device)
        if ok:
            return _import_status(preferred)[0]
        if preferred not in _warned:
            _warned.add(preferred)
            warnings.warn(
                f"fastdiff: backend {preferred!r} is unavailable ({why}); using the slower 'torch' backend",
                RuntimeWarning,
                stacklevel=3,
            )
        return _import_status("torch")[0]
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; accepted: 'auto', {', '.join(map(repr, BACKENDS))}")
    ok, why = availability(backend, device)
    if not ok:
        raise RuntimeError(f"backend {backend!r} is not available: {why}")
    return _import_status(backend)[0]
