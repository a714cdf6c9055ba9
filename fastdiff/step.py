"""The generic sampler step: its coefficients, clipping options and result (DESIGN.md, "One generic fused step").

Every first-order sampler update, and every multistep/Heun update given its history, is

    o   = out                      or  u + w (out - u)           (classifier-free guidance)
    x0  = cx x + co o + cn z       (prediction type -> x0; z the noise; cn only for "churn" samplers)
    x0c = clip(x0)                 (none | static [lo, hi] | per-sample s_b: clamp(x0, -s_b, s_b) / s_b)
    eps = ex x + eo o + e0 x0c + en z      (e0 != 0 re-derives eps from the clipped x0)
    x'  = px x + p0 x0c + pe eps + sum_k ph_k h_k + pn z

Samplers compute these scalars in float64 on the host (`samplers/`); the oracle (`reference.py`) and
every kernel evaluate exactly these lines in this order (fp32 or better), so that rounding and the
propagation of NaN/Inf follow the formula as written. A term whose coefficient is exactly 0 is absent:
it contributes nothing even where its tensor holds Inf or NaN (0 * inf would otherwise invent a NaN).

>>> from fastdiff.step import StepCoeffs
>>> c = StepCoeffs.from_prediction("epsilon", alpha=0.6, sigma=0.8, p0=0.8, pe=0.6)   # DDIM, eta = 0
>>> [round(v, 12) for v in c.vector()[:4]]
[1.666666666667, -1.333333333333, 0.0, 0.0]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from . import param

MAX_HISTORY = 4  # csrc/api.h MAX_HISTORY and the kernels' h0..h3 operands follow it

# Layout of a coefficient vector / one row of a coefficient table (see `CoeffTable`).
COEFF_FIELDS = ("cx", "co", "cn", "ex", "eo", "e0", "en", "px", "p0", "pe", "pn") + tuple(
    f"ph{k}" for k in range(MAX_HISTORY)
)


@dataclass(frozen=True)
class StepCoeffs:
    """Scalars of one generic step (float64 host values). Unset terms are 0."""

    cx: float = 0.0
    co: float = 0.0
    cn: float = 0.0
    ex: float = 0.0
    eo: float = 0.0
    e0: float = 0.0
    en: float = 0.0
    px: float = 0.0
    p0: float = 0.0
    pe: float = 0.0
    pn: float = 0.0
    ph: tuple[float, ...] = field(default=())

    def __post_init__(self):
        ph = tuple(self.ph)
        if len(ph) > MAX_HISTORY:
            raise ValueError(f"at most {MAX_HISTORY} history terms are supported; got {len(ph)}")
        vec = (self.cx, self.co, self.cn, self.ex, self.eo, self.e0, self.en, self.px, self.p0, self.pe, self.pn, *ph)
        # fast path: finite Python floats (v - v is 0.0 exactly when v is finite); else check each, by name
        if not all(type(v) is float and v - v == 0.0 for v in vec):
            names = COEFF_FIELDS[: len(COEFF_FIELDS) - MAX_HISTORY] + tuple(f"ph[{k}]" for k in range(len(ph)))
            for name, v in zip(names, vec):
                if not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"step coefficient {name}={v!r} must be a finite number")
            vec = tuple(float(v) for v in vec)
        object.__setattr__(self, "ph", vec[len(COEFF_FIELDS) - MAX_HISTORY :])
        # made once: read at every step (history padded with zeros)
        object.__setattr__(self, "_vector", vec + (0.0,) * (MAX_HISTORY - len(ph)))

    @classmethod
    def from_prediction(
        cls,
        prediction_type: str,
        alpha: float,
        sigma: float,
        *,
        px: float = 0.0,
        p0: float = 0.0,
        pe: float = 0.0,
        pn: float = 0.0,
        ph: tuple[float, ...] = (),
        recompute_eps: bool = False,
    ) -> StepCoeffs:
        """x0/eps read from the model output through `param.to_x0_eps` at the current (alpha, sigma).

        `recompute_eps=True` re-derives eps = (x - alpha x0c) / sigma from the clipped x0 (diffusers'
        `use_clipped_model_output`).
        """
        m = param.to_x0_eps(prediction_type, alpha, sigma)
        if recompute_eps:
            if sigma == 0:
                raise ValueError("recompute_eps needs sigma > 0")
            ex, eo, e0 = 1.0 / sigma, 0.0, -alpha / sigma
        else:
            ex, eo, e0 = m.ex, m.eo, 0.0
        return cls(cx=m.cx, co=m.co, ex=ex, eo=eo, e0=e0, px=px, p0=p0, pe=pe, pn=pn, ph=ph)

    @property
    def uses_noise(self) -> bool:
        return self.cn != 0.0 or self.pn != 0.0 or (self.pe != 0.0 and self.en != 0.0)

    def vector(self) -> tuple[float, ...]:
        """The coefficients in `COEFF_FIELDS` order (history padded with zeros): what kernels receive."""
        return self._vector


@dataclass
class CoeffTable:
    """Coefficients of a whole loop on the device, read at `index` (an int64 device tensor).

    Lets a sampling loop run without host scalars in kernel arguments, e.g. inside a CUDA graph: the
    loop advances `index` in place (`index += 1`), which a captured graph replays correctly.
    """

    table: torch.Tensor  # float64 [num_steps, len(COEFF_FIELDS)]
    index: torch.Tensor  # int64, 0-d, same device
    num_history: int = 0
    uses_noise: bool = False

    def advance(self) -> None:
        """index += 1, in place on the device (capturable in a CUDA graph)."""
        self.index.add_(1)

    @classmethod
    def from_coeffs(cls, steps: list[StepCoeffs], device=None, index: torch.Tensor | None = None) -> CoeffTable:
        if not steps:
            raise ValueError("a coefficient table needs at least one step")
        table = torch.tensor([c.vector() for c in steps], dtype=torch.float64, device=device)
        if index is None:
            index = torch.zeros((), dtype=torch.int64, device=table.device)
        return cls(
            table=table,
            index=index,
            num_history=max(len(c.ph) for c in steps),
            uses_noise=any(c.uses_noise for c in steps),
        )


@dataclass
class PhiloxNoise:
    """Noise generated inside the step kernel from a counter-based RNG, instead of a tensor (`noise=`).

    Element e (row-major index over the sample's shape) gets normal number k = offset + e of stream
    `seed`: lane k % 4 of Box-Muller applied to the uniforms of Philox4x32-10(key=seed, counter=k // 4)
    (fastdiff/kernels/triton/philox.py). Like a `torch.Generator`, a step that draws from it advances
    `offset` by the number of elements, so consecutive steps get fresh, independent noise; the same
    (seed, offset) gives the same noise on any memory layout. `offset` may be an int64 0-d tensor on the
    sample's device: it is read and advanced on the device (no sync; a captured CUDA graph replays it correctly).

    Saves writing and re-reading a noise tensor. Backends that generate it: triton (CUDA, or CPU with
    TRITON_INTERPRET=1); the others raise NotImplementedError.

    >>> from fastdiff.step import PhiloxNoise
    >>> n = PhiloxNoise(seed=1234)
    >>> n.advance(16); n.offset
    16
    """

    seed: int
    offset: int | torch.Tensor = 0

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError(f"PhiloxNoise seed must be an int in [0, 2**63); got {self.seed!r}")
        off = self.offset
        if isinstance(off, torch.Tensor):
            if off.dtype != torch.int64 or off.dim() != 0:
                raise ValueError(
                    f"a PhiloxNoise offset tensor must be int64 and 0-d; got {off.dtype} {tuple(off.shape)}"
                )
        elif isinstance(off, bool) or not isinstance(off, int) or off < 0:
            raise ValueError(f"PhiloxNoise offset must be an int >= 0 or an int64 0-d tensor; got {off!r}")

    def advance(self, n: int) -> None:
        """offset += n (in place on the device for a tensor offset)."""
        if isinstance(self.offset, torch.Tensor):
            self.offset.add_(n)
        else:
            self.offset += int(n)


@dataclass(frozen=True)
class ClipRange:
    """Static clipping of x0 to [lo, hi] (diffusers `clip_sample`, `clip_sample_range`)."""

    lo: float
    hi: float

    def __post_init__(self):
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.lo > self.hi:
            raise ValueError(f"clip range must be finite with lo <= hi; got [{self.lo}, {self.hi}]")


@dataclass(frozen=True)
class DynamicThreshold:
    """Per-sample dynamic thresholding (Imagen, Saharia et al. 2022, section 2.3).

    s_b = clamp(quantile(|x0_b|, ratio), 1, max_value);  x0_b <- clamp(x0_b, -s_b, s_b) / s_b.
    The clamp is torch.clamp's (as diffusers'): max_value < 1 gives s_b = max_value.
    """

    ratio: float = 0.995
    max_value: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"dynamic thresholding ratio must be in [0, 1]; got {self.ratio}")
        if not self.max_value > 0.0:
            raise ValueError(f"dynamic thresholding max_value must be > 0; got {self.max_value}")


@functools.lru_cache(maxsize=64)
def _symmetric_clip(c: float) -> ClipRange:
    return ClipRange(-c, c)


def normalize_clip(clip) -> ClipRange | DynamicThreshold | None:
    """None | c (-> [-c, c]) | (lo, hi) | ClipRange | DynamicThreshold."""
    if clip is None or isinstance(clip, (ClipRange, DynamicThreshold)):
        return clip
    if type(clip) is float and clip > 0:  # the common case in a sampling loop: made once per value
        return _symmetric_clip(clip)
    if isinstance(clip, bool):
        raise ValueError("clip=True is ambiguous; pass a range, e.g. clip=1.0 or clip=(-1.0, 1.0)")
    if isinstance(clip, (int, float)):
        if not clip > 0:
            raise ValueError(f"clip={clip!r}: a single number c means [-c, c] and must be > 0")
        return ClipRange(-float(clip), float(clip))
    if isinstance(clip, (tuple, list)) and len(clip) == 2:
        return ClipRange(float(clip[0]), float(clip[1]))
    raise ValueError(
        f"clip={clip!r} is not supported; accepted: None, a number c for [-c, c], (lo, hi), "
        "ClipRange(lo, hi) or DynamicThreshold(ratio, max_value)"
    )


PACKED_WORDS = 19  # a packed step result: the clipped count, then the raw stats rows (fastdiff.stats) of x', x0


class PackedStep:
    """A step's results as one buffer of PACKED_WORDS int64 words — the clipped count, then the raw stats rows
    (5 counts, 4 float64 moments: `fastdiff.stats`) of the stored x' and x0 — as the C++ backend returns them
    (no result tensor to allocate per call). Made into tensors only when read; a loop's steps are stacked
    with one conversion (`StepResult.stack`)."""

    __slots__ = ("words", "has_stats", "_t")

    def __init__(self, words: bytearray, has_stats: bool):
        self.words, self.has_stats, self._t = words, has_stats, None

    def tensor(self) -> torch.Tensor:
        if self._t is None:
            self._t = torch.frombuffer(self.words, dtype=torch.int64)  # shares the words (and keeps them)
        return self._t

    @staticmethod
    def unpack(t: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(clipped [...], (counts [..., 2, 5], moments [..., 2, 4])) views of packed words int64 [..., 19]."""
        from .stats import RAW_WORDS, split_raw_rows

        return t[..., 0], split_raw_rows(t[..., 1:].unflatten(-1, (2, RAW_WORDS)))


class StepResult:
    """What `fused_step` returns. Tensors stay on the sample's device; nothing has synced the host.

    prev_sample: x' (dtype of x). pred_x0: the clipped x0 when asked for, else None.
    clipped: int64 0-d count of x0 elements the clip changed. stats / x0_stats: `TensorStats` of the
    stored x' and x0c when `stats=True`, else None (made when first read, from the kernel's raw rows).

    A backend hands over (clipped, raw) — raw: (counts [2, 5], moments [2, 4]), rows x' and x0, or None — or a
    `PackedStep` (then clipped and raw are made from it when first read: a loop that reads neither allocates
    no tensor for them).
    """

    __slots__ = ("prev_sample", "pred_x0", "_clipped", "_raw", "_stats", "_x0_stats", "_packed")

    def __init__(self, prev_sample, pred_x0, clipped, stats=None, x0_stats=None, *, raw=None, packed=None):
        self.prev_sample = prev_sample
        self.pred_x0 = pred_x0
        self._clipped = clipped
        self._stats, self._x0_stats = stats, x0_stats
        self._raw = raw
        self._packed = packed

    def _unpack(self) -> None:
        p, self._packed = self._packed, None
        clipped, raw = PackedStep.unpack(p.tensor())
        if self._clipped is None:
            self._clipped = clipped
        if self._raw is None and p.has_stats:
            self._raw = raw

    def stats_only(self) -> StepResult:
        """This result without its tensors (prev_sample and pred_x0 are None): what a sampling loop keeps of
        each step for its stats, so that the samples of earlier steps are freed (and their memory reused)."""
        return StepResult(None, None, self._clipped, self._stats, self._x0_stats, raw=self._raw, packed=self._packed)

    @staticmethod
    def stack(results: Sequence[StepResult]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """(clipped int64 [S], raw (counts [S, 2, 5], moments [S, 2, 4]) or None without stats) of S steps, one
        conversion for all when every step is packed (the C++ backend) and untouched since."""
        if results and all(
            r._packed is not None and r._packed.has_stats and r._clipped is None and r._raw is None
            and r._stats is None and r._x0_stats is None
            for r in results
        ):  # fmt: skip
            words = bytearray().join(r._packed.words for r in results)
            return PackedStep.unpack(torch.frombuffer(words, dtype=torch.int64).view(len(results), PACKED_WORDS))
        clipped = torch.stack([r.clipped for r in results])
        if any(r.stats is None or r.x0_stats is None for r in results):
            return clipped, None
        counts = torch.stack([torch.stack([r.stats.counts, r.x0_stats.counts]) for r in results])
        moments = torch.stack([torch.stack([r.stats.moments, r.x0_stats.moments]) for r in results])
        return clipped, (counts, moments)

    @property
    def clipped(self) -> torch.Tensor:
        if self._packed is not None:
            self._unpack()
        return self._clipped

    @clipped.setter
    def clipped(self, value) -> None:
        self._clipped = value

    def _row(self, row: int):
        """TensorStats of raw row `row` (0: x', 1: x0), or None without stats."""
        from .stats import TensorStats

        if self._packed is not None:
            self._unpack()
        return None if self._raw is None else TensorStats(self._raw[0][row], self._raw[1][row])

    @property
    def stats(self):
        if self._stats is None:
            self._stats = self._row(0)
        return self._stats

    @stats.setter
    def stats(self, value) -> None:
        self._stats = value

    @property
    def x0_stats(self):
        if self._x0_stats is None:
            self._x0_stats = self._row(1)
        return self._x0_stats

    @x0_stats.setter
    def x0_stats(self, value) -> None:
        self._x0_stats = value

    def __repr__(self) -> str:
        return (
            f"StepResult(prev_sample={self.prev_sample!r}, pred_x0={self.pred_x0!r}, clipped={self.clipped!r}, "
            f"stats={self.stats!r}, x0_stats={self.x0_stats!r})"
        )
