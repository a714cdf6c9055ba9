"""`Recorder.watch(model)`: parameter, gradient and update stats every N steps, and optional activations.

At a watched step, one `multi_tensor_stats` call per device covers every parameter, every gradient and
every update Δw = w_now - w_prev (w_prev: a flat copy per (device, dtype), refreshed at each watched
step), so ‖Δw‖ / ‖w‖ — the evidence for frozen weights (report 004) — costs one more read of the
parameters. Records (role in brackets):

    param/<name> [param]   grad/<name> [grad]   update/<name> [update]: stats of Δw since the last watched step
    update_ratio/<name> [update]: ‖Δw‖ / ‖w‖ (a scalar)      act/<module> (activations=True): module outputs

When: right after an optimizer that owns the model's parameters steps (a global optimizer step hook,
so grads are the ones it used, after clipping and unscaling), or at `Recorder.step()` if no such
optimizer stepped in that step (manual updates). Hooks only read: training is bit-identical with and
without a watch. Under torch.distributed these records merge across ranks like any other (stats of
the ranks' tensors concatenated: sharded parameters add up; replicated ones count once per rank).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..stats import TensorStats

_foreach_sub_ = getattr(torch, "_foreach_sub_", None)


class _Snapshot:
    """The parameters of one (device, dtype) group at the last watched step, as one flat copy."""

    def __init__(self, params: list[torch.Tensor]):
        self.signature = [(id(p), p.shape) for p in params]
        self.flat = torch.empty(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
        self.views = [v.view(p.shape) for v, p in zip(self.flat.split([p.numel() for p in params]), params)]
        self.valid = False

    def matches(self, params: list[torch.Tensor]) -> bool:
        return self.signature == [(id(p), p.shape) for p in params]

    def negated_update(self, params: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """w_prev - w = -Δw, computed in place of the snapshot (no allocation); None before the first refresh.

        Exactly -Δw: IEEE subtraction is antisymmetric, fl(a - b) = -fl(b - a).
        """
        if not self.valid:
            return None
        if _foreach_sub_ is not None:
            _foreach_sub_(self.views, params)
        else:
            for v, p in zip(self.views, params):
                v.sub_(p)
        return self.views

    def refresh(self, params: list[torch.Tensor]) -> None:
        """w becomes the reference (after the stats of the update have been taken)."""
        torch.cat([p.reshape(-1) for p in params], out=self.flat)
        self.valid = True


def negated_raw(counts: torch.Tensor, moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw stats of -x from those of x: min/max swap sign and place, the mean flips, +-inf counts swap.

    0.0 - v rather than -v keeps zeros +0.0 (the zeros of a difference are +0.0).
    """
    c = torch.stack([counts[:, 0], counts[:, 1], counts[:, 3], counts[:, 2], counts[:, 4]], dim=1)
    m = torch.stack([0.0 - moments[:, 1], 0.0 - moments[:, 0], 0.0 - moments[:, 2], moments[:, 3]], dim=1)
    return c, m


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    """[start, stop) ranges of consecutive integers in an increasing list: [0, 1, 2, 5, 6] -> [(0, 3), (5, 7)]."""
    runs: list[list[int]] = []
    for i in positions:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [(a, b) for a, b in runs]


class Watch:
    """A live watch on a model; `remove()` detaches its hooks (the Recorder's close() does it too)."""

    def __init__(self, recorder, model: nn.Module, *, params, grads, updates, activations, every, prefix):
        if not isinstance(model, nn.Module):
            raise TypeError(f"watch() needs a torch.nn.Module; got a {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r}: accepted a positive int (watch every N steps)")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str; got a {type(prefix).__name__}")
        self.recorder = recorder
        self.every = every
        self.params, self.grads, self.updates = bool(params), bool(grads), bool(updates)
        self.named = [(prefix + name, p) for name, p in model.named_parameters()]
        self._param_ids = {id(p) for _, p in self.named}
        self._snapshots: dict[tuple, _Snapshot] = {}
        self._captured_step = None
        self._handles = []

        names = []
        for flag, kind, role in (
            (self.params, "param", "param"),
            (self.grads, "grad", "grad"),
            (self.updates, "update", "update"),
        ):
            if flag:
                names += [(f"{kind}/{n}", "tensor", role) for n, _ in self.named]
        if self.updates:
            names += [(f"update_ratio/{n}", "scalar", "update") for n, _ in self.named]
        modules = self._activation_modules(model, activations, prefix)
        recorder._claim_names(names, [f"act/{n}" for n, _ in modules])

        if self.params or self.grads or self.updates:
            from torch.optim.optimizer import register_optimizer_step_post_hook

            self._handles.append(register_optimizer_step_post_hook(self._after_optimizer_step))
        for name, module in modules:
            self._handles.append(module.register_forward_hook(self._activation_hook(f"act/{name}")))

    @staticmethod
    def _activation_modules(model: nn.Module, activations, prefix: str) -> list[tuple[str, nn.Module]]:
        if activations is False or activations is None:
            return []
        named = dict(model.named_modules())
        if activations is True:
            chosen = [n for n, m in named.items() if n and not any(True for _ in m.children())]
        elif isinstance(activations, Iterable) and not isinstance(activations, str):
            chosen = list(activations)
            missing = [n for n in chosen if n not in named]
            if missing:
                raise ValueError(f"activations names modules that the model does not have: {missing}")
        else:
            raise TypeError(f"activations={activations!r}: accepted True, False or a list of module names")
        return [(prefix + n, named[n]) for n in chosen]

    def _due(self) -> bool:
        step = self.recorder.current_step
        return step % self.every == 0 and self._captured_step != step

    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        if self.recorder.closed or not self._due():
            return
        owned = (id(p) in self._param_ids for g in optimizer.param_groups for p in g["params"])
        if any(owned):
            self.capture()

    def _activation_hook(self, name: str):
        def hook(module, inputs, output):
            if self.recorder.closed or self.recorder.current_step % self.every:
                return
            tensors = output if isinstance(output, (tuple, list)) else (output,)
            tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
            for i, t in enumerate(tensors):
                self.recorder.log(name if len(tensors) == 1 else f"{name}.{i}", t)

        return hook

    def on_step(self) -> None:
        """Recorder.step(): capture now if no optimizer step did it during this step."""
        if self._due():
            self.capture()

    @torch.no_grad()
    def capture(self) -> None:
        """Stats of parameters, gradients and updates: one multi_tensor_stats call per device."""
        rec = self.recorder
        self._captured_step = rec.current_step
        devices: dict[torch.device, list[tuple[str, nn.Parameter]]] = {}
        for name, p in self.named:
            devices.setdefault(p.device, []).append((name, p))
        used_snapshots: set = set()
        for device, members in devices.items():
            # rows: the parameters first (also needed for ‖w‖ when only updates are asked), grads, updates
            with_params = self.params or self.updates
            tensors = [p.detach() for _, p in members] if with_params else []
            names = [f"param/{n}" for n, _ in members] if with_params else []
            if self.grads:
                for n, p in members:
                    g = p.grad
                    if g is not None and g.layout == torch.strided:
                        tensors.append(g.detach())
                        names.append(f"grad/{n}")
            first_update = len(tensors)
            snapshots, updated = self._snapshots_of(members, used_snapshots) if self.updates else ([], [])
            tensors += [d for _, d in updated]
            names += [f"update/{members[i][0]}" for i, _ in updated]
            if tensors:
                counts, moments = rec._impl(device).multi_tensor_stats(tensors)
                if updated:  # the rows hold the stats of -Δw: flip them (a few ops on [P, 9], on the device)
                    neg_counts, neg_moments = negated_raw(counts[first_update:], moments[first_update:])
                    counts = torch.cat([counts[:first_update], neg_counts])
                    moments = torch.cat([moments[:first_update], neg_moments])
                emit = 0 if self.params else len(members) if with_params else 0
                roles = [name.split("/", 1)[0] for name in names[emit:]]
                rec._add_tensor_rows(names[emit:], roles, counts[emit:], moments[emit:], device)
            for snap, params in snapshots:  # after the stats have read the updates
                snap.refresh(params)
            if updated:
                stats = TensorStats(counts, moments)
                update_l2 = stats.l2[first_update:]
                positions = [i for i, _ in updated]
                # ‖w‖ of the updated parameters: their param rows, gathered by slices (an index tensor
                # would be a host-to-device copy); one slice unless some snapshots were just (re)made
                param_l2 = torch.cat([stats.l2[start:stop] for start, stop in _runs(positions)])
                ratio_names = [f"update_ratio/{members[i][0]}" for i in positions]
                rec._add_scalar_rows(ratio_names, ["update"] * len(ratio_names), update_l2 / param_l2, device)
        for key in set(self._snapshots) - used_snapshots:  # parameters moved to another device or dtype
            del self._snapshots[key]

    def _snapshots_of(self, members, used: set):
        """The snapshots of these parameters (per dtype) with their current values, and (position, w_prev - w)
        for each parameter whose snapshot is from the last watched step."""
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, (_, p) in enumerate(members):
            by_dtype.setdefault(p.dtype, []).append(i)
        snapshots, updated = [], []
        for dtype, positions in by_dtype.items():
            params = [members[i][1] for i in positions]
            key = (params[0].device, dtype)
            used.add(key)
            snap = self._snapshots.get(key)
            if snap is None or not snap.matches(params):
                snap = self._snapshots[key] = _Snapshot(params)
            values = [p.detach() for p in params]
            snapshots.append((snap, values))
            negated = snap.negated_update(values)
            if negated is not None:
                updated += list(zip(positions, negated))
        updated.sort(key=lambda item: item[0])
        return snapshots, updated

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self in self.recorder._watches:
            self.recorder._watches.remove(self)
