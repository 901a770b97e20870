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


def wgan_d(real: Tensor, fake: Tensor) -> Tensor:
    """Wasserstein critic loss: E[D(G(z))] - E[D(x)] (add the gradient penalty)."""
    return fake.mean() - real.mean()


def wgan_g(fake: Tensor) -> Tensor:
    """Wasserstein generator loss: -E[D(G(z))]."""
    return -fake.mean()


def gradient_penalty(D: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP: E[(||grad D(x_hat)||_2 - 1)^2] at random points x_hat between real and fake."""
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


LOSSES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "bce": (bce_d, bce_g),
    "hinge": (hinge_d, hinge_g),
    "wgan-gp": (wgan_d, wgan_g),  # the training loop adds gp_lambda * gradient_penalty
}
