"""`Recorder.watch(model)`: parameter, gradient and update stats every N steps, and optional activations.

At a watched step, per device: one `update_stats` call per dtype gives the stats of every parameter w
and of its update Δw = w - w_prev since the last watched step, and refreshes w_prev (a flat copy per
(device, dtype)); the C++ backend does all of it in one pass over w and w_prev. One `multi_tensor_stats`
call covers the gradients. ‖Δw‖ / ‖w‖ — the evidence for frozen weights (report 004) — comes from the
two rows' norms. Records (role in brackets):

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

from ..kernels.memory import aligned_runs
from ..stats import TensorStats


class _Snapshot:
    """The parameters of one (device, dtype) group at the last watched step, in one buffer laid out by
    `memory.aligned_runs` (each parameter's run 16-byte aligned), as the backends' update_stats read it."""

    def __init__(self, params: list[torch.Tensor]):
        self.signature = [(id(p), p.shape) for p in params]
        offsets, total = aligned_runs([p.numel() for p in params], params[0].element_size())
        self.flat = torch.empty(total, dtype=params[0].dtype, device=params[0].device)
        self.runs = [self.flat[o : o + p.numel()].view(p.shape) for o, p in zip(offsets, params)]
        self.valid = False

    def matches(self, params: list[torch.Tensor]) -> bool:
        return self.signature == [(id(p), p.shape) for p in params]

    def refresh(self, params: list[torch.Tensor]) -> None:
        """w becomes the reference (the first watched step, or after a change of parameters); under no_grad."""
        torch._foreach_copy_(self.runs, params)
        self.valid = True


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
        kinds = ("param", "grad", "update", "update_ratio")
        self._names = {kind: [f"{kind}/{n}" for n, _ in self.named] for kind in kinds}  # record names by position
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

    def _groups(self) -> dict[torch.device, dict[torch.dtype, list[int]]]:
        """Positions of the watched parameters by device, then dtype (as they are now: models move)."""
        groups: dict[torch.device, dict[torch.dtype, list[int]]] = {}
        for i, (_, p) in enumerate(self.named):
            groups.setdefault(p.device, {}).setdefault(p.dtype, []).append(i)
        return groups

    @torch.no_grad()
    def capture(self) -> None:
        """Stats of parameters, gradients and updates: per device, one `update_stats` call per dtype (the
        parameters and their updates since the last watched step, which also refreshes the snapshot)
        and one `multi_tensor_stats` call for the gradients and any parameter without a snapshot yet."""
        rec = self.recorder
        self._captured_step = rec.current_step
        used: set = set()
        for device, by_dtype in self._groups().items():
            impl = rec._impl(device)
            params, updates, ratios, fresh = [], [], [], []  # blocks of (positions, counts, moments)
            for dtype, positions in by_dtype.items():
                values = [self.named[i][1] for i in positions]  # read under no_grad: no detach needed
                snap = self._snapshot(device, dtype, values, used) if self.updates else None
                if snap is not None and snap.valid:
                    counts, moments = impl.update_stats(values, snap.flat)  # refreshes the snapshot
                    n = len(positions)
                    params.append((positions, counts[:n], moments[:n]))
                    updates.append((positions, counts[n:], moments[n:]))
                    norms = TensorStats(counts, moments).l2  # ‖w‖ then ‖Δw‖
                    ratios.append((positions, norms[n:] / norms[:n]))
                elif self.params or snap is not None:
                    fresh.append((positions, values, snap))
            grads = []
            if self.grads:
                for i in (i for positions in by_dtype.values() for i in positions):
                    g = self.named[i][1].grad
                    if g is not None and g.layout == torch.strided:
                        grads.append((i, g))
            tensors = [v for _, values, _ in fresh for v in values] + [g for _, g in grads]
            if tensors:
                counts, moments = impl.multi_tensor_stats(tensors)
                k = 0
                for positions, values, snap in fresh:
                    params.append((positions, counts[k : k + len(positions)], moments[k : k + len(positions)]))
                    k += len(positions)
                    if snap is not None:  # after the stats have read the parameters
                        snap.refresh(values)
                grad_block = ([i for i, _ in grads], counts[k:], moments[k:])
            else:
                grad_block = ([], None, None)
            blocks = [("param", b) for b in params] if self.params else []
            blocks += [("grad", grad_block)] if grads else []
            blocks += [("update", b) for b in updates]
            for kind, (positions, counts, moments) in blocks:  # each straight into the record buffer
                names = [self._names[kind][i] for i in positions]
                rec._add_tensor_rows(names, [kind] * len(names), counts, moments, device)
            for positions, values in ratios:
                names = [self._names["update_ratio"][i] for i in positions]
                rec._add_scalar_rows(names, ["update"] * len(names), values, device)
        for key in set(self._snapshots) - used:  # parameters moved to another device or dtype
            del self._snapshots[key]

    def _snapshot(self, device, dtype, params: list[nn.Parameter], used: set) -> _Snapshot:
        """The snapshot of these parameters; a new (not yet valid) one if they changed."""
        key = (device, dtype)
        used.add(key)
        snap = self._snapshots.get(key)
        if snap is None or not snap.matches(params):
            snap = self._snapshots[key] = _Snapshot(params)
        return snap

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self in self.recorder._watches:
            self.recorder._watches.remove(self)
