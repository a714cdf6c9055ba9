"""Hypothesis strategies for tensors as users hand them over: odd sizes, every dtype, views, NaN/Inf.

`tensors()` draws a *layout recipe* and data, then builds the tensor; `special=True` sprinkles NaN,
+-Inf and zeros. Views are real views (transposed, sliced with steps, offset, expanded), so backends
see non-contiguous strides exactly as user code produces them.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
ALL_DTYPES = FLOAT_DTYPES + (torch.int32, torch.int64, torch.uint8, torch.bool)

shapes = st.lists(st.integers(0, 9), min_size=0, max_size=4).map(tuple)
nonempty_shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple)
LAYOUTS = ("contiguous", "transposed", "strided", "offset", "expanded")


def make_view(base_shape: tuple[int, ...], layout: str, dtype: torch.dtype, gen: torch.Generator, fill) -> torch.Tensor:
    """A tensor of `base_shape` (expanded: broadcast from a smaller one) with the given memory layout."""
    if layout == "contiguous" or len(base_shape) == 0:
        return fill(base_shape, dtype, gen)
    if layout == "transposed":
        t = fill(tuple(reversed(base_shape)), dtype, gen)
        return t.permute(*reversed(range(t.dim())))
    if layout == "strided":
        big = fill((base_shape[0] * 2,) + tuple(base_shape[1:]), dtype, gen)
        return big[::2]
    if layout == "offset":
        flat = fill((math.prod(base_shape) + 3,), dtype, gen)
        return flat[3:].view(base_shape)
    # expanded: broadcast along the first dimension
    t = fill((1,) + tuple(base_shape[1:]), dtype, gen)
    return t.expand(base_shape)


def fill_random(shape, dtype, gen, *, scale=1.0, loc=0.0):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if not dtype.is_floating_point:
        return torch.randint(-50 if dtype != torch.uint8 else 0, 50, shape, generator=gen).to(dtype)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + loc).to(dtype)


def sprinkle_special(t: torch.Tensor, gen: torch.Generator, frac: float = 0.1) -> torch.Tensor:
    """Write NaN / +Inf / -Inf / 0 into a copy of a float tensor at random places (keeps its layout)."""
    if not t.dtype.is_floating_point or t.numel() == 0:
        return t
    t = t.clone()
    flat = t.view(-1) if t.is_contiguous() else None
    vals = torch.tensor([math.nan, math.inf, -math.inf, 0.0], dtype=t.dtype)
    mask = torch.rand(t.shape, generator=gen) < frac
    pick = torch.randint(0, 4, t.shape, generator=gen)
    t[mask] = vals[pick[mask]]
    del flat
    return t


@st.composite
def tensors(draw, dtypes=ALL_DTYPES, shape=shapes, layouts=LAYOUTS, special=True, loc=None):
    dtype = draw(st.sampled_from(dtypes))
    base = draw(shape)
    layout = draw(st.sampled_from(layouts))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    loc_v = draw(st.sampled_from([0.0, 3.0, -100.0])) if loc is None else loc
    gen = torch.Generator().manual_seed(seed)
    t = make_view(base, layout, dtype, gen, lambda s, d, g: fill_random(s, d, g, scale=scale, loc=loc_v))
    if special and draw(st.booleans()) and layout != "expanded":
        t = sprinkle_special(t, gen, draw(st.sampled_from([0.05, 0.5, 1.0])))
    return t
