"""Residual blocks (pre-activation, as in SN-GAN's ResNet G and D).

Every block keeps its channel count, so its shortcut is a pure identity (with the same
up- or down-sampling as the branch) and holds no weights. ``residual=False`` drops that
shortcut and changes nothing else: same layers, same parameter count. This is what makes
"residual vs plain" a clean comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class GBlock(nn.Module):
    """BN-ReLU-(upsample)-conv3x3-BN-ReLU-conv3x3, plus an identity shortcut."""

    def __init__(self, channels: int, upsample: bool, residual: bool = True):
        super().__init__()
        self.upsample = upsample
        self.residual = residual
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.upsample else x

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self._up(F.relu(self.bn1(x))))
        return self.conv2(F.relu(self.bn2(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.branch(x)
        return h + self._up(x) if self.residual else h


class DBlock(nn.Module):
    """LeakyReLU-conv3x3-LeakyReLU-conv3x3-(avgpool), spectrally normalised, plus shortcut."""

    def __init__(self, channels: int, downsample: bool, residual: bool = True, slope: float = 0.2):
        super().__init__()
        self.downsample = downsample
        self.residual = residual
        self.slope = slope
        self.conv1 = spectral_norm(nn.Conv2d(channels, channels, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(channels, channels, 3, padding=1))

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(x, self.slope))
        return self._down(self.conv2(F.leaky_relu(h, self.slope)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.branch(x)
        return h + self._down(x) if self.residual else h
