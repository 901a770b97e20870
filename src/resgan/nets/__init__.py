"""Residual generator and discriminator."""

from resgan.nets.blocks import DBlock, GBlock
from resgan.nets.models import Discriminator, Generator, sample

__all__ = ["DBlock", "GBlock", "Discriminator", "Generator", "sample"]
