"""`fastdiff.Recorder`: training diagnostics that stay on the device until a flush (API.md section 3).

Every `log*` call computes its stats right away on the tensor's own device (the tensor may be
overwritten later) and copies the raw accumulators into a preallocated device buffer
(`buffer.DeviceBuffer`); the host keeps only names and offsets. A flush copies each device's buffer
to the host once — the only sync — merges records of the same name and step (micro-batches, ranks)
exactly, and hands them to the sinks.
"""

from __future__ import annotations

import atexit
import numbers
import os
import weakref
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .. import kernels
from ..ops import _check_same, check_stats_input
from ..stats import split_raw_rows
from .buffer import TENSOR_WORDS, DeviceBuffer, Part
from .distributed import gather_to_rank0, rank_and_world
from .histogram import device_histogram
from .records import build_records
from .roles import check_role, default_role
from .sinks import JsonlSink, Sink
from .watch import Watch


def _positive_int(name: str, value, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}={value!r}: accepted an int >= {low}")
    return int(value)


def _close_at_exit(ref: weakref.ref):
    def close() -> None:
        rec = ref()
        if rec is not None:
            rec.close()

    return close


class Recorder:
    """Record tensor / pair / scalar stats during training without host syncs; write them at flushes.

    Args:
        path: the JSONL log (the default sink); None to use only `sinks`.
        sinks: more sinks, e.g. `TensorBoardSink(logdir)`, `WandbSink(run)`.
        flush_every: flush automatically every this many `step()` calls.
        backend: stats backend ("auto": the fastest available for each tensor's device).
        histogram_bins: > 0 adds a device-side histogram (over the tensor's own finite range) to
            every `log()` record, for the TensorBoard / wandb sinks (and a "hist" key in the JSONL).
        start_step: the first step number (resuming a run); append: append to an existing log.
        fsync: fsync the JSONL at each flush (survives a machine crash, not only a killed process).

    Under torch.distributed (initialised before the Recorder), every rank must create the Recorder
    and call `step()` / `flush()` / `close()` the same number of times; records of the same name and
    step merge across ranks and rank 0 alone writes.

    >>> import os, tempfile, torch, fastdiff as fd
    >>> path = os.path.join(tempfile.mkdtemp(), "run.jsonl")
    >>> with fd.Recorder(path, backend="torch") as rec:
    ...     rec.log("x_t", torch.randn(4, 8))
    ...     rec.log_pair("v_pred~v_tgt", torch.ones(8), 2 * torch.ones(8))
    ...     rec.log_scalar("loss", torch.tensor(0.5))
    ...     rec.step()
    >>> [r["name"] for r in fd.probe.read_jsonl(path).records]
    ['x_t', 'v_pred~v_tgt', 'loss']
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        *,
        sinks: Sequence[Sink] = (),
        flush_every: int = 100,
        backend: str = "auto",
        histogram_bins: int = 0,
        start_step: int = 0,
        append: bool = False,
        fsync: bool = False,
    ):
        self.flush_every = _positive_int("flush_every", flush_every)
        self.histogram_bins = _positive_int("histogram_bins", histogram_bins, allow_zero=True)
        self._step = _positive_int("start_step", start_step, allow_zero=True)
        if backend != "auto" and backend not in kernels.BACKENDS:
            raise ValueError(f"backend={backend!r} is not supported; accepted: 'auto', {', '.join(kernels.BACKENDS)}")
        self.backend = backend
        if isinstance(sinks, Sink) or not all(isinstance(s, Sink) for s in sinks):
            raise TypeError(f"sinks must be a list of fastdiff.probe sinks; got {sinks!r}")
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path (str or os.PathLike) or None; got a {type(path).__name__}")
        self.sinks: list[Sink] = ([JsonlSink(path, append=append, fsync=fsync)] if path is not None else []) + list(
            sinks
        )
        if not self.sinks:
            raise ValueError("a Recorder needs somewhere to write: a path, or sinks=[...]")
        self.rank, self.world = rank_and_world()
        self._closed = True  # until the sinks are open
        if self.rank == 0:
            opened = []
            try:
                for sink in self.sinks:
                    sink.open()
                    opened.append(sink)
            except BaseException:
                for sink in opened:
                    sink.close()
                raise
        self._closed = False
        self._since_flush = 0
        self._parts: list[Part] = []
        self._buffers: list[DeviceBuffer] = []
        self._buffer_index: dict[torch.device, int] = {}
        self._impls: dict[torch.device, object] = {}
        self._names: dict[str, tuple[str, str | None, bool]] = {}  # name -> (kind, role, per_sample)
        self._watched: set[str] = set()
        self._watches: list[Watch] = []
        self._backlog: dict[int, Sequence[dict]] = {}  # records a failed sink has yet to take
        if self.world == 1:  # a script that ends without close() still gets its last records written
            self._atexit = _close_at_exit(weakref.ref(self))
            atexit.register(self._atexit)

    # ----------------------------------------------------------------------------------------------
    # state

    @property
    def current_step(self) -> int:
        """The step number that records logged now get."""
        return self._step

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Recorder is closed; create a new one (append=True continues a log)")

    def _due(self, every) -> bool:
        return every is None or self._step % _positive_int("every", every) == 0

    def _register(self, name, kind: str, role, per_sample: bool = False) -> str | None:
        """Validate a name's use: one kind (and per-sample or not) per name for the Recorder's lifetime."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str; got {name!r}")
        role = check_role(role)
        known = self._names.get(name)
        if known is None:
            role = role if role is not None else default_role(name)
            self._names[name] = (kind, role, per_sample)
            return role
        known_kind, known_role, known_per_sample = known
        if (known_kind, known_per_sample) != (kind, per_sample):

            def what(k, ps):
                return f"{k} (per sample)" if ps else k

            raise ValueError(
                f"{name!r} was first logged as {what(known_kind, known_per_sample)}; it cannot be logged as "
                f"{what(kind, per_sample)} too: use another name"
            )
        if role is not None and role != known_role:
            raise ValueError(f"{name!r} was first logged with role {known_role!r}; got role {role!r}")
        return known_role

    def _claim_names(self, names: Iterable[tuple[str, str, str]], log_names: Iterable[str]) -> None:
        """Reserve a watch's names (kind, role); a second watch of the same names needs a prefix."""
        names, log_names = list(names), list(log_names)
        taken = sorted({n for n, _, _ in names} & self._watched | set(log_names) & self._watched)
        if taken:
            raise ValueError(f"{taken[0]!r} is already watched; watch a second model with prefix='name.'")
        for name, kind, role in names:
            self._register(name, kind, role)
        self._watched.update(n for n, _, _ in names)
        self._watched.update(log_names)

    def _impl(self, device: torch.device):
        impl = self._impls.get(device)
        if impl is None:
            impl = self._impls[device] = kernels.resolve(self.backend, device)
        return impl

    def _buffer(self, device: torch.device) -> tuple[int, DeviceBuffer]:
        index = self._buffer_index.get(device)
        if index is None:
            index = self._buffer_index[device] = len(self._buffers)
            self._buffers.append(DeviceBuffer(device))
        return index, self._buffers[index]

    # ----------------------------------------------------------------------------------------------
    # logging: no host sync anywhere below; inputs are detached first (check_stats_input), so no
    # autograd graph is built without the cost of a no_grad context on every call

    def log(self, name: str, tensor: torch.Tensor, role: str | None = None, per_sample: bool = False, every=None):
        """Stats of `tensor` (API.md section 1 fields); `per_sample=True` adds one row per index of dim 0.

        `every=N` records it only at steps divisible by N. No host sync.
        """
        self._check_open()
        if not self._due(every):
            return
        x = check_stats_input(tensor, "tensor")
        per_sample = bool(per_sample)
        if per_sample and x.dim() == 0:
            raise ValueError(f"per_sample=True needs a tensor with a batch dimension; {name!r} is 0-d")
        role = self._register(name, "tensor", role, per_sample)
        index, buf = self._buffer(x.device)
        offset = buf.put_stats(self._impl(x.device), x, per_sample)
        hist_offset = -1
        if self.histogram_bins and not per_sample:
            moments = split_raw_rows(buf.rows(offset, 1))[1][0]
            hist_offset = buf.put_words(device_histogram(x, moments, self.histogram_bins))
        rows = x.shape[0] if per_sample else 1
        self._parts.append(
            Part(
                self._step, [name], "tensor", [role], index, offset, rows, per_sample, hist_offset, self.histogram_bins
            )
        )

    def log_pair(
        self, name: str, a: torch.Tensor, b: torch.Tensor, role: str | None = None, per_sample: bool = False, every=None
    ):
        """Agreement of a with b: cos, norm_ratio (‖a‖/‖b‖), mse, max_abs_diff. No host sync."""
        self._check_open()
        if not self._due(every):
            return
        a = check_stats_input(a, "a")
        b = check_stats_input(b, "b")
        _check_same("a", a, "b", b)
        per_sample = bool(per_sample)
        if per_sample and a.dim() == 0:
            raise ValueError(f"per_sample=True needs tensors with a batch dimension; {name!r} has 0-d tensors")
        role = self._register(name, "pair", role, per_sample)
        raw = self._impl(a.device).pair_stats(a, b, per_sample)
        index, buf = self._buffer(a.device)
        offset = buf.put_floats(raw)
        rows = a.shape[0] if per_sample else 1
        self._parts.append(Part(self._step, [name], "pair", [role], index, offset, rows, per_sample))

    def log_scalar(self, name: str, value, role: str | None = None, every=None):
        """A Python number or a one-element tensor (e.g. the loss), kept on its device: no host sync."""
        self._check_open()
        if not self._due(every):
            return
        if isinstance(value, torch.Tensor):
            t = check_stats_input(value, "value")
            if t.numel() != 1:
                raise ValueError(
                    f"log_scalar needs a float or a one-element tensor; {name!r} has shape {tuple(t.shape)}"
                )
            role = self._register(name, "scalar", role)
            index, buf = self._buffer(t.device)
            self._parts.append(Part(self._step, [name], "scalar", [role], index, buf.put_floats(t)))
            return
        if isinstance(value, numbers.Real):
            role = self._register(name, "scalar", role)
            self._parts.append(Part(self._step, [name], "scalar", [role], -1, 0, value=float(value)))
            return
        raise TypeError(f"log_scalar needs a float or a one-element tensor; {name!r} got a {type(value).__name__}")

    def _add_tensor_rows(self, names, roles, counts, moments, device) -> None:
        """A run of whole-tensor records (multi_tensor_stats / update_stats rows) in fresh buffer rows."""
        index, buf = self._buffer(device)
        offset = buf.put_tensor_rows(counts, moments)
        self._parts.append(Part(self._step, names, "tensor", roles, index, offset, width=TENSOR_WORDS))

    def _add_scalar_rows(self, names, roles, values: torch.Tensor, device) -> None:
        index, buf = self._buffer(device)
        self._parts.append(Part(self._step, names, "scalar", roles, index, buf.put_floats(values), width=1))

    def watch(
        self,
        model: nn.Module,
        params: bool = True,
        grads: bool = True,
        activations=False,
        every: int = 100,
        *,
        updates: bool = True,
        prefix: str = "",
    ) -> Watch:
        """Parameter, gradient and update (Δw, ‖Δw‖/‖w‖ since the last watched step) stats every `every`
        steps, one multi_tensor_stats launch per device; `activations=True` (or module names) adds the
        outputs of leaf modules. Hooks only read. Returns the `Watch` (its `remove()` stops it).

        >>> import os, tempfile, torch, fastdiff as fd
        >>> net = torch.nn.Linear(3, 2)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> path = os.path.join(tempfile.mkdtemp(), "run.jsonl")
        >>> with fd.Recorder(path, backend="torch") as rec:
        ...     _ = rec.watch(net, every=1)
        ...     for _ in range(2):
        ...         net(torch.randn(4, 3)).sum().backward()
        ...         opt.step()  # the watch reads params, grads and updates right after the optimizer
        ...         rec.step()
        >>> log = fd.probe.read_jsonl(path)
        >>> log.names(role="update")
        ['update/weight', 'update/bias', 'update_ratio/weight', 'update_ratio/bias']
        """
        self._check_open()
        watch = Watch(
            self,
            model,
            params=params,
            grads=grads,
            updates=updates,
            activations=activations,
            every=every,
            prefix=prefix,
        )
        self._watches.append(watch)
        return watch

    # ----------------------------------------------------------------------------------------------
    # steps and flushes

    def step(self) -> None:
        """End the current step: watches capture (if no optimizer step did), the counter advances, and
        every `flush_every` steps the records are flushed."""
        self._check_open()
        for watch in self._watches:
            watch.on_step()
        self._step += 1
        self._since_flush += 1
        if self._since_flush >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Copy the device buffers to the host (one sync per device), merge, and write to the sinks."""
        self._check_open()
        self._flush()

    def _flush(self) -> None:
        self._since_flush = 0
        if self.world == 1 and not self._parts and not self._backlog:
            return
        snapshot = (self._parts, [buf.take() for buf in self._buffers])
        self._parts = []
        snapshots = gather_to_rank0(snapshot, self.rank, self.world)
        if self.rank != 0:
            return
        records = build_records(snapshots)
        failures = []
        for i, sink in enumerate(self.sinks):
            backlog = self._backlog.pop(i, None)
            pending = [*backlog, *records] if backlog else records
            if not pending:
                continue
            try:
                sink.write(pending)
            except Exception as exc:  # keep them for the next flush; report now
                self._backlog[i] = pending
                failures.append(f"{type(sink).__name__}: {exc}")
        if failures:
            raise RuntimeError(
                "fastdiff probe: a sink failed to write; its records are kept and retried at the next flush: "
                + "; ".join(failures)
            )

    def close(self) -> None:
        """Flush, detach watches and close the sinks. Idempotent."""
        if self._closed:
            return
        try:
            self._flush()
        finally:
            for watch in list(self._watches):
                watch.remove()
            self._closed = True
            if self.world == 1:
                atexit.unregister(self._atexit)
            if self.rank == 0:
                for sink in self.sinks:
                    sink.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
