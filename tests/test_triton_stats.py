"""Triton stats kernels beyond the shared contract: tile boundaries, hard inputs, layouts, determinism, launches.

On the CPU these run under the Triton interpreter (TRITON_INTERPRET=1, set by conftest); `tiny_tiles`
shrinks the super-tile to 2 x 32 elements and the grid to 3 programs, so small tensors cross every
boundary: partial tiles, several tiles per program, several programs per row, the merge kernel.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracle import assert_pair_match, assert_rows_match, assert_stats_match, assert_tensor_stats

import fastdiff as fd
from fastdiff import kernels, reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not kernels.availability("triton", DEVICE)[0], reason=kernels.availability("triton", DEVICE)[1]
)


@pytest.fixture
def tiny_tiles(monkeypatch):
    from fastdiff.kernels.triton import config

    tile = config.Tile(sub=2, vec=1, num_warps=1)  # 2 x 32 elements
    monkeypatch.setattr(config, "_override", {"stats": tile, "pair": tile, "step": tile})
    monkeypatch.setattr(config, "_programs_override", 3)
    return tile


def stats(x, **kw):
    return fd.tensor_stats(x.to(DEVICE), backend="triton", **kw)


def data(n, dtype, seed=0, *, loc=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(n, generator=g) > 0.3
    if not dtype.is_floating_point:
        return torch.randint(-100 if dtype != torch.uint8 else 0, 100, (n,), generator=g).to(dtype)
    return (torch.randn(n, generator=g, dtype=torch.float64) * scale + loc).to(dtype)


# sizes around the tiny tile (64 elements), its rows (32) and 3 programs x tiles
BOUNDARY_SIZES = [1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 129, 191, 192, 193, 385, 1000]
DTYPES = [
    torch.float32,
    torch.bfloat16,
    torch.float16,
    torch.float64,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_tile_boundaries_whole_and_per_sample(tiny_tiles, dtype):
    for n in BOUNDARY_SIZES:
        x = data(n, dtype, seed=n, loc=3.0)
        if dtype.is_floating_point and n > 3:
            x[n // 2] = math.nan
            x[n // 3] = -math.inf
        assert_tensor_stats(stats(x), x, where=f"n={n}: ")
        rows = torch.stack([x, x.flip(0)]) if dtype != torch.bool else torch.stack([x, ~x])
        assert_rows_match(stats(rows, dim=0), rows)


def test_pair_tile_boundaries(tiny_tiles):
    for n in BOUNDARY_SIZES:
        a, b = data(n, torch.float32, seed=n), data(n, torch.bfloat16, seed=n + 1)
        got = fd.pair_stats(a.to(DEVICE), b.to(DEVICE), backend="triton").to_dict()
        assert_pair_match(got, reference.pair_stats(a, b))
        a2, b2 = torch.stack([a, -a, a]), torch.stack([b, b, a])
        got = fd.pair_stats(a2.to(DEVICE), b2.to(DEVICE), dim=0, backend="triton").to_dict()
        for i in range(3):
            assert_pair_match({k: v[i] for k, v in got.items()}, reference.pair_stats(a2[i], b2[i]))


def _rel(got, want):
    return abs(got - want) / abs(want)


HARD = {
    # 1e6 + N(0, 1) in float32: a raw fp32 sum of squares keeps no digit of the variance
    "far_from_zero": lambda n: (1e6 + torch.randn(n, dtype=torch.float64)).float(),
    # zeros first, then the offset data: a pivot fixed from the first elements would cancel catastrophically
    "padded": lambda n: torch.cat([torch.zeros(n // 3), (1e6 + torch.randn(n - n // 3, dtype=torch.float64)).float()]),
    # NaN/Inf scattered through offset data: every tile takes the masked path
    "nonfinite": lambda n: torch.where(
        torch.rand(n) < 0.02, torch.tensor(math.nan), (-1e5 + 3 * torch.randn(n, dtype=torch.float64)).float()
    ),
    # squares overflow float32
    "huge": lambda n: (torch.randn(n, dtype=torch.float64) * 1e30).float(),
    # squares underflow float32
    "tiny": lambda n: (torch.randn(n, dtype=torch.float64) * 1e-30).float(),
    # float16 near its largest value
    "fp16_max": lambda n: (6e4 + 5e3 * torch.rand(n, dtype=torch.float64)).half(),
    # spread over many octaves
    "lognormal": lambda n: torch.exp(8 * torch.randn(n, dtype=torch.float64)).float(),
}


@pytest.mark.parametrize("case", list(HARD))
@pytest.mark.parametrize("tiles", ["default", "tiny"])
def test_mean_std_within_1e6_of_float64(case, tiles, request):
    if tiles == "tiny":
        request.getfixturevalue("tiny_tiles")
    x = HARD[case](20_003 if tiles == "default" else 3_001)
    got = stats(x).to_dict()
    want = reference.tensor_stats(x)
    assert _rel(got["std"], want["std"]) <= 1e-6, (got["std"], want["std"])
    assert abs(got["mean"] - want["mean"]) <= 1e-6 * max(abs(want["mean"]), want["std"])
    assert_stats_match(got, want)


def test_far_from_zero_at_scale():
    # 2^18 elements over several programs and many tiles per program, default tiles
    x = (1e6 + torch.randn(1 << 18, dtype=torch.float64)).float()
    got = stats(x).to_dict()
    want = reference.tensor_stats(x)
    assert _rel(got["mean"], want["mean"]) <= 1e-6 and _rel(got["std"], want["std"]) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64, torch.int16])
def test_constant_input_has_exactly_zero_std(tiny_tiles, dtype):
    for value in (3.7, -1e5, 0.0):
        x = torch.full((517,), value).to(dtype)
        d = stats(x).to_dict()
        assert d["std"] == 0.0 and d["min"] == d["max"] == float(x[0])
        rows = stats(x.view(11, 47), dim=0).to_dict()
        assert rows["std"] == [0.0] * 11
    y = torch.full((300,), 2.5)
    y[7] = math.nan
    assert stats(y).to_dict()["std"] == 0.0


def test_bit_identical_when_repeated(tiny_tiles):
    x = torch.randn(2_000) * 7 + 1e4
    x[17] = math.inf
    first, second = stats(x), stats(x)
    assert torch.equal(first.counts, second.counts) and torch.equal(first.moments, second.moments)
    rows1, rows2 = stats(x.view(20, 100), dim=0), stats(x.view(20, 100), dim=0)
    assert torch.equal(rows1.moments, rows2.moments)
    xs = [x, x[:333].double(), x[::7].half()]
    m1, m2 = fd.multi_tensor_stats(xs, backend="triton"), fd.multi_tensor_stats(xs, backend="triton")
    assert torch.equal(m1.counts, m2.counts) and torch.equal(m1.moments, m2.moments)
    p1 = fd.pair_stats(x, x.flip(0), backend="triton")
    p2 = fd.pair_stats(x, x.flip(0), backend="triton")
    assert torch.equal(p1.raw, p2.raw)


def _layouts():
    base = torch.randn(4, 6, 5, 7, dtype=torch.float64) * 2 + 10
    big = torch.randn(8, 6, 10, 7) + 1
    return {
        "permuted_4d": base.permute(2, 0, 3, 1),
        "sliced_steps": big[::2, :, ::3],
        "offset_inner_slice": big[:, 1:5, 2:9, 3:],
        "broadcast_middle": torch.randn(3, 1, 5).expand(3, 4, 5),
        "five_irreducible_dims": torch.randn(2, 5, 3, 5, 2, 5)[:, ::2, :, ::2, :, ::2].permute(4, 2, 0, 3, 1, 5),
        "zero_dim": torch.tensor(-4.5),
        "column": torch.randn(40, 9)[:, 4],
    }


@pytest.mark.parametrize("name", list(_layouts()))
def test_layouts_whole_and_per_sample(tiny_tiles, name):
    x = _layouts()[name]
    assert_tensor_stats(stats(x), x)
    if x.dim():
        assert_rows_match(stats(x, dim=0), x)
        y = torch.randn(x.shape)
        got = fd.pair_stats(x.to(DEVICE), y.to(DEVICE), dim=0, backend="triton").to_dict()
        for i in range(x.shape[0]):
            assert_pair_match({k: v[i] for k, v in got.items()}, reference.pair_stats(x[i], y[i]))


def test_more_than_2_31_elements_by_broadcast():
    # 2^31 + 2^16 elements without the memory: the broadcast dim is walked once and the result scaled
    # exactly (int64 counts, m2 x repeat). Real > 2^31 addressing is checked on a GPU (test_gpu_* below).
    base = torch.randn(1 << 16, dtype=torch.float32)
    base[5] = math.nan
    reps = (1 << 15) + 1
    x = base.expand(reps, base.numel())
    got = stats(x).to_dict()
    b = reference.tensor_stats(base)
    n_f = b["count"] - b["nan_count"]
    assert got["count"] == reps * base.numel() and got["nan_count"] == reps
    assert abs(got["mean"] - b["mean"]) <= 1e-6 * b["std"]
    want_std = math.sqrt(reps * b["std"] ** 2 * (n_f - 1) / (reps * n_f - 1))
    assert _rel(got["std"], want_std) <= 1e-6
    rows = stats(x[:5], dim=0).to_dict()
    assert rows["count"] == [base.numel()] * 5 and all(_rel(s, b["std"]) <= 1e-6 for s in rows["std"])


def test_unusual_dtypes_are_read_as_numbers():
    u16 = torch.tensor([0, 1, 65535, 300], dtype=torch.uint16)
    assert_tensor_stats(stats(u16), u16)
    f8 = torch.tensor([0.5, -2.0, 448.0]).to(torch.float8_e4m3fn)
    assert_tensor_stats(stats(f8), f8)


def test_misaligned_data_is_refused_before_launch():
    raw = np.zeros(40, dtype=np.uint8)
    x = torch.from_numpy(raw[2:34].view(np.float32))
    assert x.data_ptr() % 4 == 2
    if DEVICE == "cpu":
        with pytest.raises(ValueError, match="aligned"):
            fd.tensor_stats(x, backend="triton")


@pytest.mark.skipif(DEVICE != "cpu", reason="checks the CPU device rule of the interpreter")
def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        fd.tensor_stats(torch.zeros(3), backend="triton")


# --------------------------------------------------------------------------------------------------
# multi-tensor stats: one launch per dtype group over a pointer table, one merge launch


def _model_like(n_tensors, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = [(64, 32), (64,), (3, 3, 8, 8), (1,), (17,)]
    return [torch.randn(sizes[i % len(sizes)], generator=g) * (1 + i % 7) for i in range(n_tensors)]


def test_multi_tensor_launches_once_per_dtype_group():
    from fastdiff.kernels.triton import stats as triton_stats

    xs = _model_like(300)
    before = triton_stats.launches
    m = fd.multi_tensor_stats([x.to(DEVICE) for x in xs], backend="triton")
    assert triton_stats.launches - before == 2  # the stats kernel and the merge
    got = m.to_dict()
    for i in range(0, 300, 37):
        assert_stats_match({k: v[i] for k, v in got.items()}, reference.tensor_stats(xs[i]), where=f"tensor {i}: ")
    mixed = xs[:40] + [x.bfloat16() for x in xs[40:50]] + [torch.arange(9), torch.empty(0)]
    before = triton_stats.launches
    got = fd.multi_tensor_stats([x.to(DEVICE) for x in mixed], backend="triton").to_dict()
    assert triton_stats.launches - before == 4  # fp32, bf16, int64 groups + one merge
    for i in (0, 39, 40, 49, 50, 51):
        assert_stats_match({k: v[i] for k, v in got.items()}, reference.tensor_stats(mixed[i]), where=f"tensor {i}: ")


def test_multi_tensor_layouts_and_cached_tables(tiny_tiles):
    big = torch.randn(30, 40)
    xs = [
        big,
        big.t(),
        big[::3, 1:],
        torch.randn(6, 1).expand(6, 5),
        torch.randn(2, 3, 4, 5, 6)[:, ::2, :, ::2].permute(3, 1, 0, 2, 4),
        torch.tensor(3.0),
        torch.empty(0, 3),
        torch.randint(0, 5, (77,), dtype=torch.uint8),
        torch.rand(50) > 0.5,
        torch.tensor([1, 2, 3], dtype=torch.uint16),
    ]
    for _ in range(2):  # the second call reuses the cached device table (same tensors)
        got = fd.multi_tensor_stats(xs, backend="triton").to_dict()
        for i, x in enumerate(xs):
            assert_stats_match({k: v[i] for k, v in got.items()}, reference.tensor_stats(x), where=f"tensor {i}: ")
    big.mul_(3)  # tables hold pointers, not values: an in-place update is seen
    got = fd.multi_tensor_stats(xs, backend="triton").to_dict()
    assert_stats_match({k: v[0] for k, v in got.items()}, reference.tensor_stats(big))


# --------------------------------------------------------------------------------------------------
# on a GPU: real > 2^31-element tensors (int64 addressing, not a broadcast)


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_more_than_2_31_elements_real_memory():
    n = (1 << 31) + 4099
    x = torch.zeros(n, dtype=torch.uint8, device="cuda")
    x[-3:] = 7
    x[: 1 << 20] = 1
    d = fd.tensor_stats(x, backend="triton").to_dict()
    assert d["count"] == n and d["zero_count"] == n - 3 - (1 << 20) and d["max"] == 7
    want_mean = ((1 << 20) + 21) / n
    assert abs(d["mean"] - want_mean) <= 1e-9 * want_mean
    y = torch.full((n,), 2.0, dtype=torch.float16, device="cuda")
    y[-1] = math.nan
    d = fd.tensor_stats(y, backend="triton").to_dict()
    assert d["count"] == n and d["nan_count"] == 1 and d["mean"] == 2.0 and d["std"] == 0.0
