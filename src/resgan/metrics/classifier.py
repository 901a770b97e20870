"""A LeNet-class CNN trained on the dataset's labels: the ``classifier`` feature extractor.

For digits-sized data, Inception's 2048-d features would need more samples than the data
set has for a well-conditioned covariance; this network's 64-d penultimate layer, trained
to tell the classes apart, gives a FID that is meaningful at a few hundred samples.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    """A LeNet-class network: two stages of two 3x3 conv + batch-norm + ReLU, max-pooled,
    then a 64-d feature layer and the class head (dropout before each linear layer).

    Its held-out accuracy on the shipped digits is measured by bench/classifier.py
    (docs/benchmarks.md (k)).
    """

    def __init__(self, img_channels: int = 1, n_classes: int = 10, feat_dim: int = 64,
                 resolution: int = 16, width: int = 32):
        super().__init__()
        self.kwargs = dict(img_channels=img_channels, n_classes=n_classes, feat_dim=feat_dim,
                           resolution=resolution, width=width)

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        w = width
        self.body = nn.Sequential(
            *conv(img_channels, w), *conv(w, w), nn.MaxPool2d(2),
            *conv(w, 2 * w), *conv(2 * w, 2 * w), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3),
        )
        self.feat = nn.Linear(2 * w * (resolution // 4) ** 2, feat_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(feat_dim, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, before their ReLU (no dead dimensions in the covariance)."""
        return self.feat(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(x_tr, y_tr, x_te, y_te, *, epochs: int, seed: int,
                     batch_size: int = 64, lr: float = 2e-3) -> tuple[Classifier, float]:
    """Train on (x_tr, y_tr); return the network (eval mode) and its accuracy on (x_te, y_te).

    AdamW (weight decay 5e-4) under a one-cycle learning-rate schedule peaking at ``lr``.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = Classifier(img_channels=x_tr.shape[1], n_classes=int(y_tr.max()) + 1,
                     resolution=x_tr.shape[-1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    n = len(x_tr)
    steps = max(1, epochs) * -(-n // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            if len(idx) < 2:  # batch-norm needs two images
                continue
            loss = F.cross_entropy(net(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x_te).argmax(1) == y_te).float().mean().item()
    return net, acc


def save_classifier(net: Classifier, path: str | Path, **info) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kwargs": net.kwargs, "state_dict": net.state_dict(), **info}, path)


def load_classifier_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """The classifier (eval mode) and the rest of its file (test_accuracy, resolution)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    net = Classifier(**ckpt.pop("kwargs"))
    net.load_state_dict(ckpt.pop("state_dict"))
    return net.to(device).eval(), ckpt


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
    return load_classifier_checkpoint(path, device)[0]
