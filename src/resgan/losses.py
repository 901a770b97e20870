"""GAN losses as pure functions of D's logits (numerically stable: no sigmoid-then-log)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def bce_d(real: Tensor, fake: Tensor) -> Tensor:
    """Original GAN objective for D, as a loss: -[log D(x) + log(1 - D(G(z)))].

    log D = -softplus(-logit) and log(1 - D) = -softplus(logit).
    """
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def bce_g(fake: Tensor) -> Tensor:
    """Non-saturating G loss: -log D(G(z))."""
    return F.softplus(-fake).mean()


def hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge loss for D: E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g(fake: Tensor) -> Tensor:
    """Hinge loss for G: -E[D(G(z))]."""
    return -fake.mean()


LOSSES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "bce": (bce_d, bce_g),
    "hinge": (hinge_d, hinge_g),
}
