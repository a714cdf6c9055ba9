"""Reading the checkpoints and sample files people actually have, for `fastdiff doctor checkpoints / samples`.

- `torch.save` files load with `weights_only=True` (no code from the file runs), with the harmless objects
  that training scripts store beside the weights allowed: `argparse.Namespace` (the script's args),
  `pathlib` paths and NumPy scalars (a `global_step` saved as np.int64).
- Anything else pickled (a whole `nn.Module`, a Lightning `AttributeDict`, a custom class) is refused in one
  line that names the objects, unless the caller trusts the file (`trust_pickle=True`, `--trust-pickle`),
  which loads it with `weights_only=False` (code in the file runs: only for files you made or trust).
- `.safetensors` files load with the `safetensors` package; `.npy` with NumPy (no pickles).
- The weights are found wherever they sit: a state dict, a module, `{"state_dict": ...}` (Lightning),
  `{"model": ..., "ema": ..., "optimizer": ...}`, dicts nested at any depth (flattened to dotted names).
"""

from __future__ import annotations

import argparse
import pathlib
import pickle
import zipfile
from pathlib import Path

import torch

# where a training checkpoint keeps the model's weights, most likely first
MODEL_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "unet", "ema", "ema_model")
# never parameters: optimizer moments and schedulers' states
SKIP_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_states", "optim", "lr_schedulers", "scheduler", "scaler")


class LoadError(ValueError):
    """A file that cannot be read as asked; the message is one line that says why and what to do."""


def _safe_globals() -> list:
    import numpy as np

    allowed = [argparse.Namespace, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, np.dtype]
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    scalar = getattr(getattr(core, "multiarray", None), "scalar", None)
    if scalar is not None:
        allowed.append(scalar)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def _refused(path: Path) -> str | None:
    """The pickled objects a safe load refuses, in words; None when the file is not a torch.save archive."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only used to word the message
        return "Python objects"
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _safe_globals()}
    names = [n for n in names if n not in allowed]
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "") if names else "objects"


def load_file(path: str | Path, *, trust_pickle: bool = False):
    """The object stored in a .pt / .pth / .ckpt / .bin (torch.save), .safetensors or .npy file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {p}")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file as load_safetensors
        except ImportError:
            raise LoadError(f"{p} is a safetensors file: pip install safetensors to read it") from None
        try:
            return load_safetensors(str(p))
        except Exception as exc:  # noqa: BLE001 - any parse error is one line
            raise LoadError(f"{p} is not a readable safetensors file ({type(exc).__name__})") from None
    if p.suffix == ".npy":
        import numpy as np

        try:
            return torch.from_numpy(np.load(p, allow_pickle=False))
        except ValueError as exc:
            raise LoadError(f"{p} is not a plain NumPy array ({exc})") from None
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused(p)
        if refused is None and "global" not in str(exc).lower():  # not a pickle of objects: not a checkpoint
            raise LoadError(f"{p} is not a torch.save file (it does not start like one)") from None
        if not trust_pickle:
            raise LoadError(
                f"{p} holds pickled Python objects ({refused or 'of an old torch.save format'}) that a safe load "
                "(weights_only) refuses; if you made or trust this file, add --trust-pickle (trust_pickle=True), "
                "which runs its code"
            ) from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise LoadError(f"{p} is not a torch.save file ({first})") from None
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - e.g. a class that no longer exists: one line, not a traceback
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise LoadError(f"{p} cannot be unpickled here ({type(exc).__name__}: {first})") from None


def _tensors(obj, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor under obj (dicts, lists, modules), by dotted path; optimizer states left out."""
    if isinstance(obj, torch.Tensor):
        return {prefix.rstrip("."): obj}
    if isinstance(obj, torch.nn.Module):
        return {prefix + k: v for k, v in obj.state_dict().items()}
    if depth > 12:
        return {}
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if str(k) in SKIP_KEYS:
                continue
            out.update(_tensors(v, f"{prefix}{k}.", depth + 1))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}{i}.", depth + 1))
    return out


def find_weights(obj) -> tuple[dict[str, torch.Tensor], str]:
    """(floating-point tensors by name, where they were found) in a loaded checkpoint object."""
    if isinstance(obj, torch.nn.Module):
        return {k: v for k, v in obj.state_dict().items() if v.is_floating_point()}, "the module"
    if not isinstance(obj, dict):
        raise TypeError(f"expected a path, module or state dict; got {type(obj).__name__}")
    where = "the top level"
    path = ""
    while isinstance(obj, dict):  # the model's own entry, when a checkpoint has one ({"model": {"ema": ...}})
        key = next(
            (k for k in MODEL_KEYS if k in obj and isinstance(obj[k], (dict, torch.nn.Module)) and _tensors(obj[k])),
            None,
        )
        if key is None:
            break
        obj, path = obj[key], f"{path}[{key!r}]"
        where = path
    tensors = {k: v for k, v in _tensors(obj).items() if v.is_floating_point()}
    return tensors, where


def _common_prefix(names) -> str:
    parts = [n.split(".") for n in names]
    if not parts:
        return ""
    common = []
    for column in zip(*(p[:-1] for p in parts)):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    return ".".join(common) + "." if common else ""


def strip_common_prefix(a: dict, b: dict) -> tuple[dict, dict]:
    """Names of two state dicts made comparable when one is wrapped (`module.` of DDP, `model.` of Lightning,
    `ema.`): a prefix shared by every name of one side is dropped when that makes the names meet."""
    if set(a) & set(b):
        return a, b
    pa, pb = _common_prefix(a), _common_prefix(b)
    for x_pre, y_pre in ((pa, ""), ("", pb), (pa, pb)):
        x = {k[len(x_pre) :]: v for k, v in a.items()}
        y = {k[len(y_pre) :]: v for k, v in b.items()}
        if set(x) & set(y):
            return x, y
    return a, b
