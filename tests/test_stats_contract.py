"""API.md section 1 — tensor_stats / pair_stats / multi_tensor_stats — for every backend, against the oracle."""

from __future__ import annotations

import math

import pytest
import torch
from backends import backend_params, examples_for
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import assert_pair_match, assert_rows_match, assert_stats_match, assert_tensor_stats
from strategies import FLOAT_DTYPES, nonempty_shapes, tensors

import fastdiff as fd
from fastdiff import reference

BACKENDS = backend_params()


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_oracle_on_drawn_tensors(backend):
    @settings(max_examples=examples_for(backend, 60))
    @given(x=tensors())
    def run(x):
        assert_tensor_stats(fd.tensor_stats(x, backend=backend), x)

    run()


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_matches_oracle(backend):
    @settings(max_examples=examples_for(backend, 40))
    @given(x=tensors(shape=nonempty_shapes))
    def run(x):
        s = fd.tensor_stats(x, dim=0, backend=backend)
        assert s.mean.shape == (x.shape[0],)
        assert_rows_match(s, x)

    run()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_far_from_zero_is_stable(backend, dtype):
    # 1e6 + N(0, 1): E[x^2] - E[x]^2 would lose every digit of the variance in float32 and most in float64.
    n = 20_001 if backend == "triton" else 1_000_003
    x = (1e6 + torch.randn(n, dtype=torch.float64)).to(dtype)
    got = fd.tensor_stats(x, backend=backend).to_dict()
    want = reference.tensor_stats(x)
    assert abs(got["mean"] - want["mean"]) <= 1e-6 * abs(want["mean"])
    assert abs(got["std"] - want["std"]) <= 1e-6 * want["std"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_shapes(backend):
    empty = torch.empty(0, 3)
    d = fd.tensor_stats(empty, backend=backend).to_dict()
    assert d["count"] == 0 and d["l2"] == 0.0
    assert all(math.isnan(d[k]) for k in ("min", "max", "mean", "std", "absmax"))
    scalar = torch.tensor(2.5)
    d = fd.tensor_stats(scalar, backend=backend).to_dict()
    assert d["count"] == 1 and d["mean"] == 2.5 and math.isnan(d["std"]) and d["l2"] == 2.5
    allnan = torch.full((7,), math.nan)
    d = fd.tensor_stats(allnan, backend=backend).to_dict()
    assert d["nan_count"] == 7 and math.isnan(d["mean"]) and d["l2"] == 0.0
    d = fd.tensor_stats(torch.empty(0, 4), dim=0, backend=backend).to_dict()
    assert d["count"] == []
    d = fd.tensor_stats(torch.empty(3, 0), dim=0, backend=backend).to_dict()
    assert d["count"] == [0, 0, 0] and all(math.isnan(v) for v in d["mean"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_stay_on_device_without_sync(backend, monkeypatch):
    x = torch.randn(1000)

    def boom(*a, **k):
        raise AssertionError("host sync")

    monkeypatch.setattr(torch.Tensor, "item", boom)
    monkeypatch.setattr(torch.Tensor, "tolist", boom)
    s = fd.tensor_stats(x, backend=backend)
    p = fd.pair_stats(x, x, backend=backend)
    m = fd.multi_tensor_stats([x, x[:10]], backend=backend)
    fields = [s.mean, s.std, s.count, p.cos, m.l2]
    monkeypatch.undo()
    assert all(isinstance(f, torch.Tensor) and f.device == x.device for f in fields)
    assert s.count.dtype == torch.int64 and s.mean.dtype == torch.float64


@pytest.mark.parametrize("backend", BACKENDS)
def test_pair_stats_match_oracle(backend):
    @settings(max_examples=examples_for(backend, 40))
    @given(a=tensors(dtypes=FLOAT_DTYPES, special=False), data=st.data())
    def run(a, data):
        b = data.draw(tensors(dtypes=FLOAT_DTYPES, shape=st.just(tuple(a.shape)), special=False))
        got = fd.pair_stats(a, b, backend=backend).to_dict()
        assert_pair_match(got, reference.pair_stats(a, b))

    run()


@pytest.mark.parametrize("backend", BACKENDS)
def test_pair_stats_per_sample_and_nan(backend):
    a, b = torch.randn(5, 7, 3), torch.randn(5, 7, 3)
    a[2, 0, 0] = math.nan
    got = fd.pair_stats(a, b, dim=0, backend=backend).to_dict()
    for i in range(5):
        want = reference.pair_stats(a[i], b[i])
        assert_pair_match({k: v[i] for k, v in got.items()}, want)
    assert math.isnan(got["cos"][2]) and math.isnan(got["max_abs_diff"][2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_tensor_stats_rows(backend):
    xs = [torch.randn(3, 4), torch.arange(10, dtype=torch.float16), torch.randn(7).double()[::2], torch.empty(0)]
    m = fd.multi_tensor_stats(xs, backend=backend)
    assert m.mean.shape == (4,)
    got = m.to_dict()
    for i, x in enumerate(xs):
        assert_stats_match({k: v[i] for k, v in got.items()}, reference.tensor_stats(x), where=f"tensor {i}: ")


@pytest.mark.parametrize(
    "bad, err",
    [
        ([1.0, 2.0], TypeError),
        (torch.randn(3, dtype=torch.complex64), TypeError),
        (torch.randn(3, 3).to_sparse(), TypeError),
        (torch.empty(3, device="meta"), (TypeError, ValueError)),
    ],
)
def test_bad_inputs_say_what_was_given(bad, err):
    with pytest.raises(err) as info:
        fd.tensor_stats(bad, backend="torch")
    msg = str(info.value)
    assert any(w in msg for w in ("list", "complex", "layout", "meta"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        fd.pair_stats(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="dim"):
        fd.tensor_stats(torch.zeros(3), dim=1)
    with pytest.raises(ValueError, match="0-d"):
        fd.tensor_stats(torch.tensor(1.0), dim=0)
    with pytest.raises(ValueError, match="backend"):
        fd.tensor_stats(torch.zeros(3), backend="cuda-magic")
    with pytest.raises(ValueError, match="empty"):
        fd.multi_tensor_stats([])
    with pytest.raises(TypeError):
        fd.multi_tensor_stats(torch.zeros(3))


def test_unavailable_backend_says_why():
    from fastdiff import kernels

    for name in kernels.BACKENDS:
        ok, why = kernels.availability(name, "cpu")
        if not ok:
            with pytest.raises(RuntimeError, match=name):
                fd.tensor_stats(torch.zeros(3), backend=name)
            assert why


def test_merge_equals_concatenation():
    a, b = torch.randn(1000) * 3 + 7, torch.randn(17) - 2
    merged = fd.tensor_stats(a, backend="torch").merge(fd.tensor_stats(b, backend="torch")).to_dict()
    assert_stats_match(merged, reference.tensor_stats(torch.cat([a, b])), rtol=1e-12)


def test_torch_backend_chunking_merges_exactly(monkeypatch):
    # The torch backend converts at most CHUNK elements to float64 at once and Chan-merges the parts;
    # a tiny CHUNK exercises every branch (row groups, rows split further, per-sample rows split).
    from fastdiff.kernels import torch_backend

    monkeypatch.setattr(torch_backend, "CHUNK", 7)
    x = torch.randn(5, 4, 6) * 10 + 1e4
    x[1, 2, 3] = math.inf
    assert_tensor_stats(fd.tensor_stats(x, backend="torch"), x)
    assert_rows_match(fd.tensor_stats(x, dim=0, backend="torch"), x)
    monkeypatch.setattr(torch_backend, "CHUNK", 30)
    assert_rows_match(fd.tensor_stats(x.transpose(0, 2), dim=0, backend="torch"), x.transpose(0, 2))
    y = torch.randn(5, 4, 6)
    got = fd.pair_stats(x, y, dim=0, backend="torch").to_dict()
    for i in range(5):
        assert_pair_match({k: v[i] for k, v in got.items()}, reference.pair_stats(x[i], y[i]))


# Native kernels index with int64; the torch backend delegates indexing to PyTorch (its chunking is
# tested above), and the Triton interpreter is too slow for 2^31 elements: those run on a GPU.
@pytest.mark.slow
@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] == "cpp"])
def test_more_than_2_31_elements(backend):
    # An expanded view: 2^31 + 2^16 elements without the memory. Expected values follow exactly from the base.
    base = torch.randn(1 << 16, dtype=torch.float32)
    base[5] = math.nan
    reps = (1 << 15) + 1
    x = base.expand(reps, base.numel())
    assert x.numel() > 2**31
    got = fd.tensor_stats(x, backend=backend).to_dict()
    b = reference.tensor_stats(base)
    n_f = b["count"] - b["nan_count"]
    assert got["count"] == reps * base.numel() and got["nan_count"] == reps
    assert abs(got["mean"] - b["mean"]) <= 1e-6 * b["std"]
    m2_base = b["std"] ** 2 * (n_f - 1)
    want_std = math.sqrt(reps * m2_base / (reps * n_f - 1))
    assert abs(got["std"] - want_std) <= 1e-6 * want_std
