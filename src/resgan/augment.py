"""Differentiable augmentation of D's inputs (``train.augment``), against D's overfitting.

As DiffAugment (Zhao et al. 2020): the same kind of random transform, drawn independently
per image, is applied to real and fake images before every call of D, in the D step and in
the G step, and G's gradient flows back through it. As StyleGAN2-ADA (Karras et al. 2020),
the ``ada-`` policies apply each op to each image with a probability p that starts at 0 and
follows the overfitting heuristic r_t = E[sign(D(real))] towards a target of 0.6.

The ops are milder than DiffAugment's defaults, which a probe on the 8x8 digits found too
strong (translation by 1/8 plus a cutout of half the side made FID 3.7x worse):

- translation: integer shift of up to 1/8 of the side in x and y (1 px at 8x8), zero padding;
- cutout: one square of a quarter of the side (2x2 at 8x8; DiffAugment's is half) zeroed.

Policy names (``config.AugmentPolicy``) are ops joined by ``+``, optionally prefixed with
``ada-``; ``none`` turns it off. Images are NCHW in [-1, 1]; zero is DiffAugment's fill.
"""

from __future__ import annotations

from typing import Any, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F

from resgan.config import AugmentPolicy

Tensor = torch.Tensor

TRANSLATION_RATIO = 1 / 8  # of the side: 1 px at 8x8 (DiffAugment's 1/8)
CUTOUT_RATIO = 1 / 4  # of the side: 2x2 at 8x8 (DiffAugment's 1/2 gave 4x4, too strong here)
ADA_TARGET = 0.6  # r_t above this: D is overfitting, raise p (StyleGAN2-ADA)
ADA_INTERVAL = 4  # D steps between updates of p (StyleGAN2-ADA)
# p can go 0 -> 1 in this many thousand images. ADA's 500 kimg is longer than a whole run
# here (digits: 100 epochs x 1,437 images = 144 kimg): at 100 kimg p can reach 1 within one.
ADA_KIMG = 100.0


def _like(out: Tensor, x: Tensor) -> Tensor:
    """``out`` in the memory format of ``x`` (channels-last stays channels-last)."""
    fmt = (torch.channels_last if x.dim() == 4 and not x.is_contiguous()
           and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
    return out.contiguous(memory_format=fmt)


def translate(x: Tensor, shift: Tensor) -> Tensor:
    """Shift each image by whole pixels, filling with zeros: out[y, x] = in[y - dy, x - dx].

    Args:
        x: images, N x C x H x W.
        shift: N x 2 integer (dy, dx) per image; a positive dy moves the content down.
    """
    n, _, h, w = x.shape
    pad = F.pad(x, [1, 1, 1, 1])  # one zero border: every index clamped onto it reads 0
    rows = (torch.arange(h, device=x.device) - shift[:, :1] + 1).clamp(0, h + 1)  # N x H
    cols = (torch.arange(w, device=x.device) - shift[:, 1:] + 1).clamp(0, w + 1)  # N x W
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = pad[batch, :, rows[:, :, None], cols[:, None, :]]  # N x H x W x C
    return _like(out.permute(0, 3, 1, 2), x)


def cutout(x: Tensor, corner: Tensor, size: int) -> Tensor:
    """Zero a size x size square per image with its top-left pixel at ``corner`` (N x 2,
    (y, x); the square may hang over the edge, and is then cut by it)."""
    h, w = x.shape[-2:]
    ys = torch.arange(h, device=x.device) - corner[:, :1]  # N x H: row offset into the square
    xs = torch.arange(w, device=x.device) - corner[:, 1:]
    hole = ((ys >= 0) & (ys < size))[:, :, None] & ((xs >= 0) & (xs < size))[:, None, :]
    return x * (~hole).unsqueeze(1).to(x.dtype)


def rand_translation(x: Tensor, p: Tensor | float = 1.0, ratio: float = TRANSLATION_RATIO) -> Tensor:
    """Each image, with probability p, shifted by up to ``ratio`` of its side in x and y
    (uniform over the integer shifts, 0 included, as DiffAugment)."""
    n, _, h, w = x.shape
    limit = torch.tensor([max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))],
                         device=x.device)
    shift = (torch.rand(n, 2, device=x.device) * (2 * limit + 1)).floor().long() - limit
    return translate(x, shift * _applied(n, p, x.device)[:, None])


def rand_cutout(x: Tensor, p: Tensor | float = 1.0, ratio: float = CUTOUT_RATIO) -> Tensor:
    """Each image, with probability p, with a square of ``ratio`` of its side zeroed at a
    uniform position (its top-left corner in [-size//2, side - size + size//2], so that
    border pixels are hit as often as DiffAugment's centred squares hit them)."""
    n, _, h, w = x.shape
    size = max(1, int(h * ratio + 0.5))
    span = torch.tensor([h - size + 1 + 2 * (size // 2), w - size + 1 + 2 * (size // 2)],
                        device=x.device)
    corner = (torch.rand(n, 2, device=x.device) * span).floor().long() - size // 2
    # images left alone get a square entirely outside (torch.where: no host sync)
    corner = torch.where(_applied(n, p, x.device)[:, None], corner, -size)
    return cutout(x, corner, size)


def _applied(n: int, p: Tensor | float, device: torch.device) -> Tensor:
    """Which of n images get an op (boolean), each with probability p; no host sync."""
    if not isinstance(p, Tensor) and p >= 1.0:
        return torch.ones(n, dtype=torch.bool, device=device)
    return torch.rand(n, device=device) < p


OPS = {"translation": rand_translation, "cutout": rand_cutout}


def parse(policy: str) -> tuple[tuple[str, ...], bool]:
    """The ops of a policy name and whether p is adaptive: ``ada-translation+cutout`` ->
    (("translation", "cutout"), True)."""
    if policy not in get_args(AugmentPolicy):
        raise ValueError(f"unknown augment policy {policy!r}; allowed: {get_args(AugmentPolicy)}")
    adaptive = policy.startswith("ada-")
    name = policy.removeprefix("ada-")
    return (() if name == "none" else tuple(name.split("+"))), adaptive


class Augment:
    """A policy's ops and its probability p, applied to every batch that goes into D.

    Fixed policies apply every op to every image (p = 1). Adaptive ones start at p = 0;
    ``observe`` collects sign(D(real)) in the D step and ``update`` moves p every
    ADA_INTERVAL D steps, by ± (images since the last update) / (ADA_KIMG x 1000), clamped
    to [0, 1]. p and the sums live on the device (no host sync per step); with several
    ranks the sums are all-reduced, so every rank keeps the same p.
    """

    def __init__(self, policy: str, device: str | torch.device = "cpu"):
        self.policy = policy
        self.ops, self.adaptive = parse(policy)
        device = torch.device(device)
        self._p = torch.tensor(0.0 if self.adaptive else 1.0, device=device)
        self._acc = torch.zeros(2, device=device)  # sum of sign(D(real)), number of images

    @property
    def enabled(self) -> bool:
        return bool(self.ops)

    @property
    def p(self) -> float:
        return float(self._p)

    def __call__(self, x: Tensor) -> Tensor:
        for op in self.ops:
            x = OPS[op](x, self._p if self.adaptive else 1.0)
        return x

    def observe(self, real_logits: Tensor) -> None:
        """Collect D's logits on the real batch of a D step (adaptive policies only)."""
        if self.adaptive:
            self._acc[0] += torch.sign(real_logits.detach().float()).sum()
            self._acc[1] += real_logits.numel()

    def update(self, images: int, world_size: int = 1) -> None:
        """Move p by the heuristic over the D steps since the last update.

        Args:
            images: real images seen by all ranks together since the last update.
            world_size: ranks; > 1 needs an initialised process group (every rank calls).
        """
        if not self.adaptive:
            return
        if world_size > 1:
            dist.all_reduce(self._acc)
        r_t = self._acc[0] / self._acc[1].clamp(min=1.0)
        self._p.copy_(ada_step(self._p, r_t, images))
        self._acc.zero_()

    def state_dict(self, world_size: int = 1) -> dict[str, Any]:
        """p and the sums so far over all ranks, for the checkpoint (every rank calls)."""
        acc = self._acc.clone()
        if world_size > 1:
            dist.all_reduce(acc)
        return {"policy": self.policy, "p": self.p, "acc": acc.tolist()}

    def load_state_dict(self, state: dict[str, Any], rank: int = 0) -> None:
        """Restore p; rank 0 takes the checkpoint's sums (the all-reduce adds the others)."""
        if not self.adaptive:
            return
        self._p.fill_(float(state["p"]))
        self._acc.copy_(torch.tensor(state["acc"] if rank == 0 else [0.0, 0.0]))


def ada_step(p: Tensor, r_t: Tensor | float, images: int, target: float = ADA_TARGET,
             kimg: float = ADA_KIMG) -> Tensor:
    """StyleGAN2-ADA's update: p + sign(r_t - target) x images / (kimg x 1000), in [0, 1]."""
    r_t = torch.as_tensor(r_t, dtype=p.dtype, device=p.device)
    return (p + torch.sign(r_t - target) * (images / (kimg * 1000.0))).clamp(0.0, 1.0)
