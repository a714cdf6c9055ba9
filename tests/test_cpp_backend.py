"""The C++ CPU backend (csrc/, fastdiff.kernels.cpu): what the contract tests do not cover.

Aliasing, bit-identical results for 1 and 2 threads, the extension's own checks of what Python passes
it (a Python exception, never a crash), NaN/Inf and extreme magnitudes in every code path, empty and
0-d tensors, and both instruction sets. The contract tests (test_stats_contract.py,
test_step_contract.py) already check every option, dtype and layout against the float64 oracle.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import assert_pair_match, assert_rows_match, assert_stats_match, assert_tensor_stats
from strategies import ALL_DTYPES, FLOAT_DTYPES, fill_random, make_view, tensors
from test_step_contract import step_case

import fastdiff as fd
from fastdiff import kernels, reference
from fastdiff.step import (
    COEFF_FIELDS,
    MAX_HISTORY,
    ClipRange,
    CoeffTable,
    DynamicThreshold,
    StepCoeffs,
    StepResult,
)

NUM_COEFFS = len(COEFF_FIELDS)

ok, why = kernels.availability("cpp", "cpu")
pytestmark = pytest.mark.skipif(not ok, reason=why)
if ok:
    from fastdiff import _cpu
    from fastdiff.kernels import cpu

ISAS = ["base"] + (["avx2"] if ok and _cpu.avx2_supported() else [])
BIG = 3 * (1 << 16) + 12_345  # more than two work items: two threads really split the work


@pytest.fixture(params=ISAS)
def isa(request):
    """Run a test with each instruction set this CPU supports (results differ in rounding only)."""
    before = _cpu.isa()
    _cpu.set_isa(request.param)
    yield request.param
    _cpu.set_isa(before)


@pytest.fixture
def num_threads():
    before = torch.get_num_threads()

    def use(n: int):
        torch.set_num_threads(n)

    yield use
    torch.set_num_threads(before)


def ddim(alpha_t=0.3, alpha_prev=0.6, **kw) -> StepCoeffs:
    return StepCoeffs.from_prediction(
        "epsilon", alpha_t, math.sqrt(1 - alpha_t**2), p0=alpha_prev, pe=math.sqrt(1 - alpha_prev**2), **kw
    )


INT_OF = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical floats (signed zeros included); NaN only as NaN (payloads differ within PyTorch)."""
    nan = b.isnan()
    ia, ib = a.contiguous().view(INT_OF[a.dtype]), b.contiguous().view(INT_OF[b.dtype])
    return a.dtype == b.dtype and torch.equal(a.isnan(), nan) and torch.equal(ia[~nan], ib[~nan])


def raw_equal(a, b) -> bool:
    """Raw stats (counts, moments) identical, NaN-aware."""
    return torch.equal(a.counts, b.counts) and torch.equal(a.moments.nan_to_num(7.0), b.moments.nan_to_num(7.0))


# --------------------------------------------------------------------------------------------------
# aliasing: `out` (or x0_out) is an input, as the very same view


@pytest.mark.parametrize("alias", ["x", "model_output", "noise", "history"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_out_aliasing_an_input_gives_the_same_result(alias, dtype):
    g = torch.Generator().manual_seed(3)
    base = {k: torch.randn(4, 5, 77, generator=g).to(dtype) for k in ("x", "model_output", "noise", "history")}
    c = StepCoeffs.from_prediction("v_prediction", 0.6, 0.8, px=0.1, p0=0.7, pe=0.5, pn=0.2, ph=(0.3,))

    def run(out, x0_out, t):
        return fd.fused_step(
            t["x"],
            t["model_output"],
            c,
            clip=1.0,
            noise=t["noise"],
            history=(t["history"],),
            out=out,
            x0_out=x0_out,
            backend="cpp",
        )

    want = run(None, torch.empty(4, 5, 77, dtype=dtype), base)
    inputs = {k: v.clone() for k, v in base.items()}
    got = run(inputs[alias], None, inputs)
    assert got.prev_sample.data_ptr() == inputs[alias].data_ptr()
    assert torch.equal(got.prev_sample, want.prev_sample)
    assert raw_equal(got.stats, want.stats) and raw_equal(got.x0_stats, want.x0_stats)
    # x0_out may alias an input too (and out another one)
    inputs = {k: v.clone() for k, v in base.items()}
    other = "noise" if alias != "noise" else "x"
    got = run(inputs[other], inputs[alias], inputs)
    assert torch.equal(got.prev_sample, want.prev_sample) and torch.equal(got.pred_x0, want.pred_x0)


def test_aliasing_a_strided_view():
    x = torch.randn(6, 40)[:, ::3]  # non-contiguous; out is that same view
    e = torch.randn(6, 14)
    want = fd.fused_step(x.clone(), e, ddim(), clip=1.0, backend="cpp")
    fd.fused_step(x, e, ddim(), clip=1.0, out=x, backend="cpp")
    assert torch.equal(x, want.prev_sample)


def test_output_layout_the_extension_cannot_prove_goes_through_a_copy():
    # offsets {0, 3, 2, 5, 4, 7}: no overlap, but not provable by the sorted-stride rule
    out = torch.zeros(8).as_strided((3, 2), (2, 3))
    assert not cpu.provably_non_overlapping(out)
    x, e = torch.randn(3, 2), torch.randn(3, 2)
    r = fd.fused_step(x, e, ddim(), clip=1.0, out=out, backend="cpp")
    assert r.prev_sample is out
    assert torch.equal(out, fd.fused_step(x, e, ddim(), clip=1.0, backend="torch").prev_sample)


# --------------------------------------------------------------------------------------------------
# the same maths as the torch backend, bit for bit (same lines, same order, no FMA, signed zeros), and
# stats of the stored outputs equal to a separate tensor_stats pass


@settings(max_examples=60)
@given(case=step_case())
def test_step_equals_torch_backend_bitwise(case):
    kw = {k: case[k] for k in ("uncond", "guidance_scale", "clip", "history", "noise", "return_x0")}
    r_cpp = fd.fused_step(case["x"], case["model_output"], case["coeffs"], backend="cpp", **kw)
    r_torch = fd.fused_step(case["x"], case["model_output"], case["coeffs"], backend="torch", **kw)
    assert same_bits(r_cpp.prev_sample, r_torch.prev_sample)
    if case["return_x0"]:
        assert same_bits(r_cpp.pred_x0, r_torch.pred_x0)
    assert int(r_cpp.clipped) == int(r_torch.clipped)
    assert raw_equal(r_cpp.stats, fd.tensor_stats(r_cpp.prev_sample, backend="cpp"))


STREAMED = (8 << 20) // 4 + 3 * 1024 + 13  # float32 elements past csrc/module.cpp's STREAM_BYTES, odd tail


@pytest.mark.parametrize(
    "case",
    ["plain", "alias_x", "x0_out", "misaligned", "history", "noise_dynamic", "float64"],
)
def test_streamed_large_outputs_equal_the_torch_backend(case, isa):
    """Outputs of 8 MB and more are written with non-temporal stores (csrc/kernels.h, copy_out), in place
    of `x`, unaligned, with the step's every kind of term."""
    g = torch.Generator().manual_seed(11)
    dtype = torch.float64 if case == "float64" else torch.float32
    n = STREAMED if dtype == torch.float32 else STREAMED // 2 + 7
    x = (torch.randn(4, n // 4 + 1, generator=g, dtype=torch.float64) * 2).to(dtype)
    e = torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype)
    e[1, 5] = math.nan
    x[2, 7] = math.inf
    kw = dict(clip=1.0, return_x0=True)
    c = ddim()
    if case == "history":
        kw["history"] = (torch.randn(x.shape, generator=g).to(dtype),)
        c = StepCoeffs.from_prediction("epsilon", 0.3, math.sqrt(1 - 0.09), p0=0.6, pe=0.5, ph=(0.25,))
    if case == "noise_dynamic":
        kw["noise"] = torch.randn(x.shape, generator=g).to(dtype)
        kw["clip"] = DynamicThreshold(0.9, max_value=3.0)
        c = StepCoeffs.from_prediction("epsilon", 0.3, math.sqrt(1 - 0.09), p0=0.6, pe=0.5, pn=0.1)
    want = fd.fused_step(x, e, c, backend="torch", **kw)
    out = x0_out = None
    if case == "alias_x":
        out = x.clone()
    if case == "x0_out":
        x0_out = torch.empty_like(x)
    if case == "misaligned":  # one element off the allocation's alignment
        out = torch.empty(x.numel() + 1, dtype=dtype)[1:].view(x.shape)
    xin = out if case == "alias_x" else x
    got = fd.fused_step(xin, e, c, backend="cpp", out=out, x0_out=x0_out, **kw)
    assert same_bits(got.prev_sample, want.prev_sample)
    assert same_bits(got.pred_x0, want.pred_x0)
    assert int(got.clipped) == int(want.clipped)
    assert raw_equal(got.stats, fd.tensor_stats(got.prev_sample, backend="cpp"))
    assert raw_equal(got.x0_stats, fd.tensor_stats(got.pred_x0, backend="cpp"))
    if out is not None:
        assert got.prev_sample.data_ptr() == out.data_ptr()


def test_step_stats_equal_a_separate_pass(isa):
    x = torch.randn(BIG) * 2
    e = torch.randn(BIG)
    e[1000] = math.nan
    r = fd.fused_step(x, e, ddim(), clip=1.0, return_x0=True, backend="cpp")
    assert raw_equal(r.stats, fd.tensor_stats(r.prev_sample, backend="cpp"))
    assert raw_equal(r.x0_stats, fd.tensor_stats(r.pred_x0, backend="cpp"))


def test_packed_results_stack_into_each_steps_own_stats():
    # the C++ step returns its clipped count and raw rows packed; a loop stacks them with one conversion
    # (StepResult.stack), which must equal the steps' own decoded results, row by row
    steps = []
    for k in range(3):
        x, e = torch.randn(5, 37) * (k + 1), torch.randn(5, 37)
        e[k, k] = math.inf
        steps.append(fd.fused_step(x, e, ddim(), clip=0.5 + k, return_x0=True, backend="cpp"))
    kept = [r.stats_only() for r in steps]
    assert all(r.prev_sample is None and r.pred_x0 is None for r in kept)
    clipped, (counts, moments) = StepResult.stack(kept)
    assert clipped.tolist() == [int(r.clipped) for r in steps] and clipped.tolist() != [0, 0, 0]
    for i, r in enumerate(steps):
        for row, s in enumerate((r.stats, r.x0_stats)):
            assert torch.equal(counts[i, row], s.counts) and torch.equal(moments[i, row], s.moments)
    # a step already read (its stats made) goes the generic way, with the same values
    assert torch.equal(StepResult.stack(steps)[1][1], moments)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_x0_stats_are_of_the_rounded_values_even_when_not_stored(dtype):
    x, e = torch.randn(3, 1000).to(dtype), torch.randn(3, 1000).to(dtype)
    stored = fd.fused_step(x, e, ddim(), clip=(-0.7, 0.9), return_x0=True, backend="cpp")
    unstored = fd.fused_step(x, e, ddim(), clip=(-0.7, 0.9), backend="cpp")
    assert unstored.pred_x0 is None
    assert raw_equal(unstored.x0_stats, stored.x0_stats)
    assert_tensor_stats(unstored.x0_stats, stored.pred_x0)


# --------------------------------------------------------------------------------------------------
# determinism: identical results for 1 and 2 threads


def _all_results(x: torch.Tensor, y: torch.Tensor):
    c = StepCoeffs.from_prediction("epsilon", 0.5, math.sqrt(0.75), px=0.1, p0=0.7, pe=0.7, pn=0.3)
    r = fd.fused_step(x, y, c, clip=DynamicThreshold(0.9, 1.5), noise=y.flip(0), return_x0=True, backend="cpp")
    return [
        fd.tensor_stats(x, backend="cpp").raw,
        fd.tensor_stats(x, dim=0, backend="cpp").raw,
        fd.tensor_stats(x.transpose(0, 1), backend="cpp").raw,
        fd.multi_tensor_stats([x, y, x[1:]], backend="cpp").raw,
        (fd.pair_stats(x, y, backend="cpp").raw,),
        (fd.pair_stats(x, y, dim=0, backend="cpp").raw,),
        (r.prev_sample, r.pred_x0, r.clipped, *r.stats.raw, *r.x0_stats.raw),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_one_and_two_threads_are_bit_identical(dtype, num_threads, isa):
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(3, BIG // 3, generator=g, dtype=torch.float64) * 10 + 1e4).to(dtype)
    y = torch.randn(3, BIG // 3, generator=g).to(dtype)
    x[1, 77] = math.inf
    num_threads(1)
    one = _all_results(x, y)
    num_threads(2)
    two = _all_results(x, y)
    for a, b in zip(one, two):
        for ta, tb in zip(a, b):
            assert torch.equal(ta.nan_to_num(7.0), tb.nan_to_num(7.0))


def test_thread_count_is_passed_through(num_threads, monkeypatch):
    seen = []
    real = _cpu.tensor_stats
    monkeypatch.setattr(_cpu, "tensor_stats", lambda *a: seen.append(a[-1]) or real(*a))
    for n in (1, 2, 3):
        num_threads(n)
        fd.tensor_stats(torch.randn(10), backend="cpp")
    assert seen == [1, 2, 3]


# --------------------------------------------------------------------------------------------------
# NaN / Inf and extreme magnitudes: the fast path, the slow path, the rescaling


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.full((5000,), math.nan),
        lambda: torch.full((5000,), math.inf),
        lambda: torch.tensor([math.inf, -math.inf] * 2500),
        lambda: torch.cat([torch.randn(3000), torch.tensor([math.nan]), torch.randn(1999)]),  # one bad block
        lambda: torch.cat([torch.randn(1024), torch.full((1024,), -math.inf), torch.randn(1032)]),
        lambda: torch.full((4096,), 3.0e38) * torch.tensor([1.0, -1.0] * 2048),  # float sums overflow
        lambda: torch.full((4096,), 3.4e38),
        lambda: torch.randn(4096 + 8) * 1e-30,  # squares underflow float32 without rescaling
        lambda: torch.randn(4104) * 1e-41,  # subnormal floats
        lambda: torch.randn(4104) * 1e30,  # squares overflow float32 without rescaling
        lambda: torch.randn(4104, dtype=torch.float64) * 1e150,
        lambda: torch.full((3000,), 0.1),  # all equal
        lambda: (torch.randn(2**14, dtype=torch.float64) + 1e6).float(),
        lambda: torch.tensor([0.0, -0.0] * 600),
    ],
)
def test_special_values_and_magnitudes(make, isa):
    x = make()
    assert_tensor_stats(fd.tensor_stats(x, backend="cpp"), x)
    rows = x.reshape(8, -1)
    assert_rows_match(fd.tensor_stats(rows, dim=0, backend="cpp"), rows)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_nan_and_inf_through_the_step(dtype):
    x = torch.randn(2, 3000).to(dtype)
    e = torch.randn(2, 3000).to(dtype)
    x[0, 5], e[0, 6], e[1, 2999] = math.nan, math.inf, -math.inf
    c = ddim()
    r = fd.fused_step(x, e, c, clip=1.0, return_x0=True, backend="cpp")
    want, want_x0, _ = reference.generic_step(x, e, c, clip=ClipRange(-1, 1))
    assert torch.equal(r.prev_sample.isnan(), want.isnan())
    assert torch.equal(r.pred_x0.isnan(), want_x0.isnan())
    assert int(r.x0_stats.nan_count) == 1 and int(r.stats.nan_count) == int(want.isnan().sum())
    assert r.pred_x0[0, 6] == -1.0 and r.pred_x0[1, 2999] == 1.0  # x0 = (x - s eps) / a: -/+inf, clamped
    assert_tensor_stats(r.stats, r.prev_sample)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_conversions_match_torch_on_every_value(dtype, isa):
    # all 65536 bit patterns in (read exactly), and x' = 1.7 (0.3 x) rounded back to the format: every
    # rounding case (subnormal results, overflow to Inf, NaN) against PyTorch's own conversion
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    s = fd.tensor_stats(x, backend="cpp").to_dict()
    assert s["nan_count"] == int(x.isnan().sum()) and s["posinf_count"] == 1 and s["neginf_count"] == 1
    assert_tensor_stats(fd.tensor_stats(x, backend="cpp"), x)
    c = StepCoeffs(cx=0.3, p0=1.7)
    got = fd.fused_step(x, x, c, return_x0=True, backend="cpp")
    want = fd.fused_step(x, x, c, return_x0=True, backend="torch")
    assert same_bits(got.prev_sample, want.prev_sample) and same_bits(got.pred_x0, want.pred_x0)


def test_absent_term_ignores_inf_and_nan():
    # px = 0: x holds Inf/NaN but its term is absent; 0 * inf must not make a NaN
    x = torch.tensor([math.inf, math.nan, 1.0])
    c = StepCoeffs(co=1.0, p0=1.0)
    r = fd.fused_step(x, torch.tensor([1.0, 2.0, 3.0]), c, backend="cpp")
    assert r.prev_sample.tolist() == [1.0, 2.0, 3.0]


# --------------------------------------------------------------------------------------------------
# empty, 0-d, odd dtypes and layouts


def test_empty_and_zero_d():
    for shape in [(0,), (3, 0), (0, 4)]:
        x = torch.empty(shape)
        r = fd.fused_step(x, x, ddim(), clip=1.0, return_x0=True, backend="cpp")
        assert r.prev_sample.shape == shape and int(r.clipped) == 0 and int(r.stats.count) == 0
    x, e = torch.tensor(0.5), torch.tensor(-2.0)
    r = fd.fused_step(x, e, ddim(), clip=1.0, return_x0=True, backend="cpp")
    want, want_x0, n = reference.generic_step(x, e, ddim(), clip=ClipRange(-1, 1))
    assert r.prev_sample.shape == () and int(r.clipped) == n
    assert torch.allclose(r.prev_sample.double(), want) and torch.allclose(r.pred_x0.double(), want_x0)
    d = fd.pair_stats(torch.empty(0), torch.empty(0), backend="cpp").to_dict()
    assert all(math.isnan(v) for v in d.values())
    assert fd.pair_stats(torch.empty(2, 0), torch.empty(2, 0), dim=0, backend="cpp").raw.tolist() == [[0.0] * 6] * 2


@settings(max_examples=40)
@given(a=tensors(dtypes=ALL_DTYPES, special=False), data=st.data())
def test_pair_stats_of_any_dtype(a, data):
    b = data.draw(tensors(dtypes=ALL_DTYPES, shape=st.just(tuple(a.shape)), special=False))
    assert_pair_match(fd.pair_stats(a, b, backend="cpp").to_dict(), reference.pair_stats(a, b))


def test_dtypes_the_extension_does_not_read_fall_back():
    x = torch.tensor([0, 7, 65535, 3], dtype=torch.uint16)
    assert_tensor_stats(fd.tensor_stats(x, backend="cpp"), x)
    got = fd.multi_tensor_stats([torch.randn(5), x, torch.arange(4)], backend="cpp").to_dict()
    assert_stats_match({k: v[1] for k, v in got.items()}, reference.tensor_stats(x))
    assert_stats_match({k: v[2] for k, v in got.items()}, reference.tensor_stats(torch.arange(4)))


def test_negative_view_is_read_as_its_values():
    x = torch.randn(100)
    neg = torch._neg_view(x)
    assert neg.is_neg()
    assert_tensor_stats(fd.tensor_stats(neg, backend="cpp"), -x)
    r = fd.fused_step(neg, x, StepCoeffs(cx=1.0, co=1.0, p0=1.0), backend="cpp")
    assert r.prev_sample.abs().max() == 0


def test_expanded_and_long_rows(isa):
    # stride-0 inputs to the step; per-sample rows longer than a work item, and rows spanning blocks
    base = torch.randn(1, 70_001)
    x = base.expand(3, -1)
    e = torch.randn(3, 70_001)
    r = fd.fused_step(x, e, ddim(), clip=1.0, backend="cpp")
    assert torch.equal(r.prev_sample, fd.fused_step(x.contiguous(), e, ddim(), clip=1.0, backend="cpp").prev_sample)
    y = torch.randn(3, 2 * 65536 + 5, dtype=torch.float64) * 1e3 - 7
    assert_rows_match(fd.tensor_stats(y, dim=0, backend="cpp"), y)
    z = torch.randn(1000, 1037)[:, 3:1030]  # rows of 1027 elements: blocks cross rows
    assert_tensor_stats(fd.tensor_stats(z, backend="cpp"), z)


def test_coefficient_table_index_out_of_range_is_an_index_error():
    table = CoeffTable.from_coeffs([ddim()])
    table.index += 1
    with pytest.raises(IndexError, match="out of range"):
        fd.fused_step(torch.randn(4), torch.randn(4), table, backend="cpp")


def test_without_the_extension_auto_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastdiff._cpu", None)  # import fails as if never built
    kernels.clear_caches()
    monkeypatch.setattr(kernels, "_warned", set())
    try:
        assert "cpp" not in fd.available_backends()
        with pytest.warns(RuntimeWarning, match="cpp"):
            s = fd.tensor_stats(torch.arange(4.0))
        assert s.mean.item() == 1.5
        with pytest.raises(RuntimeError, match="not built"):
            fd.tensor_stats(torch.arange(4.0), backend="cpp")
    finally:
        monkeypatch.undo()
        kernels.clear_caches()
    assert "cpp" in fd.available_backends()


# --------------------------------------------------------------------------------------------------
# the extension checks everything it is given: bad specs raise, never crash


def spec(t: torch.Tensor, **change):
    """cpu.view_spec(t) with fields replaced: ptr, nbytes, dtype, offset, sizes, strides."""
    fields = dict(zip(("ptr", "nbytes", "dtype", "offset", "sizes", "strides"), cpu.view_spec(t)))
    fields.update(change)
    return tuple(fields.values())


def stats_call(view, rows=1):
    counts, moments = torch.empty(rows, 5, dtype=torch.int64), torch.empty(rows, 4, dtype=torch.float64)
    _cpu.tensor_stats([view], [rows], cpu.view_spec(counts), cpu.view_spec(moments), 1)
    return counts, moments


BUF = torch.arange(64, dtype=torch.float32)


@pytest.mark.parametrize(
    "change, err, match",
    [
        (dict(dtype=10), TypeError, "dtype code"),
        (dict(dtype=-1), TypeError, "dtype code"),
        (dict(sizes=[2, 2], strides=[1]), ValueError, "strides"),
        (dict(sizes=[-1], strides=[1]), ValueError, "negative size"),
        (dict(sizes=[4], strides=[-1]), ValueError, "negative stride"),
        (dict(offset=-3), ValueError, "negative storage offset"),
        (dict(nbytes=-8), ValueError, "negative buffer size"),
        (dict(sizes=[65], strides=[1]), ValueError, "reach element 64"),
        (dict(sizes=[2, 2], strides=[70, 1]), ValueError, "reach element"),
        (dict(offset=60, sizes=[5], strides=[1]), ValueError, "reach element"),
        (dict(nbytes=100), ValueError, "reach element"),  # 25 floats for a 64-element view
        (dict(dtype=1), ValueError, "reach element"),  # the same bytes read as float64: 32 elements
        (dict(sizes=[1 << 40, 1 << 40], strides=[0, 0]), ValueError, "too many elements"),
        (dict(sizes=[2, 2], strides=[1 << 62, 1 << 62]), ValueError, "overflow"),
        (dict(ptr=0), ValueError, "null"),
        (dict(ptr=BUF.data_ptr() + 2), ValueError, "aligned"),
        (dict(sizes=[1] * 65, strides=[1] * 65), ValueError, "dimensions"),
    ],
)
def test_bad_view_specs_raise(change, err, match):
    with pytest.raises(err, match=match):
        stats_call(spec(BUF, **change))


@pytest.mark.parametrize(
    "bad",
    [
        ("not", "a", "spec"),
        (BUF.data_ptr(), 256, 0, 0, [64]),  # five fields
        (-5, 256, 0, 0, [64], [1]),  # negative pointer
        (BUF.data_ptr(), 256, 0, 0, [64.5], [1]),
        (BUF.data_ptr(), 256, 0, 0, [1 << 70], [1]),
    ],
)
def test_malformed_specs_raise_type_errors(bad):
    with pytest.raises(TypeError):
        stats_call(bad)


def test_bad_result_buffers_and_rows_raise():
    good = cpu.view_spec(BUF)
    counts, moments = torch.empty(1, 5, dtype=torch.int64), torch.empty(1, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="rows"):
        stats_call(good, rows=5)  # 64 elements are not 5 equal rows
    with pytest.raises(ValueError, match="row counts"):
        _cpu.tensor_stats([good], [1, 1], cpu.view_spec(counts), cpu.view_spec(moments), 1)
    with pytest.raises(ValueError, match=r"shape \(1, 5\), expected \(2, 5\)"):
        _cpu.tensor_stats([good], [2], cpu.view_spec(counts), cpu.view_spec(moments), 1)
    with pytest.raises(TypeError, match="expected int64"):
        _cpu.tensor_stats([good], [1], cpu.view_spec(moments[:, :4].float().expand(1, 4)), cpu.view_spec(moments), 1)
    # result rows may lie apart (columns of one [R, 9] raw-row table); columns must be adjacent, rows apart
    with pytest.raises(ValueError, match="columns adjacent"):
        _cpu.tensor_stats(
            [good], [1], cpu.view_spec(torch.empty(1, 10, dtype=torch.int64)[:, ::2]), cpu.view_spec(moments), 1
        )
    two = torch.empty(2, 5, dtype=torch.int64)
    with pytest.raises(ValueError, match="rows at least 5 elements apart"):
        _cpu.tensor_stats(
            [good], [2], cpu.view_spec(two.view(-1)[:8].as_strided((2, 5), (3, 1))), cpu.view_spec(moments), 1
        )
    with pytest.raises(ValueError, match="threads"):
        _cpu.tensor_stats([good], [1], cpu.view_spec(counts), cpu.view_spec(moments), 0)
    with pytest.raises(ValueError, match="shape"):
        _cpu.pair_stats(good, cpu.view_spec(BUF[:10]), 1, cpu.view_spec(torch.empty(1, 6, dtype=torch.float64)), 1)


ALIVE: list[torch.Tensor] = []  # tensors the specs of the parameter tables point into


def S(t: torch.Tensor, **change):
    """spec() of a tensor kept alive for the whole session (a spec holds a raw pointer)."""
    ALIVE.append(t)
    return spec(t, **change)


def step_call(**change):
    x = torch.randn(2, 8)
    args = dict(
        x=cpu.view_spec(x), model_output=cpu.view_spec(torch.randn(2, 8)), uncond=None, noise=None, history=[],
        coeffs=list(ddim().vector()), table=None, index=None, guidance=1.0, clip_mode=0, lo=-1.0, hi=1.0,
        scale=None, out=cpu.view_spec(torch.empty(2, 8)), x0_out=None, want_stats=True, threads=1,
    )  # fmt: skip
    args.update(change)
    _cpu.fused_step(**args)


KEEP = torch.empty(64)


@pytest.mark.parametrize(
    "change, err, match",
    [
        (lambda: dict(coeffs=[1.0] * (NUM_COEFFS - 1)), ValueError, f"{NUM_COEFFS} values"),
        (lambda: dict(model_output=S(torch.randn(2, 9))), ValueError, "shape"),
        (lambda: dict(model_output=S(torch.ones(2, 8, dtype=torch.int32))), TypeError, "dtype"),
        (lambda: dict(out=S(torch.empty(2, 8, dtype=torch.float64))), TypeError, "dtype"),
        (lambda: dict(out=S(torch.empty(1, 8).expand(2, 8))), ValueError, "twice"),
        (lambda: dict(out=S(KEEP[:16].view(2, 8)), x=S(KEEP[1:17].view(2, 8))), ValueError, "partially overlaps"),
        (lambda: dict(history=[S(torch.randn(2, 8))] * (MAX_HISTORY + 1)), ValueError, f"at most {MAX_HISTORY}"),
        (lambda: dict(clip_mode=3), ValueError, "clip_mode"),
        (lambda: dict(clip_mode=1, lo=1.0, hi=-1.0), ValueError, "lo <= hi"),
        (lambda: dict(clip_mode=1, lo=math.nan), ValueError, "lo <= hi"),
        (lambda: dict(clip_mode=2), ValueError, "scale"),
        (lambda: dict(clip_mode=2, scale=S(torch.ones(3))), ValueError, "scale"),
        (lambda: dict(table=S(torch.zeros(2, NUM_COEFFS, dtype=torch.float64))), ValueError, "both"),
        (lambda: dict(coeffs=[], table=S(torch.zeros(2, NUM_COEFFS - 1, dtype=torch.float64)),
                      index=S(torch.zeros((), dtype=torch.int64))), ValueError, "table"),
        (lambda: dict(coeffs=[], table=S(torch.zeros(2, NUM_COEFFS, dtype=torch.float64)),
                      index=S(torch.tensor(-1))), IndexError, "out of range"),
        (lambda: dict(coeffs=[], table=S(torch.zeros(2, NUM_COEFFS, dtype=torch.float64)),
                      index=S(torch.tensor(2))), IndexError, "out of range"),
        (lambda: dict(x=S(KEEP, sizes=[2, 8], strides=[64, 1])), ValueError, "reach element"),
        (lambda: dict(threads=-2), ValueError, "threads"),
    ],
)  # fmt: skip
def test_bad_step_arguments_raise(change, err, match):
    with pytest.raises(err, match=match):
        step_call(**change())


@settings(max_examples=200)
@given(
    sizes=st.lists(st.integers(0, 6), max_size=4),
    strides=st.lists(st.integers(0, 40), min_size=4, max_size=4),
    offset=st.integers(0, 70),
    nbytes=st.integers(0, 256),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int8]),
)
def test_any_view_spec_is_read_correctly_or_refused(sizes, strides, offset, nbytes, dtype):
    # a random view of (the first nbytes of) a 256-byte buffer: inside, the stats of exactly that view;
    # reaching past nbytes, a ValueError
    buf = torch.arange(256 // dtype.itemsize, dtype=torch.float64).to(dtype)
    strides = strides[: len(sizes)]
    view = spec(buf, nbytes=nbytes, offset=offset, sizes=sizes, strides=strides)
    numel = math.prod(sizes)
    last = offset + sum((n - 1) * s for n, s in zip(sizes, strides))
    if numel and last >= nbytes // dtype.itemsize:
        with pytest.raises(ValueError, match="reach element"):
            stats_call(view)
        return
    counts, moments = stats_call(view)
    x = buf.as_strided(sizes, strides, offset) if numel else torch.empty(0, dtype=dtype)
    assert_stats_match(fd.TensorStats(counts[0], moments[0]).to_dict(), reference.tensor_stats(x))


def test_view_spec_checks_in_python():
    with pytest.raises(TypeError, match="uint16"):
        cpu.view_spec(torch.zeros(3, dtype=torch.uint16))
    with pytest.raises(ValueError, match="resolved"):
        cpu.view_spec(torch._neg_view(torch.zeros(3)))
    with pytest.raises(TypeError, match="strided"):
        cpu.view_spec(torch.zeros(3, 3).to_sparse())
    with pytest.raises(TypeError):
        cpu.view_spec([1.0])


def test_isa_selection():
    assert _cpu.isa() in ("base", "avx2")
    with pytest.raises(ValueError, match="accepted"):
        _cpu.set_isa("sse9")


# --------------------------------------------------------------------------------------------------
# more than 2^31 elements through the other entry points


@pytest.mark.slow
def test_more_than_2_31_elements_pairs_and_rows():
    a0, b0 = torch.randn(1 << 16), torch.randn(1 << 16)
    reps = (1 << 15) + 1
    a, b = a0.expand(reps, -1), b0.expand(reps, -1)
    assert a.numel() > 2**31
    got = fd.pair_stats(a, b, backend="cpp").to_dict()
    assert_pair_match(got, reference.pair_stats(a0, b0), rtol=1e-9)
    rows = fd.tensor_stats(a0.expand(3, reps, -1), dim=0, backend="cpp").to_dict()  # rows of > 2^31 elements
    want = reference.tensor_stats(a0)
    for i in range(3):
        assert rows["count"][i] == reps * a0.numel() and rows["min"][i] == want["min"]
        assert abs(rows["mean"][i] - want["mean"]) <= 1e-6 * want["std"]


def test_make_view_layouts_roundtrip_through_the_step():
    # every layout of the strategies as x and out, against the torch backend
    g = torch.Generator().manual_seed(11)
    for layout in ("contiguous", "transposed", "strided", "offset"):
        x = make_view((4, 6, 5), layout, torch.float32, g, fill_random)
        e = make_view((4, 6, 5), layout, torch.float32, g, fill_random)
        want = fd.fused_step(x, e, ddim(), clip=1.0, backend="torch").prev_sample
        got = fd.fused_step(x, e, ddim(), clip=1.0, out=x.clone(), backend="cpp").prev_sample
        assert torch.equal(got, want), layout
