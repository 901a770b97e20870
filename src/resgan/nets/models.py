"""Generator and discriminator built from the residual blocks.

A network at resolution R has log2(R/4) resolution stages (4x4 is the base); each stage
holds ``depth`` blocks, the first of which changes the resolution (G) or the last (D).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from resgan.nets.blocks import DBlock, GBlock

RESOLUTIONS = (8, 16, 32, 64)


def _stages(resolution: int) -> int:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
    return int(math.log2(resolution // 4))


class Generator(nn.Module):
    """z -> linear -> residual up-blocks -> BN-ReLU-conv3x3 -> tanh image in [-1, 1]."""

    def __init__(
        self,
        z_dim: int = 64,  # latent size
        channels: int = 64,  # width of every block
        depth: int = 2,  # residual blocks per resolution stage
        resolution: int = 8,  # output height and width
        img_channels: int = 1,  # 1 (grey) or 3 (RGB)
        residual: bool = True,  # False: no identity shortcuts, nothing else changes
    ):
        super().__init__()
        self.kwargs = dict(z_dim=z_dim, channels=channels, depth=depth, resolution=resolution,
                           img_channels=img_channels, residual=residual)
        self.z_dim, self.channels = z_dim, channels
        self.fc = nn.Linear(z_dim, channels * 4 * 4)
        blocks = []
        for _ in range(_stages(resolution)):
            blocks += [GBlock(channels, upsample=(i == 0), residual=residual) for i in range(depth)]
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(),
                                 nn.Conv2d(channels, img_channels, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.channels, 4, 4)
        return self.out(self.blocks(h))


class Discriminator(nn.Module):
    """image -> SN conv3x3 -> residual down-blocks -> LeakyReLU -> global sum pool -> SN linear."""

    def __init__(
        self,
        channels: int = 64,  # width of every block
        depth: int = 2,  # residual blocks per resolution stage
        resolution: int = 8,  # input height and width
        img_channels: int = 1,
        residual: bool = True,
        slope: float = 0.2,  # LeakyReLU negative slope
    ):
        super().__init__()
        self.kwargs = dict(channels=channels, depth=depth, resolution=resolution,
                           img_channels=img_channels, residual=residual)
        self.slope = slope
        self.stem = spectral_norm(nn.Conv2d(img_channels, channels, 3, padding=1))
        blocks = []
        for _ in range(_stages(resolution)):
            blocks += [DBlock(channels, downsample=(i == depth - 1), residual=residual, slope=slope)
                       for i in range(depth)]
        self.blocks = nn.Sequential(*blocks)
        self.fc = spectral_norm(nn.Linear(channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        h = nn.functional.leaky_relu(h, self.slope).sum(dim=(2, 3))
        return self.fc(h).squeeze(1)


@torch.no_grad()
def sample(G: Generator, n: int, *, seed: int, device: str | torch.device = "cpu",
           batch_size: int = 500) -> torch.Tensor:
    """n images in [-1, 1] from G for a fixed seed, on the CPU (put G in eval mode first)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=gen)
    return torch.cat([G(zb.to(device)).float().cpu() for zb in z.split(batch_size)])
