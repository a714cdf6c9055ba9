"""`update_stats(params, snapshot)` of every backend (the probe watch's parameter and update stats).

The snapshot holds each parameter's run at its memory.aligned_runs offset (16-byte aligned), as the watch
lays it out; the padding between runs is never written.

Rows 0..P must be the stats of the parameters, rows P..2P the stats of w - s as torch computes it in
the storage dtype (the C++ backend fuses the three passes into one; the others flip the stats of s - w);
afterwards the snapshot holds the parameters' bits and the parameters are untouched. The C++ and
torch backends compute each row on its own, so their rows equal their multi_tensor_stats bit for bit;
Triton's multi-tensor reduction depends on the whole list, so its rows are checked against the float64
oracle only (as all rows are).
"""

from __future__ import annotations

import math

import pytest
import torch
from backends import backend_params, examples_for
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import assert_tensor_stats
from strategies import FLOAT_DTYPES, nonempty_shapes, shapes, tensors

from fastdiff import kernels
from fastdiff.kernels.memory import aligned_runs
from fastdiff.stats import TensorStats

ITEM = 1 << 16  # sizes spanning several of csrc/api.h's work items (16K elements), above its 2-thread size


def bits(t: torch.Tensor) -> torch.Tensor:
    """The stored bits (NaN payloads and -0.0 included)."""
    return t.contiguous().view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


def raw_equal(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> bool:
    return torch.equal(a[0], b[0]) and torch.equal(a[1].nan_to_num(7.0), b[1].nan_to_num(7.0))


def snapshot_of(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A contiguous snapshot: an older value of the parameter (a random step away, some entries equal)."""
    old = (p.double() - torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.01).to(p.dtype)
    keep = torch.rand(p.shape, generator=gen) < 0.3
    return torch.where(keep, p, old).contiguous()


def snapshot_buffer(params: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(the flat buffer, each parameter's run in it, shaped like it): the watch's layout (memory.aligned_runs)."""
    if not params:
        return torch.empty(0), []
    offsets, total = aligned_runs([p.numel() for p in params], params[0].element_size())
    flat = torch.full((total,), 1234.5, dtype=params[0].dtype)  # the padding between runs must stay untouched
    return flat, [flat[o : o + p.numel()].view(p.shape) for o, p in zip(offsets, params)]


def check_update_stats(backend: str, params: list[torch.Tensor], seed: int = 0) -> None:
    impl = kernels.resolve(backend, torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    flat, snaps = snapshot_buffer(params)
    for p, s in zip(params, snaps):
        s.copy_(snapshot_of(p, gen))
    padding = flat.clone()
    for s in snaps:  # the positions of the runs, in the copy: everything else is padding
        padding[s.data_ptr() // flat.element_size() - flat.data_ptr() // flat.element_size() :][: s.numel()] = 0
    before_params = [bits(p).clone() for p in params]
    deltas = [p - s for p, s in zip(params, snaps)]  # torch's own w - s, in the storage dtype
    want_params = impl.multi_tensor_stats(params) if params and backend != "triton" else None
    want_updates = impl.multi_tensor_stats(deltas) if params and backend != "triton" else None

    counts, moments = impl.update_stats(params, flat)

    n = len(params)
    assert counts.shape == (2 * n, 5) and moments.shape == (2 * n, 4)
    if n and backend != "triton":
        assert raw_equal((counts[:n], moments[:n]), want_params)
        assert raw_equal((counts[n:], moments[n:]), want_updates)
    for i, (p, d) in enumerate(zip(params, deltas)):
        assert_tensor_stats(TensorStats(counts[i], moments[i]), p)
        assert_tensor_stats(TensorStats(counts[n + i], moments[n + i]), d)
    for p, s, b in zip(params, snaps, before_params):
        assert torch.equal(bits(s), bits(p)), "the snapshot must now hold the parameter"
        assert torch.equal(bits(p), b), "the parameters must not change"
    in_runs = padding == 0
    assert torch.equal(flat[~in_runs], padding[~in_runs]), "the padding between runs must not be written"


def test_snapshot_runs_start_16_byte_aligned():
    for itemsize in (2, 4, 8):
        offsets, total = aligned_runs([35, 7, 0, 16, 1], itemsize)
        assert all(o * itemsize % 16 == 0 for o in offsets)
        ends = [o + n for o, n in zip(offsets, [35, 7, 0, 16, 1])]
        assert all(0 <= o - e < 16 // itemsize for e, o in zip(ends, offsets[1:])) and total == ends[-1]


@pytest.mark.parametrize("backend", backend_params())
def test_update_stats_of_every_dtype_and_layout(backend):
    @settings(max_examples=examples_for(backend, 40) // (2 if backend == "triton" else 1), deadline=None)
    @given(
        params=st.lists(tensors(dtypes=FLOAT_DTYPES, shape=shapes), min_size=0, max_size=4).filter(
            lambda ps: len({p.dtype for p in ps}) <= 1  # the watch groups parameters by dtype
        ),
        seed=st.integers(0, 2**31 - 1),
    )
    def run(params, seed):
        check_update_stats(backend, params, seed)

    run()


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_update_stats_across_work_items(backend, dtype):
    """Parameters longer than a work item (C++: split between threads), with NaN/Inf in the updates."""
    gen = torch.Generator().manual_seed(3)
    n = 2 * ITEM + 777 if backend != "triton" else 1500  # the Triton interpreter is slow
    big = (torch.randn(n, generator=gen, dtype=torch.float64) * 100 + 1e3).to(dtype)
    big[5] = math.inf
    big[n - 3] = math.nan
    small = torch.randn(3, 7, generator=gen).to(dtype).t()  # a transposed view
    check_update_stats(backend, [big, small, torch.empty(0, dtype=dtype)], seed=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpp_update_stats_one_and_two_threads_agree(dtype):
    ok, why = kernels.availability("cpp", "cpu")
    if not ok:
        pytest.skip(why)
    from fastdiff.kernels import cpu

    gen = torch.Generator().manual_seed(9)
    w = (torch.randn(3 * ITEM + 5, generator=gen) * 10).to(dtype)
    s = snapshot_of(w, gen)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(cpu.update_stats([w], s.clone()))  # one run: the layout is the tensor itself
    finally:
        torch.set_num_threads(before)
    assert raw_equal(results[0], results[1])


@given(shape=nonempty_shapes)
@settings(max_examples=10, deadline=None)
def test_cpp_update_stats_refuses_what_it_cannot_do(shape):
    ok, why = kernels.availability("cpp", "cpu")
    if not ok:
        pytest.skip(why)
    from fastdiff import _cpu
    from fastdiff.kernels import cpu

    w = torch.randn(shape)
    spec = cpu.view_spec
    out = (spec(torch.empty(2, 5, dtype=torch.int64)), spec(torch.empty(2, 4, dtype=torch.float64)))

    def call(params, snapshot, out=out, offsets=None):
        if offsets is None:  # back to back
            offsets = [sum(p.numel() for p in params[:i]) for i in range(len(params))]
        _cpu.update_stats([spec(p) for p in params], spec(snapshot), offsets, *out, 1)

    with pytest.raises(ValueError, match=f"inside the {w.numel() - 1} elements of the snapshot"):
        call([w], torch.empty(w.numel() - 1))
    quad = (spec(torch.empty(4, 5, dtype=torch.int64)), spec(torch.empty(4, 4, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"run of params\[1\] at offset 0 .* not after the previous run"):
        call([w, w], torch.empty(2 * w.numel()), out=quad, offsets=[0, 0])  # overlapping runs
    with pytest.raises(ValueError, match="offsets: 1 for 2 parameters"):
        call([w, w], torch.empty(2 * w.numel()), out=quad, offsets=[0])
    with pytest.raises(TypeError, match="snapshot: dtype float64 but params.0. is float32"):
        call([w], w.double())
    with pytest.raises(TypeError, match="accepted: float32"):
        call([w.int()], w.int())
    with pytest.raises(ValueError, match="overlaps"):
        call([w], w)  # the snapshot is the parameter itself
    with pytest.raises(ValueError, match="counts: shape"):
        call([w, w], torch.empty(2 * w.numel()))  # 2 parameters need 4 result rows
    if w.numel() > 1:
        big = torch.empty(2 * w.numel())
        with pytest.raises(ValueError, match="contiguous"):
            call([w], big[::2])
        with pytest.raises(ValueError, match=r"params\[1\] overlaps"):  # a parameter inside the snapshot
            call([w, big[1 : 1 + w.numel()]], big[: 2 * w.numel()], out=quad)
    # parameters may share memory with each other (they are only read); runs may have gaps between them
    snap = torch.zeros(2 * w.numel() + 3)
    quad = (torch.empty(4, 5, dtype=torch.int64), torch.empty(4, 4, dtype=torch.float64))
    _cpu.update_stats([spec(w), spec(w)], spec(snap), [0, w.numel() + 3], spec(quad[0]), spec(quad[1]), 1)
    assert torch.equal(snap, torch.cat([w.reshape(-1), torch.zeros(3), w.reshape(-1)]))
    # integer parameters (never trained, but possible) go through the torch backend's way
    ints = torch.arange(6, dtype=torch.int32)
    snap = torch.zeros(6, dtype=torch.int32)
    counts, _ = cpu.update_stats([ints], snap)
    assert counts[1, 0] == 6 and torch.equal(snap, ints)
