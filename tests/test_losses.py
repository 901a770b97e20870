import math

import pytest
import torch

from resgan.losses import LOSSES, bce_d, bce_g, gradient_penalty, hinge_d, hinge_g, wgan_d, wgan_g


def test_bce_by_hand():
    # logits 0: D = 1/2 everywhere. D loss = -log(1/2) - log(1 - 1/2) = 2 ln 2; G: ln 2.
    z = torch.zeros(5)
    assert bce_d(z, z).item() == pytest.approx(2 * math.log(2), rel=1e-6)
    assert bce_g(z).item() == pytest.approx(math.log(2), rel=1e-6)
    # real logit 2, fake logit -1: -log(sigmoid(2)) - log(1 - sigmoid(-1))
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert bce_d(real, fake).item() == pytest.approx(-math.log(sig(2)) - math.log(1 - sig(-1)), rel=1e-6)
    assert bce_g(fake).item() == pytest.approx(-math.log(sig(-1)), rel=1e-6)


def test_bce_is_stable_for_extreme_logits():
    big = torch.tensor([1000.0])
    assert bce_d(big, -big).item() == pytest.approx(0.0, abs=1e-6)
    assert bce_g(-big).item() == pytest.approx(1000.0, rel=1e-6)  # no inf


def test_hinge_by_hand():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-0.5, 1.0])
    # D: mean(max(0, 1 - [0.5, 2])) + mean(max(0, 1 + [-0.5, 1])) = 0.25 + 1.25
    assert hinge_d(real, fake).item() == pytest.approx(1.5, rel=1e-6)
    assert hinge_g(fake).item() == pytest.approx(-0.25, rel=1e-6)


def test_wasserstein_by_hand():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-0.5, 1.0])
    assert wgan_d(real, fake).item() == pytest.approx(0.25 - 1.25, rel=1e-6)
    assert wgan_g(fake).item() == pytest.approx(-0.25, rel=1e-6)


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = <w, x>: its gradient is w everywhere, so the penalty is (||w|| - 1)^2 exactly.
    w = torch.full((1, 2, 2), 0.75)  # ||w|| = 1.5
    D = lambda x: (x * w).sum(dim=(1, 2, 3))  # noqa: E731
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    assert gradient_penalty(D, real, fake).item() == pytest.approx(0.25, rel=1e-5)
    w = torch.full((1, 2, 2), 0.5)  # ||w|| = 1: no penalty
    assert gradient_penalty(D, real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_registry_of_losses():
    assert set(LOSSES) == {"bce", "hinge", "wgan-gp"}
