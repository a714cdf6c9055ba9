"""A compact 1-D U-Net for spectra-like signals (report 002's architecture, scaled down).

Conv1d residual blocks with GroupNorm/SiLU and a sinusoidal time embedding, downsampled by 2 per
level with skip connections. `UNet1D(channels=(32, 64, 128))` has ~0.5M parameters;
`UNet1D(channels=(64, 128, 256, 256))` a few million (the probe benchmark's size).

>>> import torch
>>> net = UNet1D(channels=(8, 16))
>>> net(torch.randn(2, 1, 64), torch.tensor([3, 700])).shape
torch.Size([2, 1, 64])
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, [B] -> [B, dim] (Vaswani et al.)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


def _groups(ch: int) -> int:
    return math.gcd(ch, 8)


class ResBlock1D(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.t_proj = nn.Linear(t_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.t_proj(temb)[:, :, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return h + self.skip(x)


class UNet1D(nn.Module):
    """eps/x0/v/flow network for [B, C, L] signals; L must be divisible by 2^(len(channels) - 1).

    `forward(x, t)` takes t of shape [B] or a scalar (integer timesteps, or flow times scaled by the caller).
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (32, 64, 128), t_dim: int = 128):
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one level")
        self.channels = tuple(channels)
        self.t_dim = t_dim
        self.t_mlp = nn.Sequential(nn.Linear(t_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.stem = nn.Conv1d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        c = channels[0]
        for i, ch in enumerate(channels):
            self.down.append(ResBlock1D(c, ch, t_dim))
            self.pool.append(nn.Conv1d(ch, ch, 4, stride=2, padding=1) if i < len(channels) - 1 else nn.Identity())
            c = ch
        self.mid = ResBlock1D(c, c, t_dim)
        self.up = nn.ModuleList()
        self.unpool = nn.ModuleList()
        for i, ch in reversed(list(enumerate(channels))):
            self.unpool.append(
                nn.ConvTranspose1d(c, c, 4, stride=2, padding=1) if i < len(channels) - 1 else nn.Identity()
            )
            self.up.append(ResBlock1D(c + ch, ch, t_dim))
            c = ch
        self.head = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv1d(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (len(self.channels) - 1)
        if x.dim() != 3 or x.shape[-1] % factor:
            raise ValueError(f"UNet1D expects [B, C, L] with L divisible by {factor}; got shape {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        temb = self.t_mlp(timestep_embedding(t, self.t_dim))
        h = self.stem(x)
        skips = []
        for block, pool in zip(self.down, self.pool):
            h = block(h, temb)
            skips.append(h)
            h = pool(h)
        h = self.mid(h, temb)
        for unpool, block in zip(self.unpool, self.up):
            h = unpool(h)
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
        return self.head(h)
