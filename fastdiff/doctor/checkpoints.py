"""Checkpoint diff (report 004): which parameters changed between two checkpoints, and by how much."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .loading import MODEL_KEYS, find_weights, load_file, strip_common_prefix
from .rules import Finding

METADATA_KEYS = ("step", "global_step", "epoch", "iteration", "optimizer", "optimizer_state_dict", "loss")


def load_state(obj, *, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """(float tensors by name, metadata) from a path, an nn.Module, a state dict or a training checkpoint.

    Paths load safely (`fastdiff.doctor.loading.load_file`: argparse.Namespace and NumPy scalars beside the
    weights are fine, other pickled objects need `trust_pickle=True`); the weights are found at any depth.
    """
    if isinstance(obj, (str, Path)):
        obj = load_file(obj, trust_pickle=trust_pickle)
    meta = {}
    if isinstance(obj, dict):
        meta = {k: obj[k] for k in obj if k in METADATA_KEYS and not isinstance(obj[k], dict)}
        if any(k in obj for k in MODEL_KEYS):
            meta["has_optimizer"] = any(k in obj for k in ("optimizer", "optimizer_state_dict", "optimizer_states"))
    tensors, where = find_weights(obj)
    if where != "the top level" and where != "the module":
        meta["weights_in"] = where
    return tensors, meta


@dataclass
class ParamChange:
    name: str
    rel_change: float  # |b - a| / |a|
    identical: bool


def checkpoint_diff(a, b, *, trust_pickle: bool = False) -> tuple[list[ParamChange], Finding]:
    """Per-parameter relative change between checkpoints a and b; a finding that flags frozen weights."""
    ta, meta_a = load_state(a, trust_pickle=trust_pickle)
    tb, meta_b = load_state(b, trust_pickle=trust_pickle)
    ta, tb = strip_common_prefix(ta, tb)
    common = [k for k in ta if k in tb]
    mismatched = [k for k in common if ta[k].shape != tb[k].shape]
    changes = []
    for k in common:
        if k in mismatched:
            continue
        x, y = ta[k].double(), tb[k].double()
        identical = torch.equal(ta[k], tb[k])
        rel = float((y - x).norm() / x.norm().clamp(min=1e-30))
        changes.append(ParamChange(k, rel, identical))
    frozen = [c.name for c in changes if c.identical]
    ev = {
        "parameters": len(changes),
        "identical": len(frozen),
        "identical_names": frozen[:50],
        "only_in_a": [k for k in ta if k not in tb][:20],
        "only_in_b": [k for k in tb if k not in ta][:20],
        "shape_mismatch": mismatched[:20],
        "metadata_a": {k: str(v) for k, v in meta_a.items()},
        "metadata_b": {k: str(v) for k, v in meta_b.items()},
        "largest_changes": [(c.name, c.rel_change) for c in sorted(changes, key=lambda c: -c.rel_change)[:10]],
    }
    if not changes:
        return changes, Finding("checkpoint_diff", "fail", "the checkpoints share no parameter of equal shape", ev)
    if len(frozen) == len(changes):
        return changes, Finding(
            "checkpoint_diff",
            "fail",
            f"all {len(changes)} parameters are bit-identical: no training happened between "
            "these checkpoints (or the same weights were saved twice)",
            ev,
        )
    if frozen:
        return changes, Finding(
            "checkpoint_diff",
            "warn",
            f"{len(frozen)} of {len(changes)} parameters are bit-identical (frozen layers?)",
            ev,
        )
    med = sorted(c.rel_change for c in changes)[len(changes) // 2]
    return changes, Finding(
        "checkpoint_diff", "ok", f"all {len(changes)} parameters changed (median relative change {med:.3g})", ev
    )
